"""Numerical edge cases of the whitening, and fuzzing of config parsing and the CLI.

Whitening contract: zero → zeros; NaN/inf → FloatingPointError (or propagated on request); the polar factor is
scale-invariant, so huge (1e30) and tiny (1e-30) gradients give the same U Vᵀ as moderate ones.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egalitarian.cli import main
from egalitarian.config import TRAIN_DEFAULTS, apply_overrides, resolve, train_settings
from egalitarian.errors import ConfigError
from egalitarian.linalg import polar

EXACT = ["svd", "gram-eigh", "auto"]


def _ref(G: torch.Tensor) -> torch.Tensor:
    U, s, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    keep = (s > max(G.shape[-2:]) * torch.finfo(torch.float32).eps * s[..., :1]).double()
    return (U * keep.unsqueeze(-2)) @ Vh


@pytest.mark.parametrize("method", ["svd", "gram-eigh", "auto", "newton-schulz", "rsvd"])
@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1.0, 1e20, 1e30])
def test_huge_and_tiny_gradients_are_scale_invariant(method, scale):
    G = torch.randn(20, 35, generator=torch.Generator().manual_seed(0))
    rsvd = {"rank": 20, "generator": torch.Generator().manual_seed(0)} if method == "rsvd" else {}  # rsvd's knobs
    out = polar(G * scale, method, **rsvd)
    assert torch.isfinite(out).all()
    tol = 1e-4 if method in ("newton-schulz", "rsvd") else 1e-5
    torch.testing.assert_close(out.double(), _ref(G), atol=tol, rtol=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    m=st.integers(1, 10),
    n=st.integers(1, 10),
    log_scale=st.floats(-25, 25),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]),
    method=st.sampled_from(EXACT),
    seed=st.integers(0, 2**31 - 1),
)
def test_polar_fuzz_shapes_dtypes_scales(m, n, log_scale, dtype, method, seed):
    scale = 10.0**log_scale
    if dtype in (torch.float16, torch.bfloat16):
        scale = min(max(scale, 1e-3), 1e3)  # stay inside the half-precision range
    G = (torch.randn(m, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)
    out = polar(G, method)
    assert out.dtype == dtype and out.shape == G.shape and torch.isfinite(out).all()
    Gd = G.double()
    if Gd.abs().max() == 0:
        assert torch.equal(out, torch.zeros_like(out))
        return
    sv = torch.linalg.svdvals(out.double())
    sg = torch.linalg.svdvals(Gd)
    kept = int((sg > max(m, n) * torch.finfo(torch.float32).eps * sg[0]).sum())
    tol = {torch.float16: 5e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-5)
    assert (sv[:kept] - 1).abs().max() < tol  # unit singular values on the kept subspace
    assert bool((sv[kept:].abs() < tol).all())  # and nothing else


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_gradient_is_refused_by_every_backend(bad):
    G = torch.randn(6, 9)
    G[2, 3] = bad
    for method in ["svd", "gram-eigh", "newton-schulz", "rsvd", "auto"]:
        with pytest.raises(FloatingPointError, match="NaN or inf"):
            polar(G, method)


_FIELDS = sorted(TRAIN_DEFAULTS)
_VALUES = st.one_of(
    st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
)

BASE = {
    "task": {"name": "modular", "p": 7},
    "model": {"name": "mlp", "hidden": 8},
    "optimizer": {"name": "sgd", "lr": 0.1},
}


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(_FIELDS + ["bogus", "max_epoch", ""]), value=_VALUES)
def test_resolve_fuzz_only_ever_raises_config_error(field, value):
    cfg = {**BASE, "train": {field: value}}
    try:
        out = resolve(cfg)
    except ConfigError as e:
        assert field in str(e) or "max_epochs" in str(e)
        return
    assert train_settings(out)[field] == value  # accepted values are kept as given


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=30))
def test_override_fuzz_only_ever_raises_config_error(text):
    try:
        cfg = apply_overrides(BASE, [text])
        resolve(cfg)
    except ConfigError:
        pass


MALFORMED = [
    "[task\nname = 'modular'",  # broken table header
    "task = 5",  # a section that is a value
    "[task]\nname = 'modular'\np = 'seven'\n[model]\nname='mlp'\n[optimizer]\nname='sgd'",
    "[task]\nname = 'nope'\n[model]\nname='mlp'\n[optimizer]\nname='sgd'",
    "[task]\nname = 'modular'\n[model]\nname='cnn'\n[optimizer]\nname='sgd'",
    "[task]\nname = 'modular'\n[model]\nname='mlp'\n[optimizer]\nname='sgd'\nlr = 'fast'",
    "[task]\nname = 'modular'\n[model]\nname='mlp'\nhidden = -3\n[optimizer]\nname='sgd'",
    "[task]\nname = 'modular'\n[model]\nname='mlp'\n[optimizer]\nname='sgd'\n[train]\nbatch_size = 1.5",
    "[task]\nname = 'modular'\np = 4\nop = 'div'\n[model]\nname='mlp'\n[optimizer]\nname='sgd'",
    "\x00\x01 garbage",
    "",
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_configs_exit_2_with_one_line(tmp_path, capsys, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    rc = main(["run", "--config", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("egd: error:") and "Traceback" not in err[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60))
def test_cli_fuzz_never_shows_a_traceback(tmp_path, capsys, text):
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    rc = main(["run", "--config", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and err.startswith("egd: error:")
