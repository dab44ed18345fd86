"""The CIFAR-10 python-batch loader on small generated batches (the real files are 170 MB and not fetched)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from egalitarian.build import make_task
from egalitarian.errors import ConfigError
from egalitarian.tasks import TASKS, cifar10, read_batch

NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_batches(folder: Path, n: int = 4, seed: int = 0, protocol: int = 2) -> dict[str, tuple[np.ndarray, list]]:
    """Six batches of ``n`` images like the originals: dict with bytes keys, uint8 (n, 3072), a list of labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for name in NAMES:
        images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": images,
                 b"filenames": [f"img{i}.png".encode() for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        out[name] = (images, labels)
    return out


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar10_reads_the_batches_in_order(tmp_path: Path, protocol: int) -> None:
    batches = write_batches(tmp_path / "cifar-10-batches-py", protocol=protocol)
    data = cifar10(path=str(tmp_path))  # the parent of cifar-10-batches-py is accepted too
    assert data.n_train == 20 and data.n_test == 4 and data.image_shape == (3, 32, 32) and data.input_dim == 3072
    expected = np.concatenate([batches[n][0] for n in NAMES[:5]]).astype(np.float32) / 255.0
    assert torch.equal(data.x_train, torch.from_numpy(expected))
    assert data.y_train.tolist() == sum((batches[n][1] for n in NAMES[:5]), [])
    assert data.y_test.tolist() == batches["test_batch"][1]
    assert data.y_train.dtype == torch.int64 and data.target == "class" and data.num_outputs == 10
    # pixel (channel c, row r, column k) of image i is data[i, 1024 c + 32 r + k]: the C x H x W layout
    img = data.x_train[5].view(3, 32, 32)
    assert img[2, 7, 30] == batches["data_batch_2"][0][1, 2 * 1024 + 7 * 32 + 30] / 255.0

    small = make_task("cifar10", path=str(tmp_path / "cifar-10-batches-py"), n_train=10, n_test=3, val_frac=0.2)
    assert (small.n_train, small.n_val, small.n_test) == (8, 2, 3)
    assert torch.equal(small.x_val, data.x_train[8:10])


def test_cifar10_finds_the_data_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EGD_DATA", str(tmp_path))
    with pytest.raises(ConfigError, match=r"path = None: .*cifar10"):
        cifar10()
    write_batches(tmp_path / "cifar10" / "cifar-10-batches-py")
    assert cifar10().info["path"] == str(tmp_path / "cifar10" / "cifar-10-batches-py")


def test_cifar10_bad_files_are_named(tmp_path: Path) -> None:
    write_batches(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="data_batch_3.*missing"):
        cifar10(path=str(tmp_path))

    def put(obj: object) -> None:
        (tmp_path / "data_batch_3").write_bytes(pickle.dumps(obj, protocol=2))

    cases = [
        ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, "float32 array"),
        ({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4}, r"\(4, 1024\)"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}, "labels"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}, "label 10"),
        ([1, 2, 3], "holds a list"),
    ]
    for obj, match in cases:
        put(obj)
        with pytest.raises(ConfigError, match=match) as info:
            cifar10(path=str(tmp_path))
        assert str(tmp_path / "data_batch_3") in str(info.value)
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="not a CIFAR-10 python batch"):
        read_batch(tmp_path / "data_batch_3")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar10_refuses_pickles_that_build_other_objects(tmp_path: Path, capsys) -> None:
    write_batches(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
    with pytest.raises(ConfigError, match=r"asks for \w+\.print; .*refused"):
        cifar10(path=str(tmp_path))
    assert "never run" not in capsys.readouterr().out


def test_cifar10_parameters_are_validated(tmp_path: Path) -> None:
    assert "cifar10" in TASKS
    write_batches(tmp_path)
    for kwargs, field, value in [({"n_train": 0}, "n_train", "0"), ({"n_train": 21}, "n_train", "21"),
                                 ({"n_test": 5}, "n_test", "5"), ({"val_frac": 1.0}, "val_frac", "1.0"),
                                 ({"path": 3}, "path", "3")]:
        args = {"path": str(tmp_path), **kwargs}
        with pytest.raises(ConfigError) as info:
            make_task("cifar10", **args)
        assert str(info.value).startswith(f"task.{field} = {value}"), str(info.value)
    with pytest.raises(ConfigError, match="task.path"):
        make_task("cifar10", path=str(tmp_path / "nowhere"))
