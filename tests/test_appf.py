"""``egd reproduce appf`` (App. F, where the solutions end up): the analysis on hand-made tensors and run files,
and one end-to-end run of the command on a tiny recipe."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from egalitarian.cli import main
from egalitarian.errors import ConfigError
from egalitarian.reproduce import RunResult, reproduce
from egalitarian.reproduce import appf as A
from egalitarian.rundir import MetricRow, read_metrics, write_metrics


def state(w, b):
    return {"w": torch.tensor(w, dtype=torch.float32), "b": torch.tensor(b, dtype=torch.float32)}


def test_distances_norms_and_cosine_by_hand():
    init = state([[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0])
    a = state([[3.0, 0.0], [0.0, 0.0]], [0.0, 4.0])  # ‖a‖ = 5
    b = state([[0.0, 0.0], [0.0, 0.0]], [0.0, 2.0])  # ‖b‖ = 2
    assert A.l2_norm(a) == 5.0 and A.l2_distance(a, init) == 5.0
    assert A.l2_distance(a, b) == pytest.approx(math.sqrt(9 + 4))
    assert A.displacement_cosine(a, b, init) == pytest.approx(8 / (5 * 2))  # ⟨(3,0,0,0,0,4), (0,..,0,2)⟩ = 8
    assert math.isnan(A.displacement_cosine(a, init, init))  # no displacement
    w0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert A.relative_distance(w0 * 3, w0, w0) == pytest.approx(2.0)  # ‖2·I‖/‖I‖
    assert math.isnan(A.relative_distance(w0, w0, torch.zeros(2, 2)))
    assert A.matrix_names(a) == ["w"]
    with pytest.raises(ValueError, match="different parameters"):
        A.l2_distance(a, {"w": a["w"]})


def test_singular_values_match_numpy_and_torch():
    W = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    s = A.singular_values(W)
    assert s.dtype == np.float64 and list(s) == sorted(s, reverse=True)
    np.testing.assert_allclose(s, np.linalg.svd(W.double().numpy(), compute_uv=False), rtol=1e-12)
    np.testing.assert_allclose(s, torch.linalg.svd(W.double()).S.numpy(), rtol=1e-12)
    st = A.spectral_stats(W)
    assert st["smax"] == pytest.approx(s[0], rel=1e-6)
    assert st["srank"] == pytest.approx((s**2).sum() / s[0] ** 2, rel=1e-6)
    p = s / s.sum()
    assert st["erank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert A.spectral_stats(torch.eye(4))["erank"] == pytest.approx(4.0)


def test_travel_curve_from_a_run_directory(tmp_path):
    rows = [MetricRow(0, 0, "test", "acc", 0.01), MetricRow(0, 0, "diag", "travel", 0.0),
            MetricRow(0, 0, "diag", "travel.w", 0.0)]
    values = [3.0, 10.0, 12.0, 8.0, 9.0]  # overshoots, then comes back
    for i, v in enumerate(values, 1):
        rows += [MetricRow(9 * i, i, "train", "acc", 1.0), MetricRow(9 * i, i, "diag", "travel", v),
                 MetricRow(9 * i, i, "diag", "travel.w", v / 2)]
    write_metrics(tmp_path / "metrics.csv", rows)
    c = A.travel_curve(read_metrics(tmp_path))
    assert c.steps == [0, 9, 18, 27, 36, 45] and c.epochs == [0, 1, 2, 3, 4, 5] and c.values == [0.0, *values]
    assert c.at_step(27) == 12.0 and math.isnan(c.at_step(28))
    assert c.reach_epoch(0.5) == 2 and c.reach_epoch(0.9) == 2 and c.reach_epoch(1.0) == 2  # first ≥ 4.5, 8.1, 9
    assert c.peak() == (12.0, 3)
    assert A.travel_curve(read_metrics(tmp_path), "travel.w").values == [0.0, *(v / 2 for v in values)]
    store_rows = [MetricRow(0, 0, "diag", "travel", None)]  # the store reads a NaN back as None
    assert math.isnan(A.travel_curve(store_rows).values[0])
    empty = A.travel_curve([])
    assert empty.reach_epoch(0.9) is None and empty.peak()[1] is None


def test_final_state_reads_the_checkpoint_and_names_a_missing_one(tmp_path):
    s = state([[1.0, 2.0]], [3.0])
    torch.save({"model": s, "loop": {}}, tmp_path / "checkpoint.pt")
    got = A.final_state(tmp_path)
    assert got.keys() == s.keys() and all(torch.equal(got[k], s[k]) for k in s)
    with pytest.raises(ConfigError, match="has no checkpoint.pt"):
        A.final_state(tmp_path / "nothing")


def result(method, seed, init, final, weights, grok_epoch=None, epochs=10):
    """A finished run whose travel diagnostic was logged at the start and at the end; its weights into ``weights``."""
    grok = {"step": 9 * grok_epoch, "epoch": grok_epoch, "seconds": 1.0} if grok_epoch else None
    summary = {"grokked": grok is not None, "grok": grok, "epochs": epochs, "steps": 9 * epochs, "seconds": 2.0,
               "status": "grokked" if grok else "budget"}
    travel = A.l2_distance(final, init)
    rows = [MetricRow(0, 0, "diag", "travel", 0.0), MetricRow(9 * epochs, epochs, "test", "acc", 0.5),
            MetricRow(9 * epochs, epochs, "diag", "travel", travel)]
    r = RunResult(f"{method}{seed}", {"method": method, "seed": seed}, summary, {}, None, rows)
    weights[r.id] = (init, final)
    return r


def test_analyse_pairs_the_methods_of_a_seed_and_checks_their_init():
    init = state([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    other = state([[2.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    egd0 = state([[4.0, 0.0], [0.0, 1.0]], [0.0, 0.0])  # W moved by 3 along one entry
    sgd0 = state([[1.0, 0.0], [0.0, 1.0]], [0.0, 1.0])  # b moved by 1
    w: A.Weights = {}
    runs = [result("egd", 0, init, egd0, w, grok_epoch=5), result("sgd", 0, init, sgd0, w, epochs=10),
            result("egd", 1, init, egd0, w, grok_epoch=6), result("sgd", 1, other, sgd0, w, grok_epoch=9),
            result("egd", 2, init, egd0, w, grok_epoch=4)]  # seed 2 has no SGD run: no pair
    res = A.summarise(runs, w)
    assert [p["seed"] for p in res["pairs"]] == [0, 1]
    p0, p1 = res["pairs"]
    assert p0["same_init"] and not p1["same_init"]
    assert p0["distance"] == pytest.approx(math.sqrt(9 + 1))
    assert p0["egd_travel"] == pytest.approx(3.0) and p0["sgd_travel"] == pytest.approx(1.0)
    assert p0["cosine"] == pytest.approx(0.0)  # orthogonal displacements
    assert p0["rel_distance"] == {"w": pytest.approx(3 / math.sqrt(2))}
    assert p0["censored"] == ["sgd"] and p1["censored"] == []
    r0 = next(r for r in res["runs"] if (r["method"], r["seed"]) == ("egd", 0))
    assert r0["travel"] == r0["travel_logged"] == pytest.approx(3.0)
    assert r0["final_norm"] == pytest.approx(math.sqrt(17)) and r0["init_norm"] == pytest.approx(math.sqrt(2))
    assert r0["rel_travel"] == {"w": pytest.approx(3 / math.sqrt(2))}
    np.testing.assert_allclose(r0["spectrum"]["w"], [4.0, 1.0])
    assert r0["grok_epoch"] == 5 and r0["travel_at_grok"] is not None
    text = A.markdown(res, quick=False, budget=10)
    assert "| SGD | 0 | > 10 (censored) | 1*" in text  # a censored run's values are starred
    assert "**EGD median** | 3 seeds | 5 |" in text and "**SGD median** | 2 seeds | 9; 1 > budget |" in text
    assert "| 0* | 3.162 |" in text and "**no**" in text  # seed 0 has a censored run; seed 1's inits differ


TINY = """
name = "tiny-add"
method = "egd"
[task]
name = "modular"
p = 11
op = "add"
train_frac = 0.5
split_seed = 42
encoding = "index"
[model]
name = "mlp"
hidden = 32
out_bias = false
init = "he_normal"
[loss]
name = "cross_entropy"
weight_decay = 1e-4
[train]
batch_size = 16
max_epochs = 100
[methods.egd]
name = "egd"
lr = 0.5
whiten = ["layers.0.weight"]
[methods.sgd]
name = "sgd"
lr = 0.5
"""


@pytest.mark.slow
def test_reproduce_appf_end_to_end_on_a_tiny_recipe(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    monkeypatch.setattr(A, "RECIPE", str(recipe))
    monkeypatch.setattr(A, "QUICK_EPOCHS", 6)
    out = tmp_path / "out"
    assert main(["reproduce", "appf", "--quick", "--out", str(out), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    report = out / "appf-quick-report"
    assert (out / "appf-quick.sqlite").is_file()
    assert (report / "appf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (report / "appf.md").read_text()
    assert table in printed and "## EGD vs SGD, per seed" in table
    res = json.loads((report / "appf.json").read_text())
    assert res["budget_epochs"] == 6 and {(r["method"], r["seed"]) for r in res["runs"]} == {("egd", 0), ("sgd", 0)}
    for r in res["runs"]:  # the logged diagnostic and the checkpoint agree
        assert r["epochs"] <= 6 and r["travel"] == pytest.approx(r["travel_logged"], rel=1e-9) and r["travel"] > 0
        assert len(r["spectrum"]["layers.0.weight"]) == 22 and len(r["spectrum"]["layers.1.weight"]) == 11
    (pair,) = res["pairs"]
    assert pair["same_init"] and pair["distance"] > 0
    assert (report / "report.html").is_file()  # the store's standard report too
    # resumable: a second call trains nothing and gives the same numbers (the standard report skipped: time)
    import egalitarian.report

    monkeypatch.setattr(egalitarian.report, "write_report", lambda *a: None)
    again = reproduce("appf", quick=True, out=out)
    assert [r["travel"] for r in again["runs"]] == [r["travel"] for r in res["runs"]]


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0"], "egd: error: --seeds = '0': "),
    (["--workers", "0"], "egd: error: --workers 0: must be an integer >= 1"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    assert main(["reproduce", "appf", "--quick", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)
