"""``egd``: the command line.

    egd demo                                   SGD memorizes, EGD groks (mod-add p=97), table + plot
    egd run --config RECIPE|FILE [--method M] [--set field=value ...] [--out DIR] [--resume]
    egd list tasks|optimizers|recipes
    egd report PATH [--out DIR]               plots, tables, HTML for a run, a folder of runs or a sweep store

Bad input exits with status 2 and one line naming the field, the value and what is allowed; a run stopped
by a non-finite loss exits 3, by SIGINT/SIGTERM 130 (its state saved for ``--resume``); any other failure
exits 1 with one line (``EGD_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("egalitarian.recipes").iterdir() if p.name.endswith(".toml"))


def load_config(spec: str) -> dict[str, Any]:
    """A recipe name (``mod-add-p97``) or a path to a TOML file."""
    from .config import load_toml

    if spec in recipe_names():
        return load_toml(Path(str(resources.files("egalitarian.recipes") / f"{spec}.toml")))
    if not Path(spec).exists() and not spec.endswith(".toml"):
        raise ConfigError(f"--config {spec!r}: neither a file nor a recipe; recipes: {', '.join(recipe_names())}")
    return load_toml(spec)


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import apply_overrides
    from .train import train

    cfg = load_config(args.config)
    if args.method:
        cfg["method"] = args.method
    cfg = apply_overrides(cfg, args.set or [])
    out = args.out or str(Path("runs") / (Path(args.config).stem + (f"-{args.method}" if args.method else "")))
    summary = train(cfg, out, resume=args.resume, handle_signals=True)
    _print_summary(summary, out)
    return 0


def _fmt_event(ev: dict[str, Any] | None) -> str:
    return "-" if ev is None else f"step {ev['step']}, epoch {ev['epoch']}, {ev['seconds']:.1f} s"


def _print_summary(s: dict[str, Any], out: str) -> None:
    print(f"run:        {s.get('name') or ''}  ->  {out}")
    print(f"status:     {s['status']}")
    print(f"memorized:  {_fmt_event(s['memorized'])}")
    print(f"grokked:    {_fmt_event(s['grok'])}")
    print(f"final acc:  train {s.get('final_train_acc', float('nan')):.4f}  test {s.get('final_test_acc', 0):.4f}")
    spp = s["seconds_per_step"]
    print(
        f"steps:      {s['steps']} ({s['epochs']} epochs), {s['seconds']:.1f} s"
        + (f", {spp * 1e3:.2f} ms/step" if spp else "")
    )


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "tasks":
        from .tasks import TASKS, task_summary

        for name in TASKS:
            print(f"{name:12s} {task_summary(name)}")
    elif args.what == "optimizers":
        from .methods import OPTIMIZERS

        for name, m in OPTIMIZERS.items():
            print(f"{name:16s} {m.description}")
            print(f"{'':16s} defaults: {json.dumps(m.defaults)}")
    else:
        from .config import load_toml

        for name in recipe_names():
            cfg = load_toml(Path(str(resources.files("egalitarian.recipes") / f"{name}.toml")))
            methods = ", ".join(cfg.get("methods", {})) or cfg.get("optimizer", {}).get("name", "")
            print(f"{name:26s} methods: {methods}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = Path(args.path)
    out = args.out or (str(path.with_suffix("")) + "-report" if path.is_file() else str(path / "report"))
    print(f"report: {write_report(path, out)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo

    demo(out_dir=args.out, epochs=args.epochs)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egd", description="Egalitarian Gradient Descent and a grokking lab.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="SGD memorizes while EGD groks: mod-add p=97, paper MLP")
    p.add_argument("--out", default="egd-demo", help="directory for runs and the plot (default: egd-demo)")
    p.add_argument("--epochs", type=int, default=400, help="epoch budget per method (default: 400)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("run", help="train one run from a recipe or TOML config")
    p.add_argument("--config", required=True, help="recipe name (egd list recipes) or TOML file")
    p.add_argument("--method", help="which [methods.NAME] table of the recipe to use")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override, e.g. optimizer.lr=0.5")
    p.add_argument("--out", help="run directory (default: runs/<config>[-<method>])")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("report", help="plots, tables and a self-contained HTML report")
    p.add_argument("path", help="a run directory, a folder of runs, or a sweep store (.sqlite)")
    p.add_argument("--out", help="output directory (default: PATH/report, or STORE-report/)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("list", help="list tasks, optimizers or recipes")
    p.add_argument("what", choices=["tasks", "optimizers", "recipes"])
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .train import RunStopped

    try:
        return args.func(args)
    except ConfigError as e:
        print(f"egd: error: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:
        print(f"egd: {e}", file=sys.stderr)
        return 130 if e.summary["status"] == "interrupted" else 3
    except OSError as e:  # missing or unwritable paths, a full disk: the message names the path
        print(f"egd: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # anything else is a bug or a library failure: one line, traceback on request
        if os.environ.get("EGD_DEBUG"):
            raise
        print(f"egd: error: {type(e).__name__}: {e} (set EGD_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
