"""Does the unembedding LAR track grokking in transformers, and does it move first?  (issue #18)

    python experiments/22-lar-transformers/lar_transformers.py sweeps/lar-transformers sweeps/lar-grokfast \
        [--out experiments/22-lar-transformers/lar_transformers.png]

Reads every run directory under the given folders (runs of ``lar-transformers.toml`` and
``lar-grokfast.toml`` in this folder: diagnostics ``lar`` and ``fourier``, and on modular addition ``restricted``), and
prints per run:

* ``mem`` / ``grok``: the first evaluation with train accuracy ≥ 0.99 / test accuracy ≥ the run's threshold;
* the LAR at step 0, at memorization, at grokking and at the end, and ``k_eff = n^{2(1−LAR)}`` at the end;
* ``K``: the number of key frequencies of the final model, the frequencies holding 90% of the token embedding's
  Fourier energy (``fourier_nfreq``; meaningful for modular addition only, drawn only there), and ``2K`` beside
  ``k_eff`` (the LAR paper's prediction for a sparse Fourier
  solution is ``k_eff ≈ 2K``: a cosine and a sine per frequency);
* *who moves first*: on the stretch from memorization to the end, the step at which each of LAR, test accuracy
  (and the restricted loss, the Fourier Gini, where logged) has covered 10% and 50% of its total change.  A
  quantity that reaches 10% well before test accuracy does is an early warning.

And draws, one row per setup and method (the first seed solid, the others faint): train/test accuracy, LAR,
``k_eff`` with ``2K`` dashed, and the Fourier Gini / restricted and excluded losses.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
from pathlib import Path

from egalitarian.rundir import read_config, read_metrics, read_summary

CURVES = ("train_acc", "test_acc", "diag_lar", "diag_keff", "diag_fourier_gini", "diag_fourier_nfreq",
          "diag_restricted", "diag_excluded")


def read_run(run: Path) -> dict | None:
    summary = read_summary(run)
    if not summary:
        return None
    cfg = read_config(run)
    curves: dict[str, dict[int, float]] = collections.defaultdict(dict)
    for r in read_metrics(run):
        key = f"{r.split}_{r.metric}"
        if key in CURVES:
            curves[key][r.step] = r.value
    return {"dir": run, "summary": summary, "cfg": cfg, "curves": {k: sorted(v.items()) for k, v in curves.items()}}


def first_step(curve, ok) -> int | None:
    return next((s for s, v in curve if ok(v)), None)


def value_at(curve, step: int | None) -> float:
    if step is None or not curve:
        return math.nan
    return min(curve, key=lambda sv: abs(sv[0] - step))[1]


def progress_steps(curve, start: int, fractions=(0.1, 0.5)) -> list[int | None]:
    """Steps (≥ start) at which ``curve`` first covers each fraction of its change from ``start`` to its end."""
    part = [(s, v) for s, v in curve if s >= start and math.isfinite(v)]
    if len(part) < 2:
        return [None for _ in fractions]
    v0, v1 = part[0][1], part[-1][1]
    if v1 == v0:
        return [None for _ in fractions]
    return [next((s for s, v in part if (v - v0) / (v1 - v0) >= f), None) for f in fractions]


def analyse(r: dict) -> dict:
    c, s, cfg = r["curves"], r["summary"], r["cfg"]
    threshold = cfg["train"].get("grok_threshold", 0.95)
    mem = first_step(c.get("train_acc", []), lambda v: v >= 0.99)
    grok = first_step(c.get("test_acc", []), lambda v: v >= threshold)
    lar = c.get("diag_lar", [])
    final = lar[-1][0] if lar else None
    K = value_at(c.get("diag_fourier_nfreq", []), final)
    out = {
        "setup": cfg.get("name", "").rsplit("-", 1)[0] or cfg["task"]["name"],
        "recipe": cfg.get("name", ""), "method": cfg["optimizer"]["name"], "seed": cfg["train"]["seed"],
        "steps": s.get("steps"), "status": s.get("status"), "mem": mem, "grok": grok,
        "final_test": s.get("final_test_acc"),
        "lar0": value_at(lar, 0), "lar_mem": value_at(lar, mem), "lar_grok": value_at(lar, grok),
        "lar_end": value_at(lar, final), "keff_end": value_at(c.get("diag_keff", []), final),
        "K": K, "two_K": 2 * K if math.isfinite(K) else math.nan,
    }
    start = mem if mem is not None else 0
    for key, name in (("test_acc", "acc"), ("diag_lar", "lar"), ("diag_restricted", "restricted"),
                      ("diag_fourier_gini", "gini")):
        out[f"{name}_10"], out[f"{name}_50"] = progress_steps(c.get(key, []), start)
    return out


def fmt(v, spec="{:.3f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return spec.format(v) if isinstance(v, float) else str(v)


def plot(runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = collections.defaultdict(list)
    for r in runs:
        groups[(r["cfg"].get("name", ""), r["cfg"]["optimizer"]["name"])].append(r)
    keys = sorted(groups)
    fig, axes = plt.subplots(len(keys), 4, figsize=(17, 2.9 * len(keys)), squeeze=False)
    for row, key in enumerate(keys):
        for i, r in enumerate(sorted(groups[key], key=lambda x: x["cfg"]["train"]["seed"])):
            c, alpha = r["curves"], 1.0 if i == 0 else 0.35
            ax = axes[row]
            for name, style in (("train_acc", "--"), ("test_acc", "-")):
                if c.get(name):
                    ax[0].plot(*zip(*c[name], strict=True), style, color="C0" if name == "test_acc" else "C1",
                               alpha=alpha, label=name if i == 0 else None)
            if c.get("diag_lar"):
                ax[1].plot(*zip(*c["diag_lar"], strict=True), color="C2", alpha=alpha)
            if c.get("diag_keff"):
                ax[2].plot(*zip(*c["diag_keff"], strict=True), color="C3", alpha=alpha,
                           label="k_eff" if i == 0 else None)
            if c.get("diag_fourier_nfreq") and r["cfg"]["task"].get("op") == "add":  # key frequencies: addition only
                steps, k = zip(*c["diag_fourier_nfreq"], strict=True)
                ax[2].plot(steps, [2 * x for x in k], ":", color="k", alpha=alpha, label="2K" if i == 0 else None)
            if c.get("diag_restricted"):
                ax[3].plot(*zip(*c["diag_restricted"], strict=True), color="C4", alpha=alpha,
                           label="restricted" if i == 0 else None)
                ax[3].plot(*zip(*c["diag_excluded"], strict=True), color="C5", alpha=alpha,
                           label="excluded" if i == 0 else None)
                ax[3].set_yscale("log")
            elif c.get("diag_fourier_gini"):
                ax[3].plot(*zip(*c["diag_fourier_gini"], strict=True), color="C6", alpha=alpha,
                           label="Fourier Gini" if i == 0 else None)
        name, method = key
        axes[row][0].set(ylabel=method, ylim=(0, 1.02), title=name if row == 0 or keys[row - 1][0] != name else "")
        axes[row][1].set(ylabel="LAR (unembedding)")
        axes[row][2].set(ylabel="k_eff", yscale="log")
        for ax in axes[row]:
            ax.set_xscale("symlog", linthresh=100)
            ax.set_xlim(left=0)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


COLUMNS = ["recipe", "method", "seed", "steps", "mem", "grok", "final_test", "lar0", "lar_mem", "lar_grok",
           "lar_end", "keff_end", "two_K", "acc_10", "lar_10", "restricted_10", "gini_10", "acc_50", "lar_50",
           "restricted_50", "gini_50"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="figure (png)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    runs = [r for folder in a.folders for d in sorted(folder.iterdir()) if d.is_dir() and (r := read_run(d))]
    rows = sorted((analyse(r) for r in runs), key=lambda x: (x["recipe"], x["method"], x["seed"]))
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    for x in rows:
        print("| " + " | ".join(fmt(x[k], "{:.1f}" if k in ("keff_end", "two_K") else "{:.3f}") for k in COLUMNS)
              + " |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1, default=str))
    if a.out:
        plot(runs, a.out)
        print(f"figure: {a.out}")


if __name__ == "__main__":
    main()
