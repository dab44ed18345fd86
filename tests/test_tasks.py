"""Tests of egalitarian.tasks against closed forms computed independently in plain Python."""

from __future__ import annotations

import gzip
import math
import struct
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from egalitarian.build import make_task
from egalitarian.errors import ConfigError
from egalitarian.tasks import OPS, TASKS, TaskData, mnist, modular, parity, read_idx, task_summary

# --------------------------------------------------------------------------------------------- modular

EXPECTED = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "div": lambda a, b, p: (a * pow(b, -1, p)) % p,
    "x2+y2": lambda a, b, p: (a**2 + b**2) % p,
    "x2+xy+y2": lambda a, b, p: (a**2 + a * b + b**2) % p,
    "x3+xy": lambda a, b, p: (a**3 + a * b) % p,
    "x2-y2": lambda a, b, p: (a**2 - b**2) % p,
}


def split_pairs(data: TaskData) -> dict[str, list[tuple[int, int]]]:
    out = {"train": data.info["pairs_train"], "test": data.info["pairs_test"]}
    if "pairs_val" in data.info:
        out["val"] = data.info["pairs_val"]
    return {k: [tuple(row) for row in v.tolist()] for k, v in out.items()}


def test_ops_are_the_documented_set() -> None:
    assert set(OPS) == set(EXPECTED)


@pytest.mark.parametrize(
    ("p", "op", "train_frac", "val_frac", "b_min"),
    [
        (7, "add", 0.5, 0.0, 0),
        (11, "div", 0.3, 0.2, 0),
        (6, "mul", 0.8, 0.5, 1),
        (13, "x3+xy", 0.25, 0.1, 0),
        (2, "sub", 0.5, 0.0, 0),
        (97, "add", 0.5, 0.0, 0),
    ],
)
def test_splits_partition_the_table(p: int, op: str, train_frac: float, val_frac: float, b_min: int) -> None:
    data = modular(p=p, op=op, train_frac=train_frac, val_frac=val_frac, b_min=b_min)
    low_b = 1 if op == "div" else b_min
    table = [(a, b) for a in range(p) for b in range(low_b, p)]
    splits = split_pairs(data)
    union = [pair for pairs in splits.values() for pair in pairs]
    assert Counter(union) == Counter(table)  # every pair exactly once, so the splits are disjoint
    n_train_total = int(len(table) * train_frac)  # the EGD code convention
    n_val = int(n_train_total * val_frac)
    assert (data.n_train, data.n_val, data.n_test) == (
        n_train_total - n_val,
        n_val,
        len(table) - n_train_total,
    )
    assert (data.x_val is None) == (val_frac == 0)


def test_official_split_sizes() -> None:
    # EGD mod_add.py: n_train = int(p^2 * 0.5).
    # Grokfast: a*b mod 97 with b in [1, 97) gives 9312 equations, 4656 train.
    assert modular(p=97).n_train == 4704
    grokfast = modular(p=97, op="mul", b_min=1, encoding="tokens")
    assert (grokfast.n_train, grokfast.n_test) == (4656, 4656)


@pytest.mark.parametrize(
    ("op", "p"), [(op, p) for op in sorted(EXPECTED) for p in (7, 11, 6) if not (op == "div" and p == 6)]
)
def test_labels_match_closed_form(op: str, p: int) -> None:
    data = modular(p=p, op=op, val_frac=0.3)
    for split, pairs in split_pairs(data).items():
        labels = getattr(data, f"y_{split}")
        assert labels.dtype == torch.int64
        assert labels.tolist() == [EXPECTED[op](a, b, p) for a, b in pairs]
    assert (data.num_outputs, data.target) == (p, "class")


@pytest.mark.parametrize("p", [2, 5, 13])
def test_division_inverts_multiplication(p: int) -> None:
    data = modular(p=p, op="div", b_min=0, train_frac=0.5)
    assert data.info["b_min"] == 1
    for split, pairs in split_pairs(data).items():
        labels = getattr(data, f"y_{split}").tolist()
        for (a, b), c in zip(pairs, labels, strict=True):
            assert b != 0
            assert (c * b) % p == a


def test_onehot_encoding_decodes_to_pairs() -> None:
    p = 11
    data = modular(p=p, op="sub", val_frac=0.2)
    assert (data.input_dim, data.vocab_size) == (2 * p, None)
    for split, pairs in split_pairs(data).items():
        x = getattr(data, f"x_{split}")
        assert x.dtype == torch.float32 and x.shape == (len(pairs), 2 * p)
        assert torch.all(x.sum(dim=1) == 2) and set(x.unique().tolist()) == {0.0, 1.0}
        decoded = torch.stack([x[:, :p].argmax(dim=1), x[:, p:].argmax(dim=1)], dim=1)
        assert [tuple(r) for r in decoded.tolist()] == pairs


def test_index_encoding_is_the_positions_of_the_onehot_ones() -> None:
    p = 11
    dense, index = modular(p=p, op="add", val_frac=0.2), modular(p=p, op="add", val_frac=0.2, encoding="index")
    assert (index.input_dim, index.vocab_size) == (2 * p, None)
    for split, pairs in split_pairs(index).items():
        x = getattr(index, f"x_{split}")
        assert x.dtype == torch.int64 and x.shape == (len(pairs), 2)
        assert [(a, pb - p) for a, pb in x.tolist()] == pairs  # [a, p + b]
        hot = torch.zeros(len(x), 2 * p).scatter_(1, x, 1.0)
        assert torch.equal(hot, getattr(dense, f"x_{split}"))
        assert torch.equal(getattr(index, f"y_{split}"), getattr(dense, f"y_{split}"))


@pytest.mark.parametrize(("encoding", "seq_len", "vocab", "tokens"), [
    ("tokens", 4, 9, lambda a, b: [a, 7, b, 8]),  # Power et al. / Grokfast: [a, OP, b, EQ]
    ("tokens3", 3, 8, lambda a, b: [a, b, 7]),  # Nanda et al.: [a, b, EQ]
])
def test_token_encodings(encoding, seq_len, vocab, tokens) -> None:
    p = 7
    data = modular(p=p, op="add", encoding=encoding, val_frac=0.2)
    assert (data.input_dim, data.vocab_size, data.num_outputs) == (seq_len, vocab, p)
    for split, pairs in split_pairs(data).items():
        x = getattr(data, f"x_{split}")
        assert x.dtype == torch.int64
        assert x.tolist() == [tokens(a, b) for a, b in pairs]
        assert getattr(data, f"y_{split}").tolist() == [(a + b) % p for a, b in pairs]


def test_split_seed_determines_the_split() -> None:
    first = split_pairs(modular(p=11, split_seed=3))
    assert split_pairs(modular(p=11, split_seed=3)) == first
    assert split_pairs(modular(p=11, split_seed=4))["train"] != first["train"]


def test_info_records_parameters() -> None:
    info = modular(p=5, op="x2-y2", train_frac=0.4, split_seed=2, encoding="tokens").info
    assert {k: info[k] for k in ("p", "op", "train_frac", "split_seed", "encoding")} == {
        "p": 5,
        "op": "x2-y2",
        "train_frac": 0.4,
        "split_seed": 2,
        "encoding": "tokens",
    }
    assert info["pairs_train"].dtype == torch.int64 and info["pairs_train"].shape[1] == 2


# ---------------------------------------------------------------------------------------------- parity


def test_parity_labels_are_products_of_first_k_bits() -> None:
    n, k = 12, 3
    data = parity(n=n, k=k, n_train=60, n_test=40, seed=1)
    assert data.info["secret"] == list(range(k))
    assert (data.n_train, data.n_test, data.input_dim, data.num_outputs, data.target) == (
        60,
        40,
        n,
        1,
        "sign",
    )
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.float32
        assert set(x.unique().tolist()) <= {-1.0, 1.0}
        assert y.tolist() == [math.prod(row[:k]) for row in x.tolist()]


def test_parity_random_secret() -> None:
    n, k = 20, 5
    secrets = set()
    for seed in range(5):
        data = parity(n=n, k=k, n_train=30, n_test=10, secret="random", seed=seed)
        secret = data.info["secret"]
        assert len(secret) == k == len(set(secret)) and all(0 <= i < n for i in secret)
        for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
            assert y.tolist() == [math.prod(row[i] for i in secret) for row in x.tolist()]
        secrets.add(tuple(secret))
    assert len(secrets) > 1


def test_parity_seed_validation_and_uniformity() -> None:
    a = parity(n=50, k=4, n_train=2000, n_test=100, seed=0, val_frac=0.1)
    b = parity(n=50, k=4, n_train=2000, n_test=100, seed=0, val_frac=0.1)
    c = parity(n=50, k=4, n_train=2000, n_test=100, seed=1, val_frac=0.1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert (a.n_train, a.n_val, a.n_test) == (1800, 200, 100)
    assert abs(a.x_train.mean().item()) < 0.02  # uniform ±1 bits
    assert abs(a.y_train.mean().item()) < 0.1  # balanced labels


# ----------------------------------------------------------------------------------------------- mnist


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    """Write a uint8 IDX file, gzipped if the name ends in .gz (independent of the reader under test)."""
    magic = 0x0800 + array.ndim if magic is None else magic
    raw = (
        struct.pack(">I", magic)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.astype(np.uint8).tobytes()
    )
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)


def write_mnist(
    directory: Path, gz: bool = False, n_train: int = 20, n_test: int = 10
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(directory / (name + (".gz" if gz else "")), array)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path, gz=gz)
    suffix = ".gz" if gz else ""
    for name, array in arrays.items():
        read = read_idx(tmp_path / (name + suffix))
        assert read.dtype == np.uint8 and np.array_equal(read, array)

    data = mnist(path=str(tmp_path), n_train=15)
    assert data.info["source"] == "idx"
    assert (data.n_train, data.n_test, data.input_dim, data.num_outputs) == (15, 10, 784, 10)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    train_images, train_labels = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    assert np.array_equal(
        (data.x_train * 255).round().numpy().astype(np.uint8), train_images[:15].reshape(15, 784)
    )
    assert data.y_train.tolist() == train_labels[:15].tolist()
    assert np.array_equal(
        (data.x_test * 255).round().numpy().astype(np.uint8),
        arrays["t10k-images-idx3-ubyte"].reshape(10, 784),
    )
    assert data.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0

    small = mnist(path=str(tmp_path), n_train=10, n_test=4, val_frac=0.2, source="idx")
    assert (small.n_train, small.n_val, small.n_test) == (8, 2, 4)
    assert small.y_val.tolist() == train_labels[8:10].tolist()


def check_raises(match_parts: list[str], fn, *args, **kwargs) -> None:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    for part in match_parts:
        assert part in str(info.value), (part, str(info.value))


def test_read_idx_rejects_malformed_files(tmp_path: Path) -> None:
    images = np.zeros((3, 4, 4), dtype=np.uint8)
    cases = {
        "bad_magic": struct.pack(">I", 0x0903) + struct.pack(">3I", 3, 4, 4) + images.tobytes(),
        "float_dtype": struct.pack(">I", 0x0D03) + struct.pack(">3I", 3, 4, 4) + images.tobytes(),
        "short_data": struct.pack(">I", 0x0803) + struct.pack(">3I", 3, 4, 4) + images.tobytes()[:-1],
        "extra_data": struct.pack(">I", 0x0803) + struct.pack(">3I", 3, 4, 4) + images.tobytes() + b"\0",
        "short_header": struct.pack(">I", 0x0803) + struct.pack(">2I", 3, 4),
        "tiny": b"\0\0",
    }
    for name, raw in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        check_raises([str(path)], read_idx, path, ndim=3)
    labels = tmp_path / "labels"
    write_idx(labels, np.zeros(5, dtype=np.uint8))
    check_raises([str(labels), "0x00000801", "0x00000803"], read_idx, labels, ndim=3)  # labels are not images
    not_gzip = tmp_path / "x.gz"
    not_gzip.write_bytes(b"definitely not gzip")
    check_raises([str(not_gzip)], read_idx, not_gzip)
    check_raises([str(tmp_path / "nope")], read_idx, tmp_path / "nope")


def test_mnist_missing_or_inconsistent_files(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    check_raises(["path", "t10k-labels-idx1-ubyte"], mnist, path=str(tmp_path))

    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(9, dtype=np.uint8))  # 10 images, 9 labels
    check_raises(["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"], mnist, path=str(tmp_path))

    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(10, 10, dtype=np.uint8))  # label out of range
    check_raises(["t10k-labels-idx1-ubyte", "10"], mnist, path=str(tmp_path))

    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(10, dtype=np.uint8))
    check_raises(["n_train", "21"], mnist, path=str(tmp_path), n_train=21)
    check_raises(["n_test", "11"], mnist, path=str(tmp_path), n_train=5, n_test=11)
    check_raises(["path", "missing_dir"], mnist, path=str(tmp_path / "missing_dir"))
    check_raises(["path", "None"], mnist, source="idx")


def test_mnist_digits_fallback() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    data = mnist()
    assert data.info["source"] == "digits"
    assert (data.n_train, data.n_test, data.input_dim, data.num_outputs) == (1000, 797, 64, 10)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.x_train.min() >= 0 and data.x_train.max() == 1.0

    def rows(x: torch.Tensor, y: torch.Tensor) -> Counter:
        return Counter(zip(map(tuple, (x * 16).round().int().tolist()), y.tolist(), strict=True))

    expected = Counter(zip(map(tuple, digits.data.astype(int).tolist()), digits.target.tolist(), strict=True))
    assert rows(data.x_train, data.y_train) + rows(data.x_test, data.y_test) == expected

    again, other = mnist(source="digits"), mnist(source="digits", split_seed=1)
    assert torch.equal(again.x_train, data.x_train) and not torch.equal(other.x_train, data.x_train)
    small = mnist(n_train=100, n_test=50, val_frac=0.5)
    assert (small.n_train, small.n_val, small.n_test) == (50, 50, 50)


def test_mnist_digits_without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    check_raises(["source", "pip install scikit-learn"], mnist)


# ------------------------------------------------------------------------------------------ validation

INVALID = [
    (modular, {"p": 1}, "task.p", "1"),
    (modular, {"p": True}, "task.p", "True"),
    (modular, {"p": 7.0}, "task.p", "7.0"),
    (modular, {"op": "pow"}, "task.op", "'pow'"),
    (modular, {"op": "div", "p": 96}, "task.op", "96"),
    (modular, {"train_frac": 0.0}, "task.train_frac", "0.0"),
    (modular, {"train_frac": 1.0}, "task.train_frac", "1.0"),
    (modular, {"train_frac": float("nan")}, "task.train_frac", "nan"),
    (modular, {"p": 2, "train_frac": 0.1}, "task.train_frac", "0.1"),  # 4 pairs -> int(0.4) = 0 train
    (modular, {"val_frac": 1.0}, "task.val_frac", "1.0"),
    (modular, {"val_frac": -0.1}, "task.val_frac", "-0.1"),
    (modular, {"p": 3, "val_frac": 0.1}, "task.val_frac", "0.1"),  # 4 train pairs -> empty validation
    (modular, {"encoding": "binary"}, "task.encoding", "'binary'"),
    (modular, {"b_min": 2}, "task.b_min", "2"),
    (modular, {"split_seed": -1}, "task.split_seed", "-1"),
    (parity, {"n": 0}, "task.n", "0"),
    (parity, {"k": 0}, "task.k", "0"),
    (parity, {"n": 4, "k": 5}, "task.k", "5"),
    (parity, {"n_train": 0}, "task.n_train", "0"),
    (parity, {"n_test": 0}, "task.n_test", "0"),
    (parity, {"secret": "last"}, "task.secret", "'last'"),
    (parity, {"val_frac": 1.0}, "task.val_frac", "1.0"),
    (parity, {"n_train": 5, "val_frac": 0.1}, "task.val_frac", "0.1"),
    (parity, {"seed": -3}, "task.seed", "-3"),
    (mnist, {"source": "web"}, "task.source", "'web'"),
    (mnist, {"n_train": 0}, "task.n_train", "0"),
    (mnist, {"n_test": 0}, "task.n_test", "0"),
    (mnist, {"val_frac": 1.5}, "task.val_frac", "1.5"),
    (mnist, {"path": 12}, "task.path", "12"),
    (mnist, {"dataset": "emnist"}, "task.dataset", "'emnist'"),
]


@pytest.mark.parametrize(("builder", "kwargs", "field", "value"), INVALID)
def test_invalid_parameters_raise_config_error(builder, kwargs: dict, field: str, value: str) -> None:
    # the builder names its own argument; make_task (the config layer) puts the config path in front
    with pytest.raises(ConfigError) as info:
        builder(**kwargs)
    assert str(info.value).startswith(f"{field.removeprefix('task.')} = ") and value in str(info.value)
    check_raises([f"{field} = ", value], make_task, builder.__name__, **kwargs)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------------- registry and container


def test_registry() -> None:
    assert set(TASKS) == {"modular", "parity", "mnist", "cifar10", "stdlib_bytes"}
    for name in TASKS:
        assert task_summary(name).strip()
    data = make_task("modular", p=5, op="mul")
    assert torch.equal(data.x_train, modular(p=5, op="mul").x_train)


def test_make_task_errors() -> None:
    check_raises(["task.name", "'cifar'", "modular", "parity", "mnist"], make_task, "cifar")
    check_raises(["task.prime", "'modular'", "p, op, train_frac"], make_task, "modular", prime=7)
    check_raises(["task.name"], make_task, "parity", name="x")


def test_taskdata_to_moves_tensors() -> None:
    data = modular(p=5, val_frac=0.5)
    moved = data.to("meta")
    for split in ("train", "val", "test"):
        assert getattr(moved, f"x_{split}").device.type == "meta"
        assert getattr(moved, f"y_{split}").device.type == "meta"
        assert getattr(data, f"x_{split}").device.type == "cpu"
    assert (moved.n_train, moved.n_val, moved.n_test) == (data.n_train, data.n_val, data.n_test)
    assert parity(n=3, k=1, n_train=4, n_test=4).to("meta").x_val is None
