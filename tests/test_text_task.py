"""The byte-level language-model task (tasks.text), its GPT (models.GPT) and runs of the two beyond-grokking
recipes (stdlib-gpt, fashion-mnist-cnn), against bytes and equations written out by hand."""

from __future__ import annotations

import hashlib
import math
import sysconfig
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from egalitarian import route
from egalitarian.build import make_task
from egalitarian.config import load_config
from egalitarian.errors import ConfigError
from egalitarian.methods import build_optimizer
from egalitarian.models import CNN, GPT, count_params
from egalitarian.sweep.spec import seed_fields
from egalitarian.tasks import text
from egalitarian.train import train
from tests.test_tasks import write_mnist

GPT_MATRICES = ["blocks.*.attn.*.weight", "blocks.*.mlp.*.weight"]
CORPUS = b"0123456789ABCDEFGHIJ"  # 20 bytes: train "0123456789ABCD" (0.7), held out "EFGHIJ"


@pytest.fixture
def tiny_corpus(monkeypatch):
    monkeypatch.setattr(text, "stdlib_corpus", lambda n_bytes: CORPUS[:n_bytes])


def rows(t: torch.Tensor) -> list[bytes]:
    return [bytes(r.tolist()) for r in t]


def test_windows_and_split_by_hand(tiny_corpus):
    data = text.stdlib_bytes(context=3, n_bytes=20, train_frac=0.7, n_test=8, window_seed=5)
    # train: every window of "0123456789ABCD" but the last ("ABC" -> "BCD"), as the old bench drew them
    assert rows(data.x_train) == [b"012", b"123", b"234", b"345", b"456", b"567", b"678", b"789", b"89A", b"9AB"]
    assert rows(data.y_train) == [b"123", b"234", b"345", b"456", b"567", b"678", b"789", b"89A", b"9AB", b"ABC"]
    # test: windows of the held-out "EFGHIJ" only, starts in [0, 6 - 3 - 1) = {0, 1}
    pairs = set(zip(rows(data.x_test), rows(data.y_test), strict=True))
    assert pairs <= {(b"EFG", b"FGH"), (b"FGH", b"GHI")} and data.n_test == 8
    assert (data.vocab_size, data.num_outputs, data.input_dim, data.target) == (256, 256, 3, "class")
    assert data.x_train.dtype == data.y_train.dtype == torch.int64
    assert data.info["sha256"] == hashlib.sha256(CORPUS).hexdigest()[:12]
    assert data.info["data"].startswith(f"stdlib .py corpus, 20 bytes, sha256 {data.info['sha256']}, Python ")


def test_test_windows_are_fixed_by_window_seed_only(tiny_corpus):
    a = text.stdlib_bytes(context=3, n_bytes=20, train_frac=0.7, n_test=16, window_seed=1)
    b = text.stdlib_bytes(context=3, n_bytes=20, train_frac=0.7, n_test=16, window_seed=1)
    c = text.stdlib_bytes(context=3, n_bytes=20, train_frac=0.7, n_test=16, window_seed=2)
    assert torch.equal(a.x_test, b.x_test) and not torch.equal(a.x_test, c.x_test)
    # a sweep's `seed` sets the model and data-order seeds, never the task's windows
    assert seed_fields("stdlib_bytes") == ["train.seed", "train.shuffle_seed"]


def test_the_real_corpus_and_its_windows():
    root = Path(sysconfig.get_paths()["stdlib"])
    corpus = b"".join((root / name).read_bytes() for name in sorted(p.name for p in root.glob("*.py")))[:2_000_000]
    data = make_task("stdlib_bytes")
    n = int(0.9 * len(corpus))
    assert data.info["sha256"] == hashlib.sha256(corpus).hexdigest()[:12] and data.info["bytes"] == len(corpus)
    assert data.x_train.shape == (n - 65, 64) and data.x_test.shape == data.y_test.shape == (256, 64)
    for i in (0, 12345, n - 66):
        assert bytes(data.x_train[i].tolist()) == corpus[i:i + 64]
        assert bytes(data.y_train[i].tolist()) == corpus[i + 1:i + 65]
    held_out = corpus[n:]
    assert all(bytes(x.tolist()) in held_out for x in data.x_test[:20])
    # the windows are views of one tensor of the bytes, not copies
    assert data.x_train.untyped_storage().data_ptr() == data.y_train.untyped_storage().data_ptr()


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"context": 0}, "context"), ({"train_frac": 1.0}, "train_frac"), ({"n_test": 0}, "n_test"),
    ({"n_bytes": 12, "context": 3}, "n_bytes"),
])
def test_config_errors(tiny_corpus, kwargs, field):
    with pytest.raises(ConfigError, match=f"^task.{field} = "):
        make_task("stdlib_bytes", **kwargs)


# ------------------------------------------------------------------------------------------------------- GPT


def gpt_by_hand(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """The GPT's forward pass written out: embeddings, pre-LN causal attention (explicit mask) and GELU MLP."""
    n, length = tokens.shape
    x = model.tok_emb.weight[tokens] + model.pos_emb.weight[:length]
    mask = torch.triu(torch.full((length, length), -math.inf), diagonal=1)
    for b in model.blocks:
        h = F.layer_norm(x, x.shape[-1:], b.ln1.weight, b.ln1.bias)
        q, k, v = (F.linear(h, b.attn[c].weight, b.attn[c].bias).view(n, length, b.heads, -1).transpose(1, 2)
                   for c in "qkv")
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask, dim=-1) @ v
        x = x + F.linear(att.transpose(1, 2).reshape(n, length, -1), b.attn["o"].weight, b.attn["o"].bias)
        h = F.layer_norm(x, x.shape[-1:], b.ln2.weight, b.ln2.bias)
        up = F.linear(h, b.mlp["up"].weight, b.mlp["up"].bias)
        x = x + F.linear(F.gelu(up), b.mlp["down"].weight, b.mlp["down"].bias)
    return F.linear(F.layer_norm(x, x.shape[-1:], model.ln_f.weight, model.ln_f.bias), model.head.weight)


def small_gpt() -> GPT:
    torch.manual_seed(0)
    model = GPT(vocab_size=11, seq_len=6, num_outputs=11, dim=8, depth=2, heads=2)
    with torch.no_grad():  # move the LayerNorms and biases off (1, 0) so that they count
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def test_gpt_matches_the_equations_written_out():
    model = small_gpt()
    tokens = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(1))
    assert model(tokens).shape == (3, 6, 11)
    torch.testing.assert_close(model(tokens), gpt_by_hand(model, tokens), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(tokens[:, :4]), gpt_by_hand(model, tokens[:, :4]), rtol=1e-5, atol=1e-6)


def test_gpt_is_causal():
    model = small_gpt()
    tokens = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 11  # a future token for positions 0..3
    a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=1e-6)
    assert (a[:, 4:] - b[:, 4:]).abs().amax() > 1e-3


def test_gpt_names_count_and_init():
    model = GPT(vocab_size=256, seq_len=64, num_outputs=256)
    d = 128
    block = 2 * 2 * d + 4 * (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    assert count_params(model) == 256 * d + 64 * d + 2 * block + 2 * d + d * 256
    names = [n for n, _ in model.named_parameters()]
    assert names[:4] == ["tok_emb.weight", "pos_emb.weight", "blocks.0.ln1.weight", "blocks.0.ln1.bias"]
    assert names[-3:] == ["ln_f.weight", "ln_f.bias", "head.weight"] and "head.bias" not in names
    weights = torch.cat([p.flatten() for n, p in model.named_parameters() if p.ndim == 2])
    assert abs(weights.std().item() - 0.02) < 5e-4
    assert all(torch.all(p == 0) for n, p in model.named_parameters() if n.endswith(".bias") and ".ln" not in n)
    with pytest.raises(ConfigError, match="^heads = 3: must divide dim = 128"):
        GPT(256, 64, 256, heads=3)


def test_the_patterns_select_what_route_whitens():
    """egd_aux and muon take the matrices by name; for the GPT and the CNN these are route(model)'s choice."""
    model = GPT(vocab_size=256, seq_len=64, num_outputs=256)
    routed = {r.name for r in route(model).whitened}
    assert routed == {f"blocks.{i}.{m}.weight" for i in (0, 1) for m in ("attn.q", "attn.k", "attn.v", "attn.o",
                                                                         "mlp.up", "mlp.down")}
    opt = build_optimizer(list(model.named_parameters()), "egd_aux", whiten=GPT_MATRICES)
    assert {id(p) for p in opt.whitened_params()} == {id(p) for n, p in model.named_parameters() if n in routed}
    cnn = CNN(1, 28, 28, 10, channels=(16, 32, 32), fc=128)
    routed = {r.name for r in route(cnn).whitened}
    assert routed == {"convs.0.weight", "convs.1.weight", "convs.2.weight", "fc.weight"}
    opt = build_optimizer(list(cnn.named_parameters()), "egd_aux", whiten=["convs.*.weight", "fc.weight"])
    assert {id(p) for p in opt.whitened_params()} == {id(p) for n, p in cnn.named_parameters() if n in routed}


# ----------------------------------------------------------------------------------------------- the recipes


def test_a_few_steps_of_the_gpt_recipe(tmp_path):
    cfg = load_config("stdlib-gpt")
    cfg["model"].update(dim=16, heads=2, depth=1)
    cfg["task"].update(n_bytes=20000, n_test=8)
    cfg["train"].update(max_steps=4, eval_every=2, progress="off")
    cfg["scheduler"]["warmup_steps"] = 2
    summary = train(cfg, tmp_path / "gpt")
    assert summary["steps"] == 4 and summary["status"] == "budget" and summary["data"].startswith("stdlib .py")
    assert math.isfinite(summary["final_test_loss"]) and summary["final_test_loss"] < math.log(256) + 1


@pytest.mark.parametrize("method", ["adamw", "muon", "egd_before_rms"])
def test_a_few_steps_of_the_cnn_recipe(tmp_path, monkeypatch, method):
    data = tmp_path / "data"
    (data / "fashion-mnist").mkdir(parents=True)
    write_mnist(data / "fashion-mnist", n_train=200, n_test=20)
    monkeypatch.setenv("EGD_DATA", str(data))
    cfg = load_config("fashion-mnist-cnn")
    cfg["method"] = method
    cfg["task"].update(n_train=200, n_test=20)
    cfg["train"].update(max_steps=3, eval_every=3, progress="off")
    cfg["scheduler"]["warmup_steps"] = 1
    summary = train(cfg, tmp_path / method)
    assert summary["steps"] == 3 and summary["data"].startswith("fashion-mnist-format IDX files")
    assert math.isfinite(summary["final_test_loss"])
