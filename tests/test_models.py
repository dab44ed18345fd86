"""Tests for egalitarian.models against hand formulas and independent reference modules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from egalitarian.errors import ConfigError
from egalitarian.models import MLP, Transformer, count_params

# ----------------------------------------------------------------------------------------------- MLP


@pytest.mark.parametrize(
    ("hidden", "bias", "out_bias", "expected_names"),
    [
        ([], True, False, ["layers.0.weight"]),
        (16, True, False, ["layers.0.weight", "layers.0.bias", "layers.1.weight"]),
        ([16, 8], False, False, ["layers.0.weight", "layers.1.weight", "layers.2.weight"]),
        ([16, 8], True, True, ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
                               "layers.2.weight", "layers.2.bias"]),
    ],
)
def test_mlp_shapes_and_param_names(hidden, bias, out_bias, expected_names):
    model = MLP(10, hidden, 5, bias=bias, out_bias=out_bias)
    assert [name for name, _ in model.named_parameters()] == expected_names
    assert model(torch.randn(7, 10)).shape == (7, 5)


def test_paper_mlp_has_no_output_bias_and_computes_relu_formula():
    # EGD paper: f(x) = relu(x @ W1 + b1) @ W2 (torch layout: W1 is (hidden, in)).
    model = MLP(3, 2, 1, activation="relu", out_bias=False)
    assert model.layers[1].bias is None
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[1.0, -1.0, 0.5], [2.0, 0.0, -1.0]]))
        model.layers[0].bias.copy_(torch.tensor([0.5, -1.0]))
        model.layers[1].weight.copy_(torch.tensor([[3.0, -2.0]]))
    x = torch.tensor([[1.0, 2.0, 2.0], [1.0, 0.0, 0.0]])
    # row 0: pre = [1-2+1+0.5, 2-2-1] = [0.5, -1] -> relu [0.5, 0] -> 1.5
    # row 1: pre = [1+0.5, 2-1] = [1.5, 1] -> relu [1.5, 1] -> 4.5 - 2 = 2.5
    assert torch.allclose(model(x), torch.tensor([[1.5], [2.5]]))


def test_mlp_linear_model_when_hidden_empty():
    model = MLP(4, [], 3, activation="tanh", out_bias=True)
    x = torch.randn(5, 4)
    w, b = model.layers[0].weight, model.layers[0].bias
    assert torch.allclose(model(x), x @ w.T + b)


@pytest.mark.parametrize("hidden,bias", [(16, True), ([8, 6], False), ([], True)])
def test_mlp_index_input_equals_multi_hot_input(hidden, bias):
    """Integer (N, k) input = the positions of the ones of a float multi-hot input: same outputs and gradients."""
    torch.manual_seed(0)
    model = MLP(10, hidden, 4, bias=bias, out_bias=bias)
    idx = torch.stack([torch.randint(0, 5, (12,)), torch.randint(5, 10, (12,))], dim=1)
    idx[0] = torch.tensor([3, 3])  # a repeated index counts twice, as in the multi-hot sum
    dense = torch.zeros(12, 10).scatter_add_(1, idx, torch.ones(12, 2))
    grads = []
    for x in (dense, idx):
        model.zero_grad()
        out = model(x)
        (out * torch.arange(4.0)).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        if x is dense:
            ref = out.detach()
    torch.testing.assert_close(out.detach(), ref, rtol=0, atol=1e-6)
    for g_dense, g_index in zip(*grads, strict=True):
        torch.testing.assert_close(g_index, g_dense, rtol=1e-6, atol=1e-6)


def test_mlp_index_input_must_be_2d():
    with pytest.raises(ValueError, match=r"\(N, k\) feature indices"):
        MLP(10, 4, 2)(torch.tensor([1, 2]))


def test_he_normal_init_statistics_and_zero_biases():
    torch.manual_seed(0)
    model = MLP(1000, 1000, 10, bias=True, out_bias=True, init="he_normal")
    target = math.sqrt(2 / 1000)
    w0, w1 = model.layers[0].weight, model.layers[1].weight
    # std of a sample std is ~ sigma / sqrt(2n): 0.07% for 1e6 entries, 0.7% for 1e4
    assert abs(w0.std().item() / target - 1) < 0.01
    assert abs(w0.mean().item()) < 5 * target / 1000
    assert abs(w1.std().item() / target - 1) < 0.05
    assert torch.count_nonzero(model.layers[0].bias) == 0
    assert torch.count_nonzero(model.layers[1].bias) == 0


def test_he_normal_bias_init_draws_biases_like_weights():
    """The parity code's init: b ~ N(0, 2/fan_in) for every bias, weights as in he_normal."""
    torch.manual_seed(0)
    model = MLP(50, 20000, 4, bias=True, out_bias=True, init="he_normal_bias")
    b0, b1 = model.layers[0].bias, model.layers[1].bias
    assert abs(b0.std().item() / math.sqrt(2 / 50) - 1) < 0.03  # 20000 draws: std of the std ~0.5%
    assert abs(b0.mean().item()) < 5 * math.sqrt(2 / 50) / math.sqrt(20000)
    assert torch.count_nonzero(b1) == 4
    assert abs(model.layers[0].weight.std().item() / math.sqrt(2 / 50) - 1) < 0.01


@pytest.mark.parametrize("init", ["he_normal", "he_normal_bias", "torch"])
def test_init_scale_multiplies_every_parameter(init):
    torch.manual_seed(3)
    scaled = MLP(20, [12, 12], 10, init=init, init_scale=8.0)
    torch.manual_seed(3)
    plain = MLP(20, [12, 12], 10, init=init)
    for (name, a), (_, b) in zip(scaled.named_parameters(), plain.named_parameters(), strict=True):
        assert torch.equal(a, 8.0 * b), name
    if init == "torch":  # default nn.Linear bias is U(±1/sqrt(fan_in)): nonzero
        assert torch.count_nonzero(plain.layers[0].bias) > 0


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [
        ({"activation": "swish"}, "model.activation", "'swish'"),
        ({"init": "xavier"}, "model.init", "'xavier'"),
        ({"init_scale": -1.0}, "model.init_scale", "-1.0"),
        ({"hidden": [8, 0]}, "model.hidden", "[8, 0]"),
        ({"in_dim": 0}, "model.in_dim", "0"),
    ],
)
def test_mlp_config_errors(kwargs, field, value):
    args = {"in_dim": 4, "hidden": 8, "out_dim": 2} | kwargs
    with pytest.raises(ConfigError) as info:
        MLP(**args)
    # the class names its own argument; the config layer (egalitarian.build) adds "model." in front
    assert str(info.value).startswith(f"{field.removeprefix('model.')} = ") and value in str(info.value)


# ---------------------------------------------------------------------------------------- Transformer

NORMS = ["pre", "grokfast", "post", "none"]


def small_transformer(norm: str, **kwargs) -> Transformer:
    torch.manual_seed(0)
    args = {"vocab_size": 11, "seq_len": 5, "num_outputs": 7, "dim": 16, "depth": 2, "heads": 4} | kwargs
    return Transformer(norm=norm, **args).eval()


def reference_forward(model: Transformer, tokens: torch.Tensor, norm: str) -> torch.Tensor:
    """The block equations written out with nn.MultiheadAttention (as in Grokfast) sharing the weights."""
    length = tokens.shape[1]
    dim = model.tok_emb.embedding_dim
    x = model.tok_emb(tokens) + model.pos_emb.weight[:length]
    mask = torch.triu(torch.full((length, length), float("-inf")), diagonal=1)
    for block in model.blocks:
        mha = nn.MultiheadAttention(dim, block.attn.heads, batch_first=True)
        with torch.no_grad():
            mha.in_proj_weight.copy_(block.attn.qkv.weight)
            mha.in_proj_bias.copy_(block.attn.qkv.bias)
            mha.out_proj.weight.copy_(block.attn.out.weight)
            mha.out_proj.bias.copy_(block.attn.out.bias)

        def attn(h, mha=mha):
            return mha(h, h, h, attn_mask=mask, need_weights=False)[0]

        ln1, ln2, mlp = block.ln1, block.ln2, block.mlp
        if norm == "pre":
            x = x + attn(ln1(x))
            x = x + mlp(ln2(x))
        elif norm == "grokfast":  # ironjr/grokfast main.py Block.forward
            x = ln1(x)
            x = x + attn(x)
            x = x + mlp(ln2(x))
        elif norm == "post":
            x = ln1(x + attn(x))
            x = ln2(x + mlp(x))
        else:
            x = x + attn(x)
            x = x + mlp(x)
    if norm in ("pre", "grokfast"):
        x = F.layer_norm(x, (dim,), model.ln_f.weight, model.ln_f.bias)
    return model.head(x[:, -1])


@pytest.mark.parametrize("norm", NORMS)
def test_transformer_matches_written_out_equations(norm):
    model = small_transformer(norm)
    tokens = torch.randint(0, 11, (3, 5))
    out = model(tokens)
    assert out.shape == (3, 7)
    assert model(tokens, all_positions=True).shape == (3, 5, 7)
    assert model(tokens[:, :4]).shape == (3, 7)  # shorter than seq_len is allowed
    with torch.no_grad():
        assert torch.allclose(out, reference_forward(model, tokens, norm), atol=1e-5)


@pytest.mark.parametrize("norm", NORMS)
def test_transformer_is_causal_and_last_logits_see_every_token(norm):
    model = small_transformer(norm)
    tokens = torch.randint(0, 11, (2, 5))
    with torch.no_grad():
        base = model(tokens, all_positions=True)
        for j in range(5):
            changed = tokens.clone()
            changed[:, j] = (changed[:, j] + 1) % 11
            out = model(changed, all_positions=True)
            assert torch.allclose(out[:, :j], base[:, :j], atol=1e-6, rtol=0)
            assert (out[:, j:] - base[:, j:]).abs().amax(-1).min() > 1e-4  # every later position moves
            assert not torch.allclose(model(changed), model(tokens))


def test_transformer_param_names_and_no_norm_params_in_nanda_setup():
    names = [name for name, _ in small_transformer("pre").named_parameters()]
    for name in ["tok_emb.weight", "pos_emb.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.out.weight",
                 "blocks.0.mlp.0.weight", "blocks.0.mlp.2.weight", "blocks.1.mlp.0.weight",
                 "blocks.1.mlp.2.weight", "ln_f.weight", "head.weight"]:
        assert name in names
    assert "head.bias" not in names
    nanda = small_transformer("none", depth=1, d_mlp=32, activation="relu")
    assert not any("ln" in name for name, _ in nanda.named_parameters())
    assert nanda.blocks[0].mlp[0].weight.shape == (32, 16)
    assert isinstance(nanda.blocks[0].mlp[1], nn.ReLU)


def test_default_transformer_param_count_by_hand():
    # Power et al. / Grokfast geometry: d = 128, 2 blocks, MLP 4d, vocab = outputs = 97 + 2, 4 positions.
    d, v, c, length = 128, 99, 99, 4
    per_block = (
        2 * d  # ln1
        + 3 * d * d + 3 * d  # qkv
        + d * d + d  # out
        + 2 * d  # ln2
        + d * 4 * d + 4 * d  # mlp.0
        + 4 * d * d + d  # mlp.2
    )  # = 12 d^2 + 13 d = 198272
    total = v * d + length * d + 2 * per_block + 2 * d + d * c  # + ln_f + head (no bias)
    assert per_block == 198272 and total == 422656
    model = Transformer(vocab_size=v, seq_len=length, num_outputs=c)
    assert count_params(model) == total
    assert count_params(Transformer(vocab_size=v, seq_len=length, num_outputs=c, norm="grokfast")) == total
    model.tok_emb.weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == total - v * d


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("depth", [1, 2])
def test_last_only_gives_the_same_logits_and_gradients(norm, depth):
    # last_only computes the last block at the last position only: the function and every gradient must equal
    # those of the model that computes every position (same weights), and all_positions must still work.
    full = small_transformer(norm, depth=depth)
    fast = small_transformer(norm, depth=depth, last_only=True)
    fast.load_state_dict(full.state_dict())
    tokens = torch.randint(0, 11, (6, 5))
    target = torch.randint(0, 7, (6,))
    grads = []
    for model in (full, fast):
        model.zero_grad()
        out = model(tokens)
        F.cross_entropy(out, target).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
        with torch.no_grad():
            assert torch.allclose(out, reference_forward(full, tokens, norm), atol=1e-5)
            assert model(tokens, all_positions=True).shape == (6, 5, 7)
            assert model.hidden_states(tokens).shape == (6, 5, 16)
    assert fast.hidden_states(tokens, all_positions=False).shape == (6, 1, 16)
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        assert torch.allclose(grads[1][name], g, atol=1e-6), name


def nanda_reference_forward(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """Nanda et al.'s (2023) 1-layer block written out per head, as in their code (einsums over W_Q, W_K, W_V of
    shape (heads, d_head, d), scores masked below the diagonal, no biases in attention, ReLU MLP)."""
    block = model.blocks[0]
    heads, dim = block.attn.heads, model.tok_emb.embedding_dim
    w_q, w_k, w_v = block.attn.qkv.weight.view(3, heads, dim // heads, dim)
    x = model.tok_emb.weight[tokens] + model.pos_emb.weight[: tokens.shape[1]]
    q, k, v = (torch.einsum("ihd,bpd->biph", w, x) for w in (w_q, w_k, w_v))
    scores = torch.einsum("biph,biqh->biqp", k, q) / math.sqrt(dim // heads)
    length = tokens.shape[1]
    scores = scores.masked_fill(torch.ones(length, length).triu(1).bool(), float("-inf"))
    z = torch.einsum("biph,biqp->biqh", v, scores.softmax(-1))
    x = x + torch.einsum("df,bqf->bqd", block.attn.out.weight, z.permute(0, 2, 1, 3).reshape(*z.shape[:1], length, dim))
    w_in, b_in, w_out, b_out = block.mlp[0].weight, block.mlp[0].bias, block.mlp[2].weight, block.mlp[2].bias
    x = x + torch.relu(x @ w_in.T + b_in) @ w_out.T + b_out
    return x[:, -1] @ model.head.weight.T


def test_nanda_model_init_and_forward():
    p, dim, d_mlp = 113, 128, 512
    torch.manual_seed(0)
    model = Transformer(vocab_size=p + 1, seq_len=3, num_outputs=p, dim=dim, depth=1, heads=4, d_mlp=d_mlp,
                        activation="relu", norm="none", init="nanda", attn_bias=False)
    params = dict(model.named_parameters())
    # their parameters (W_E, W_pos, W_Q/K/V/O, W_in, b_in, W_out, b_out, W_U), counted by hand
    assert count_params(model) == (p + 1) * dim + 3 * dim + 4 * dim * dim + 2 * dim * d_mlp + d_mlp + dim + dim * p
    assert "blocks.0.attn.qkv.bias" not in params and "blocks.0.attn.out.bias" not in params
    for name, param in params.items():
        if name.endswith("bias"):
            assert torch.count_nonzero(param) == 0, name
            continue
        std = p ** -0.5 if name == "head.weight" else dim ** -0.5
        # the sample std of n >= 384 normal draws is within 4 standard errors (std / sqrt(2n)) of std
        assert abs(param.std().item() - std) < 4 * std / math.sqrt(2 * param.numel()), name
        assert abs(param.mean().item()) < 4 * std / math.sqrt(param.numel()), name
    grokfast = Transformer(vocab_size=p + 1, seq_len=3, num_outputs=p, dim=dim, depth=1, norm="none")
    assert grokfast.tok_emb.weight.std() > 0.9  # the default keeps N(0, 1) embeddings: 11x Nanda's
    tokens = torch.randint(0, p + 1, (8, 3))
    with torch.no_grad():
        assert torch.allclose(model(tokens), nanda_reference_forward(model, tokens), atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [
        ({"init": "xavier"}, "model.init", "'xavier'"),
        ({"attn_bias": 1}, "model.attn_bias", "1"),
        ({"last_only": "yes"}, "model.last_only", "'yes'"),
        ({"dim": 18}, "model.heads", "4"),
        ({"norm": "sandwich"}, "model.norm", "'sandwich'"),
        ({"activation": "swish"}, "model.activation", "'swish'"),
        ({"depth": 0}, "model.depth", "0"),
        ({"heads": 2.0}, "model.heads", "2.0"),
        ({"d_mlp": -3}, "model.d_mlp", "-3"),
        ({"dropout": 1.0}, "model.dropout", "1.0"),
    ],
)
def test_transformer_config_errors(kwargs, field, value):
    args = {"vocab_size": 11, "seq_len": 4, "num_outputs": 7, "dim": 16} | kwargs
    with pytest.raises(ConfigError) as info:
        Transformer(**args)
    # the class names its own argument; the config layer (egalitarian.build) adds "model." in front
    assert str(info.value).startswith(f"{field.removeprefix('model.')} = ") and value in str(info.value)
