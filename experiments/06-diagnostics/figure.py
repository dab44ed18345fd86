"""SGD vs EGD over training, from two run directories: W1's raw-gradient conditioning, the unembedding LAR, accuracy.

    python experiments/06-diagnostics/figure.py SGD_RUN EGD_RUN [--no-wd-run SGD_NO_WD_RUN] \
        [--out experiments/06-diagnostics/diagnostics_p97.png]

The two runs are of the same recipe, logged with ``spectrum`` and ``lar`` (e.g. ``egd run --config mod-add-p97
--method sgd --set 'diagnostics=["default"]'``).  Panel (a): the condition number κ = s_max/s_min of W1's raw
gradient and its median-κ s_1/s_⌈r/2⌉ (rolling median of 9 evaluations); (b): the unembedding LAR; (c): train and
test accuracy; epochs on a log axis, a dotted line where each run first reaches 95% test accuracy.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from egalitarian.rundir import read_metrics

HERE = Path(__file__).resolve().parent


def _load(run: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in read_metrics(run):
        out.setdefault(f"{r.split}_{r.metric}", []).append((r.epoch, r.value))
    return out


def _rolling_median(ys: list[float], k: int = 9) -> list[float]:
    h = k // 2
    return [statistics.median(ys[max(0, i - h) : i + h + 1]) for i in range(len(ys))]


def figure(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer = args.layer
    runs = [("SGD", args.sgd_run, "tab:red"), ("EGD", args.egd_run, "tab:blue")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    if args.no_wd_run:  # reference: the same SGD run without the L2 term, panel (a) only
        pts = [(e, v) for e, v in _load(args.no_wd_run).get(f"diag_cond.{args.layer}", []) if e > 0]
        xs, ys = zip(*pts, strict=True)
        axes[0].plot(xs, _rolling_median(list(ys)), color="grey", lw=1.2, label="SGD without weight decay: κ")
    for label, run, color in runs:
        m = _load(run)
        grok = next((e for e, v in m.get("test_acc", []) if v >= 0.95), None)
        for key, style, name in ((f"diag_cond.{layer}", "-", "κ = s_max/s_min"),
                                 (f"diag_cond_med.{layer}", "--", "median-κ = s_1/s_⌈r/2⌉")):
            pts = [(e, v) for e, v in m.get(key, []) if e > 0 and math.isfinite(v)]
            if pts:
                xs, ys = zip(*pts, strict=True)
                if style == "-":
                    axes[0].plot(xs, ys, color=color, alpha=0.25, lw=0.6)
                axes[0].plot(xs, _rolling_median(list(ys)), style, color=color, lw=1.6, label=f"{label}: {name}")
        pts = [(e, v) for e, v in m.get("diag_lar", []) if e > 0]
        if pts:
            xs, ys = zip(*pts, strict=True)
            axes[1].plot(xs, ys, color=color, lw=1.6, label=f"{label}: LAR (unembedding)")
        for key, style, name in (("train_acc", "--", "train"), ("test_acc", "-", "test")):
            pts = [(e, v) for e, v in m.get(key, []) if e > 0]
            if pts:
                xs, ys = zip(*pts, strict=True)
                axes[2].plot(xs, ys, style, color=color, lw=1.6, label=f"{label} {name}")
        for ax in axes:
            if grok is not None:
                ax.axvline(grok, color=color, ls=":", lw=1)
    axes[0].set(yscale="log", ylim=(2, 3e4), ylabel="condition number of W1's raw gradient",
                title="(a) raw-gradient conditioning of W1 (last batch)")
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[1].set(ylabel="LAR = log_n(‖XWᵀ‖_rms / ‖W‖_rms‖X‖_rms)", title="(b) unembedding log-alignment ratio")
    axes[2].set(ylabel="accuracy", title="(c) accuracy (dotted: 95% test reached)")
    for ax in axes:
        ax.set(xscale="log", xlabel="epoch")
        ax.grid(alpha=0.3, which="both", lw=0.4)
    axes[0].legend(fontsize=7, ncol=2, loc="upper left")
    axes[1].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.suptitle(args.title, fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out, dpi=130)
    print(f"wrote {args.out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sgd_run")
    parser.add_argument("egd_run")
    parser.add_argument("--layer", default="layers.0.weight")
    parser.add_argument("--no-wd-run", help="optional SGD run without weight decay, drawn in panel (a) for reference")
    parser.add_argument("--out", default=str(HERE / "diagnostics_p97.png"))
    parser.add_argument("--title",
                        default="mod-add p=97, the paper's MLP (194-512-97), SGD vs EGD, lr 0.7, batch 512")
    figure(parser.parse_args())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
