"""Why full EGD stalls on some sparse-parity seeds (issue #18): measurements at the stall, from run directories.

    python experiments/20-parity-stalls/parity_stall.py sweeps/parity-full-egd-k3/RUN_ID [RUN_ID ...] \
        [--batches 20] [--steps 62]

For each run (an EGD run on a ``parity-k*`` recipe, finished or interrupted: its ``checkpoint.pt`` holds the last
weights), at those weights:

* the fit: training accuracy and squared loss on the whole training set, ``‖W1‖_F``;
* the solution: ``relevant`` = the share of ``‖W1‖_F²`` on the k secret input coordinates (the recipes'
  ``secret = "first"``: columns 0..k−1; a sparse-parity solution puts most of W1 there), and ``W1_erank``, the
  Roy–Vetterli effective rank of W1's singular values;
* on ``--batches`` random mini-batches of the training batch size, the gradient of W1 as the trainer forms it,
  ``G = B + λ W1`` (B: the data term of the batch, rank ≤ batch size; λ W1: the L2 term of the loss), its singular
  values ``s`` (float64 SVD), and:
  - ``kept``: directions the exact whitening keeps (``s > rtol·s_max``: the run's ``rtol``, by default
    ``max(m, n)·ε``); every one of
    them moves at the same speed ``lr`` in the step ``−lr·U Vᵀ``;
  - ``weak``: kept directions with ``s < 10⁻² s_max``; ``weak_step`` = their share of the whitened step's squared
    norm (``weak / kept``), ``weak_grad`` = their share of ``‖G‖_F²``;
  - the *shrink per step* of W1 along itself, ``−lr⟨step, W1⟩/‖W1‖_F²`` (the fraction of W1 the step removes
    along W1), for the whitened step of G, for the whitened step of the data term B alone, and for SGD's L2 term
    (``lr·λ``);
* the path: ``--steps`` further optimizer steps from the checkpoint (the run's own optimizer state and data
  order are not restored: random batches), the mean cosine between consecutive W1 updates and the ratio of the
  net displacement to the path length (1: a straight path; ≈ 1/√steps: a random walk; ≈ 0: going back and forth).

It prints one row per run; ``--json`` writes them too.  Nothing here changes a run directory.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from egalitarian.build import build_run
from egalitarian.config import resolve
from egalitarian.linalg import default_rtol, polar
from egalitarian.losses import l2_penalty
from egalitarian.methods import OPTIMIZERS


def load(run_dir: Path):
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg = resolve(cfg.get("config", cfg), OPTIMIZERS)
    run = build_run(cfg)
    ck = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    run.model.load_state_dict(ck["model"])
    summary = run_dir / "summary.json"
    return cfg, run, (json.loads(summary.read_text()) if summary.exists() else {})


def gradients(run, xb, yb) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, B): W1's gradient with the loss's L2 term (what the trainer whitens) and without it."""
    W1 = run.model.layers[0].weight
    run.model.zero_grad()
    run.loss_fn(run.model(xb), yb).backward()
    B = W1.grad.detach().clone()
    run.model.zero_grad()
    loss = run.loss_fn(run.model(xb), yb)
    if run.l2:
        loss = loss + l2_penalty(run.decayed, run.l2)
    loss.backward()
    G = W1.grad.detach().clone()
    run.model.zero_grad()
    return G, B


def measure(run_dir: Path, batches: int, steps: int) -> dict:
    cfg, run, summary = load(run_dir)
    lr, lam, bs = cfg["optimizer"]["lr"], run.l2, cfg["train"]["batch_size"]
    opt_cfg = cfg["optimizer"]
    rtol = opt_cfg.get("rtol") or default_rtol(run.model.layers[0].weight.shape, torch.float32)
    variant = ", ".join(f"{k}={opt_cfg[k]}" for k in ("rtol", "weight_decay", "momentum", "scale")
                        if opt_cfg.get(k) not in (None, 0, 0.0, "none"))
    variant += f"{', ' if variant else ''}L2={lam:g}" + (f", {cfg['scheduler']['name']}" if "scheduler" in cfg else "")
    model, data = run.model, run.data
    W1 = model.layers[0].weight
    with torch.no_grad():
        out = model(data.x_train)
        fit_loss = float(run.loss_fn(out, data.y_train))
        fit_acc = float((torch.sign(out.squeeze(-1)) == data.y_train.squeeze(-1)).float().mean())
    W = W1.detach().double()
    k = cfg["task"]["k"]
    sw = torch.linalg.svdvals(W)
    pw = sw / sw.sum()
    erank = float(torch.exp(-(pw[pw > 0] * pw[pw > 0].log()).sum()))
    relevant = float(W[:, :k].pow(2).sum() / W.pow(2).sum())
    gen = torch.Generator().manual_seed(0)
    acc = {"kept": [], "weak": [], "weak_step": [], "weak_grad": [], "shrink_G": [], "shrink_B": [], "cos": []}
    for _ in range(batches):
        idx = torch.randperm(data.n_train, generator=gen)[:bs]
        G, B = gradients(run, data.x_train[idx], data.y_train[idx])
        s = torch.linalg.svdvals(G.double())
        kept = s > rtol * s[0]
        weak = kept & (s < 1e-2 * s[0])
        acc["kept"].append(int(kept.sum()))
        acc["weak"].append(int(weak.sum()))
        acc["weak_step"].append(float(weak.sum() / kept.sum()))
        acc["weak_grad"].append(float((s[weak] ** 2).sum() / (s**2).sum()))
        for key, M in (("shrink_G", G), ("shrink_B", B)):
            P = polar(M, rtol=rtol).double()  # fp32 in, with the run's cutoff, as the optimizer whitens it
            acc[key].append(float(lr * (P * W).sum() / (W * W).sum()))
        P = polar(G, rtol=rtol).double()
        acc["cos"].append(float((P * G.double()).sum() / (P.norm() * G.double().norm())))
    # the path: further steps with the run's optimizer (fresh state) on random batches
    opt = run.optimizer
    before = [W1.detach().double().clone()]
    for _ in range(steps):
        idx = torch.randperm(data.n_train, generator=gen)[:bs]
        opt.zero_grad()
        loss = run.loss_fn(model(data.x_train[idx]), data.y_train[idx])
        if run.l2:
            loss = loss + l2_penalty(run.decayed, run.l2)
        loss.backward()
        opt.step()
        before.append(W1.detach().double().clone())
    d = [b - a for a, b in zip(before, before[1:], strict=False)]
    cosines = [float((u * v).sum() / (u.norm() * v.norm())) for u, v in zip(d, d[1:], strict=False)]
    path = sum(float(u.norm()) for u in d)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {
        "run": run_dir.name,
        "seed": cfg["train"]["seed"],
        "variant": variant,
        "k": cfg["task"]["k"],
        "status": summary.get("status"),
        "epochs": summary.get("epochs"),
        "train_acc": fit_acc,
        "train_loss": fit_loss,
        "test_acc": summary.get("final_test_acc"),
        "W1_norm": float(W.norm()),
        "relevant": relevant,
        "W1_erank": erank,
        "lr": lr,
        "l2": lam,
        "kept": mean(acc["kept"]),
        "weak": mean(acc["weak"]),
        "weak_step": mean(acc["weak_step"]),
        "weak_grad": mean(acc["weak_grad"]),
        "shrink_G": mean(acc["shrink_G"]),
        "shrink_B": mean(acc["shrink_B"]),
        "shrink_sgd": lr * lam,
        "cos_step_grad": mean(acc["cos"]),
        "update_norm": mean([float(u.norm()) for u in d]),
        "update_norm_theory": lr * math.sqrt(mean(acc["kept"])),
        "consecutive_cos": mean(cosines),
        "net_over_path": float(sum(d).norm()) / path,
    }


COLUMNS = [("variant", "{}"), ("seed", "{}"), ("status", "{}"), ("epochs", "{}"), ("train_acc", "{:.3f}"),
           ("test_acc", "{:.3f}"),
           ("W1_norm", "{:.2f}"), ("relevant", "{:.3f}"), ("W1_erank", "{:.1f}"), ("kept", "{:.1f}"),
           ("weak", "{:.1f}"), ("weak_step", "{:.2f}"),
           ("weak_grad", "{:.1e}"), ("shrink_G", "{:.2e}"), ("shrink_B", "{:.2e}"), ("shrink_sgd", "{:.1e}"),
           ("cos_step_grad", "{:.2f}"), ("update_norm", "{:.3f}"), ("consecutive_cos", "{:.2f}"),
           ("net_over_path", "{:.3f}")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--steps", type=int, default=62)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = [measure(r, a.batches, a.steps) for r in a.runs]
    print("| " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for r in rows:
        print("| " + " | ".join(f.format(r[c]) if r[c] is not None else "-" for c, f in COLUMNS) + " |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
