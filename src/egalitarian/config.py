"""Run configuration: TOML files, ``--set`` overrides, defaults and validation.

A config is a nested dict with these sections::

    name = "modadd-p97-egd"          # optional label
    [task]       name = "modular", and the builder's parameters   (egalitarian.tasks)
    [model]      name = "mlp" | "transformer", and its parameters   (egalitarian.models)
    [loss]       name = "cross_entropy" | ..., weight_decay = L2 term in the loss (matrices only)
    [optimizer]  name = a registered method, and its hyperparameters (egalitarian.methods)
    method = "egd" with [methods.egd], [methods.sgd], ...: a recipe's per-method hyperparameters; the
                 chosen table becomes [optimizer] (keys given in [optimizer] win, except a different name);
                 a method without a table runs with the registry's defaults
    [train]      the loop: budget, batches, seeds, evaluation cadence, grokking thresholds, checkpoints,
                 gradient clipping, autocast, TensorBoard, label shuffles
    [scheduler]  optional: a learning-rate schedule (egalitarian.schedules); a method table may carry its own
                 ([methods.X.scheduler], its paper's warm-up), whose fields [scheduler] overrides
    diagnostics = ["spectrum", ...]   optional, computed at each evaluation (egalitarian.diagnostics)

``[train]`` is fully specified here (:data:`TRAIN_FIELDS`: each field's default and meaning, ``egd list
fields``); which fields the other sections accept is answered by :func:`egalitarian.build.accepted_fields` (the
signature of the function each one feeds), so an unknown or misspelt key is an error that names it.  Recipes
(the paper's setups, ``egd list recipes``) are TOML files shipped in ``egalitarian/recipes``; :func:`load_config`
takes a recipe name or a file path.
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Collection
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError, check, same_kind
from .schedules import resolve_scheduler

SECTIONS = ("task", "model", "loss", "optimizer", "train", "scheduler")

TRAIN_FIELDS: tuple[tuple[str, Any, str], ...] = (
    # (field, default, what it means): `egd list fields` prints this table
    ("max_steps", 0, "budget in optimizer steps (0 = no step budget; one of max_steps/max_epochs must be > 0)"),
    ("max_epochs", 100, "budget in epochs (0 = no epoch budget)"),
    ("batch_size", 512, "0 = full batch"),
    ("drop_last", True, "drop the trailing partial batch, as the EGD paper's code does"),
    ("seed", 0, "model init (and dropout) seed"),
    ("shuffle_seed", 0, "data order seed"),
    ("eval_every", 1, "evaluation cadence, in eval_unit"),
    ("eval_unit", "epoch", '"epoch" or "step"'),
    ("eval_batch_size", 16384, "evaluation batch (no_grad)"),
    ("train_eval", "running", '"running": mean over the epoch\'s batches (free); "full": whole train split'),
    ("memorize_threshold", 0.99, "train accuracy that counts as memorized"),
    ("grok_threshold", 0.95, "test accuracy that counts as grokked (0.85 for MNIST-style tasks)"),
    ("stop_after_grok", True, "stop once grokked, after `patience` further evaluations"),
    ("patience", 0, "evaluations to continue after grokking before stop_after_grok stops the run"),
    ("switch_off_threshold", 0.0, "> 0: stop whitening once switch_off_split accuracy reaches it (paper §4)"),
    ("switch_off_split", "val", '"val" (needs task.val_frac > 0) or "test" (what the paper\'s code does)'),
    ("switch_off_latch", True, "False: switch back on if accuracy drops again (the official code)"),
    ("nonfinite", "stop", 'NaN/inf loss or gradient: "stop" (checkpoint of the last good state, exit 3) or "skip" '
     "the step"),
    ("max_skip_fraction", 0.1, 'with nonfinite = "skip": the run fails (status "nonfinite", stop_reason '
     '"too_many_skipped", exit 3) when more than this fraction of its steps were skipped: at its end, or as soon '
     "as the skipped steps alone exceed this fraction of the step budget (1 = never)"),
    ("checkpoint_every", 0, "epochs between checkpoints (0 = only by time and at the end)"),
    ("checkpoint_seconds", 60.0, "wall-clock seconds between checkpoints"),
    ("device", "auto", '"auto" (cuda → mps → cpu), "cpu", "cuda", "cuda:1", "mps"'),
    ("threads", 0, "intra-op CPU threads (torch.set_num_threads); 0 = auto = 1: the lab's models are small, and "
     "more threads make every step wait for a core another process keeps busy. At most the cores this process "
     "may use; $EGD_THREADS (set by egd run|demo|sweep --threads N) overrides it"),
    ("progress", "auto", 'progress bar: "auto" (only on a terminal), "on", "off"'),
    # Early stops: status "budget" (censored; "grokked" if the run grokked before), summary.stop_reason says
    # which. These three are left out of the resolved config while they are off (OMITTED_WHEN_DEFAULT), so
    # run ids made before they existed stay the same.
    ("max_seconds", 0.0, "wall-clock limit: stop once the loop's seconds (summed over resumes) exceed it "
     "(0 = none)"),
    ("chance_patience", 0, "> 0: stop after this many consecutive evaluations, counted from the one at which the "
     "run memorized, with test accuracy below chance_threshold (0 = off)"),
    ("chance_threshold", 0.0, 'the "at chance" test accuracy; 0 = automatic: 2/num_outputs for class targets with '
     "3 or more classes, 0.6 for sign (±1) targets and 2 classes"),
    # Trainer options, off by default and left out of the resolved config while off (OMITTED_WHEN_DEFAULT).
    ("clip_grad_norm", 0.0, "> 0: scale the gradients so that their global L2 norm over every trainable parameter "
     "is at most this before each optimizer step (torch.nn.utils.clip_grad_norm_, after the non-finite check; it "
     "does not change the step of a matrix EGD whitens); 0 = off"),
    ("autocast", "off", '"bf16": the forward passes (training and evaluation) and the loss under torch.autocast '
     'with bfloat16, on cpu or cuda; parameters, gradients, whitening and optimizer state stay float32; "off": '
     "float32 throughout"),
    ("tensorboard", "", "a directory: TensorBoard scalars of every evaluation (tag split/metric, e.g. test/acc; step "
     "= optimizer step); needs pip install 'egalitarian[tensorboard]'; \"\" = off"),
    ("shuffle_labels_at", [], "epochs after which the training labels are reshuffled once each (a random "
     "permutation of the label vector: random labels with the same class counts, the label-shuffle protocol of "
     "Sokar et al. 2023; test labels untouched): at the start of epoch e, after e completed epochs; strictly "
     "increasing integers >= 1; [] = never"),
    ("refine_grok", False, "true: when an evaluation first finds test accuracy >= grok_threshold more than one step "
     "after the previous one, go back to the state kept in memory at that one and replay the same steps evaluating "
     "after each, up to the first at or above the threshold: the grok step to 1 step, for at most one evaluation "
     "interval of extra steps and evaluations (the step evaluating every step finds, unless test accuracy reached "
     "the threshold and fell back between two earlier evaluations). The replay's evaluations stay in the metrics; "
     "summary.refined = {from_step, to_step, exact, discarded_seconds}; seconds (the summary's, the events', "
     "max_seconds') leave out the thrown-away coarse steps (discarded_seconds); after the grok, patience counts "
     "evaluations at the usual cadence; memorized is exact only if it falls in the replay. Before the grok, "
     "checkpoints are written only at evaluations and a signal saves the last evaluation's state. Not with "
     "switch_off_threshold > 0"),
)
"""The ``[train]`` schema: every field with its default and its meaning."""

TRAIN_DEFAULTS: dict[str, Any] = {name: default for name, default, _ in TRAIN_FIELDS}
TRAIN_HELP: dict[str, str] = {name: text for name, _, text in TRAIN_FIELDS}

OMITTED_WHEN_DEFAULT = ("max_seconds", "chance_patience", "chance_threshold", "max_skip_fraction", "clip_grad_norm",
                        "autocast", "tensorboard", "shuffle_labels_at", "refine_grok")
"""``[train]`` fields that :func:`resolve` leaves out while they equal their default (off, or for
``max_skip_fraction`` its default 0.1): added after run ids existed, they must not change the resolved config
(and so the id) of a run that does not use them.  Read ``[train]`` through :func:`train_settings` to see them."""

RESUMABLE = frozenset({"max_steps", "max_epochs", "max_seconds", "chance_patience", "chance_threshold",
                       "max_skip_fraction", "checkpoint_every", "checkpoint_seconds", "progress", "threads",
                       "tensorboard"})
"""``[train]`` fields that may differ between a run and its resumption: budgets, early stops and bookkeeping.
The rest of the resolved config (:func:`trajectory`) fixes the run's parameters step by step."""

_CHOICES = {
    "eval_unit": ("epoch", "step"),
    "train_eval": ("full", "running"),
    "switch_off_split": ("val", "test"),
    "nonfinite": ("stop", "skip"),
    "progress": ("auto", "on", "off"),
    "autocast": ("off", "bf16"),
}


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing file, a directory, a syntax error or bytes that are not UTF-8 text are a
    ConfigError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a directory; expected a TOML file")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:  # tomllib decodes the bytes as UTF-8 before parsing
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {e.start}: "
                          f"{e.object[e.start:e.start + 1]!r}); expected a TOML file") from None


def toml_table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """The table ``[key]`` of a spec file read by :func:`load_toml` (``{}`` when absent); any other value is a
    ConfigError ``where: key = value: must be a table ([key])``."""
    value = doc.get(key, {})
    check(isinstance(value, dict), f"{where}: {key}", value, f"must be a table ([{key}])", ConfigError)
    return value


def recipe_names() -> list[str]:
    """The shipped recipes, sorted: ``mod-add-p97``, ``parity-k3``, …"""
    return sorted(p.name[:-5] for p in resources.files("egalitarian.recipes").iterdir() if p.name.endswith(".toml"))


def load_config(spec: str) -> dict[str, Any]:
    """A recipe name (``mod-add-p97``) or a path to a TOML file, as written (not resolved)."""
    if spec in recipe_names():
        return load_toml(Path(str(resources.files("egalitarian.recipes") / f"{spec}.toml")))
    if not Path(spec).exists() and not spec.endswith(".toml"):
        raise ConfigError(f"--config {spec!r}: neither a file nor a recipe; recipes: {', '.join(recipe_names())}")
    return load_toml(spec)


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML would read it (``0.5``, ``true``, ``"svd"``, ``[1, 2]``); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (dotted paths of any depth) to a copy of ``cfg``."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. optimizer.lr=0.5")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty field name")
        node = cfg
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node[parts[-1]] = parse_value(text.strip())
    return cfg


def resolve(cfg: dict[str, Any], known_methods: Collection[str] | None = None) -> dict[str, Any]:
    """Fill defaults and check the structure and the ``[train]`` section; returns a new dict.

    ``method = X`` picks the table ``[methods.X]``; when there is no such table, X is taken as a registered
    method run with the registry's defaults (``[optimizer]`` becomes ``{"name": X}`` and the run is still
    named ``...-X``) when X is in ``known_methods``, the registry's names (this layer does not import the
    registry: the trainer and the sweep spec pass it); otherwise ``method`` names a missing table, an error.
    ``[optimizer]`` keys given next to the chosen method win, except a different ``name``: that is an error
    (the run would be labelled with one method and run another).
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"config must be a table, got {type(cfg).__name__}")
    out = copy.deepcopy(cfg)
    for key in out:
        if key not in ("name", "diagnostics", "method", "methods") and key not in SECTIONS:
            raise ConfigError(
                f"{key} = {out[key]!r}: unknown config section; allowed: name, diagnostics, {', '.join(SECTIONS)}"
            )
    for key in SECTIONS + ("methods",):
        if key in out and not isinstance(out[key], dict):
            raise ConfigError(f"{key} = {out[key]!r}: must be a table ([{key}] with fields), not a value")
    methods = out.pop("methods", None)
    method = out.pop("method", None)
    if methods is not None or method is not None:
        methods = methods if isinstance(methods, dict) else {}
        check(bool(methods) or method is not None, "methods", methods, "needs at least one [methods.NAME] table",
              ConfigError)
        method = method or next(iter(methods))
        check(isinstance(method, str) and method != "", "method", method, "must be a method name", ConfigError)
        table = methods.get(method)
        if table is None:  # not a table of this config: a registered method with the registry's defaults
            tables = f"a table of this config ({', '.join(methods)})" if methods else "a table of this config (none)"
            registered = f" or a registered method ({', '.join(sorted(known_methods))})" if known_methods else ""
            check(method in (known_methods or ()), "method", method,
                  f"no [methods.{method}] table; allowed: {tables}{registered}", ConfigError)
            table = {"name": method}
        if isinstance(table, dict) and "scheduler" in table:  # the method's own schedule (its paper's warm-up)
            table = dict(table)
            schedule = table.pop("scheduler")
            check(isinstance(schedule, dict), f"methods.{method}.scheduler", schedule,
                  "must be a table of [scheduler] fields", ConfigError)
            out["scheduler"] = {**schedule, **out.get("scheduler", {})}  # fields given in [scheduler] win
        given = out.get("optimizer", {})
        if "name" in given and "name" in table and given["name"] != table["name"]:
            how = (f"; use --method or set methods.{method}.name" if method in methods else
                   f" (no [methods.{method}] table: the registry's defaults); use --method or optimizer.name, not both")
            raise ConfigError(f"optimizer.name = {given['name']!r}: differs from the method {table['name']!r} "
                              f"chosen by method = {method!r}{how}")
        out["optimizer"] = {**table, **given}
        out.setdefault("name", None)
        out["name"] = f"{out['name']}-{method}" if out["name"] else method
    for section in ("task", "model", "optimizer"):
        node = out.get(section)
        if not isinstance(node, dict) or not isinstance(node.get("name"), str):
            raise ConfigError(f"{section}.name is missing: every config needs [{section}] with a name")
    out.setdefault("loss", {}).setdefault("name", "cross_entropy")
    diags = out.setdefault("diagnostics", [])
    if not isinstance(diags, list) or not all(isinstance(d, str) for d in diags):
        raise ConfigError(f"diagnostics = {diags!r}: must be a list of diagnostic names")
    train = out.setdefault("train", {})
    for key, value in train.items():
        if key not in TRAIN_DEFAULTS:
            raise ConfigError(f"train.{key} = {value!r}: unknown field; allowed: {', '.join(TRAIN_DEFAULTS)}")
        default = TRAIN_DEFAULTS[key]
        if not same_kind(default, value):
            raise ConfigError(f"train.{key} = {value!r}: must be of type {type(default).__name__}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"train.{key} = {value!r}: must be one of {', '.join(_CHOICES[key])}")
    for key, default in TRAIN_DEFAULTS.items():
        train.setdefault(key, copy.deepcopy(default))
    _check_train(train)
    for key in OMITTED_WHEN_DEFAULT:
        if train[key] == TRAIN_DEFAULTS[key]:
            del train[key]
    if "scheduler" in out:  # resolved only when present: configs without one keep their run ids
        out["scheduler"] = resolve_scheduler(out["scheduler"])
    return out


def train_settings(resolved: dict[str, Any]) -> dict[str, Any]:
    """A resolved config's ``[train]`` with every field, including those :data:`OMITTED_WHEN_DEFAULT`."""
    return {**TRAIN_DEFAULTS, **resolved["train"]}


def trajectory(resolved: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without its :data:`RESUMABLE` ``[train]`` fields: what fixes the parameters step by step
    (a run with a larger budget continues the same trajectory, bit-identically on CPU)."""
    out = copy.deepcopy(resolved)
    out["train"] = {k: v for k, v in out.get("train", {}).items() if k not in RESUMABLE}
    return out


def _check_train(t: dict[str, Any]) -> None:
    def need(ok: bool, key: str, allowed: str) -> None:
        check(ok, f"train.{key}", t[key], allowed, ConfigError)

    for key in ("max_steps", "max_epochs", "batch_size", "checkpoint_every", "patience", "threads",
                "chance_patience"):
        need(t[key] >= 0, key, "must be >= 0")
    need(math.isfinite(t["max_seconds"]) and t["max_seconds"] >= 0, "max_seconds", "must be >= 0 (0 = no limit)")
    need(0 <= t["chance_threshold"] < 1, "chance_threshold",
         "must be in [0, 1) (0 = automatic: 2/num_outputs, or 0.6 for sign targets and 2 classes)")
    need(t["max_steps"] > 0 or t["max_epochs"] > 0, "max_epochs", "max_steps or max_epochs must be > 0")
    need(t["eval_every"] >= 1, "eval_every", "must be >= 1")
    need(t["eval_batch_size"] >= 1, "eval_batch_size", "must be >= 1")
    need(t["checkpoint_seconds"] > 0, "checkpoint_seconds", "must be > 0")
    for key in ("memorize_threshold", "grok_threshold"):
        need(0 < t[key] <= 1, key, "must be in (0, 1]")
    need(0 <= t["switch_off_threshold"] <= 1, "switch_off_threshold", "must be in [0, 1] (0 = off)")
    need(0 <= t["max_skip_fraction"] <= 1, "max_skip_fraction", "must be in [0, 1] (1 = never fail)")
    need(math.isfinite(t["clip_grad_norm"]) and t["clip_grad_norm"] >= 0, "clip_grad_norm",
         "must be a finite number >= 0 (0 = off)")
    need(not (t["refine_grok"] and t["switch_off_threshold"] > 0), "refine_grok",
         "cannot be combined with switch_off_threshold > 0: the switch-off rule acts at evaluations, so the replay's "
         "per-step evaluations would switch whitening off at another step than the run evaluated; use "
         "eval_unit = 'step', eval_every = 1 instead")
    at = t["shuffle_labels_at"]
    need(all(isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in at)
         and all(a < b for a, b in zip(at, at[1:], strict=False)), "shuffle_labels_at",
         "must be a list of strictly increasing integers >= 1, the epochs after which the training labels are "
         "reshuffled ([] = never)")


def section_kwargs(cfg: dict[str, Any], section: str) -> dict[str, Any]:
    """The section without its ``name`` key: the keyword arguments for its builder."""
    return {k: v for k, v in cfg.get(section, {}).items() if k != "name"}
