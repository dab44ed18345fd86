"""Executing a sweep: the run function, a local process pool (default) and Ray.

* :func:`execute_run` trains one run in its directory, resuming from its checkpoint, and returns the summary
  and metric rows. Both executors call it, so a run gives the same result wherever it runs.
* Local: ``workers`` processes (``python -m egalitarian.sweep.worker``), started with ``OMP_NUM_THREADS=1``
  (and MKL/OpenBLAS) in their environment, so that no thread pool exists before torch is imported, and
  ``train.threads = 1``. Each claims runs from the store, trains, and commits its own results. The parent
  only watches: it draws the progress line, puts the run of a dead worker back to ``pending`` (a run that
  killed its worker :data:`MAX_ATTEMPTS` times is marked failed) and starts a replacement. Workers die
  with the parent (``PR_SET_PDEATHSIG`` on Linux, and a parent check at each evaluation elsewhere).
* Ray: the driver claims runs, runs :func:`execute_run` as tasks with ``num_cpus=1`` and commits their
  results to the store itself, so the store stays on the driver's disk (SQLite must not be shared over
  NFS). Run directories are absolute paths; on a multi-node cluster put them on a shared filesystem for
  interrupted runs to resume from their checkpoints (otherwise they restart from scratch, same result).

One ``egd sweep`` at a time per store: a lock file next to the store is held while it runs, which is what
makes it safe to treat every ``running`` row found at start-up as left over from a killed sweep.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import make_dir, usable_cores
from ..progress import Progress
from ..rundir import MetricRow
from .spec import Sweep
from .store import Store

THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
MAX_ATTEMPTS = 3  # a run whose worker died this many times is marked failed
BACKENDS = ("local", "ray")
LOG_EVERY = 600.0  # seconds between progress lines in a log (a sweep not on a terminal)


class Orphaned(Exception):
    """The process that started this worker is gone: stop (the run stays claimable)."""


def owner_name(pid: int | None = None) -> str:
    """How a worker is named in the store's ``worker`` column: ``host:pid``."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def error_message(e: BaseException) -> str:
    return str(e) if e.__class__.__name__ == "ConfigError" else f"{type(e).__name__}: {e}"


def execute_run(
    config: dict[str, Any],
    run_dir: str | Path,
    *,
    handle_signals: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, Any], list[MetricRow]]:
    """Train one run in ``run_dir`` (resuming from its checkpoint) single-threaded; return (summary, rows).

    A run stopped by a non-finite loss is an outcome (its summary says ``"nonfinite"``), not an error. A run
    stopped by a signal raises :class:`~egalitarian.train.RunStopped` (its checkpoint is saved);
    ``should_stop()`` is polled at each evaluation and raises :class:`Orphaned` when true.
    """
    import torch

    from ..rundir import read_metrics
    from ..train import RunStopped, train

    torch.set_num_threads(1)

    def on_eval(step: int, metrics: dict[str, float]) -> None:
        if should_stop is not None and should_stop():
            raise Orphaned(f"stopped at step {step}: the sweep that started this worker is gone")

    run_dir = Path(run_dir)
    try:
        summary = train(config, run_dir, resume=True, handle_signals=handle_signals, on_eval=on_eval)
    except RunStopped as e:
        if e.summary["status"] == "interrupted":
            raise
        summary = e.summary
    return summary, read_metrics(run_dir)


@contextmanager
def sweep_lock(store: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``STORE.lock`` while the sweep runs, on every OS (``filelock``: ``flock`` on
    POSIX, ``msvcrt.locking`` on Windows, both released by the OS when the process dies, even by kill -9).

    The holder writes ``pid N on HOST`` to the sidecar ``STORE.lock.owner`` (a separate file: Windows does not
    let others read a locked file), which the refusal names.
    """
    from .. import io as fio

    def refuse(who: str) -> ConfigError:
        return ConfigError(f"results store {str(store)!r} is in use by another `egd sweep` ({who});"
                           " wait for it to finish or stop it")

    with fio.exclusive(store.with_name(store.name + ".lock"), refuse):
        yield


def run_sweep(
    sweep: Sweep,
    *,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    progress: bool | None = None,
) -> dict[str, int]:
    """Run every run of ``sweep`` that is not done yet; returns the final count per status of its runs.

    Idempotent and resumable: missing runs are inserted as ``pending``, ``running`` rows left by a killed
    sweep and failed runs are retried, done runs are skipped, and interrupted runs resume from their
    checkpoints. ``progress``: draw a progress line (None: only on a terminal, and elsewhere a plain line every
    :data:`LOG_EVERY` seconds; False: nothing).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: allowed: {', '.join(BACKENDS)}")
    workers = usable_cores() if workers is None else workers
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers {workers!r}: must be an integer >= 1")
    make_dir(sweep.store.parent, "results store's directory")
    ids = [r.id for r in sweep.runs]
    with sweep_lock(sweep.store), Store(sweep.store) as store:
        store.add(sweep.name, sweep.runs)
        store.set_meta("baseline", sweep.baseline)
        store.reset_stale()
        store.requeue_failed(ids)
        todo = [r["id"] for r in store.runs(ids) if r["status"] == "pending"]
        if todo:
            # not on a terminal (a sweep in the background, its output in a log): a line every 10 minutes
            every = LOG_EVERY if progress is None else None
            bar = Progress(len(todo), f"sweep {sweep.name}", progress, log_every=every)
            root = sweep.run_root.resolve()
            root.mkdir(parents=True, exist_ok=True)
            try:
                with _sigterm_as_interrupt():
                    if backend == "ray":
                        _run_ray(store, todo, workers, root, address, bar)
                    else:
                        _run_local(store, todo, min(workers, len(todo)), root, bar)
            finally:
                bar.close()
        return store.counts(ids)


def _show(bar: Progress, store: Store, todo: list[str], force: bool = False) -> dict[str, int]:
    c = store.counts(todo)
    bar.update(c["done"] + c["failed"], force=force, failed=c["failed"], running=c["running"])
    return c


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT raise KeyboardInterrupt in the main thread, so both stop a sweep like Ctrl-C does.

    SIGINT too, explicitly: a shell starts a background job (``egd sweep ... &``) with SIGINT ignored, and
    Python then leaves it ignored, so ``kill -INT`` would silently do nothing."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------------------------- local


def _run_local(store: Store, todo: list[str], workers: int, root: Path, bar: Progress) -> None:
    todo_path = root / f".todo-{os.getpid()}.json"
    from .. import io as fio

    fio.write_json(todo_path, todo)
    env = {**os.environ, **THREAD_ENV}
    cmd = [
        sys.executable,
        "-m",
        "egalitarian.sweep.worker",
        str(store.path.resolve()),
        str(root),
        str(todo_path),
        str(os.getpid()),
    ]
    procs: dict[str, subprocess.Popen] = {}
    starts, max_starts = 0, workers + MAX_ATTEMPTS * len(todo)
    try:
        while True:
            for owner, p in list(procs.items()):
                code = p.poll()
                if code is not None:
                    del procs[owner]
                    if code != 0:
                        store.release(owner, max_attempts=MAX_ATTEMPTS, reason=f"worker died (exit code {code})")
            c = _show(bar, store, todo)
            if c["pending"] == 0 and not procs:
                break
            while len(procs) < min(workers, c["pending"] + c["running"]):
                if starts >= max_starts:
                    raise RuntimeError(f"sweep workers keep dying ({starts} started); see their errors above")
                p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                procs[owner_name(p.pid)] = p
                starts += 1
            time.sleep(0.2)
        _show(bar, store, todo, force=True)
    finally:
        _stop_workers(store, procs)
        todo_path.unlink(missing_ok=True)


def _stop_workers(store: Store, procs: dict[str, subprocess.Popen], grace: float = 30.0) -> None:
    """SIGTERM (workers checkpoint and put their run back), wait, then SIGKILL; release what they held."""
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for owner, p in procs.items():
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        store.release(owner)


# ------------------------------------------------------------------------------------------------- ray


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'egalitarian[ray]'") from None
    return ray


def _ray_task(config: dict[str, Any], run_dir: str) -> tuple[dict[str, Any], list[tuple]]:
    return execute_run(config, run_dir)


def _run_ray(store: Store, todo: list[str], workers: int, root: Path, address: str | None, bar: Progress) -> None:
    ray = import_ray()
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        ray.init(address=address, runtime_env={"env_vars": THREAD_ENV}, **kwargs)
        slots = max(1, int(ray.cluster_resources().get("CPU", workers)))
    else:
        ray.init(num_cpus=workers, runtime_env={"env_vars": THREAD_ENV}, **kwargs)
        slots = workers
    owner = "ray:" + owner_name()
    task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
    inflight: dict[Any, str] = {}
    try:
        while True:
            while len(inflight) < slots and (claim := store.claim(todo, owner)) is not None:
                run_id, config = claim
                inflight[task.remote(config, str(root / run_id))] = run_id
            if not inflight:
                break
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in ready:
                run_id = inflight.pop(ref)
                try:
                    summary, rows = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the run raised
                    store.fail(run_id, owner, error_message(getattr(e, "cause", None) or e))
                except ray.exceptions.RayError as e:  # the worker or node died
                    store.release(owner, run_id=run_id, max_attempts=MAX_ATTEMPTS, reason=type(e).__name__)
                else:
                    store.finish(run_id, owner, summary, rows)
            _show(bar, store, todo)
        _show(bar, store, todo, force=True)
    finally:
        store.release(owner)
        ray.shutdown()
