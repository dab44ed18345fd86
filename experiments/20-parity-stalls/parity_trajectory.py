"""How a sparse-parity run finds (or misses) the secret coordinates, epoch by epoch (issue #18).

    python experiments/20-parity-stalls/parity_trajectory.py --recipe parity-k3 --method egd --seeds 4 11 13 0 5 10 \
        --epochs 300 \
        --out experiments/20-parity-stalls/parity_trajectory_k3.png \
        --json experiments/20-parity-stalls/parity_trajectory_k3.json [--set KEY=VALUE ...]

Replays the trainer's loop for a recipe × method × seed (the same ``build_run``, the same data-order generator
and :func:`egalitarian.train.train_step`, so the weights are the trainer's: the epoch at which test accuracy first
reaches 95% is checked against a plain ``egd run`` in the output) and records after every epoch:

* ``relevant``: the share of ``‖W1‖_F²`` on the k secret input coordinates (the recipes' ``secret = "first"``);
  a sparse-parity solution concentrates W1 there, a random W1 has ``k/n`` of it;
* ``W1``: ``‖W1‖_F``; the running training accuracy of the epoch and the test accuracy.

The figure has one panel per quantity, one line per seed (failed runs red).  No run directory is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from egalitarian.build import build_run
from egalitarian.config import load_config, parse_value, resolve
from egalitarian.losses import accuracy
from egalitarian.methods import OPTIMIZERS
from egalitarian.train import Batches, evaluate, train_step


def config(recipe: str, method: str, seed: int, sets: list[str]) -> dict:
    cfg = load_config(recipe)
    cfg["method"] = method
    cfg.setdefault("train", {}).update({"seed": seed, "shuffle_seed": seed, "threads": 1, "progress": "off"})
    cfg.setdefault("task", {})["seed"] = seed
    for item in sets:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        cfg.setdefault(section, {})[name] = parse_value(value)
    return resolve(cfg, OPTIMIZERS)


def trajectory(cfg: dict, epochs: int) -> dict:
    run = build_run(cfg)
    data, W1, k = run.data, run.model.layers[0].weight, cfg["task"]["k"]
    batches = Batches.of(data.n_train, cfg["train"])
    gen = torch.Generator().manual_seed(cfg["train"]["shuffle_seed"])
    out = {"epoch": [], "relevant": [], "W1": [], "train_acc": [], "test_acc": []}
    grok = None
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(data.n_train, generator=gen) if batches.shuffle else None
        correct = count = 0.0
        for b in range(batches.per_epoch):
            idx = slice(b * batches.size, (b + 1) * batches.size) if perm is None else \
                perm[b * batches.size:(b + 1) * batches.size]
            xb, yb = data.x_train[idx], data.y_train[idx]
            _, o, _ = train_step(run, xb, yb)
            with torch.no_grad():
                correct += float(accuracy(o, yb)) * len(yb)
                count += len(yb)
        W = W1.detach().double()
        _, test_acc = evaluate(run.model, data.x_test, data.y_test, run.loss_fn, 16384)
        for key, v in (("epoch", epoch), ("relevant", float(W[:, :k].pow(2).sum() / W.pow(2).sum())),
                       ("W1", float(W.norm())), ("train_acc", correct / count), ("test_acc", test_acc)):
            out[key].append(v)
        if grok is None and test_acc >= cfg["train"]["grok_threshold"]:
            grok = epoch
    out["grok_epoch"] = grok
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="parity-k3")
    ap.add_argument("--method", default="egd")
    ap.add_argument("--seeds", type=int, nargs="+", default=[])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--replot", type=Path, help="draw --out from this --json file instead of training")
    a = ap.parse_args()
    torch.set_num_threads(1)
    runs = {}
    if a.replot:
        saved = json.loads(a.replot.read_text())
        runs = {int(k): v for k, v in saved["runs"].items()}
        a.recipe, a.method, a.set, a.seeds = saved["recipe"], saved["method"], saved["set"], []
    for s in a.seeds:
        t = trajectory(config(a.recipe, a.method, s, a.set), a.epochs)
        runs[s] = t
        marks = [t["relevant"][i] for i in (0, 9, 49, 99, len(t["epoch"]) - 1) if i < len(t["epoch"])]
        print(f"seed {s}: 95% test at epoch {t['grok_epoch']}; relevant share at epochs 1/10/50/100/end: "
              + ", ".join(f"{m:.3f}" for m in marks) + f"; final train {t['train_acc'][-1]:.3f}, "
              f"test {t['test_acc'][-1]:.3f}, |W1| {t['W1'][-1]:.2f}", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"recipe": a.recipe, "method": a.method, "set": a.set, "runs": runs}))
    if a.out:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(15, 3.6), dpi=90)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 4)
        for s, t in runs.items():
            failed = t["grok_epoch"] is None
            style = {"color": "C3" if failed else "C0", "alpha": 0.9 if failed else 0.5, "lw": 1.2}
            label = f"seed {s}: " + (f"not by epoch {t['epoch'][-1]}" if failed else f"95% at {t['grok_epoch']}")
            for ax, key in zip(axes, ("relevant", "W1", "train_acc", "test_acc"), strict=True):
                ax.plot(t["epoch"], t[key], label=label, **style)
        for ax, title in zip(axes, ("share of |W1|² on the k secret inputs", "|W1|_F", "train acc (running)",
                                    "test acc"), strict=True):
            ax.set(title=title, xlabel="epoch", xscale="log")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{a.recipe}, {a.method} {' '.join(a.set)}")
        fig.tight_layout()
        fig.savefig(a.out)
        print(f"figure: {a.out}")


if __name__ == "__main__":
    main()
