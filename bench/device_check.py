"""One command that checks EGD on an accelerator: the polar backends' time and error, the GPT step, an FSDP2 run.

    python bench/device_check.py [--device cuda|cpu] [--quick] [--budget SECONDS] [--out DIR]

Written for the first GPU this project gets (issue #29, item 6): it runs in under 8 minutes on one GPU and, as a dry
run, on the CPU (``--device cpu``, or automatically when torch sees no CUDA device; the CPU implies ``--quick``).
Three parts, each in its own ``try`` (an exception is recorded with its traceback and the next part runs), all
within ``--budget`` seconds (default 420 on a GPU, 150 on the CPU; a cell that would start after it is recorded as
skipped):

1. **polar**: every backend (``auto``, the exact ``svd`` and ``gram-eigh`` in fp64, ``svd`` in fp32,
   ``polar-express`` in fp32 and fp64, ``newton-schulz``) × shape (128 × 128, 512 × 128, 1024 × 1024, 4096 × 1024;
   ``--quick``: the first two) × batch (1, 8; ``--quick``: 1, 4) × input dtype (fp32, bf16): the median ms per
   ``polar()`` call (the clock read after ``torch.cuda.synchronize()``) and the relative Frobenius error against the
   fp64 SVD polar factor of the same (rounded) input, computed on the CPU (worst matrix of the batch; cutoff at the
   default ``rtol``).  Inputs: random singular vectors, singular values log-spaced from 1 to 1e-3.
2. **gpt_step**: one training step of the byte-level GPT (recipe ``stdlib-gpt``) on the device for AdamW, Muon and
   EGD + AdamW (``auto``, which is ``polar-express`` off the CPU, and the exact ``gram-eigh``; and the recipe's
   ``egd_before_rms``), interleaved: step and optimizer ms, × AdamW (``bench/gpt_step.py``'s steppers).
3. **fsdp2**: a process group of one rank (``nccl`` on CUDA, ``gloo`` on the CPU), the GPT's blocks and root
   ``fully_shard``-ed, three EGD steps against the same steps of the unsharded model (largest relative difference
   of a parameter), then a ``torch.distributed.checkpoint`` save and load of model and optimizer and one more
   step, which must equal the uninterrupted run's.

Writes ``DIR/device_check.json`` after every part (a run cut short keeps what it measured) and
``DIR/device_check.md`` (default ``DIR``: ``device-check``), and prints the Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpt_step  # noqa: E402

import egalitarian  # noqa: E402
from egalitarian.io import write_json, write_text  # noqa: E402
from egalitarian.linalg import default_rtol, polar, resolve_backend  # noqa: E402

BACKENDS: dict[str, dict[str, Any]] = {
    "auto": {"backend": "auto"},
    "svd (fp64)": {"backend": "svd"},
    "gram-eigh (fp64)": {"backend": "gram-eigh"},
    "svd fp32": {"backend": "svd", "dtype": torch.float32},
    "polar-express (fp32)": {"backend": "polar-express"},
    "polar-express fp64": {"backend": "polar-express", "dtype": torch.float64},
    "newton-schulz (fp32)": {"backend": "newton-schulz"},
}
ROUNDED = "(the reference rounded to the input dtype)"
SHAPES = [(128, 128), (512, 128), (1024, 1024), (4096, 1024)]
KAPPA = 1e3


class Budget:
    """Seconds left of the run's budget."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def test_matrices(batch: int, m: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """``(batch, m, n)`` on the CPU in ``dtype``: U diag(σ) Vᵀ, σ log-spaced from 1 to 1/KAPPA, random U and V."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U = torch.linalg.qr(torch.randn(batch, m, k, dtype=torch.float64, generator=g)).Q
    V = torch.linalg.qr(torch.randn(batch, n, k, dtype=torch.float64, generator=g)).Q
    s = torch.logspace(0, -torch.log10(torch.tensor(KAPPA)).item(), k, dtype=torch.float64)
    return ((U * s) @ V.mT).to(dtype)


def reference(G: torch.Tensor) -> torch.Tensor:
    """The fp64 SVD polar factor of ``G`` (as rounded to its dtype) on the CPU, kept subspace ``s > rtol·s_max``."""
    rtol = default_rtol(G.shape, G.dtype)
    U, s, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return (U * (s > rtol * s[..., :1]).double().unsqueeze(-2)) @ Vh


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a = a.detach().to("cpu", torch.float64)
    return (torch.linalg.matrix_norm(a - ref) / torch.linalg.matrix_norm(ref)).max().item()


def timed_ms(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> tuple[float, Any]:
    """Median ms of ``repeats`` calls after one warm-up (none more if the warm-up took > 5 s), and the last result."""
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    first = time.perf_counter() - t
    if first > 5:
        return 1e3 * first, out
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times), out


def part_polar(device: torch.device, quick: bool, budget: Budget, sync: Callable[[], None]) -> dict[str, Any]:
    shapes = SHAPES[:2] if quick else SHAPES
    batches = [1, 4] if quick else [1, 8]
    repeats = 2 if quick else 5
    cells = []
    for dtype in (torch.float32, torch.bfloat16):
        for m, n in shapes:
            for b in batches:
                if budget.left() <= 0:
                    cells.append({"dtype": str(dtype), "shape": [m, n], "batch": b, "skipped": "budget"})
                    continue
                G = test_matrices(b, m, n, dtype)
                ref = reference(G)
                # the result comes back in the input's dtype: its rounding alone (bf16: ~2e-3) bounds every error
                cells.append({"backend": ROUNDED, "dtype": str(dtype), "shape": [m, n], "batch": b, "ms": 0.0,
                              "err": rel_err(ref.to(dtype), ref)})
                G = G.to(device)
                for name, kw in BACKENDS.items():
                    cell: dict[str, Any] = {"backend": name, "dtype": str(dtype), "shape": [m, n], "batch": b}
                    if budget.left() <= 0:
                        cells.append({**cell, "skipped": "budget"})
                        continue
                    try:
                        ms, out = timed_ms(lambda G=G, kw=kw: polar(G, **kw), repeats, sync)
                        cell.update(ms=ms, err=rel_err(out, ref))
                    except Exception as e:  # one failing backend must not hide the others
                        cell["error"] = f"{type(e).__name__}: {e}"
                    cells.append(cell)
    probe = torch.zeros(2, 2, device=device)
    return {"auto_resolves_to": resolve_backend("auto", probe), "cells": cells}


def part_gpt_step(device: torch.device, quick: bool, budget: Budget) -> dict[str, Any]:
    warmup, repeats = (2, 5) if quick else (5, 20)
    dev = str(device)
    steppers = {"AdamW": gpt_step.Stepper(egalitarian, "adamw", device=dev),
                "Muon (fp32 NS5)": gpt_step.Stepper(egalitarian, "muon", device=dev),
                "EGD + AdamW (`egd`, `auto`)": gpt_step.Stepper(egalitarian, "egd", "auto", device=dev),
                "EGD + AdamW (`egd`, `gram-eigh`)": gpt_step.Stepper(egalitarian, "egd", "gram-eigh", device=dev),
                "EGD + AdamW (`egd_before_rms`, `auto`)": gpt_step.Stepper(egalitarian, "egd_before_rms",
                                                                           device=dev)}
    times: dict[str, list[tuple[float, ...]]] = {k: [] for k in steppers}
    names = list(steppers)
    for i in range(warmup + repeats):
        if i >= warmup and budget.left() <= 0:
            break
        for name in names[i % len(names):] + names[: i % len(names)]:
            t = steppers[name]()
            if i >= warmup:
                times[name].append(t)
    base = statistics.median(t[0] for t in times["AdamW"])
    rows = [{"method": k, "step_ms": 1e3 * statistics.median(t[0] for t in v),
             "optimizer_ms": 1e3 * statistics.median(t[1] for t in v),
             "x_adamw": statistics.median(t[0] for t in v) / base, "steps": len(v)} for k, v in times.items()]
    return {"rows": rows}


def _fsdp_run(device: torch.device, shard: bool, steps: int, checkpoint: str | None = None) -> list[torch.Tensor]:
    """``steps`` EGD steps of the GPT on one batch (sharded or not); with ``checkpoint``, the model and optimizer are
    saved after them, loaded into a fresh sharded copy, and that copy takes one more step.  The parameters after."""
    from torch.distributed.fsdp import fully_shard

    from egalitarian.build import build_optimizer_from, build_run
    from egalitarian.config import load_config, resolve
    from egalitarian.methods import OPTIMIZERS

    cfg = load_config("stdlib-gpt")
    cfg["method"] = "egd_before_rms"
    resolved = resolve(cfg, OPTIMIZERS)

    def fresh() -> tuple[Any, Any, Any]:
        run = build_run(resolved, device)
        if shard:
            for block in run.model.blocks:
                fully_shard(block)
            fully_shard(run.model)
        return run, run.model, build_optimizer_from(resolved, run.model)

    run, model, opt = fresh()
    idx = torch.randint(0, run.data.n_train, (16,), generator=torch.Generator().manual_seed(0)).to(device)
    x, y = run.data.x_train[idx], run.data.y_train[idx]

    def step(model: Any, opt: Any) -> None:
        opt.zero_grad(set_to_none=True)
        run.loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(steps):
        step(model, opt)
    if checkpoint is not None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=checkpoint)
        _, model, opt = fresh()
        msd, osd = get_state_dict(model, opt)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=checkpoint)
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        step(model, opt)
    return [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().cpu().double() for p in model.parameters()]


def part_fsdp2(device: torch.device) -> dict[str, Any]:
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=120))
    try:
        t = time.perf_counter()
        plain = _fsdp_run(device, False, 3)
        sharded = _fsdp_run(device, True, 3)
        with tempfile.TemporaryDirectory() as ckpt:
            plain4 = _fsdp_run(device, False, 4)
            resumed = _fsdp_run(device, True, 3, checkpoint=ckpt)
        seconds = time.perf_counter() - t
    finally:
        dist.destroy_process_group()

    def worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max(((p - q).norm() / q.norm().clamp_min(1e-30)).item() for p, q in zip(a, b, strict=True))

    d3, d4 = worst(sharded, plain), worst(resumed, plain4)
    finite = all(bool(torch.isfinite(p).all()) for p in sharded + resumed)
    return {"backend": backend, "max_rel_diff_3_steps": d3, "max_rel_diff_after_checkpoint": d4, "finite": finite,
            "seconds": seconds, "ok": finite and d3 < 1e-4 and d4 < 1e-4}


def environment(device: torch.device) -> dict[str, Any]:
    env = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "python": platform.python_version(), "torch": torch.__version__,
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "threads": torch.get_num_threads(), "device": str(device), "argv": sys.argv[1:]}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   capability=f"{props.major}.{props.minor}")
    return env


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = ["# bench/device_check.py " + " ".join(env["argv"]), "",
             ", ".join(f"{k} {v}" for k, v in env.items() if k != "argv"), ""]
    for part, outcome in result["parts"].items():
        lines += [f"## {part} ({outcome.get('seconds', 0):.0f} s)", ""]
        if "error" in outcome:
            lines += ["**failed:**", "", "```", outcome["error"].rstrip(), "```", ""]
            continue
        if part == "polar":
            lines += [f"`auto` resolves to `{outcome['auto_resolves_to']}` here.  Median ms per call (relative error "
                      "against the fp64 SVD on the CPU).", ""]
            cols = sorted({(c["dtype"], tuple(c["shape"]), c["batch"]) for c in outcome["cells"]},
                          key=lambda c: (c[0], c[1], c[2]))
            lines += ["| backend | " + " | ".join(f"{d.split('.')[-1]} {m}×{n}" + (f" ×{b}" if b > 1 else "")
                                                 for d, (m, n), b in cols) + " |", "|---|" + "---|" * len(cols)]
            for name in [*BACKENDS, ROUNDED]:
                row = []
                for d, shape, b in cols:
                    c = next((c for c in outcome["cells"] if c.get("backend") == name and c["dtype"] == d
                              and tuple(c["shape"]) == shape and c["batch"] == b), None)
                    row.append("skipped" if c is None or "skipped" in c else "error" if "error" in c else
                               f"({c['err']:.0e})" if name == ROUNDED else f"{c['ms']:.2f} ({c['err']:.0e})")
                lines.append(f"| {name} | " + " | ".join(row) + " |")
            errors = [c for c in outcome["cells"] if "error" in c]
            lines += [""] + [f"- {c['backend']} {c['dtype']} {c['shape']} ×{c['batch']}: {c['error']}" for c in errors]
        elif part == "gpt_step":
            lines += ["| method | step ms | of which the optimizer | × AdamW's step | steps |", "|---|---|---|---|---|"]
            lines += [f"| {r['method']} | {r['step_ms']:.1f} | {r['optimizer_ms']:.1f} | {r['x_adamw']:.2f} | "
                      f"{r['steps']} |" for r in outcome["rows"]]
        else:
            lines += [f"- {k}: {v}" for k, v in outcome.items() if k != "seconds"]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when torch sees one")
    ap.add_argument("--quick", action="store_true", help="the small shapes, fewer repeats (implied on the CPU)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run (420 GPU, 150 CPU)")
    ap.add_argument("--parts", default="polar,gpt_step,fsdp2")
    ap.add_argument("--out", type=Path, default=Path("device-check"))
    args = ap.parse_args()
    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    device = torch.device(name)
    quick = args.quick or device.type == "cpu"
    if device.type == "cpu":
        torch.set_num_threads(1)
    budget = Budget(args.budget if args.budget is not None else 150 if device.type == "cpu" else 420)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result: dict[str, Any] = {"environment": {**environment(device), "quick": quick}, "parts": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    parts = {"polar": lambda: part_polar(device, quick, budget, sync),
             "gpt_step": lambda: part_gpt_step(device, quick, budget),
             "fsdp2": lambda: part_fsdp2(device)}
    for part in args.parts.split(","):
        t = time.perf_counter()
        try:
            outcome = parts[part]() if budget.left() > 0 else {"skipped": "budget"}
        except Exception:
            outcome = {"error": traceback.format_exc()}
        outcome["seconds"] = time.perf_counter() - t
        result["parts"][part] = outcome
        write_json(args.out / "device_check.json", result)
    text = markdown(result)
    write_text(args.out / "device_check.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
