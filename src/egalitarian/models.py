"""Models used in the experiments: a plain MLP, a small causal transformer, a small GPT and a small CNN.

* :class:`MLP` covers the EGD paper's 2-layer ReLU MLP for modular arithmetic and sparse parity
  (``relu(x @ W1 + b1) @ W2``, He-normal init, no output bias; EGD paper §3.1–3.2) and the
  Omnigrok/Grokfast MNIST MLP (784-200-200-10, PyTorch default init scaled ×8; EGD paper §3.3;
  Liu et al. 2023, "Omnigrok").
* :class:`Transformer` covers the Power et al. / Grokfast decoder (2 layers, width 128, 4 heads,
  MLP 4×, GELU; EGD paper §3.4; Lee et al. 2024, "Grokfast") and Nanda et al.'s (2023) 1-layer,
  LayerNorm-free model.
* :class:`GPT` is a small nanoGPT-shaped language model (next-token logits at every position) for the byte-level
  task :func:`egalitarian.tasks.stdlib_bytes`.
* :class:`CNN` is the small convolutional network of the EGD paper's label-shuffle experiment (App. E,
  Table 8: "3 conv + max-pool + FC + head", EGD on every conv kernel and the FC layer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, check

__all__ = ["ACTIVATIONS", "CNN", "GPT", "INITS", "MLP", "NORMS", "POOLS", "TRANSFORMER_INITS", "Transformer",
           "count_params"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}
INITS: tuple[str, ...] = ("he_normal", "he_normal_bias", "torch")
NORMS: tuple[str, ...] = ("pre", "grokfast", "post", "none")
TRANSFORMER_INITS: tuple[str, ...] = ("grokfast", "nanda")
POOLS: tuple[str, ...] = ("each", "last")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive_int(field: str, value: object) -> None:
    check(_is_int(value) and value > 0, field, value, "must be a positive integer", ConfigError)  # type: ignore[operator]


def _check_choice(field: str, value: object, allowed: Sequence[str]) -> None:
    check(value in allowed, field, value, f"must be one of {', '.join(sorted(allowed))}", ConfigError)


def _check_positive_float(field: str, value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    check(ok, field, value, "must be a finite number > 0", ConfigError)


class MLP(nn.Module):
    r"""Fully connected network ``in_dim → hidden[0] → … → hidden[-1] → out_dim``.

    .. math::
        h_0 = x,\qquad h_{l+1} = \sigma(W_l h_l + b_l)\ (l < L),\qquad f(x) = W_L h_L\ (+\,b_L)

    The linear maps are ``self.layers[0..L]`` (``nn.Linear``), so the parameters are named
    ``layers.0.weight``, ``layers.0.bias``, …, ``layers.{L}.weight`` where ``L = len(hidden)``.

    Args:
        in_dim: input features.  The input is either a float tensor ``(N, in_dim)``, or an integer tensor
            ``(N, k)`` holding, per row, the positions of the ``k`` features that are 1 in a multi-hot input
            (e.g. ``[a, p + b]`` for the concatenated one-hot of the modular task, ``encoding="index"``).
            Both give the same function and the same gradients: the first layer is then computed as the
            sum of ``k`` weight columns (``embedding_bag``) instead of a dense matmul with mostly zeros,
            which makes a step of the paper's MLP cheaper (measured: docs/RESULTS.md §2).
        hidden: one width (one hidden layer) or a sequence of widths; ``[]`` gives a linear model.
        out_dim: outputs (classes, or 1 for a scalar output such as sparse parity).
        activation: one of ``relu, gelu, tanh, silu, identity``.
        bias: biases on the hidden layers.
        out_bias: bias on the output layer. ``False`` is the EGD paper's MLP (``relu(X@W1+b1)@W2``).
        init: ``"he_normal"``: every weight ``W ~ N(0, 2/fan_in)`` and every bias 0, as in the EGD paper's
            modular-arithmetic code. ``"he_normal_bias"``: the same, but every bias is also drawn from
            ``N(0, 2/fan_in)``, as ``b1`` in the EGD paper's parity code. ``"torch"``: PyTorch's default
            ``nn.Linear`` init (Kaiming-uniform weights, ``U(±1/sqrt(fan_in))`` biases), as in Omnigrok/Grokfast
            MNIST.
        init_scale: every parameter is multiplied by this after init (Omnigrok/Grokfast MNIST: 8).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int | Sequence[int],
        out_dim: int,
        activation: str = "relu",
        bias: bool = True,
        out_bias: bool = False,
        init: str = "he_normal",
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        _check_positive_int("in_dim", in_dim)
        _check_positive_int("out_dim", out_dim)
        widths = [hidden] if _is_int(hidden) else hidden
        ok = not isinstance(widths, (str, bytes)) and isinstance(widths, Sequence)
        ok = ok and all(_is_int(w) and w > 0 for w in widths)
        check(ok, "hidden", hidden, "must be a positive integer or a list of them", ConfigError)
        _check_choice("activation", activation, list(ACTIVATIONS))
        _check_choice("init", init, INITS)
        _check_positive_float("init_scale", init_scale)

        dims = [in_dim, *widths, out_dim]
        n_layers = len(dims) - 1
        self.layers = nn.ModuleList(
            nn.Linear(dims[i], dims[i + 1], bias=bias if i < n_layers - 1 else out_bias)
            for i in range(n_layers)
        )
        self.act = ACTIVATIONS[activation]()
        self._init(init, float(init_scale))

    @torch.no_grad()
    def _init(self, init: str, init_scale: float) -> None:
        if init in ("he_normal", "he_normal_bias"):
            for layer in self.layers:
                assert isinstance(layer, nn.Linear)
                std = math.sqrt(2.0 / layer.in_features)
                layer.weight.normal_(0.0, std)
                if layer.bias is not None and init == "he_normal_bias":
                    layer.bias.normal_(0.0, std)
                elif layer.bias is not None:
                    layer.bias.zero_()
        if init_scale != 1.0:
            for p in self.parameters():
                p.mul_(init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_dim)`` floats, or ``(N, k)`` multi-hot indices, to ``(N, out_dim)`` logits."""
        first, *rest = self.layers
        assert isinstance(first, nn.Linear)
        if x.is_floating_point():
            x = first(x)
        else:
            if x.ndim != 2:
                raise ValueError(f"MLP: integer input must be (N, k) feature indices, got shape {tuple(x.shape)}")
            # x @ W1ᵀ for the multi-hot x: the sum of the k selected columns of W1 (exact: the dense
            # product only adds zeros); backward scatters into those columns.  The contiguous copy of W1ᵀ
            # costs one pass over W1 and makes the gather several times faster (bench/whiten.py part 2).
            x = F.embedding_bag(x, first.weight.t().contiguous(), mode="sum")
            if first.bias is not None:
                x = x + first.bias
        for layer in rest:
            x = layer(self.act(x))
        return x


class CausalSelfAttention(nn.Module):
    r"""Multi-head causal self-attention with a fused ``qkv`` projection and an ``out`` projection.

    .. math:: \mathrm{head}_h = \mathrm{softmax}\!\left(\frac{Q_h K_h^\top}{\sqrt{d_h}} + M\right) V_h,
        \qquad M_{ij} = -\infty \text{ for } j > i

    Parameters and init match ``nn.MultiheadAttention`` (as used by Grokfast): ``qkv.weight`` (3·dim × dim)
    Xavier-uniform, ``qkv.bias`` 0, ``out.weight`` PyTorch default, ``out.bias`` 0 (no biases if ``bias`` is
    false).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)
        with torch.no_grad():
            nn.init.xavier_uniform_(self.qkv.weight)
            if bias:
                self.qkv.bias.zero_()
                self.out.bias.zero_()

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``(N, L, dim) → (N, L, dim)``; position ``i`` attends to positions ``≤ i`` only.  With ``last_only``
        only the last position's output is computed, ``(N, 1, dim)`` (it attends to every position)."""
        n, length, dim = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if last_only:
            q, length = q[:, :, -1:], 1
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=not last_only)
        return self.out(y.transpose(1, 2).reshape(n, length, dim))


class Block(nn.Module):
    """One transformer block; where the LayerNorms sit is set by ``norm`` (see :class:`Transformer`)."""

    def __init__(self, dim: int, heads: int, d_mlp: int, activation: str, norm: str, dropout: float,
                 attn_bias: bool = True) -> None:
        super().__init__()
        self.norm = norm
        self.ln1: nn.Module = nn.Identity() if norm == "none" else nn.LayerNorm(dim)
        self.ln2: nn.Module = nn.Identity() if norm == "none" else nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout, bias=attn_bias)
        self.mlp = nn.Sequential(nn.Linear(dim, d_mlp), ACTIVATIONS[activation](), nn.Linear(d_mlp, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``(N, L, dim) → (N, L, dim)``, or ``(N, 1, dim)``: the last position only (``last_only``)."""
        def keep(h: torch.Tensor) -> torch.Tensor:  # the residual stream at the positions computed
            return h[:, -1:] if last_only else h

        if self.norm == "pre":
            x = keep(x) + self.drop(self.attn(self.ln1(x), last_only))
            return x + self.drop(self.mlp(self.ln2(x)))
        if self.norm == "grokfast":
            x = self.ln1(x)
            x = keep(x) + self.drop(self.attn(x, last_only))
            return x + self.drop(self.mlp(self.ln2(x)))
        if self.norm == "post":
            x = self.ln1(keep(x) + self.drop(self.attn(x, last_only)))
            return self.ln2(x + self.drop(self.mlp(x)))
        x = keep(x) + self.drop(self.attn(x, last_only))  # "none"
        return x + self.drop(self.mlp(x))


class Transformer(nn.Module):
    r"""Decoder-only causal transformer that predicts one token from the last input position.

    ``h = tok_emb(x) + pos_emb(0..L-1)`` → ``blocks`` → final norm → ``head``; the logits are read at
    the last position (the ``=`` token; loss on the answer token only, Power et al. 2022). Parameter
    names: ``tok_emb``, ``pos_emb``, ``blocks.{i}.ln1``, ``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.out``,
    ``blocks.{i}.ln2``, ``blocks.{i}.mlp.0`` (dim → d_mlp), ``blocks.{i}.mlp.2`` (d_mlp → dim), ``ln_f``,
    ``head`` (no bias). The EGD paper whitens exactly ``blocks.{0,1}.mlp.{0,2}.weight`` (EGD paper §1.2).

    ``norm`` places the LayerNorms:

    * ``"pre"``: standard pre-LN, ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``, final ``ln_f``.
    * ``"grokfast"``: the Grokfast / teddykoker block, ``x = ln1(x); x = x + attn(x);
      x = x + mlp(ln2(x))``, final ``ln_f``. ``ln1`` normalises the residual stream itself; ``ln2`` is an
      ordinary pre-LN (this is what ``ironjr/grokfast`` ``main.py`` and the EGD ``main_modmult.py`` run).
    * ``"post"``: Vaswani post-LN, ``x = ln1(x + attn(x)); x = ln2(x + mlp(x))``, no final norm.
    * ``"none"``: no LayerNorm at all (Nanda et al. 2023), ``x = x + attn(x); x = x + mlp(x)``.

    Presets: defaults = Power et al. / Grokfast (dim 128, depth 2, heads 4, MLP 4×, GELU); Grokfast
    itself uses ``norm="grokfast"``, ``vocab_size = num_outputs = p + 2`` and ``seq_len=5`` (one unused
    position embedding). Nanda: ``depth=1, d_mlp=512, activation="relu", norm="none", init="nanda",
    attn_bias=False``, p = 113, tokens ``[a, b, =]`` (``vocab_size = p + 1``, ``seq_len = 3``).

    ``init`` (the scales differ up to 11×, and they set how long grokking takes):

    * ``"grokfast"``: Grokfast's modules: embeddings ``N(0, 1)``, attention as ``nn.MultiheadAttention``,
      MLP / head / LayerNorm PyTorch defaults.
    * ``"nanda"``: Nanda et al.'s (2023) code: every matrix (token and position embeddings, Q, K, V, O, both MLP
      matrices) ``N(0, 1/dim)``, the head ``N(0, 1/num_outputs)``, every bias 0.  With ``attn_bias=False`` and
      ``norm="none"`` this is their model (they also have no attention biases).

    Args:
        vocab_size: number of input token ids.
        seq_len: maximum input length (size of the position table); inputs may be shorter.
        num_outputs: number of output logits.
        dim, depth, heads: width, number of blocks, attention heads (``dim % heads == 0``).
        mlp_ratio: MLP hidden width is ``int(mlp_ratio * dim)`` unless ``d_mlp`` is given.
        activation: MLP activation, one of ``relu, gelu, tanh, silu, identity``.
        norm: ``pre``, ``grokfast``, ``post`` or ``none`` (above).
        dropout: dropout on attention weights and on each sublayer's output, in ``[0, 1)``.
        d_mlp: MLP hidden width; overrides ``mlp_ratio``.
        init: ``grokfast`` or ``nanda`` (above).
        attn_bias: biases on the attention's ``qkv`` and ``out`` projections.
        last_only: compute the last block's attention output, MLP, the final norm and the head only at the last
            position, the only one the logits are read from.  The same function and gradients, with fewer
            operations (the MLP runs on 1 of L positions in the last block), but not bit-identical to
            computing every position: float sums then run in another order.  ``all_positions=True`` in
            :meth:`forward` and :meth:`hidden_states` still computes every position.
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        num_outputs: int,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        activation: str = "gelu",
        norm: str = "pre",
        dropout: float = 0.0,
        d_mlp: int | None = None,
        init: str = "grokfast",
        attn_bias: bool = True,
        last_only: bool = False,
    ) -> None:
        super().__init__()
        for field, value in [("vocab_size", vocab_size), ("seq_len", seq_len), ("num_outputs", num_outputs),
                             ("dim", dim), ("depth", depth), ("heads", heads)]:
            _check_positive_int(field, value)
        check(dim % heads == 0, "heads", heads, f"must divide dim = {dim}", ConfigError)
        if d_mlp is None:
            _check_positive_float("mlp_ratio", mlp_ratio)
            d_mlp = int(mlp_ratio * dim)
            check(d_mlp > 0, "mlp_ratio", mlp_ratio, "mlp_ratio * dim must be >= 1", ConfigError)
        else:
            _check_positive_int("d_mlp", d_mlp)
        _check_choice("activation", activation, list(ACTIVATIONS))
        _check_choice("norm", norm, NORMS)
        _check_choice("init", init, TRANSFORMER_INITS)
        for field, flag in [("attn_bias", attn_bias), ("last_only", last_only)]:
            check(isinstance(flag, bool), field, flag, "must be true or false", ConfigError)
        ok = isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0.0 <= dropout < 1.0
        check(ok, "dropout", dropout, "must be a number in [0, 1)", ConfigError)

        self.seq_len = seq_len
        self.last_only = last_only
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(seq_len, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, d_mlp, activation, norm, dropout, attn_bias)
                                    for _ in range(depth))
        self.ln_f: nn.Module = nn.LayerNorm(dim) if norm in ("pre", "grokfast") else nn.Identity()
        self.head = nn.Linear(dim, num_outputs, bias=False)
        if init == "nanda":
            self._init_nanda()

    @torch.no_grad()
    def _init_nanda(self) -> None:
        for name, param in self.named_parameters():
            if name == "head.weight":
                param.normal_(0.0, self.head.out_features ** -0.5)
            elif name.endswith("bias"):
                param.zero_()
            elif param.ndim == 2:  # embeddings, attention and MLP matrices (not the LayerNorm gains)
                param.normal_(0.0, self.tok_emb.embedding_dim ** -0.5)

    def hidden_states(self, tokens: torch.Tensor, all_positions: bool = True) -> torch.Tensor:
        """Final residual stream after ``ln_f`` for int64 tokens ``(N, L)``: ``(N, L, dim)``, or ``(N, 1, dim)``
        (the last position) if ``all_positions`` is false and the model is ``last_only``."""
        if tokens.ndim != 2 or tokens.shape[1] > self.seq_len:
            raise ValueError(f"tokens must have shape (N, L) with L <= {self.seq_len}, got {tuple(tokens.shape)}")
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.tok_emb(tokens) + self.pos_emb(positions)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            h = block(h, last_only=self.last_only and not all_positions and i == last)
        return self.ln_f(h)

    def forward(self, tokens: torch.Tensor, all_positions: bool = False) -> torch.Tensor:
        """Logits ``(N, num_outputs)`` at the last position, or ``(N, L, num_outputs)`` if ``all_positions``."""
        h = self.hidden_states(tokens, all_positions)
        return self.head(h if all_positions else h[:, -1])


class GPTBlock(nn.Module):
    """One pre-LayerNorm block of :class:`GPT`: ``x + o(attn(ln1 x))``, then ``x + down(gelu(up(ln2 x)))``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.ModuleDict({n: nn.Linear(dim, dim) for n in "qkvo"})
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.ModuleDict({"up": nn.Linear(dim, 4 * dim), "down": nn.Linear(4 * dim, dim)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        h = self.ln1(x)
        q, k, v = (self.attn[c](h).view(n, length, self.heads, -1).transpose(1, 2) for c in "qkv")
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, length, -1)
        x = x + self.attn["o"](a)
        return x + self.mlp["down"](F.gelu(self.mlp["up"](self.ln2(x))))


class GPT(nn.Module):
    r"""A small nanoGPT-shaped language model: next-token logits at every position.

    ``h = tok_emb(x) + pos_emb(0..L-1)`` → ``depth`` pre-LayerNorm blocks (causal attention with separate
    ``q``, ``k``, ``v``, ``o`` projections, a GELU MLP of width 4·dim) → ``ln_f`` → ``head`` (untied, no bias):
    ``(N, L)`` int64 tokens to ``(N, L, num_outputs)`` logits, where position ``i`` sees tokens ``≤ i`` only.
    Init as nanoGPT: every Linear and Embedding weight ``N(0, 0.02²)``, every bias 0, LayerNorms (1, 0).

    Parameter names: ``tok_emb``, ``pos_emb``, ``blocks.{i}.ln1``, ``blocks.{i}.attn.{q,k,v,o}``,
    ``blocks.{i}.ln2``, ``blocks.{i}.mlp.{up,down}``, ``ln_f``, ``head``.  :func:`egalitarian.route` sends the
    ``attn`` and ``mlp`` weights to EGD and the rest to AdamW; the registry's methods select the same matrices
    with ``["blocks.*.attn.*.weight", "blocks.*.mlp.*.weight"]``.

    Args:
        vocab_size: number of token ids.
        seq_len: context length (size of the position table); inputs may be shorter.
        num_outputs: logits per position (the vocabulary for a language model).
        dim, depth, heads: width, number of blocks, attention heads (``dim % heads == 0``).
    """

    def __init__(self, vocab_size: int, seq_len: int, num_outputs: int, dim: int = 128, depth: int = 2,
                 heads: int = 4) -> None:
        super().__init__()
        for field, value in [("vocab_size", vocab_size), ("seq_len", seq_len), ("num_outputs", num_outputs),
                             ("dim", dim), ("depth", depth), ("heads", heads)]:
            _check_positive_int(field, value)
        check(dim % heads == 0, "heads", heads, f"must divide dim = {dim}", ConfigError)
        self.seq_len = seq_len
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(seq_len, dim)
        self.blocks = nn.ModuleList(GPTBlock(dim, heads) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_outputs, bias=False)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    m.weight.normal_(0.0, 0.02)
                    if isinstance(m, nn.Linear) and m.bias is not None:
                        m.bias.zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, L, num_outputs)`` for int64 tokens ``(N, L)``, ``L <= seq_len``."""
        if tokens.ndim != 2 or tokens.shape[1] > self.seq_len:
            raise ValueError(f"tokens must have shape (N, L) with L <= {self.seq_len}, got {tuple(tokens.shape)}")
        h = self.tok_emb(tokens) + self.pos_emb(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


class CNN(nn.Module):
    r"""Convolutions, 2×2 max-pooling, one fully connected layer and a linear head.

    .. math::
        h_0 = x,\qquad h_{i+1} = \mathrm{pool}(\sigma(\mathrm{conv}_i(h_i))),\qquad
        f(x) = W_{\text{head}}\,\sigma(W_{\text{fc}}\,\mathrm{flatten}(h_L) + b_{\text{fc}}) + b_{\text{head}}

    The EGD paper's App. E (Table 8, the label-shuffle protocol of Sokar et al. 2023 in the setup of Castanyer
    et al. 2025) describes the network only as "3 conv + max-pool + FC + head"; the widths, kernel size and
    where the pooling sits are not given, so they are arguments here, with small defaults (3×3 kernels, 32-64-64
    channels, a 2×2 max-pool after each conv, FC width 256).  Convolutions keep the spatial size
    (``padding = kernel_size // 2``); each pool halves it (floor).

    Parameters: ``convs.{i}.weight`` ``(out, in, k, k)``, ``convs.{i}.bias``, ``fc.weight``, ``fc.bias``,
    ``head.weight``, ``head.bias``.  EGD whitens a conv kernel as the ``(out, in·k·k)`` matrix
    (:func:`egalitarian.transforms.whiten`); the paper's choice "every conv layer and the FC layer" is
    ``whiten = ["convs.*.weight", "fc.weight"]`` (``"all"`` also whitens the head).  Init: PyTorch defaults.

    Args:
        in_channels, height, width: the image layout (fixed by the task: ``TaskData.image_shape``).  The
            input is ``(N, C, H, W)`` or the task's flattened ``(N, C·H·W)`` rows (reshaped here).
        num_outputs: number of classes (fixed by the task).
        channels: output channels of each convolution (one per conv layer; the paper has three).
        kernel_size: odd kernel size of every convolution.
        fc: width of the fully connected layer.
        activation: one of ``relu, gelu, tanh, silu, identity``.
        pool: ``"each"`` (a 2×2 max-pool after every conv) or ``"last"`` (one, after the last conv).
    """

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        num_outputs: int,
        channels: Sequence[int] = (32, 64, 64),
        kernel_size: int = 3,
        fc: int = 256,
        activation: str = "relu",
        pool: str = "each",
    ) -> None:
        super().__init__()
        for field, value in [("in_channels", in_channels), ("height", height), ("width", width),
                             ("num_outputs", num_outputs), ("kernel_size", kernel_size), ("fc", fc)]:
            _check_positive_int(field, value)
        ok = not isinstance(channels, (str, bytes)) and isinstance(channels, Sequence) and len(channels) > 0
        check(ok and all(_is_int(c) and c > 0 for c in channels), "channels", channels,
              "must be a non-empty list of positive integers", ConfigError)
        check(kernel_size % 2 == 1, "kernel_size", kernel_size, "must be odd (the convolutions keep the size)",
              ConfigError)
        _check_choice("activation", activation, list(ACTIVATIONS))
        _check_choice("pool", pool, POOLS)
        pools = len(channels) if pool == "each" else 1
        check(min(height, width) >> pools >= 1, "pool", pool,
              f"{pools} 2x2 max-pool(s) do not fit a {height}x{width} image", ConfigError)

        self.shape = (in_channels, height, width)
        self.pool_each = pool == "each"
        widths = [in_channels, *channels]
        self.convs = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], kernel_size, padding=kernel_size // 2) for i in range(len(channels))
        )
        self.act = ACTIVATIONS[activation]()
        self.fc = nn.Linear(channels[-1] * (height >> pools) * (width >> pools), fc)
        self.head = nn.Linear(fc, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` or ``(N, C·H·W)`` images to ``(N, num_outputs)`` logits."""
        if x.ndim == 2:
            x = x.view(x.shape[0], *self.shape)
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = self.act(conv(x))
            if self.pool_each or i == last:
                x = F.max_pool2d(x, 2)
        return self.head(self.act(self.fc(x.flatten(1))))


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
