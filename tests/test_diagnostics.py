"""Diagnostics: the reference's sanity cases with known answers (shared/reference/diagnostics.md §1.6, §2.3, §3),
the Diagnostics object's wiring, and an end-to-end run that logs diag rows."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from egalitarian.build import make_task
from egalitarian.diagnostics import (
    DEFAULT,
    NAMES,
    Diagnostics,
    collapse_fractions,
    fourier_basis,
    fourier_norms,
    fourier_stats,
    gini,
    gradient_spectrum,
    lar_from_sums,
    log_alignment_ratio,
    logit_frequency_energy,
    nlm_cosine,
    restricted_excluded_loss,
    sum_frequency_basis,
    whitened_cosine,
)
from egalitarian.errors import ConfigError
from egalitarian.grokking import grok_status
from egalitarian.losses import cross_entropy
from egalitarian.methods import build_optimizer
from egalitarian.models import MLP, Transformer
from egalitarian.rundir import MetricRow
from egalitarian.train import train

D64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def orthonormal(n, k, seed=0):
    return torch.linalg.qr(torch.randn(n, k, generator=gen(seed), dtype=D64)).Q


# ------------------------------------------------------------------------------------------- LAR (§1.6)


def test_lar_random_matrices_is_one_half():
    W = torch.randn(113, 128, generator=gen(0), dtype=D64)
    X = torch.randn(4096, 128, generator=gen(1), dtype=D64)
    lar, keff = log_alignment_ratio(W, X)
    assert abs(lar - 0.5) < 0.01
    assert keff == pytest.approx(128 ** (2 * (1 - lar)))


def test_lar_rank_one_aligned_is_one():
    u = torch.randn(113, 1, generator=gen(0), dtype=D64)
    v = orthonormal(128, 1, seed=1)
    c = torch.randn(500, 1, generator=gen(2), dtype=D64) + 3.0  # c_t != 0
    lar, keff = log_alignment_ratio(u @ v.mT, c @ v.mT)
    assert lar == pytest.approx(1.0, abs=1e-12) and keff == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("k, expected", [(2, 0.928571), (5, 0.834148), (10, 0.762719), (20, 0.691291), (64, 0.571429)])
def test_lar_k_subspace_gives_k_eff_k(k, expected):
    n = 128
    S = orthonormal(n, k, seed=k)
    Uk = orthonormal(113, k, seed=100 + k)
    W = 3 * Uk @ S.mT
    X = torch.randn(2000, k, generator=gen(k), dtype=D64) @ S.mT  # non-degenerate inside S
    lar, keff = log_alignment_ratio(W, X)
    assert lar == pytest.approx(1 - math.log(k) / (2 * math.log(n)), abs=1e-12)
    assert lar == pytest.approx(expected, abs=1e-6) and keff == pytest.approx(k, abs=1e-6)


def test_lar_flat_side_gives_one_half_not_the_k_prediction():
    n = 128
    Q = orthonormal(n, n, seed=3)
    X = torch.randn(1000, n, generator=gen(4), dtype=D64) * torch.logspace(0, 3, n, dtype=D64)  # anisotropic
    assert log_alignment_ratio(2.5 * Q, X)[0] == pytest.approx(0.5, abs=1e-12)
    W10 = orthonormal(n, 10, seed=5).mT  # 10 orthonormal rows
    lar, _ = log_alignment_ratio(W10, torch.eye(n, dtype=D64))
    assert lar == pytest.approx(0.5, abs=1e-12) and abs(lar - (1 - math.log(10) / (2 * math.log(n)))) > 0.2


def test_lar_invariances():
    W = torch.randn(40, 64, generator=gen(0), dtype=D64)
    X = torch.randn(300, 64, generator=gen(1), dtype=D64) @ torch.randn(64, 64, generator=gen(2), dtype=D64)
    Q = orthonormal(64, 64, seed=3)
    base = log_alignment_ratio(W, X)[0]
    assert log_alignment_ratio(7 * W, 0.01 * X)[0] == pytest.approx(base, abs=1e-12)
    assert log_alignment_ratio(W @ Q.mT, X @ Q.mT)[0] == pytest.approx(base, abs=1e-12)


def test_lar_null_space_inputs_give_minus_inf_without_raising():
    W = torch.zeros(8, 16, dtype=D64)
    W[:, :4] = torch.randn(8, 4, generator=gen(1), dtype=D64)  # row space = first 4 coordinates
    X = torch.zeros(50, 16, dtype=D64)
    X[:, 4:] = torch.randn(50, 12, generator=gen(2), dtype=D64)  # inputs in the null space: Z = 0 exactly
    lar, keff = log_alignment_ratio(W, X)
    assert lar == -math.inf and keff == math.inf
    assert math.isnan(log_alignment_ratio(torch.zeros(8, 16, dtype=D64), X)[0])


def test_lar_forward_form_equals_spectral_form():
    m, n = 30, 50
    W = torch.randn(m, n, generator=gen(0), dtype=D64)
    X = torch.randn(400, n, generator=gen(1), dtype=D64) * torch.linspace(0.1, 3, n, dtype=D64)
    _, s, Vh = torch.linalg.svd(W, full_matrices=True)
    sig = torch.zeros(n, dtype=D64)
    sig[:m] = s
    p = sig**2 / (sig**2).sum()
    q = (X @ Vh.mT).pow(2).sum(0) / X.pow(2).sum()
    spectral = 1 + math.log(float((p * q).sum())) / (2 * math.log(n))
    lar, keff = log_alignment_ratio(W, X)
    assert lar == pytest.approx(spectral, abs=1e-10) and keff == pytest.approx(1 / float((p * q).sum()), rel=1e-10)


def test_lar_pooled_sums_equal_one_pass_but_averaged_chunk_lars_do_not():
    n = 32
    W = torch.randn(10, n, generator=gen(0), dtype=D64)
    chunks = [torch.randn(100, n, generator=gen(i), dtype=D64) * (i + 1) ** 2 for i in range(3)]
    chunks[0] = chunks[0] @ W.mT @ W  # one chunk aligned with W, the others not
    ss = {"z": 0.0, "x": 0.0, "nz": 0, "nx": 0}
    for X in chunks:
        Z = X @ W.mT
        ss["z"] += float(Z.pow(2).sum())
        ss["nz"] += Z.numel()
        ss["x"] += float(X.pow(2).sum())
        ss["nx"] += X.numel()
    pooled = lar_from_sums(ss["z"], ss["nz"], float(W.pow(2).sum()), W.numel(), ss["x"], ss["nx"], n)
    one_pass = log_alignment_ratio(W, torch.cat(chunks))[0]
    assert pooled == pytest.approx(one_pass, abs=1e-12)
    averaged = sum(log_alignment_ratio(W, X)[0] for X in chunks) / len(chunks)
    assert abs(averaged - one_pass) > 0.01


@pytest.mark.parametrize("bias", [False, True])
def test_lar_hook_excludes_the_output_bias(bias):
    data = make_task("modular", p=7, train_frac=0.5)
    torch.manual_seed(0)
    model = MLP(14, 16, 7, out_bias=bias)
    if bias:
        with torch.no_grad():
            model.layers[-1].bias.fill_(100.0)
    out = Diagnostics(["lar"], model, data, cross_entropy).compute()
    with torch.no_grad():
        X = torch.relu(model.layers[0](data.x_train))
    assert out["diag_lar"] == pytest.approx(log_alignment_ratio(model.layers[-1].weight, X)[0], abs=1e-6)
    assert out["diag_keff"] == pytest.approx(16 ** (2 * (1 - out["diag_lar"])), rel=1e-9)


# ------------------------------------------------------------------------------------- spectrum (§2.3)


def test_spectrum_of_a_constructed_matrix():
    s = torch.tensor([10.0, 5.0, 1.0, 0.1], dtype=D64)
    G = orthonormal(7, 4, seed=0) @ torch.diag(s) @ orthonormal(6, 4, seed=1).mT
    pi = s / s.sum()
    erank = math.exp(-float((pi * pi.log()).sum()))
    for g, tol in ((G, 1e-12), (G.float(), 1e-5)):
        out = gradient_spectrum(g)
        assert out["smax"] == pytest.approx(10, rel=tol) and out["smin"] == pytest.approx(0.1, rel=tol)
        assert out["cond"] == pytest.approx(100, rel=tol) and out["rank"] == 4
        assert out["srank"] == pytest.approx(126.01 / 100, rel=tol) == 1.2601
        assert out["erank"] == pytest.approx(erank, rel=tol) and erank == pytest.approx(2.3705, abs=1e-4)
        assert out["cond_med"] == pytest.approx(2, rel=tol)  # s_1 / s_2 (r0 = 4)
        assert out["gnorm"] == pytest.approx(math.sqrt(126.01), rel=tol)


def test_spectrum_identity_rank_one_scale_and_zero():
    out = gradient_spectrum(torch.eye(9))
    assert out["cond"] == pytest.approx(1) and out["erank"] == pytest.approx(9) and out["srank"] == pytest.approx(9)
    ab = torch.randn(12, 1, generator=gen(0)) @ torch.randn(1, 8, generator=gen(1))
    r1 = gradient_spectrum(ab)
    assert r1["rank"] == 1 and r1["cond"] == 1 and r1["erank"] == pytest.approx(1) and r1["srank"] == pytest.approx(1)
    G = torch.randn(20, 30, generator=gen(2), dtype=D64)
    a, b = gradient_spectrum(G), gradient_spectrum(1e-3 * G)
    for k in ("cond", "erank", "srank", "rank"):
        assert a[k] == pytest.approx(b[k], rel=1e-10)
    z = gradient_spectrum(torch.zeros(4, 5))
    assert z["smax"] == 0 and z["rank"] == 0 and math.isnan(z["cond"])


def test_spectrum_flattens_conv_kernels():
    k = torch.randn(8, 3, 3, 3, generator=gen(0), dtype=D64)
    assert gradient_spectrum(k)["smax"] == pytest.approx(float(torch.linalg.svdvals(k.reshape(8, 27))[0]))


def test_whitened_cosine_distortion():
    U, V = orthonormal(10, 4, seed=0), orthonormal(6, 4, seed=1)
    for s, expected in (([1, 1, 1, 1], 1.0), ([1, 1e-6, 1e-6, 1e-6], 0.5)):
        G = U @ torch.diag(torch.tensor(s, dtype=D64)) @ V.mT
        assert whitened_cosine(G) == pytest.approx(expected, abs=1e-5)
    G = torch.randn(12, 9, generator=gen(2), dtype=D64)
    s = torch.linalg.svdvals(G)
    closed = float(s.sum()) / (math.sqrt(len(s)) * float(s.pow(2).sum().sqrt()))  # Σs / (√r0 ‖s‖)
    assert whitened_cosine(G) == pytest.approx(closed, abs=1e-10)


# ------------------------------------------------------------------------------------------ Fourier (§3b)

P, KEYS = 113, [14, 35, 41, 42, 52]


def test_fourier_basis_is_orthonormal():
    for p in (113, 10):
        F = fourier_basis(p)
        assert torch.allclose(F @ F.mT, torch.eye(p, dtype=D64), atol=1e-12)


def waves(freqs, seed=0):
    x = torch.arange(P, dtype=D64)
    g = gen(seed)
    E = torch.zeros(P, 128, dtype=D64)
    for k in freqs:
        w = 2 * math.pi * k * x / P
        E += torch.cos(w)[:, None] * torch.randn(128, generator=g, dtype=D64)
        E += torch.sin(w)[:, None] * torch.randn(128, generator=g, dtype=D64)
    return E


def test_fourier_gini_of_a_pure_frequency():
    N = fourier_norms(waves([14]))
    s = fourier_stats(N)
    assert int(torch.argmax(N[1:])) + 1 == 14 and s["keys"][0] == 14
    assert s["gini"] == pytest.approx(55 / 56, abs=1e-12) and s["top"] == pytest.approx(1.0) and s["nfreq"] == 1


def test_fourier_five_frequencies_random_and_shift():
    s5 = fourier_stats(fourier_norms(waves(KEYS)))
    assert sorted(s5["keys"]) == KEYS and s5["gini"] == pytest.approx(0.912, abs=0.01) and s5["nfreq"] <= 5
    rnd = fourier_norms(torch.randn(P, 128, generator=gen(1), dtype=D64))
    assert gini(rnd[1:]) < 0.1
    E = waves(KEYS, seed=3)
    assert torch.allclose(fourier_norms(torch.roll(E, 17, 0)), fourier_norms(E), atol=1e-10)
    assert math.isnan(gini(torch.zeros(5)))


# ------------------------------------------------------------------------------- restricted / excluded (§3c)


def grid():
    a = torch.arange(P).repeat_interleave(P)
    b = torch.arange(P).repeat(P)
    mask = torch.rand(P * P, generator=gen(0)) < 0.3
    return a, b, (a + b) % P, mask


def test_restricted_and_excluded_loss_of_the_fourier_algorithm():
    a, b, y, mask = grid()
    c = torch.arange(P, dtype=D64)
    L = sum(3 * torch.cos(2 * math.pi * k * ((a + b).to(D64)[:, None] - c) / P) for k in KEYS)
    r = restricted_excluded_loss(L, y, mask, P, KEYS)
    assert r["restricted"] == pytest.approx(r["grid_loss"], abs=1e-12) and r["grid_loss"] == pytest.approx(
        0.004324, abs=1e-6)
    assert r["excluded"] == pytest.approx(math.log(P), abs=1e-9)
    assert sorted((torch.argsort(logit_frequency_energy(L, P), descending=True)[:5] + 1).tolist()) == KEYS
    r0 = restricted_excluded_loss(L, y, mask, P, [])  # no key frequency: excluded = full, restricted = mean logits
    assert r0["excluded"] == pytest.approx(r["grid_loss"], abs=1e-12)
    assert r0["restricted"] == pytest.approx(math.log(P), abs=1e-9)


def test_restricted_and_excluded_loss_of_memorizing_logits():
    a, b, y, mask = grid()
    L = torch.randn(P * P, P, generator=gen(1), dtype=D64)
    L[mask.nonzero().squeeze(1), y[mask]] += 10
    r = restricted_excluded_loss(L, y, mask, P, KEYS)
    train = float(nn.functional.cross_entropy(L[mask], y[mask]))
    assert train == pytest.approx(0.0135, abs=0.002) and r["excluded"] == pytest.approx(train, abs=0.01)
    assert r["restricted"] == pytest.approx(4.48, abs=0.1)


def test_sum_frequency_basis_is_orthonormal_and_centred():
    D = sum_frequency_basis(P, KEYS)
    assert torch.allclose(D.mT @ D, torch.eye(10, dtype=D64), atol=1e-12) and float(D.sum(0).abs().max()) < 1e-10
    with pytest.raises(ValueError, match="key frequency"):
        sum_frequency_basis(P, [57])


# ---------------------------------------------------------------------------------- collapse, NLM (§3d, §3e)


@pytest.mark.parametrize("m, sc32, sc64", [(5, 0, 0), (15, 0, 0), (30, 1, 0), (40, 1, 0)])
def test_collapse_fraction_on_hand_logits(m, sc32, sc64):
    z = torch.full((4, 113), -float(m))
    z[:, 0] = 0
    y = torch.zeros(4, dtype=torch.long)
    sc, zero = collapse_fractions(z, y, torch.float32)
    assert sc == sc32 and zero == sc32
    assert collapse_fractions(z.double(), y, D64)[0] == sc64
    assert collapse_fractions(torch.randn(64, 113, generator=gen(0)), torch.zeros(64, dtype=torch.long)) == (0, 0)


def test_nlm_cosine_known_answers():
    x = torch.randn(5, generator=gen(0), dtype=D64)
    W = torch.stack([x, -x]).requires_grad_()
    loss = nn.functional.cross_entropy((W @ x)[None], torch.tensor([0]))
    (g,) = torch.autograd.grad(loss, W)
    assert nlm_cosine(g, W) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(nlm_cosine(torch.ones(3), torch.zeros(3)))
    assert math.isnan(nlm_cosine(torch.zeros(3), torch.ones(3)))


# ------------------------------------------------------------------------------------ the Diagnostics object


def test_unknown_or_inapplicable_names_are_config_errors():
    data = make_task("modular", p=7, train_frac=0.5)
    model = MLP(14, 8, 7)
    with pytest.raises(ConfigError, match=r"diagnostics.*'specturm'.*allowed: default, spectrum, lar"):
        Diagnostics(["specturm"], model, data, cross_entropy)
    with pytest.raises(ConfigError, match="diagnostics"):
        Diagnostics("lar", model, data, cross_entropy)
    parity = make_task("parity", n=6, k=1, n_train=32, n_test=32)
    for name in ("fourier", "restricted", "collapse"):
        with pytest.raises(ConfigError, match=f"diagnostics.*'{name}'"):
            Diagnostics([name], MLP(6, 8, 1), parity, cross_entropy)
    mul = make_task("modular", p=7, op="mul", train_frac=0.5)
    with pytest.raises(ConfigError, match="modular addition"):
        Diagnostics(["restricted"], model, mul, cross_entropy)
    d = Diagnostics(["default", "lar", "nlm"], model, data, cross_entropy)
    assert d.names == tuple(n for n in NAMES if n in {*DEFAULT, "nlm"})


def test_wnorm_known_answer():
    data = make_task("modular", p=7, train_frac=0.5)
    model = MLP(14, 8, 7)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(-0.5)
    n = sum(p.numel() for p in model.parameters())
    out = Diagnostics(["wnorm"], model, data, cross_entropy).compute()
    assert out["diag_wnorm"] == pytest.approx(0.5 * math.sqrt(n))
    assert out["diag_wnorm.layers.0.weight"] == pytest.approx(0.5 * math.sqrt(14 * 8))


def test_travel_known_answer():
    data = make_task("modular", p=7, train_frac=0.5)
    model = MLP(14, 8, 7)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        model.layers[1].weight.zero_()  # W₀ = 0: no relative travel
    diag = Diagnostics(["travel"], model, data, cross_entropy)
    start = diag.compute()
    assert start["diag_travel"] == 0.0 and start["diag_travel.layers.0.weight"] == 0.0
    with torch.no_grad():  # in place, as an optimizer moves them: θ₀ is a copy, not a view
        model.layers[0].weight.add_(2.0)
        model.layers[0].bias.sub_(1.0)
        model.layers[1].weight.add_(3.0)
    out = diag.compute()
    n1, nb, n2 = 14 * 8, 8, 8 * 7
    assert out["diag_travel.layers.0.weight"] == pytest.approx(2 * math.sqrt(n1))
    assert out["diag_travel.layers.0.bias"] == pytest.approx(math.sqrt(nb))
    assert out["diag_travel.layers.1.weight"] == pytest.approx(3 * math.sqrt(n2))
    assert out["diag_travel"] == pytest.approx(math.sqrt(4 * n1 + nb + 9 * n2))
    assert out["diag_travel_rel.layers.0.weight"] == pytest.approx(2.0)  # ‖2·1‖/‖1‖
    assert math.isnan(out["diag_travel_rel.layers.1.weight"])
    assert "diag_travel_rel.layers.0.bias" not in out  # 1-D: absolute only
    assert set(out) == {"diag_travel", *(f"diag_travel.{n}" for n, _ in model.named_parameters()),
                        "diag_travel_rel.layers.0.weight", "diag_travel_rel.layers.1.weight"}


def test_travel_of_a_resumed_run_equals_the_uninterrupted_one(tmp_path):
    """The trainer makes Diagnostics before loading the checkpoint, and the init depends on train.seed only, so
    θ₀ is the init on resume too; the last travel is ‖θ_final − θ_init‖ of the checkpoint."""
    from egalitarian.build import build_run
    from egalitarian.config import resolve
    from egalitarian.methods import OPTIMIZERS
    from egalitarian.rundir import read_metrics

    cfg = {
        "task": {"name": "modular", "p": 11, "op": "add", "train_frac": 0.5},
        "model": {"name": "mlp", "hidden": 32},
        "optimizer": {"name": "sgd", "lr": 0.5},
        "train": {"threads": 1, "progress": "off", "batch_size": 16, "max_epochs": 4, "seed": 3},
        "diagnostics": ["travel"],
    }
    train(cfg, tmp_path / "whole")
    train({**cfg, "train": {**cfg["train"], "max_epochs": 2}}, tmp_path / "split")
    train(cfg, tmp_path / "split", resume=True)
    whole, split = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "split")
    travel = [r for r in whole if r.split == "diag" and r.metric.startswith("travel")]
    assert travel == [r for r in split if r.split == "diag" and r.metric.startswith("travel")]
    assert {r.epoch for r in travel} == {0, 1, 2, 3, 4} and travel[0].value == 0.0
    init = build_run(resolve(cfg, OPTIMIZERS)).model.state_dict()
    final = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)["model"]
    dist = math.sqrt(sum(float((final[k].double() - init[k].double()).pow(2).sum()) for k in init))
    last = [r for r in travel if r.metric == "travel"][-1]
    assert last.value == pytest.approx(dist, rel=1e-12)


def test_spectrum_reads_the_raw_gradient_and_the_whitened_angle():
    data = make_task("modular", p=7, train_frac=0.5)
    torch.manual_seed(0)
    model = MLP(14, 16, 7)
    opt = build_optimizer(list(model.named_parameters()), "egd", lr=0.1, whiten=["layers.0.weight"])
    diag = Diagnostics(["spectrum"], model, data, cross_entropy)
    assert diag.compute(opt) == {}  # no gradient yet
    cross_entropy(model(data.x_train), data.y_train).backward()
    raw = model.layers[0].weight.grad.clone()
    opt.step()
    out = diag.compute(opt)
    assert torch.equal(model.layers[0].weight.grad, raw)
    assert out["diag_smax.layers.0.weight"] == pytest.approx(float(torch.linalg.svdvals(raw.double())[0]), rel=1e-6)
    assert out["diag_wcos.layers.0.weight"] == pytest.approx(whitened_cosine(raw))
    assert "diag_wcos.layers.1.weight" not in out and "diag_cond.layers.1.weight" in out


@pytest.mark.parametrize(("encoding", "kwargs"), [
    ("tokens", {}),
    ("tokens3", {"init": "nanda", "attn_bias": False, "last_only": True}),  # the nanda-add-p113 recipe's model
])
def test_all_diagnostics_on_a_token_transformer(encoding, kwargs):
    data = make_task("modular", p=7, train_frac=0.5, encoding=encoding)
    torch.manual_seed(0)
    model = Transformer(data.vocab_size, data.input_dim, 7, dim=16, depth=1, heads=2, **kwargs)
    diag = Diagnostics(list(NAMES), model, data, cross_entropy, sample_size=20)
    cross_entropy(model(data.x_train), data.y_train).backward()
    out = diag.compute()
    assert diag.unembed_name == "head" and 0 < out["diag_lar"] <= 1
    assert {"diag_fourier_gini", "diag_restricted", "diag_excluded", "diag_nlm", "diag_collapse_frac"} <= set(out)
    assert "diag_cond.tok_emb.weight" in out and "diag_nlm.head.weight" in out
    assert all(isinstance(v, float) for v in out.values())


def test_end_to_end_run_writes_diag_rows_and_trains_identically(tmp_path):
    base = {
        "task": {"name": "modular", "p": 11, "op": "add", "train_frac": 0.5},
        "model": {"name": "mlp", "hidden": 32},
        "optimizer": {"name": "egd", "lr": 0.5},
        "train": {"threads": 1, "progress": "off", "batch_size": 16, "max_epochs": 3},
    }
    plain = train(base, tmp_path / "plain")
    s = train({**base, "diagnostics": ["default", "nlm", "fourier", "restricted", "travel"]}, tmp_path / "diag")
    assert s["final_test_acc"] == plain["final_test_acc"] and s["final_train_acc"] == plain["final_train_acc"]
    assert s["grok_status"] in ("memorizing", "progressing", "grokked", "stalled")
    ck = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=False) for d in ("plain", "diag")]
    assert ck[0]["model"].keys() == ck[1]["model"].keys()
    assert all(torch.equal(ck[0]["model"][k], ck[1]["model"][k]) for k in ck[0]["model"])  # bit-identical weights
    assert [r for r in ck[1]["metrics"] if r[2] != "diag"] == ck[0]["metrics"]  # and the same measurements
    with open(tmp_path / "diag" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    diag = {r["metric"] for r in rows if r["split"] == "diag"}
    assert {"lar", "keff", "wnorm", "cond.layers.0.weight", "wcos.layers.0.weight", "collapse_frac", "nlm",
            "fourier_gini", "restricted", "excluded", "travel", "travel.layers.0.weight",
            "travel_rel.layers.0.weight"} <= diag
    epochs = {int(r["epoch"]) for r in rows if r["split"] == "diag" and r["metric"] == "lar"}
    assert epochs == {0, 1, 2, 3}
    assert {int(r["epoch"]) for r in rows if r["metric"] == "cond.layers.0.weight"} == {1, 2, 3}  # no grad at 0


# ------------------------------------------------------------------------------------------- grok status


def history(n=40, train_acc=lambda t: 1.0, test_acc=lambda t: 0.0, test_loss=lambda t: 5.0, **diag):
    rows = []
    for t in range(n):
        rows += [(t, t, "train", "acc", train_acc(t)), (t, t, "train", "loss", 4.0 - 0.05 * t),
                 (t, t, "test", "acc", test_acc(t)), (t, t, "test", "loss", test_loss(t))]
        rows += [(t, t, "diag", k, f(t)) for k, f in diag.items()]
    return rows


def test_grok_status_rules_on_synthetic_histories():
    assert grok_status(history(test_acc=lambda t: 0.96 if t == 30 else 0.5))[0] == "grokked"
    assert grok_status(history(train_acc=lambda t: 0.02 * t))[0] == "memorizing"
    assert grok_status(history(train_acc=lambda t: 0.3, test_acc=lambda t: 0.01 * t))[0] == "progressing"
    flat = dict(train_acc=lambda t: 0.3)
    assert grok_status([r for r in history(**flat) if r[3] != "loss"])[0] == "stalled"  # not fitting, nothing moves
    assert grok_status(history(test_loss=lambda t: 5 - 0.05 * t))[0] == "progressing"
    assert grok_status(history(test_loss=lambda t: 5 + 0.05 * t))[0] == "memorizing"
    assert grok_status(history())[0] == "stalled"  # memorized, test loss flat
    assert grok_status(history(restricted=lambda t: 4.5 - 0.02 * t))[0] == "progressing"
    assert grok_status(history(fourier_gini=lambda t: 0.01 + 0.001 * t))[0] == "progressing"
    collapsed = history(test_loss=lambda t: 5 - 0.05 * t, collapse_frac=lambda t: 0.9)
    status, reason = grok_status(collapsed)
    assert status == "stalled" and "collapse" in reason
    # flat over the last quarter of the run, but the test loss rose before: a turning point, not a stall
    peak = history(n=80, test_loss=lambda t: 5 + 0.05 * min(t, 62))
    status, reason = grok_status(peak)
    assert status == "memorizing" and "twice the window" in reason
    assert grok_status(history(n=5))[0] == "memorizing"
    named = [MetricRow(*r) for r in history()]  # rows as read back from metrics.csv or a store
    assert grok_status(named) == grok_status(history())


def test_logged_lar_of_a_trained_transformer_checkpoint_equals_the_svd_spectral_form(tmp_path):
    """Issue #18: the LAR the trainer logs, checked on a real checkpoint (not a synthetic matrix) against an
    independent evaluation of the spectral form: W's SVD gives the weight spectrum p, the unembedding inputs'
    projections on W's right singular vectors give the activation spectrum q, LAR = 1 + ln(Σ p q)/(2 ln n)."""
    import numpy as np

    from egalitarian.build import build_run
    from egalitarian.config import resolve
    from egalitarian.methods import OPTIMIZERS
    from egalitarian.rundir import read_metrics

    cfg = {
        "task": {"name": "modular", "p": 23, "op": "add", "train_frac": 0.5, "encoding": "tokens"},
        "model": {"name": "transformer", "dim": 32, "depth": 1, "heads": 4, "d_mlp": 64, "norm": "none"},
        "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 1.0},
        "train": {"threads": 1, "progress": "off", "batch_size": 0, "max_epochs": 150, "eval_every": 50,
                  "stop_after_grok": False},
        "diagnostics": ["lar"],
    }
    train(cfg, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    logged = {r.step: r.value for r in rows if r.split == "diag" and r.metric == "lar"}
    final_step = max(logged)
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    run = build_run(resolve(cfg, OPTIMIZERS))
    run.model.load_state_dict(ck["model"])
    with torch.no_grad():  # the unembedding's inputs: the answer position's final residual stream, no hook
        X = run.model.hidden_states(run.data.x_train[:256])[:, -1].double().numpy()
    W = run.model.head.weight.detach().double().numpy()  # (p, dim): n = dim inputs
    n = W.shape[1]
    _, s, Vt = np.linalg.svd(W, full_matrices=True)
    sig2 = np.zeros(n)
    sig2[: len(s)] = s**2
    p = sig2 / sig2.sum()
    q = ((X @ Vt.T) ** 2).sum(0) / (X**2).sum()
    spectral = 1 + np.log((p * q).sum()) / (2 * np.log(n))
    assert logged[final_step] == pytest.approx(spectral, abs=1e-6)
    assert logged[0] != pytest.approx(logged[final_step], abs=1e-3)  # training moved it: not a constant
