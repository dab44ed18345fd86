"""Few-sample image classification in the Omnigrok style (Liu et al. 2023; reused by Grokfast and EGD App. D).

Data sets (``dataset``)
-----------------------
* ``"mnist"`` — MNIST (LeCun et al. 1998), 28×28 digits.
* ``"fashion-mnist"`` — Fashion-MNIST (Xiao et al. 2017, Zalando), 28×28 clothing images, same file format.

Sources
-------
* ``source="idx"`` — the four standard IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; also spelt ``train-images.idx3-ubyte``; each
  optionally gzipped as ``<name>.gz``) in directory ``path`` or, without ``path``, in the data directory's
  folder of the data set (:func:`egalitarian.data.dataset_dir`: ``$EGD_DATA/mnist`` etc., filled by
  ``egd data mnist``). As in Omnigrok/Grokfast (``Subset(range(1000))``) the training set is the *first*
  ``n_train`` training images, and the test set is the full 10k test set (or its first ``n_test`` images);
  ``split_seed`` is not used. Nothing is downloaded.
* ``source="digits"`` — an offline **stand-in, not MNIST**: scikit-learn's bundled 8×8 digits
  (``sklearn.datasets.load_digits``, 1797 images, no network access). Pixels are 0..16, scaled by 1/16 and
  flattened to 64 features. The images are permuted with ``split_seed``; the first ``n_train`` (default 1000)
  train and the rest (797 by default) test, or the first ``n_test`` of the rest. Use it to smoke-test the
  pipeline on a fresh machine; its numbers are not comparable with MNIST results. MNIST only.
* ``source="auto"`` — ``"idx"`` if ``path`` is given or the data directory holds the data set's four files;
  else ``"digits"`` for MNIST (Fashion-MNIST has no stand-in: an error says how to get it).  A file with the
  genuine file's size but not its MD5 (a damaged copy: flipped bytes; or another data set of MNIST's shape) is
  refused under ``"auto"``, naming the file and the genuine MD5; ``"idx"`` trains on it, said so in ``data``.

Which data ran is in ``info["data"]`` (the trainer copies it into ``summary.json``): ``"mnist (genuine, DIR)"``
when the four files' sizes and MD5s are the genuine ones (:data:`egalitarian.data.DATASETS`),
``"mnist-format IDX files, not the genuine mnist (FILE has ..., the genuine NAME ...)"`` otherwise (the first file
that differs, and how), or ``"digits stand-in (sklearn 8x8, not MNIST)"``.  ``info["genuine"]`` is the same as a
bool.

Outputs: x float32 in [0, 1], flattened (784 for MNIST; ``image_shape`` = (1, 28, 28) gives the layout for
convolutional models); y int64 in [0, 10); ``target = "class"``.
With ``val_frac > 0`` the last ``int(n_train * val_frac)`` training images become validation.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import torch

from ..data import DATASETS, IDX_NAMES, dataset_dir, difference, find_idx, installed, spellings
from ..errors import ConfigError, check, check_choice, check_fraction, check_int, invalid
from .base import TaskData, image_rows, image_task, val_count

SOURCES = ("auto", "idx", "digits")
DATASET_NAMES = tuple(DATASETS)  # "mnist", "fashion-mnist"
NUM_CLASSES = 10
IDX_UBYTE = 0x08
IDX_FILES = IDX_NAMES  # the canonical file names (egalitarian.data owns them)
STAND_IN = "digits stand-in (sklearn 8x8, not MNIST)"


def _idx_error(path: str | os.PathLike[str], problem: str) -> ConfigError:
    return ConfigError(f"path: IDX file {str(path)!r} {problem}")


def read_idx(path: str | os.PathLike[str], ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzipped if the name ends in ``.gz``) into a uint8 array.

    The header is the magic number ``0x0000 0x08 <ndim>`` (big endian: two zero bytes, dtype code 0x08 =
    ubyte, number of dimensions) followed by ``ndim`` big-endian uint32 sizes, then the data in C order.
    If `ndim` is given the magic number must be ``0x00000800 + ndim`` (0x00000803 for MNIST images,
    0x00000801 for labels). Raises `ConfigError` naming the file if it is missing, not valid gzip, or if the
    magic number, the header or the data size is wrong.
    """
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise _idx_error(path, "is missing") from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise _idx_error(path, f"cannot be read ({e})") from None

    if len(raw) < 4:
        raise _idx_error(path, f"is too short ({len(raw)} bytes) to hold an IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
    dims_count = raw[3]
    expected = None if ndim is None else 0x00000800 + ndim
    bad_magic = raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE or dims_count == 0
    if bad_magic or (expected is not None and magic != expected):
        allowed = f"0x{expected:08x}" if expected is not None else "0x000008NN (ubyte, NN >= 1 dimensions)"
        raise _idx_error(path, f"has a bad magic number 0x{magic:08x}, expected {allowed}")
    header = 4 + 4 * dims_count
    if len(raw) < header:
        raise _idx_error(path, f"is truncated: {len(raw)} bytes, the header alone needs {header}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims_count))
    size = math.prod(shape)
    if len(raw) - header != size:
        raise _idx_error(
            path, f"has {len(raw) - header} data bytes, but its header shape {shape} needs {size}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find_idx(directory: Path, name: str) -> Path:
    """The file ``name`` in ``directory`` in any accepted spelling (:func:`egalitarian.data.spellings`)."""
    found = find_idx(directory, name)
    others = ", ".join(map(repr, spellings(name)[1:]))
    check(found is not None, "path", str(directory), f"missing MNIST file {name!r} (or {others})", ConfigError)
    return found


def _read_split(directory: Path, images_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find_idx(directory, images_name)
    labels_path = _find_idx(directory, labels_name)
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if len(images) != len(labels):
        raise _idx_error(
            images_path, f"has {len(images)} images but {str(labels_path)!r} has {len(labels)} labels"
        )
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise _idx_error(
            labels_path, f"has label {int(labels.max())}; MNIST labels are in [0, {NUM_CLASSES})"
        )
    return images, labels


def load_idx(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)`` as uint8 arrays from an MNIST directory."""
    directory = Path(path)
    check(directory.is_dir(), "path", str(path), "must be a directory holding the four MNIST IDX files", ConfigError)
    x_train, y_train = _read_split(directory, IDX_FILES["train_images"], IDX_FILES["train_labels"])
    x_test, y_test = _read_split(directory, IDX_FILES["test_images"], IDX_FILES["test_labels"])
    check(x_train.shape[1:] == x_test.shape[1:], "path", str(path),
          f"train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}", ConfigError)
    return x_train, y_train, x_test, y_test


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits as ``(images float32 (1797, 64) in [0, 1], labels int64)``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise invalid("source", "digits", "needs scikit-learn: pip install scikit-learn (or the package's 'data' "
                      "extra), or pass task.path with the MNIST IDX files", ConfigError) from None
    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def mnist(
    path: str | None = None,
    n_train: int = 1000,
    n_test: int | None = None,
    source: str = "auto",
    split_seed: int = 0,
    val_frac: float = 0.0,
    dataset: str = "mnist",
) -> TaskData:
    """Few-sample MNIST or Fashion-MNIST (first n_train images, Omnigrok); offline stand-in: sklearn 8×8 digits.

    Args:
        path: directory with the IDX files (default: the data directory's folder, ``egd data DATASET``).
        n_train: number of training images (first ones for IDX, after a seeded permutation for digits).
        n_test: number of test images (default: all remaining / the full test set).
        source: ``"auto"``, ``"idx"`` or ``"digits"`` (see the module docstring).
        split_seed: permutation seed, used by ``"digits"`` only.
        val_frac: fraction of the training images moved to a validation split, in [0, 1).
        dataset: ``"mnist"`` or ``"fashion-mnist"`` (the same IDX format; no stand-in for the latter).
    """
    source = asked = check_choice("source", source, SOURCES, ConfigError)
    dataset = check_choice("dataset", dataset, DATASET_NAMES, ConfigError)
    n_train = check_int("n_train", n_train, low=1, error=ConfigError)
    if n_test is not None:
        n_test = check_int("n_test", n_test, low=1, error=ConfigError)
    split_seed = check_int("split_seed", split_seed, low=0, error=ConfigError)
    val_frac = check_fraction("val_frac", val_frac, low_inclusive=True, error=ConfigError)
    val_count(n_train, val_frac)
    check(path is None or isinstance(path, (str, os.PathLike)), "path", path,
          "must be a directory path (string) or None", ConfigError)
    if path is None and source != "digits":
        found = installed(dataset)
        path = None if found is None else str(found)
    if source == "auto":
        source = "idx" if path is not None else "digits"
    if source == "digits" and dataset != "mnist":
        raise invalid("dataset", dataset, f"has no offline stand-in (source 'digits' is MNIST's): run `egd data "
                      f"{dataset}` (data directory {dataset_dir(dataset)}) or set task.path", ConfigError)

    if source == "idx":
        check(path is not None, "path", path, f"source 'idx' needs a directory holding the {dataset} IDX files: run "
              f"`egd data {dataset}` (it fills {dataset_dir(dataset)}) or set task.path", ConfigError)
        train_images, train_labels, test_images, test_labels = load_idx(path)
        differs = difference(path, DATASETS[dataset])
        if differs and differs[1] and asked == "auto":  # the genuine size, not its MD5: never trained on unasked
            raise invalid("source", asked, f"{differs[0]}: a damaged copy (or another data set of its shape); `egd "
                          f"data {dataset} --force` fetches the genuine files, source = 'idx' trains on these anyway",
                          ConfigError)
        n_train = check_int("n_train", n_train, low=1, high=len(train_images), error=ConfigError)
        n_test = len(test_images) if n_test is None else check_int("n_test", n_test, low=1, high=len(test_images),
                                                                   error=ConfigError)
        x_train, y_train = image_rows(train_images, train_labels, n_train)
        x_test, y_test = image_rows(test_images, test_labels, n_test)
        image_shape = (1, *train_images.shape[1:])
        genuine = differs is None
        data = (f"{dataset} (genuine, {path})" if genuine
                else f"{dataset}-format IDX files, not the genuine {dataset} ({differs[0]})")
    else:
        images, labels = load_digits_arrays()
        n_train = check_int("n_train", n_train, low=1, high=len(images) - 1, error=ConfigError)
        rest = len(images) - n_train
        n_test = rest if n_test is None else check_int("n_test", n_test, low=1, high=rest, error=ConfigError)
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(split_seed))
        x_all, y_all = torch.from_numpy(images)[perm], torch.from_numpy(labels)[perm]
        x_train, y_train = x_all[:n_train], y_all[:n_train]
        x_test, y_test = x_all[n_train : n_train + n_test], y_all[n_train : n_train + n_test]
        image_shape, genuine, data = (1, 8, 8), False, STAND_IN

    info = {"source": source, "dataset": dataset, "data": data, "genuine": genuine,
            "path": None if path is None else str(path), "n_train": n_train, "n_test": n_test,
            "split_seed": split_seed, "val_frac": val_frac,
            "stand_in": source == "digits"}  # True: sklearn 8x8 digits, not MNIST
    return image_task(x_train, y_train, x_test, y_test, val_frac, NUM_CLASSES, image_shape, info)
