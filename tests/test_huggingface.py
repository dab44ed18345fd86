"""docs/INTEGRATIONS.md's Hugging Face ``Trainer`` blocks, run as written on a tiny Llama, against a hand loop.

Each block is executed from the page itself (so the page cannot drift from what runs) with ``model``, ``train``,
``steps`` and ``args`` supplied; its ``trainer.train()`` must leave the same weights as a plain torch loop that
builds the same optimizer by hand and applies what the Trainer is documented to do: the loss's gradient, a
global norm clip at ``max_grad_norm`` (1.0 by default), ``step()``, then the schedule, written out here as a
formula (linear decay to 0; warm-up + cosine).  Skipped when transformers is absent (it is in the dev extra).
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from egalitarian import EGD, Preconditioned, egd_for  # noqa: E402

pytestmark = pytest.mark.slow
PAGE = Path(__file__).resolve().parents[1] / "docs" / "INTEGRATIONS.md"
STEPS = 10
WEIGHT_DECAY = 0.1  # args.weight_decay: the Trainer's decayed group gets it on the optimizer_cls_and_kwargs path


def blocks() -> dict[str, str]:
    """The page's Hugging Face blocks, each named by the call that sets its optimizer up."""
    section = PAGE.read_text().split("## Hugging Face Trainer\n", 1)[1].split("\n## ", 1)[0]
    codes = re.findall(r"```python\n(.*?)```", section, re.S)
    names = {"egd_for(model": "egd_for", "get_cosine_schedule_with_warmup(opt": "cosine",
             "(EGD, {": "cls-egd", "(Preconditioned, {": "cls-preconditioned"}
    named = {name: code for code in codes for key, name in names.items() if key in code}
    assert len(codes) == len(named) == len(names), "each block of the section is run by this test"
    return named


def tiny_llama() -> torch.nn.Module:
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                                      bos_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def linear(step: int) -> float:
    """The Trainer's default schedule (``lr_scheduler_type="linear"``, no warm-up): 1 → 0 over STEPS."""
    return 1 - step / STEPS


def warmup_cosine(step: int, warmup: int = STEPS // 10) -> float:
    """Linear warm-up over ``warmup`` steps, then half a cosine to 0 at STEPS."""
    if step < warmup:
        return step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (STEPS - warmup)))


def trainer_groups(model: torch.nn.Module) -> list[dict]:
    """The Trainer's two groups for a Llama: every matrix decayed; the norm weights (its only vectors) not."""
    return [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}]


def by_hand(block: str, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, callable]:
    """The optimizer each block builds, built here without the Trainer, and its schedule as a formula."""
    if block == "egd_for":
        return egd_for(model, lr=0.02), linear
    if block == "cosine":
        named = list(model.named_parameters())
        matrices = [p for n, p in named if p.ndim >= 2 and "embed" not in n]
        others = [p for n, p in named if p.ndim < 2 or "embed" in n]
        opt = EGD([{"params": matrices}, {"params": others, "whiten": False}],
                  lr=0.02, momentum=0.95, nesterov=True, momentum_position="before", scale="muon")
        return opt, warmup_cosine
    if block == "cls-egd":
        return EGD(trainer_groups(model), lr=0.02, momentum=0.95, nesterov=True, scale="rms"), linear
    return Preconditioned(trainer_groups(model), base=torch.optim.AdamW, lr=3e-4, betas=(0.9, 0.95)), linear


def hand_loop(block: str, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    opt, factor = by_hand(block, model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    for _ in range(STEPS):
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()


@pytest.mark.parametrize("block", ["egd_for", "cosine", "cls-egd", "cls-preconditioned"])
def test_trainer_block_trains_as_the_hand_loop(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the blocks write under "out"
    ids = torch.randint(0, 32, (12,), generator=torch.Generator().manual_seed(1))
    train = [{"input_ids": ids, "labels": ids}]  # one example, so every batch is the same whatever the order
    # learning_rate is not EGD's: on the optimizer_cls_and_kwargs path the kwargs' lr must win
    args = transformers.TrainingArguments("out", max_steps=STEPS, weight_decay=WEIGHT_DECAY, learning_rate=123.0,
                                          report_to=[], disable_tqdm=True)
    model = tiny_llama()
    start = copy.deepcopy(model)
    reference = copy.deepcopy(model)
    space = {"model": model, "train": train, "steps": STEPS, "args": args}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' advice (a plain config, no tokenizer) is not ours
        exec(blocks()[block], space)
        trainer = space["trainer"]
        trainer.train()
    assert trainer.state.global_step == STEPS
    assert all(g["lr"] == pytest.approx(0.0, abs=1e-12) for g in trainer.optimizer.param_groups)  # decayed to 0

    hand_loop(block, reference, {"input_ids": ids[None], "labels": ids[None]})
    with torch.no_grad():
        moved = max(float((a - b).abs().max()) for a, b in zip(model.parameters(), start.parameters(), strict=True))
    assert moved > 1e-3  # it trained
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        # the Trainer's loss is summed / counted tokens, the hand loop's a mean: the same to rounding (tight
        # enough that AdamW's decay of 3e-4·0.1 per step, left out, fails it)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}")
