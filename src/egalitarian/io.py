"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

Each write goes to a temporary file in the same directory, is flushed and fsync'ed, then ``os.replace``-d
over the target (atomic on POSIX and Windows).  A full disk or a read-only directory raises ``OSError``
with the path in its message and leaves the old file intact.

Also the one exclusive lock of the package (:func:`exclusive`: a run directory, a sweep store), the one way
directories are made (:func:`make_dir`: a path in the way is named) and the number of cores this process may
use (:func:`usable_cores`).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

from .errors import ConfigError


def _file_mode() -> int:
    """What ``open()`` would give a new file: 0o666 less the umask (mkstemp's own files are 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _file_mode()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary binary file, then atomically move it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not e.filename:
            raise OSError(e.errno, f"{e.strerror} while writing {path}", str(path)) from e
        raise


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save`` atomically; a failed write (torch's ``RuntimeError: [enforce fail at inline_container.cc…]``
    on a full disk) is an ``OSError`` naming ``path``, like any other write here."""
    atomic_write(path, lambda f: _torch_write(obj, f))


_TORCH_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed")


def _torch_write(obj: Any, f: IO[bytes]) -> None:
    try:
        torch.save(obj, f)
    except RuntimeError as e:
        msg = str(e)
        if not any(s in msg for s in _TORCH_WRITE_FAILURES):
            raise
        first = (msg.strip().splitlines() or [""])[0]
        raise OSError(errno.EIO, f"torch.save could not write ({first}); is the disk full?") from e


@contextmanager
def exclusive(lock: str | Path, refuse: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an exclusive lock on the file ``lock`` for the duration of the block, on every OS (``filelock``:
    ``flock`` on POSIX, ``msvcrt.locking`` on Windows, both released by the OS when the holder dies, even by
    kill -9).  The holder writes ``pid N on HOST`` to the sidecar ``LOCK.owner`` (Windows does not let others
    read a locked file); a second holder gets ``refuse(that text)`` raised."""
    from filelock import FileLock, Timeout

    lock = Path(lock)
    try:  # a lock file that cannot be made would read as one held by someone else
        lock.touch(exist_ok=True)
    except OSError as e:
        raise ConfigError(f"lock file {str(lock)!r} cannot be created ({e.strerror}): it must be in a writable "
                          "directory") from None
    held = FileLock(lock, timeout=0)
    owner = lock.with_name(lock.name + ".owner")
    try:
        held.acquire()
    except Timeout:
        try:
            who = owner.read_text().strip()
        except OSError:
            who = ""
        raise refuse(who or "pid unknown") from None
    try:
        owner.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        held.release()


def make_dir(path: str | Path, what: str) -> Path:
    """``path`` made as a directory with its parents (kept if it is one); returns it.  A path that cannot be
    made is one ConfigError, ``WHAT 'PATH' cannot be created: ...``, naming the file in the way when one of
    ``path`` and its parents is a file (``mkdir``'s own ``[Errno 17] File exists`` names neither)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        why = f"{str(blocker)!r} is a file, not a directory" if blocker is not None else e.strerror
        raise ConfigError(f"{what} {str(path)!r} cannot be created: {why}") from None
    return path


def usable_cores() -> int:
    """The number of cores this process may use (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
