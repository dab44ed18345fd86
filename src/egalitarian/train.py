"""The training loop: one readable function, grokking events as first-class metrics, resumable runs.

``train(cfg, run_dir)`` builds the task, model, loss and optimizer from a config (see
:mod:`egalitarian.config`), trains, and returns the summary.  What it measures:

* **memorized**: the first evaluation at which train accuracy ≥ ``memorize_threshold`` (0.99);
* **grokked**: the first evaluation at which test accuracy ≥ ``grok_threshold`` (0.95; 0.85 for
  MNIST-style tasks); each as (step, epoch, seconds), plus the grokking delay between them;
* ``epochs`` counts *completed* epochs, the EGD paper's "epochs to 95%" convention;
* seconds are wall-clock seconds of the training loop (steps and evaluations), summed over resumes.

Run directory (every file written atomically, see :mod:`egalitarian.io`)::

    config.json      resolved config + package versions + git commit
    metrics.csv      long format: step, epoch, split, metric, value
    summary.json     events, final accuracies, status ("grokked", "budget", "nonfinite", "interrupted")
    checkpoint.pt    model, optimizer, RNG states, data order and loop position

``resume=True`` continues from ``checkpoint.pt`` bit-identically on CPU: same parameters, optimizer state,
data order (the epoch's permutation and position are saved) and metrics.
"""

from __future__ import annotations

import inspect
import math
import platform
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import __version__
from . import io as fio
from .config import TRAIN_DEFAULTS, resolve, section_kwargs
from .errors import ConfigError
from .losses import accuracy, get_loss, l2_penalty
from .methods import build_optimizer, set_whitening
from .models import MLP, Transformer
from .progress import Progress
from .tasks import TaskData, make_task

MODELS = {"mlp": MLP, "transformer": Transformer}

# Fields that may differ between a run and its resumption (budget and bookkeeping, not the math).
_RESUMABLE_CHANGES = {"max_steps", "max_epochs", "checkpoint_every", "checkpoint_seconds", "progress", "threads"}


class RunStopped(Exception):
    """Training stopped early with a saved state (non-finite loss, signal); ``summary`` tells which."""

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"``: cuda, then mps, then cpu; otherwise the named device, checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device = {name!r}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r}: CUDA is not available on this machine; use auto or cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device = {name!r}: MPS is not available on this machine; use auto or cpu")
    return dev


def build_model(cfg: dict[str, Any], data: TaskData) -> nn.Module:
    name = cfg["model"]["name"]
    if name not in MODELS:
        raise ConfigError(f"model.name = {name!r}: unknown model; allowed: {', '.join(MODELS)}")
    kwargs = section_kwargs(cfg, "model")
    if name == "mlp":
        if data.vocab_size is not None:
            raise ConfigError("model.name = 'mlp' needs feature inputs, not tokens: set task.encoding = 'onehot' "
                              "or 'index'")
        fixed = {"in_dim": data.input_dim, "out_dim": data.num_outputs}
    else:
        if data.vocab_size is None:
            raise ConfigError("model.name = 'transformer' needs a token task, e.g. task.encoding = 'tokens'")
        fixed = {"vocab_size": data.vocab_size, "seq_len": data.input_dim, "num_outputs": data.num_outputs}
    params = inspect.signature(MODELS[name]).parameters
    allowed = [k for k in params if k not in fixed]
    for key, value in kwargs.items():
        if key not in allowed:
            raise ConfigError(f"model.{key} = {value!r}: unknown parameter for {name!r}; allowed: {', '.join(allowed)}")
    missing = [k for k in allowed if params[k].default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise ConfigError(f"model.{missing[0]} is missing: model {name!r} needs {', '.join(missing)}")
    try:
        return MODELS[name](**fixed, **kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"model ({name}): {e}") from None


def make_loss(cfg: dict[str, Any]):
    """The training loss from ``[loss]``: ``name`` plus an optional ``weight_decay`` L2 term on matrices."""
    kwargs = section_kwargs(cfg, "loss")
    wd = kwargs.pop("weight_decay", 0.0)
    if kwargs:
        raise ConfigError(f"loss.{next(iter(kwargs))}: unknown field; allowed: name, weight_decay")
    if not isinstance(wd, (int, float)) or wd < 0:
        raise ConfigError(f"loss.weight_decay = {wd!r}: must be a number >= 0")
    return get_loss(cfg["loss"]["name"]), float(wd)


def environment() -> dict[str, Any]:
    commit = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        commit = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "egalitarian": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
    }


def update_events(
    events: dict[str, Any],
    when: dict[str, Any],
    train_acc: float | None,
    test_acc: float,
    memorize_threshold: float = 0.99,
    grok_threshold: float = 0.95,
) -> dict[str, Any]:
    """Record the first crossing of each threshold: ``memorized`` (train) and ``grokked`` (test).

    Events are latched: a later drop below the threshold does not move or erase them.
    """
    if events.get("memorized") is None and train_acc is not None and train_acc >= memorize_threshold:
        events["memorized"] = dict(when)
    if events.get("grokked") is None and test_acc >= grok_threshold:
        events["grokked"] = dict(when)
    return events


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, loss_fn, batch_size: int) -> tuple[float, float]:
    """Mean loss and accuracy over (x, y) in large no-grad batches."""
    was_training = model.training
    model.eval()
    total_loss, total_acc = 0.0, 0.0
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        n = len(yb)
        total_loss += float(loss_fn(out, yb)) * n
        total_acc += float(accuracy(out, yb)) * n
    model.train(was_training)
    return total_loss / len(x), total_acc / len(x)


@contextmanager
def _signals_to_flag(flag: dict[str, Any], enabled: bool):
    """SIGINT/SIGTERM set ``flag["signal"]`` so the loop can save and exit cleanly."""
    if not enabled:
        yield
        return
    previous = {}

    def handler(signum, frame):
        flag["signal"] = signal.Signals(signum).name

    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same_math(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Dotted names of the fields that differ, ignoring budget and bookkeeping fields of ``[train]``."""
    fa, fb = _flatten(a), _flatten(b)
    skip = {f"train.{k}" for k in _RESUMABLE_CHANGES}
    return sorted(k for k in set(fa) | set(fb) if k not in skip and fa.get(k) != fb.get(k))


def train(
    cfg: dict[str, Any],
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    handle_signals: bool = False,
    on_eval=None,
) -> dict[str, Any]:
    """Train one run; returns the summary (also written to ``run_dir/summary.json`` when given).

    ``on_eval(step, metrics)`` is called after each evaluation (used by sweeps for live progress).
    Raises :class:`RunStopped` when stopped by a non-finite loss or a signal, after saving the state.
    """
    cfg = resolve(cfg)
    tc = cfg["train"]
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_path = run_dir / "checkpoint.pt" if run_dir else None
    if run_dir is not None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"output directory {str(run_dir)!r} cannot be created: {e.strerror}") from None
    if tc["threads"]:
        torch.set_num_threads(tc["threads"])
    device = pick_device(tc["device"])

    # ---- build everything (split seed lives in the task config; init and shuffle seeds here)
    data = make_task(cfg["task"]["name"], **section_kwargs(cfg, "task")).to(device)
    if tc["switch_off_threshold"] > 0 and tc["switch_off_split"] == "val" and data.x_val is None:
        raise ConfigError("train.switch_off_split = 'val' needs a validation split: set task.val_frac > 0")
    torch.manual_seed(tc["seed"])
    model = build_model(cfg, data).to(device)
    loss_fn, l2 = make_loss(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    decayed = [p for p in params if p.ndim >= 2]
    opt = build_optimizer(list(model.named_parameters()), cfg["optimizer"]["name"], **section_kwargs(cfg, "optimizer"))
    diag = None
    if cfg["diagnostics"]:
        from .diagnostics import Diagnostics  # a leaf module, imported only when asked for

        diag = Diagnostics(cfg["diagnostics"], model, data, loss_fn)

    n = data.n_train
    bs = n if tc["batch_size"] == 0 or tc["batch_size"] >= n else tc["batch_size"]
    n_batches = n // bs if tc["drop_last"] else math.ceil(n / bs)
    shuffle = bs < n
    gen = torch.Generator().manual_seed(tc["shuffle_seed"])
    max_steps = tc["max_steps"] or math.inf
    max_steps = min(max_steps, tc["max_epochs"] * n_batches if tc["max_epochs"] else math.inf)

    # ---- loop state (everything here goes into the checkpoint)
    st: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "batch": 0,  # position inside the current epoch
        "perm": None,
        "seconds": 0.0,
        "train_seconds": 0.0,
        "events": {"memorized": None, "grokked": None, "switched_off": None},
        "switched": False,
        "evals_after_grok": 0,
        "skipped_steps": 0,
        "running": [0.0, 0.0, 0],  # loss sum, correct sum, count over this epoch's batches
        "last": {},
    }
    rows: list[tuple[int, int, str, str, float]] = []
    if resume and ckpt_path is not None and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        diffs = _same_math(ck["config"], cfg)
        if diffs:
            raise ConfigError(f"cannot resume {str(run_dir)!r}: the config differs in {', '.join(diffs)}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["shuffle_rng"])
        torch.set_rng_state(ck["torch_rng"])
        st = ck["loop"]
        rows = [tuple(r) for r in ck["metrics"]]
        if st["switched"]:
            set_whitening(opt, False)
    if run_dir is not None:
        fio.write_json(run_dir / "config.json", {"config": cfg, "environment": environment()})

    def record(split: str, metric: str, value: float) -> None:
        rows.append((st["step"], st["epoch"], split, metric, float(value)))

    def save_checkpoint() -> None:
        if run_dir is None:
            return
        _write_metrics(run_dir / "metrics.csv", rows)
        fio.torch_save(
            ckpt_path,
            {
                "config": cfg,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "shuffle_rng": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "loop": st,
                "metrics": rows,
            },
        )

    def summary(status: str) -> dict[str, Any]:
        ev = st["events"]
        mem, grok = ev["memorized"], ev["grokked"]
        out = {
            "name": cfg.get("name"),
            "status": status,
            "grokked": grok is not None,
            "budget_exhausted": status == "budget",
            "memorized": mem,
            "grok": grok,
            "switched_off": ev["switched_off"],
            "delay_steps": grok["step"] - mem["step"] if mem and grok else None,
            "delay_epochs": grok["epoch"] - mem["epoch"] if mem and grok else None,
            "steps": st["step"],
            "epochs": st["epoch"],
            "seconds": st["seconds"],
            "seconds_per_step": st["train_seconds"] / st["step"] if st["step"] else None,
            "skipped_steps": st["skipped_steps"],
            "steps_per_epoch": n_batches,
            "device": str(device),
            **{f"final_{k}": v for k, v in st["last"].items()},
        }
        from .diagnostics import grok_status  # memorizing / progressing / grokked / stalled, rules documented there

        out["grok_status"], out["grok_status_reason"] = grok_status(
            rows, tc["memorize_threshold"], tc["grok_threshold"]
        )
        if run_dir is not None:
            fio.write_json(run_dir / "summary.json", out)
        return out

    def run_eval() -> bool:
        """Evaluate, record, update events; returns True when the run should stop (grokked + patience)."""
        m: dict[str, float] = {}
        if tc["train_eval"] == "full":
            m["train_loss"], m["train_acc"] = evaluate(
                model, data.x_train, data.y_train, loss_fn, tc["eval_batch_size"]
            )
        elif st["running"][2]:
            m["train_loss"] = st["running"][0] / st["running"][2]
            m["train_acc"] = st["running"][1] / st["running"][2]
        m["test_loss"], m["test_acc"] = evaluate(model, data.x_test, data.y_test, loss_fn, tc["eval_batch_size"])
        if data.x_val is not None:
            m["val_loss"], m["val_acc"] = evaluate(model, data.x_val, data.y_val, loss_fn, tc["eval_batch_size"])
        if diag is not None:
            m.update(diag.compute(opt))
        for key, value in m.items():
            split, metric = key.split("_", 1)
            record(split, metric, value)
        st["last"] = {k: m[k] for k in ("train_acc", "test_acc", "val_acc", "train_loss", "test_loss") if k in m}
        when = {"step": st["step"], "epoch": st["epoch"], "seconds": st["seconds"]}
        ev = st["events"]
        update_events(ev, when, m.get("train_acc"), m["test_acc"], tc["memorize_threshold"], tc["grok_threshold"])
        thr = tc["switch_off_threshold"]
        if thr > 0:
            acc = m[f"{tc['switch_off_split']}_acc"]
            if not st["switched"] and acc >= thr:
                st["switched"] = set_whitening(opt, False)
                if st["switched"] and ev["switched_off"] is None:
                    ev["switched_off"] = when
            elif st["switched"] and not tc["switch_off_latch"] and acc < thr:
                set_whitening(opt, True)
                st["switched"] = False
        if on_eval is not None:
            on_eval(st["step"], m)
        if ev["grokked"] is not None and tc["stop_after_grok"]:
            st["evals_after_grok"] += 1
            return st["evals_after_grok"] > tc["patience"]
        return False

    total = int(max_steps) if max_steps < math.inf else 0
    bar = Progress(total, cfg.get("name") or "train", {"auto": None, "on": True, "off": False}[tc["progress"]])
    flag: dict[str, Any] = {}
    status = "budget"
    last_ckpt = time.perf_counter()
    model.train()
    with _signals_to_flag(flag, handle_signals):
        if st["step"] == 0 and not rows:
            st["last"] = {}
            if run_eval():  # the initial point (step 0), e.g. for curves on a log-x axis
                status = "grokked"
        ev = st["events"]
        if ev["grokked"] is not None and tc["stop_after_grok"] and st["evals_after_grok"] > tc["patience"]:
            status = "grokked"  # resuming a run that already stopped after grokking: nothing to do
        t_mark = time.perf_counter()
        while status != "grokked" and st["step"] < max_steps:
            if st["batch"] == 0:
                st["perm"] = torch.randperm(n, generator=gen) if shuffle else None
                st["running"] = [0.0, 0.0, 0]
            b = st["batch"]
            if st["perm"] is None:
                idx = slice(b * bs, (b + 1) * bs)
            else:
                idx = st["perm"][b * bs : (b + 1) * bs].to(device)
            xb, yb = data.x_train[idx], data.y_train[idx]

            t0 = time.perf_counter()
            out = model(xb)
            loss = loss_fn(out, yb)
            if l2:
                loss = loss + l2_penalty(decayed, l2)
            if not torch.isfinite(loss):
                if tc["nonfinite"] == "skip":
                    st["skipped_steps"] += 1
                else:
                    status = "nonfinite"
                    break
            else:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grads = [p.grad for p in params if p.grad is not None]
                if bool(torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum())):
                    opt.step()
                elif tc["nonfinite"] == "skip":
                    st["skipped_steps"] += 1
                else:
                    status = "nonfinite"
                    break
            st["train_seconds"] += time.perf_counter() - t0
            if tc["train_eval"] == "running":
                with torch.no_grad():
                    st["running"][0] += float(loss) * len(yb)
                    st["running"][1] += float(accuracy(out, yb)) * len(yb)
                    st["running"][2] += len(yb)
            st["step"] += 1
            st["batch"] += 1
            epoch_end = st["batch"] == n_batches
            if epoch_end:
                st["epoch"] += 1
                st["batch"] = 0
            unit_count = st["epoch"] if tc["eval_unit"] == "epoch" else st["step"]
            due = (epoch_end or tc["eval_unit"] == "step") and unit_count % tc["eval_every"] == 0
            now = time.perf_counter()
            st["seconds"] += now - t_mark
            t_mark = now
            if due or st["step"] >= max_steps:
                stop = run_eval()
                now = time.perf_counter()
                st["seconds"] += now - t_mark
                t_mark = now
                bar.update(st["step"], **{k: v for k, v in st["last"].items() if k.endswith("acc")})
                if stop:
                    status = "grokked"
            if flag.get("signal"):
                status = "interrupted"
                break
            ce = tc["checkpoint_every"]
            if (epoch_end and ce and st["epoch"] % ce == 0) or now - last_ckpt > tc["checkpoint_seconds"]:
                save_checkpoint()
                last_ckpt = time.perf_counter()
    bar.close()
    if status == "grokked" or (status == "budget" and st["events"]["grokked"] is not None):
        status = "grokked"
    save_checkpoint()
    result = summary(status)
    if status == "nonfinite":
        raise RunStopped(
            f"non-finite loss or gradient at step {st['step']}; the last good state is saved"
            + (f" in {run_dir}" if run_dir else "")
            + " (set train.nonfinite = 'skip' to skip such steps)",
            result,
        )
    if status == "interrupted":
        raise RunStopped(f"stopped by {flag['signal']} at step {st['step']}; resume with --resume", result)
    return result


def _write_metrics(path: Path, rows: list[tuple[int, int, str, str, float]]) -> None:
    lines = ["step,epoch,split,metric,value"] + [f"{s},{e},{sp},{m},{v!r}" for s, e, sp, m, v in rows]
    fio.write_text(path, "\n".join(lines) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a run's ``metrics.csv`` as dicts (step, epoch, split, metric, value)."""
    out = []
    with open(path) as f:
        next(f)
        for line in f:
            s, e, sp, m, v = line.rstrip("\n").split(",")
            out.append({"step": int(s), "epoch": int(e), "split": sp, "metric": m, "value": float(v)})
    return out


__all__ = [
    "TRAIN_DEFAULTS",
    "RunStopped",
    "build_model",
    "evaluate",
    "pick_device",
    "read_metrics",
    "train",
    "update_events",
]
