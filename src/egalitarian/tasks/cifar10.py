"""CIFAR-10 (Krizhevsky 2009) from the standard python batches in a local directory (nothing is downloaded).

Files: ``data_batch_1`` … ``data_batch_5`` (training, 10000 images each) and ``test_batch`` (10000), as in
``cifar-10-python.tar.gz`` (its folder ``cifar-10-batches-py``). Each is a pickled dict with ``b"data"``, a
uint8 array (N, 3072) whose rows are the 32×32 image's red, green and blue planes in that order (row-major),
and ``b"labels"``, N ints in [0, 10). They are read with a restricted unpickler that builds nothing but
numpy arrays, lists, dicts and numbers: a pickle that asks for anything else is refused.

Training set: the five batches in order, the first ``n_train`` images (default all 50000); test set:
``test_batch``, its first ``n_test`` (default all). x: float32 in [0, 1], flattened in the files' C×H×W order
(``image_shape = (3, 32, 32)``); y: int64 classes; ``target = "class"``. With ``val_frac > 0`` the last
``int(n_train * val_frac)`` training images become validation. The EGD paper's Table 8 (App. E) trains a
small CNN on it (:class:`egalitarian.models.CNN`).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..data import data_root
from ..errors import ConfigError, check, check_fraction, check_int, invalid
from .base import TaskData, image_rows, image_task, val_count

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
FOLDER = "cifar-10-batches-py"

# what the batches' pickles may name: numpy's array reconstruction (numpy 1 and 2 module names) and the
# bytes codec that protocol-2 pickles written by Python 3 use
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    def __init__(self, file: Any, label: str) -> None:
        super().__init__(file, encoding="bytes")
        self.label = label

    def find_class(self, module: str, name: str) -> Any:
        check((module, name) in _ALLOWED, "path", self.label, f"the pickle asks for {module}.{name}; a CIFAR-10 "
              "batch holds only numpy arrays and lists, so it is refused", ConfigError)
        if module.startswith("numpy.core"):  # numpy 2 moved numpy.core to numpy._core
            module = module.replace("numpy.core", "numpy._core", 1) if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 3072), labels int64 (N,))`` of one CIFAR-10 python batch; a ConfigError names the
    file if it is missing, not such a pickle, or holds the wrong shapes or labels."""
    label = str(path)
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, label).load()
    except FileNotFoundError:
        raise invalid("path", label, "missing CIFAR-10 batch file", ConfigError) from None
    except ConfigError:  # a refused global
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError) as e:
        raise invalid("path", label, f"is not a CIFAR-10 python batch ({type(e).__name__}: {e})",
                      ConfigError) from None
    check(isinstance(batch, dict), "path", label, f"holds a {type(batch).__name__}, not the batch dict", ConfigError)
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    width = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != width:
        what = f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise invalid("path", label, f"its b'data' is {what}; expected a uint8 array (N, {width})", ConfigError)
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        y = np.zeros(0)
    check(y.shape == (len(data),), "path", label, f"its b'labels' has shape {y.shape}; expected {len(data)} class "
          "indices", ConfigError)
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise invalid("path", label, f"has label {int(y.min() if y.min() < 0 else y.max())}; CIFAR-10 labels are "
                      f"in [0, {NUM_CLASSES})", ConfigError)
    return data, y


def _directory(path: str | os.PathLike[str] | None) -> Path:
    if path is None:
        folder = data_root() / "cifar10"
        if not (folder / TEST_BATCH).is_file() and (folder / FOLDER).is_dir():
            folder = folder / FOLDER
        check((folder / TEST_BATCH).is_file(), "path", None, f"no CIFAR-10 python batches in the data directory "
              f"({folder}): set task.path to the {FOLDER} folder, or put its files there (nothing is downloaded)",
              ConfigError)
        return folder
    check(isinstance(path, (str, os.PathLike)), "path", path,
          f"must be the directory holding the CIFAR-10 python batches ({FOLDER})", ConfigError)
    folder = Path(path)
    if not (folder / TEST_BATCH).is_file() and (folder / FOLDER).is_dir():
        folder = folder / FOLDER
    check(folder.is_dir(), "path", str(path), f"must be a directory holding {', '.join(TRAIN_BATCHES)} and "
          f"{TEST_BATCH}", ConfigError)
    return folder


def cifar10(
    path: str | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    val_frac: float = 0.0,
) -> TaskData:
    """CIFAR-10 from the standard python batches in a local folder (Krizhevsky 2009); 32×32 RGB, 10 classes.

    Args:
        path: the ``cifar-10-batches-py`` folder (or its parent); default: ``cifar10/`` in the data directory.
        n_train: the first n_train training images (default all 50000).
        n_test: the first n_test test images (default all 10000).
        val_frac: fraction of the training images moved to a validation split, in [0, 1).
    """
    if n_train is not None:
        n_train = check_int("n_train", n_train, low=1, error=ConfigError)
    if n_test is not None:
        n_test = check_int("n_test", n_test, low=1, error=ConfigError)
    val_frac = check_fraction("val_frac", val_frac, low_inclusive=True, error=ConfigError)
    folder = _directory(path)
    parts = [read_batch(folder / name) for name in TRAIN_BATCHES]
    train_images = np.concatenate([p[0] for p in parts])
    train_labels = np.concatenate([p[1] for p in parts])
    test_images, test_labels = read_batch(folder / TEST_BATCH)
    n_train = len(train_images) if n_train is None else check_int("n_train", n_train, low=1,
                                                                  high=len(train_images), error=ConfigError)
    n_test = len(test_images) if n_test is None else check_int("n_test", n_test, low=1, high=len(test_images),
                                                               error=ConfigError)
    val_count(n_train, val_frac)
    info = {"dataset": "cifar10", "data": f"cifar10 ({folder})", "path": str(folder), "n_train": n_train,
            "n_test": n_test, "val_frac": val_frac}
    return image_task(*image_rows(train_images, train_labels, n_train), *image_rows(test_images, test_labels, n_test),
                      val_frac, NUM_CLASSES, IMAGE_SHAPE, info)
