"""Label shuffling (``train.shuffle_labels_at``), the RAdam and RMSprop methods and ``egd reproduce table8`` (the EGD
paper's Table 8, App. E), against hand computations and references written here."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from test_cifar10 import write_batches
from test_tasks import write_mnist
from test_train import assert_same, load_ckpt, make_cfg, read_rows

import egalitarian.train as T
from egalitarian.build import make_task
from egalitarian.cli import main
from egalitarian.config import TRAIN_DEFAULTS, load_config, resolve
from egalitarian.errors import ConfigError
from egalitarian.methods import OPTIMIZERS, build_optimizer
from egalitarian.models import MLP
from egalitarian.reproduce import RunResult, reproduce
from egalitarian.reproduce import table8 as T8
from egalitarian.rundir import MetricRow
from egalitarian.sweep import expand
from egalitarian.train import train

MODULAR = {"name": "modular", "p": 11, "op": "add", "train_frac": 0.5}  # 60 training pairs, 11 classes
ADAM = {"name": "adam", "lr": 1e-2}

# ---------------------------------------------------------------------------------------------- the config


def _resolve_train(**train):
    return resolve({"task": MODULAR, "model": {"name": "mlp"}, "optimizer": {"name": "sgd"}, "train": train})


ALLOWED = "must be a list of strictly increasing integers >= 1"


@pytest.mark.parametrize("value, message", [
    ([0], ALLOWED), ([-1], ALLOWED), ([3, 1], ALLOWED), ([2, 2], ALLOWED), ([1.5], ALLOWED),
    ([True], "must be of type list"), ("3", "must be of type list"), (3, "must be of type list"),
])
def test_bad_shuffle_epochs_are_config_errors_naming_the_field(value, message):
    with pytest.raises(ConfigError) as e:
        _resolve_train(shuffle_labels_at=value)
    assert str(e.value).startswith(f"train.shuffle_labels_at = {value!r}: {message}"), str(e.value)


def test_the_default_is_left_out_of_the_resolved_config_and_listed():
    assert TRAIN_DEFAULTS["shuffle_labels_at"] == []
    assert "shuffle_labels_at" not in _resolve_train()["train"]
    assert "shuffle_labels_at" not in _resolve_train(shuffle_labels_at=[])["train"]
    assert _resolve_train(shuffle_labels_at=[1, 4])["train"]["shuffle_labels_at"] == [1, 4]
    assert TRAIN_DEFAULTS["shuffle_labels_at"] == []  # resolving did not fill the shared default


def test_cli_lists_the_field_and_refuses_a_bad_value_in_one_line(tmp_path, capsys):
    assert main(["list", "fields"]) == 0
    assert "shuffle_labels_at" in capsys.readouterr().out
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[task]\nname = "modular"\np = 7\n[model]\nname = "mlp"\nhidden = 8\n[optimizer]\nname = "sgd"\n')
    code = main(["run", "--config", str(cfg), "--set", "train.shuffle_labels_at=[2, 1]", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("egd: error: train.shuffle_labels_at = [2, 1]: must be a list of strictly increasing")


def test_run_ids_of_existing_configs_are_unchanged():
    """Ids computed before the field existed (mod-add-p97 and parity-k3, EGD, seed 0)."""
    for recipe, expected in (("mod-add-p97", "ae9351be88a44426"), ("parity-k3", "8be97c82074e9d86")):
        base = load_config(recipe)
        (run,) = expand(base, {"seed": [0]}, [{"method": "egd"}], {})
        assert run.id == expected
        (same,) = expand(base, {"seed": [0]}, [{"method": "egd"}], {"train.shuffle_labels_at": []})
        assert same.id == expected
        (other,) = expand(base, {"seed": [0]}, [{"method": "egd"}], {"train.shuffle_labels_at": [3]})
        assert other.id != expected


# -------------------------------------------------------------------------------------------- the schedule


def reference_permutation(n: int, shuffle_seed: int, index: int) -> torch.Tensor:
    """The documented draw: torch.randperm(n) from a generator seeded with the first 8 bytes (little endian, top bit
    cleared) of SHA-256("label-shuffle:{shuffle_seed}:{index}")."""
    digest = hashlib.sha256(f"label-shuffle:{shuffle_seed}:{index}".encode()).digest()
    seed = int.from_bytes(digest[:8], "little") & (2**63 - 1)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _spy(monkeypatch):
    """Record (inputs, labels, test labels) of every training step."""
    seen = []
    real = T.train_step

    def spy(run, xb, yb, *args, **kwargs):
        seen.append((xb.clone(), yb.clone(), run.data.y_test.clone()))
        return real(run, xb, yb, *args, **kwargs)

    monkeypatch.setattr(T, "train_step", spy)
    return seen


def _indices(xb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` that ``xb`` holds (the one-hot pair encodings are distinct)."""
    hit = (xb[:, None, :] == x[None, :, :]).all(-1)
    assert (hit.sum(1) == 1).all()
    return hit.int().argmax(1)


def test_labels_are_permuted_at_the_start_of_the_given_epochs_and_the_batch_order_is_kept(monkeypatch):
    # the trainer's split (split_seed 0), built here
    data = make_task("modular", **{k: v for k, v in MODULAR.items() if k != "name"})
    x, y0, n = data.x_train, data.y_train.clone(), data.n_train
    bs, per_epoch, epochs = 20, 3, 6  # 60 rows: each epoch sees every row once
    seen = _spy(monkeypatch)
    summary = train(make_cfg(ADAM, MODULAR, batch_size=bs, max_epochs=epochs, stop_after_grok=False,
                             shuffle_seed=5, shuffle_labels_at=[2, 4]))
    shuffled = list(seen)
    seen.clear()
    plain = train(make_cfg(ADAM, MODULAR, batch_size=bs, max_epochs=epochs, stop_after_grok=False, shuffle_seed=5))
    assert len(shuffled) == len(seen) == per_epoch * epochs
    # the batch order is the one without the option, and the test labels are never touched
    for (xa, _, ta), (xb, _, tb) in zip(shuffled, seen, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ta, data.y_test) and torch.equal(tb, data.y_test)
    assert summary["label_shuffles"] == [{"epoch": 2, "step": 6}, {"epoch": 4, "step": 12}]
    assert "label_shuffles" not in plain

    def labels_of_epoch(e: int) -> torch.Tensor:
        y = torch.full((n,), -1)
        for xb, yb, _ in shuffled[e * per_epoch:(e + 1) * per_epoch]:
            y[_indices(xb, x)] = yb
        assert (y >= 0).all()
        return y

    per_epoch_labels = [labels_of_epoch(e) for e in range(epochs)]
    y1 = y0[reference_permutation(n, 5, 0)]
    y2 = y1[reference_permutation(n, 5, 1)]
    for e, expected in enumerate([y0, y0, y1, y1, y2, y2]):
        assert torch.equal(per_epoch_labels[e], expected), e
    for a, b in ((y0, y1), (y1, y2)):  # a permutation of the labels (same class counts), not the same labels
        assert not torch.equal(a, b) and torch.equal(a.sort().values, b.sort().values)
    assert (y1 != y0).float().mean() > 0.5  # 11 classes: most labels change


@pytest.mark.parametrize("cut", [6, 7, 13], ids=["boundary-before-the-shuffle", "mid-epoch-after", "after-both"])
def test_resume_is_bit_identical_across_the_shuffles(tmp_path, cut):
    base = dict(batch_size=16, stop_after_grok=False, shuffle_labels_at=[2, 4])  # 3 steps per epoch
    one_go, split = tmp_path / "a", tmp_path / "b"
    whole = train(make_cfg(ADAM, MODULAR, max_epochs=6, **base), one_go)
    first = train(make_cfg(ADAM, MODULAR, max_steps=cut, max_epochs=6, **base), split)
    assert first["steps"] == cut and len(first["label_shuffles"]) == (cut > 6) + (cut > 12)
    again = train(make_cfg(ADAM, MODULAR, max_epochs=6, **base), split, resume=True)
    assert again["label_shuffles"] == whole["label_shuffles"] == [{"epoch": 2, "step": 6}, {"epoch": 4, "step": 12}]
    a, b = load_ckpt(one_go), load_ckpt(split)
    assert_same(a["model"], b["model"], "model")
    assert_same(a["optimizer"], b["optimizer"], "optimizer")
    rows_a, rows_b = read_rows(one_go / "metrics.csv"), read_rows(split / "metrics.csv")
    # the split run has one extra evaluation where its first budget ended mid-epoch; otherwise identical
    assert [r for r in rows_b if r[0] != cut or r in rows_a] == rows_a


def test_resume_without_replaying_the_shuffle_would_differ(tmp_path, monkeypatch):
    """The comparison above notices wrong labels after a resume: skip the replay and the runs part."""
    base = dict(batch_size=16, stop_after_grok=False, shuffle_labels_at=[2])
    train(make_cfg(ADAM, MODULAR, max_epochs=4, **base), tmp_path / "a")
    train(make_cfg(ADAM, MODULAR, max_steps=7, max_epochs=4, **base), tmp_path / "b")
    calls = []
    monkeypatch.setattr(T, "shuffle_labels", lambda *a: calls.append(a))  # the replay does nothing
    train(make_cfg(ADAM, MODULAR, max_epochs=4, **base), tmp_path / "b", resume=True)
    assert len(calls) == 1
    wa, wb = load_ckpt(tmp_path / "a")["model"], load_ckpt(tmp_path / "b")["model"]
    assert not torch.equal(wa["layers.0.weight"], wb["layers.0.weight"])


# ---------------------------------------------------------------------------------------------- the metric


def _rows(accs: dict[int, float | None]) -> list[MetricRow]:
    rows = [MetricRow(0, 0, "test", "acc", 0.1)]  # step 0: no training accuracy yet
    for e, v in accs.items():
        rows += [MetricRow(10 * e, e, "train", "loss", 9.0), MetricRow(10 * e, e, "train", "acc", v),
                 MetricRow(10 * e, e, "test", "acc", 0.99)]
    return rows


def test_post_shuffle_auc_by_hand():
    rows = _rows({1: 0.9, 2: 0.95, 3: 0.2, 4: 0.5, 5: 0.8, 6: 0.9})
    assert T8.post_shuffle_auc(rows, 2, 3) == pytest.approx(100 * (0.2 + 0.5 + 0.8) / 3)  # epochs 3, 4, 5
    assert T8.post_shuffle_auc(rows, 2, 4) == pytest.approx(100 * (0.2 + 0.5 + 0.8 + 0.9) / 4)
    assert T8.post_shuffle_auc(rows, 0, 1) == pytest.approx(90.0)
    # a later row of the same epoch count (a partial epoch, from an early stop) does not replace the epoch's
    partial = [*rows, MetricRow(63, 5, "train", "acc", 0.0)]
    assert T8.post_shuffle_auc(partial, 2, 3) == pytest.approx(50.0)
    assert math.isnan(T8.post_shuffle_auc(rows, 2, 5))  # epoch 7 was never reached
    assert math.isnan(T8.post_shuffle_auc(_rows({3: 0.2, 4: None, 5: 0.8}), 2, 3))  # the store's NaN
    for bad in ((rows, -1, 3), (rows, 2, 0), (rows, 2.0, 3)):
        with pytest.raises(ValueError):
            T8.post_shuffle_auc(*bad)


def test_run_numbers_from_a_finished_run():
    rows = _rows({1: 0.9, 2: 0.95, 3: 0.2, 4: 0.5})
    shuffles = [{"epoch": 2, "step": 20}]
    r = RunResult("id0", {"shuffle_at": 2, "method": "egd_radam", "seed": 3}, {"label_shuffles": shuffles,
                  "data": "d"}, {}, None, rows)
    got = T8.run_numbers(r, 2)
    assert got == {"shuffle_at": 2, "method": "egd_radam", "seed": 3, "id": "id0",
                   "auc": pytest.approx(100 * (0.2 + 0.5) / 2), "before": pytest.approx(95.0),
                   "curve": {1: pytest.approx(90.0), 2: pytest.approx(95.0), 3: pytest.approx(20.0),
                             4: pytest.approx(50.0)}, "label_shuffles": shuffles, "data": "d"}
    assert T8.method_base(got["method"]) == ("radam", True)


def _result(k, method, seed, auc, data="d", before=90.0, shuffled=None):
    return {"shuffle_at": k, "method": method, "seed": seed, "id": f"{method}{seed}", "auc": auc, "before": before,
            "curve": {k: before, k + 1: auc}, "label_shuffles": [{"epoch": k if shuffled is None else shuffled,
                                                                  "step": 1}], "data": data}


def test_analyse_and_the_table_by_hand():
    results = [_result(1, "adam", 0, 40.0), _result(1, "adam", 1, 44.0), _result(1, "egd_adam", 0, 80.0),
               _result(1, "egd_adam", 1, 78.0), _result(3, "rmsprop", 0, 30.0, "other"),
               _result(3, "egd_rmsprop", 0, 50.0, "other", before=80.0, shuffled=4)]
    res = T8.summarise(results)
    (c1, c3) = res["cells"]
    assert (c1["shuffle_at"], c1["base"], c1["paper"]) == (1, "adam", (43.0, 79.2))
    assert c1["vanilla"]["mean"] == 42.0 and c1["vanilla"]["sd"] == pytest.approx(math.sqrt(8))
    assert c1["egd"]["mean"] == 79.0 and c1["egd"]["n"] == 2 and c1["egd"]["seeds"] == [0, 1]
    assert (c3["base"], c3["vanilla"]["n"], c3["paper"]) == ("rmsprop", 1, (31.6, 54.7)) and math.isnan(
        c3["vanilla"]["sd"])
    assert res["data"] == ["d", "other"]
    assert len(res["shuffle_mismatch"]) == 1 and "egd_rmsprop" in res["shuffle_mismatch"][0]
    rows = T8.table_rows(res)
    assert rows[0] == ["1", "Adam", "42.0 ± 2.8 → 79.0 ± 1.4", "43.0 → 79.2", "2", "90.0 / 90.0"]
    assert rows[1][:4] == ["3", "RMSprop", "30.0 → 50.0", "31.6 → 54.7"]
    text = T8.markdown(res, quick=False, dataset="cifar10", window=10)
    assert "| 1 | Adam | 42.0 ± 2.8 → 79.0 ± 1.4 | 43.0 → 79.2 |" in text and "Data: d; other" in text
    assert "not where planned" in text


def test_the_sweep_plan():
    full = T8.build_sweep(2, False, "out")
    assert full.store.as_posix() == "out/table8.sqlite" and len(full.runs) == 4 * 6 * 2
    by = {(r.params["shuffle_at"], r.params["method"], r.params["seed"]): r for r in full.runs}
    r = by[4, "egd_rmsprop", 1]
    assert r.config["train"]["shuffle_labels_at"] == [4] and r.config["train"]["max_epochs"] == 14
    assert r.config["optimizer"] == {"name": "egd_adam", "base": "rmsprop", "lr": 1e-3, "backend": "svd",
                                     "whiten": ["convs.*.weight", "fc.weight"]}
    assert r.config["task"]["dataset"] == "fashion-mnist" and r.config["task"]["n_train"] == 5000
    assert by[9, "radam", 0].config["optimizer"] == {"name": "radam", "lr": 1e-3}
    quick = T8.build_sweep(2, True, "out", "cifar10")
    assert quick.store.as_posix() == "out/table8-cifar10-quick.sqlite"
    assert sorted((r.params["method"], r.params["seed"]) for r in quick.runs) == [
        ("adam", 0), ("adam", 1), ("egd_adam", 0), ("egd_adam", 1)]
    assert all(r.config["task"] == {"name": "cifar10", "n_train": 512, "n_test": 1000} for r in quick.runs)
    assert all(r.config["train"]["max_epochs"] == 3 for r in quick.runs)
    with pytest.raises(ConfigError, match="--dataset = 'mnist': allowed: fashion-mnist, cifar10"):
        T8.build_sweep(2, True, "out", "mnist")


# --------------------------------------------------------------------------------------------- the methods


def _mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(6, [8], 3, out_bias=True)  # layers.0.weight (8, 6), layers.1.weight (3, 8)


def _batches(k: int = 3):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(10, 6, generator=g), torch.randint(0, 3, (10,), generator=g)) for _ in range(k)]


def _grads(model, x, y):
    for p in model.parameters():
        p.grad = None
    torch.nn.functional.cross_entropy(model(x), y).backward()


@pytest.mark.parametrize("name, reference, kwargs", [
    ("radam", torch.optim.RAdam, {"lr": 0.05, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.01}),
    ("rmsprop", torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "weight_decay": 0.01}),
])
def test_radam_and_rmsprop_take_torchs_steps(name, reference, kwargs):
    ours, theirs = _mlp(), _mlp()
    opt = build_optimizer(list(ours.named_parameters()), name, **kwargs)
    ref = reference(theirs.parameters(), **{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
    for x, y in _batches(6):  # RAdam's rectification starts after its first steps
        for model, o in ((ours, opt), (theirs, ref)):
            _grads(model, x, y)
            o.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rmsprop_and_radam_defaults_are_torchs():
    assert OPTIMIZERS["rmsprop"].defaults == {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0,
                                              "weight_decay": 0.0, "decay": "all"}
    d = OPTIMIZERS["radam"].defaults
    assert (d["lr"], tuple(d["betas"]), d["eps"], d["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-8, 0.0)


def _polar(g: torch.Tensor) -> torch.Tensor:
    U, s, Vh = torch.linalg.svd(g.double(), full_matrices=False)
    keep = (s > max(g.shape) * torch.finfo(torch.float32).eps * s[0]).double()
    return (U * keep) @ Vh


def test_egd_with_an_rmsprop_base_by_hand():
    """Whiten layers.0.weight's gradient (an fp64 SVD here), then RMSprop: v ← αv + (1−α)g², p ← p − lr·g/(√v + ε)
    with torch's α = 0.99; the other parameters get RMSprop on their raw gradients."""
    lr, eps, alpha = 0.01, 1e-8, 0.99
    model, ref = _mlp(), _mlp()
    opt = build_optimizer(list(model.named_parameters()), "egd_adam", base="rmsprop", lr=lr, eps=eps,
                          whiten=["layers.0.weight"], backend="svd")
    params = {n: p.detach().double().clone() for n, p in ref.named_parameters()}
    v = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, y in _batches(3):
        _grads(model, x, y)
        opt.step()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                p.copy_(params[n])
        _grads(ref, x, y)
        for n, p in ref.named_parameters():
            g = _polar(p.grad) if n == "layers.0.weight" else p.grad.double()
            v[n] = alpha * v[n] + (1 - alpha) * g * g
            params[n] = params[n] - lr * g / (v[n].sqrt() + eps)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.double(), params[n], rtol=1e-5, atol=1e-6, msg=n)
    plain = _mlp()
    rms = torch.optim.RMSprop(plain.parameters(), lr=lr, eps=eps)
    for x, y in _batches(3):
        _grads(plain, x, y)
        rms.step()
    assert (plain.layers[0].weight - model.layers[0].weight).abs().max() > 1e-3  # whitening changed the steps


def test_egd_with_a_radam_base_is_whitening_then_torchs_radam():
    model, ref = _mlp(), _mlp()
    opt = build_optimizer(list(model.named_parameters()), "egd_adam", base="radam", lr=0.02,
                          whiten=["layers.0.weight"], backend="svd")
    radam = torch.optim.RAdam(ref.parameters(), lr=0.02)
    for x, y in _batches(6):
        _grads(model, x, y)
        opt.step()
        _grads(ref, x, y)
        ref.layers[0].weight.grad = _polar(ref.layers[0].weight.grad).float()
        radam.step()
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_an_unknown_base_names_the_allowed_ones():
    with pytest.raises(ConfigError, match="optimizer.base = 'lion': must be one of sgd, adam, adamw, radam, rmsprop"):
        build_optimizer(list(_mlp().named_parameters()), "egd_adam", base="lion")


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_reproduce_table8_quick_end_to_end_on_generated_cifar10(tmp_path, monkeypatch, capsys):
    write_batches(tmp_path / "data" / "cifar10" / "cifar-10-batches-py", n=110)  # 550 training, 110 test images
    monkeypatch.setenv("EGD_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(T8, "N_TEST", 100)
    out = tmp_path / "out"
    assert main(["reproduce", "table8", "--quick", "--dataset", "cifar10", "--out", str(out), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    report = out / "table8-cifar10-quick-report"
    assert (out / "table8-cifar10-quick.sqlite").is_file()
    assert (report / "table8.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (report / "table8.md").read_text()
    assert table in printed and "| 1 | Adam |" in table and "43.0 → 79.2" in table
    res = json.loads((report / "table8.json").read_text())
    assert res["window_epochs"] == 2 and res["dataset"] == "cifar10"
    assert {(r["method"], r["seed"]) for r in res["runs"]} == {("adam", 0), ("adam", 1), ("egd_adam", 0),
                                                             ("egd_adam", 1)}
    for r in res["runs"]:
        assert [s["epoch"] for s in r["label_shuffles"]] == [1] and r["label_shuffles"][0]["step"] == 4
        assert r["auc"] == pytest.approx((r["curve"]["2"] + r["curve"]["3"]) / 2)  # epochs 2 and 3, in %
        assert r["data"].startswith("cifar10 (")
    (cell,) = res["cells"]
    assert cell["vanilla"]["n"] == cell["egd"]["n"] == 2 and res["data"][0].startswith("cifar10 (")
    assert (report / "report.html").is_file()
    # resumable: a second call trains nothing and gives the same numbers (the standard report skipped: time)
    import egalitarian.report

    monkeypatch.setattr(egalitarian.report, "write_report", lambda *a: None)
    again = reproduce("table8", quick=True, out=out, dataset="cifar10")
    assert [r["auc"] for r in again["runs"]] == [r["auc"] for r in res["runs"]]


def test_fashion_mnist_from_generated_idx_files_and_missing_data(tmp_path, monkeypatch):
    monkeypatch.setenv("EGD_DATA", str(tmp_path / "data"))
    with pytest.raises(ConfigError, match="egd data fashion-mnist"):  # before any run: no store is made
        reproduce("table8", quick=True, out=tmp_path / "out")
    assert not (tmp_path / "out" / "table8-quick.sqlite").exists()
    (tmp_path / "data" / "fashion-mnist").mkdir(parents=True)
    write_mnist(tmp_path / "data" / "fashion-mnist", n_train=600, n_test=50)
    monkeypatch.setattr(T8, "N_TEST", 50)
    sweep = T8.build_sweep(1, True, tmp_path / "out")
    T8.check_data(sweep)
    cfg = next(r.config for r in sweep.runs if r.params["method"] == "egd_adam")
    cfg["train"]["max_epochs"] = 2
    summary = train(cfg, tmp_path / "run")  # the recipe's CNN on 28x28 IDX images, EGD on the convs and the FC
    assert summary["data"].startswith("fashion-mnist-format IDX files, not the genuine fashion-mnist")
    assert summary["label_shuffles"] == [{"epoch": 1, "step": 4}] and summary["epochs"] == 2


def test_cli_dataset_is_for_table8_only(tmp_path, capsys):
    assert main(["reproduce", "appf", "--dataset", "cifar10", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("egd: error: --dataset = 'cifar10': only table8 takes --dataset")
