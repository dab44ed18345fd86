"""The training loop: one loop you can read in one sitting, grokking events as first-class metrics, resumable.

``train(cfg, run_dir)`` assembles the task, model, loss and optimizer from a config
(:func:`egalitarian.build.build_run`), trains, and returns the :class:`~egalitarian.grokking.Summary`.
What it measures:

* **memorized**: the first evaluation at which train accuracy ≥ ``memorize_threshold`` (0.99);
* **grokked**: the first evaluation at which test accuracy ≥ ``grok_threshold`` (0.95; 0.85 for
  MNIST-style tasks); each as (step, epoch, seconds), plus the grokking delay between them;
* ``epochs`` counts *completed* epochs, the EGD paper's "epochs to 95%" convention;
* seconds are wall-clock seconds of the training loop (steps and evaluations), summed over resumes;
* ``stop_reason``: why the loop ended (:data:`~egalitarian.grokking.STOP_REASONS`).  Besides the step and
  epoch budgets, ``max_seconds`` (a wall-clock limit) and ``chance_patience`` (test accuracy still at chance
  after memorizing) end a run early with status ``budget``: censored, never a success (a run that grokked
  before any stop keeps status ``grokked``: the event happened).

Trainer options (``egd list fields``): ``[scheduler]`` (a learning-rate factor, :mod:`egalitarian.schedules`,
stepped after each optimizer step and saved in the checkpoint), ``train.clip_grad_norm`` (global-norm clipping
after the non-finite check), ``train.autocast = "bf16"`` (forward passes and loss in bfloat16, parameters and
optimizer in float32) and ``train.tensorboard`` (the metrics as TensorBoard event files,
:mod:`egalitarian.tracking`).

``train.shuffle_labels_at = [e, …]`` (the label-shuffle protocol of Sokar et al. 2023, the EGD paper's Table 8,
:mod:`egalitarian.reproduce.table8`): at the start of epoch e (after e completed epochs) the training labels are
replaced, in place, by a permutation of themselves (:func:`shuffle_labels`), drawn from a generator of its own
seeded from (``shuffle_seed``, the shuffle's index), so the data order is the run's without the option.  The test and
validation labels are untouched.  The summary lists the shuffles (``label_shuffles``: epoch and step of each); a
resumed run replays the shuffles it had done, so it continues bit-identically.

``train.refine_grok`` (issue #28, per-step resolution at coarse cost): until the grok, a run evaluating less often
than every step keeps in memory a :class:`Snapshot` of itself right after each evaluation (and at its start).
When an evaluation first finds test accuracy at or above ``grok_threshold`` more than one step after the snapshot,
it is not recorded: the run goes back to the snapshot and replays the same steps with an evaluation after each, up
to the first at or above the threshold, which is then the grok step.  Evaluating changes no training state, so that
is the step a run evaluating every step finds, unless test accuracy had reached the threshold and fallen back
between two earlier evaluations (a crossing no coarser cadence sees).  The cost: at most one evaluation interval of
extra steps and evaluations.  Then the run goes on at its usual cadence (``patience`` counts those evaluations from
the refined step).  The replay's evaluations stay in the metrics (memorized is exact too if it falls among them);
``seconds``, every event's seconds and ``max_seconds`` count the kept trajectory, as if it had evaluated every step
from the snapshot on, and the thrown-away coarse steps are reported as ``summary.refined.discarded_seconds``.
Before the grok, checkpoints are written only right after an evaluation and a signal saves the last evaluation's
state (a resumed run then replays exactly as the uninterrupted one); nothing of a snapshot is written.  The
switch-off rule, which acts at evaluations, is refused with it.

Denormal floats are flushed to zero during ``train()`` (``torch.set_flush_denormal``): at high learning rates
weights drift into the denormal range and CPU steps become 4-9× slower.

The run directory's files are described in :mod:`egalitarian.rundir`.  ``resume=True`` continues from
``checkpoint.pt`` bit-identically on CPU: same parameters, optimizer state, data order (the epoch's
permutation and position are saved) and metrics.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import os
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import io as fio
from . import rundir, tracking
from .build import Assembled, build_run
from .config import RESUMABLE, TRAIN_DEFAULTS, resolve, train_settings
from .errors import ConfigError, check
from .grokking import Event, RunStatus, StopReason, Summary, grok_status, update_events
from .losses import accuracy, l2_penalty
from .methods import OPTIMIZERS
from .progress import Progress
from .rundir import MetricRow
from .schedules import lambda_lr, schedule_change

THREADS_ENV = "EGD_THREADS"
"""Environment variable that overrides ``train.threads`` for every run of this process and of the processes it
starts (``egd run|demo|sweep --threads N`` set it; sweep workers inherit it)."""


class RunStopped(Exception):
    """Training stopped early with a saved state (non-finite loss, signal); ``summary`` tells which."""

    def __init__(self, message: str, summary: Summary):
        super().__init__(message)
        self.summary = summary


def run_threads(setting: int) -> int:
    """The intra-op thread count of a run: ``$EGD_THREADS`` when set, else ``train.threads``, where 0 = auto = 1.

    One thread is the default because the lab's models are small: a second OpenMP thread gains little alone,
    and when another process keeps a core busy every parallel region waits for it (an EGD step of the
    paper's MLP took 2275 ms instead of 21 ms; bench/threads.py).  More than the usable cores is refused."""
    cores = fio.usable_cores()
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        check(env.isdigit() and 1 <= int(env) <= cores, f"{THREADS_ENV} (--threads)", env,
              f"must be an integer from 1 to {cores}, the cores this process may use", ConfigError)
        return int(env)
    check(setting <= cores, "train.threads", setting,
          f"must be at most {cores}, the cores this process may use (0 = auto: 1 thread)", ConfigError)
    return setting or 1


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


Cast = Callable[[], contextlib.AbstractContextManager[Any]]


def autocast(setting: str, device: torch.device) -> Cast:
    """``train.autocast``: a factory of the context the forward passes and the loss run in.  ``"bf16"``:
    ``torch.autocast(device.type, dtype=torch.bfloat16)`` (cpu and cuda); ``"off"``: no context at all, so the
    float32 run is exactly the run before this option existed."""
    if setting == "off":
        return contextlib.nullcontext
    check(device.type in ("cpu", "cuda"), "train.autocast", setting,
          f"bfloat16 autocast runs on cpu and cuda devices, not {device.type!r}; use 'off'", ConfigError)
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


@dataclass
class LoopState:
    """Where the loop is; all of it goes into the checkpoint (as a dict, see :meth:`from_dict`)."""

    step: int = 0
    epoch: int = 0  # completed epochs
    batch: int = 0  # position inside the current epoch
    perm: Tensor | None = None  # this epoch's data order (None: no shuffling)
    seconds: float = 0.0  # loop wall-clock: steps and evaluations
    train_seconds: float = 0.0  # training steps only
    events: dict[str, Event | None] = field(
        default_factory=lambda: {"memorized": None, "grokked": None, "switched_off": None}
    )
    switched: bool = False  # whitening switched off by the switch-off rule
    evals_after_grok: int = 0
    evals_at_chance: int = 0  # consecutive evaluations since memorizing with test accuracy < the chance threshold
    skipped_steps: int = 0
    epoch_loss: float = 0.0  # sums over this epoch's batches, for train_eval = "running"
    epoch_correct: float = 0.0
    epoch_count: int = 0
    last: dict[str, float] = field(default_factory=dict)  # the last evaluation's accuracies and losses
    # train.shuffle_labels_at: the label shuffles done so far ({"epoch", "step"} each)
    label_shuffles: list[dict[str, int]] = field(default_factory=list)
    # train.refine_grok: the replay that found the grok step ({"from_step", "to_step", "exact", "discarded_seconds"})
    refined: dict[str, Any] | None = None

    def when(self) -> Event:
        return {"step": self.step, "epoch": self.epoch, "seconds": self.seconds}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        return cls(**d)


@dataclass(frozen=True)
class Batches:
    """How a training split of ``n`` rows is cut into batches (``batch_size = 0``: full batch)."""

    size: int
    per_epoch: int
    shuffle: bool

    @classmethod
    def of(cls, n: int, tc: dict[str, Any]) -> Batches:
        bs = n if tc["batch_size"] == 0 or tc["batch_size"] >= n else tc["batch_size"]
        return cls(bs, n // bs if tc["drop_last"] else math.ceil(n / bs), bs < n)


def chance_threshold(tc: dict[str, Any], data: Any) -> float:
    """``train.chance_threshold``, or when it is 0 (automatic) twice chance: 2/num_outputs for class targets
    with 3 or more classes, and 0.6 for sign (±1) targets and 2 classes (chance 0.5; twice would be 1)."""
    if tc["chance_threshold"] > 0:
        return float(tc["chance_threshold"])
    if data.target == "class" and data.num_outputs >= 3:
        return 2 / data.num_outputs
    return 0.6


def label_permutation(n: int, shuffle_seed: int, index: int) -> Tensor:
    """The permutation of the ``index``-th label shuffle (0-based) of a run with ``train.shuffle_seed``: a
    ``torch.randperm(n)`` from a generator of its own, seeded from both numbers (the first 8 bytes of
    SHA-256 of ``"label-shuffle:{shuffle_seed}:{index}"``), so the data-order generator is left alone."""
    digest = hashlib.sha256(f"label-shuffle:{shuffle_seed}:{index}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return torch.randperm(n, generator=gen)


@torch.no_grad()
def shuffle_labels(data: Any, shuffle_seed: int, index: int) -> None:
    """The ``index``-th label shuffle: ``data.y_train ← data.y_train[perm]`` in place (on its device), with
    ``perm`` = :func:`label_permutation`; every holder of the training labels (the diagnostics' sample) sees them."""
    y = data.y_train
    y.copy_(y[label_permutation(len(y), shuffle_seed, index).to(y.device)])


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, loss_fn, batch_size: int,
             cast: Cast = contextlib.nullcontext) -> tuple[float, float]:
    """Mean loss and accuracy over (x, y) in large no-grad batches (forward and loss inside ``cast()``)."""
    was_training = model.training
    model.eval()
    total_loss, total_acc = 0.0, 0.0
    for i in range(0, len(x), batch_size):
        yb = y[i : i + batch_size]
        with cast():
            out = model(x[i : i + batch_size])
            loss = loss_fn(out, yb)
        n = len(yb)
        total_loss += float(loss) * n
        total_acc += float(accuracy(out, yb)) * n
    model.train(was_training)
    return total_loss / len(x), total_acc / len(x)


def measure(run: Assembled, st: LoopState, tc: dict[str, Any], diag: Any,
            cast: Cast = contextlib.nullcontext) -> dict[str, float]:
    """One evaluation: train (running or full), test and val accuracy and loss (forward passes inside ``cast()``,
    :func:`autocast`), and the diagnostics (float32)."""
    data, bs = run.data, tc["eval_batch_size"]
    m: dict[str, float] = {}
    if tc["train_eval"] == "full":
        m["train_loss"], m["train_acc"] = evaluate(run.model, data.x_train, data.y_train, run.loss_fn, bs, cast)
    elif st.epoch_count:
        m["train_loss"] = st.epoch_loss / st.epoch_count
        m["train_acc"] = st.epoch_correct / st.epoch_count
    m["test_loss"], m["test_acc"] = evaluate(run.model, data.x_test, data.y_test, run.loss_fn, bs, cast)
    if data.x_val is not None:
        m["val_loss"], m["val_acc"] = evaluate(run.model, data.x_val, data.y_val, run.loss_fn, bs, cast)
    if diag is not None:
        m.update(diag.compute(run.optimizer))
    return m


def switch_off(opt: Any, st: LoopState, tc: dict[str, Any], m: dict[str, float]) -> None:
    """The EGD paper's switch-off rule: stop whitening once ``switch_off_split`` accuracy reaches the threshold
    (and, unlatched, start again when it drops).  Optimizers that do not whiten are left alone."""
    thr = tc["switch_off_threshold"]
    control = getattr(opt, "set_whitening", None)
    if thr <= 0 or control is None:
        return
    acc = m[f"{tc['switch_off_split']}_acc"]
    if not st.switched and acc >= thr:
        st.switched = control(False)
        if st.switched and st.events["switched_off"] is None:
            st.events["switched_off"] = st.when()
    elif st.switched and not tc["switch_off_latch"] and acc < thr:
        control(True)
        st.switched = False


def train_step(run: Assembled, xb: Tensor, yb: Tensor, clip_grad_norm: float = 0.0,
               cast: Cast = contextlib.nullcontext) -> tuple[Tensor, Tensor, bool]:
    """Forward (and loss) inside ``cast()`` (:func:`autocast`), backward, gradient clipping (``clip_grad_norm > 0``:
    ``torch.nn.utils.clip_grad_norm_`` over every trainable parameter), an optimizer step and a schedule step;
    returns (loss, outputs, finite).  A non-finite loss or gradient takes no step (``finite`` is False) and leaves
    the parameters, the optimizer state and the schedule untouched."""
    with cast():
        out = run.model(xb)
        loss = run.loss_fn(out, yb)
    if run.l2:
        loss = loss + l2_penalty(run.decayed, run.l2)
    if not torch.isfinite(loss):
        return loss, out, False
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in run.model.parameters() if p.requires_grad and p.grad is not None]
    if not bool(torch.isfinite(torch.stack(torch._foreach_norm([p.grad for p in params])).sum())):
        return loss, out, False
    if clip_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    run.optimizer.step()
    if run.scheduler is not None:
        run.scheduler.step()
    return loss, out, True


def train_state(run: Assembled, gen: torch.Generator, st: LoopState) -> dict[str, Any]:
    """Everything the rest of a run depends on: parameters, optimizer and schedule state, the data-order and torch
    RNGs, the loop state.  The tensors are the live ones (a checkpoint writes them; a :class:`Snapshot` copies)."""
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "shuffle_rng": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "loop": st.to_dict(),
        **({"scheduler": run.scheduler.state_dict()} if run.scheduler is not None else {}),
    }


def load_train_state(run: Assembled, gen: torch.Generator, state: dict[str, Any]) -> LoopState:
    """Put a :func:`train_state` back into the run and the generators; returns its loop state."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scheduler is not None:
        run.scheduler.load_state_dict(state["scheduler"])
    gen.set_state(state["shuffle_rng"])
    torch.set_rng_state(state["torch_rng"])
    st = LoopState.from_dict(state["loop"])
    if st.switched:
        run.optimizer.set_whitening(False)
    return st


def save_checkpoint(run_dir: Path | None, cfg: dict[str, Any], run: Assembled, gen: torch.Generator,
                    st: LoopState, rows: list[MetricRow]) -> None:
    """``metrics.csv`` and ``checkpoint.pt``, each atomically (metrics first: they never run ahead)."""
    if run_dir is None:
        return
    rundir.write_metrics(run_dir / rundir.METRICS, rows)
    fio.torch_save(run_dir / rundir.CHECKPOINT,
                   {"config": cfg, **train_state(run, gen, st), "metrics": [tuple(r) for r in rows]})


def load_checkpoint(path: Path, cfg: dict[str, Any], run: Assembled, gen: torch.Generator,
                    device: torch.device) -> tuple[LoopState, list[MetricRow]]:
    """Restore model, optimizer, RNGs, loop state and rows; the config may differ only in budget fields.

    A checkpoint that cannot be read (empty, truncated, corrupt, not a checkpoint) is a ConfigError naming it."""
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(ck, dict) or not {"config", "model", "optimizer", "loop", "metrics"} <= set(ck):
            raise ValueError("not a checkpoint of egd run")
    except Exception as e:  # torch and pickle raise RuntimeError, EOFError, UnpicklingError, ... for bad bytes
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: {first}): it is empty, truncated or "
            "corrupt; start the run over (egd run --overwrite) or resume from a copy"
        ) from None
    diffs = _differences(ck["config"], cfg)
    if diffs:
        raise ConfigError(f"cannot resume {str(path.parent)!r}: the config differs in {', '.join(diffs)}")
    if run.scheduler is not None:  # the config asks for the same schedule; a cosine may follow another budget
        change = schedule_change(run.scheduler, ck.get("scheduler", {}))
        if change:
            raise ConfigError(f"cannot resume {str(path.parent)!r}: its learning-rate schedule differs ({change}): "
                              "scheduler.total_steps = 0 follows the step budget; resume it with the budget it "
                              "started with")
    return load_train_state(run, gen, ck), [MetricRow(*r) for r in ck["metrics"]]


@dataclass(frozen=True)
class Snapshot:
    """``train.refine_grok``: the run as it was right after an evaluation, kept in memory (never written) so that
    the steps after it can be replayed with an evaluation after each (:func:`keep_snapshot`,
    :func:`restore_snapshot`)."""

    state: dict[str, Any]  # a deep copy of train_state()
    rows: int  # how many metric rows there were (rows are only ever appended)
    labels: Tensor | None  # the training labels, which label shuffles change in place (None: never shuffled)
    cuda_rng: Tensor | None  # a CUDA device's RNG (dropout), which checkpoints do not hold

    @property
    def step(self) -> int:
        return self.state["loop"]["step"]

    @property
    def seconds(self) -> float:
        return self.state["loop"]["seconds"]


def keep_snapshot(run: Assembled, gen: torch.Generator, st: LoopState, rows: list[MetricRow],
                  labels: Tensor | None, device: torch.device) -> Snapshot:
    """A :class:`Snapshot` of the run now: copies of the model, optimizer, schedule, RNG and loop states (the epoch's
    permutation and running train sums included), of ``labels`` when given, and the number of metric rows."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return Snapshot(copy.deepcopy(train_state(run, gen, st)), len(rows),
                    None if labels is None else labels.clone(), cuda)


def restore_snapshot(snap: Snapshot, run: Assembled, gen: torch.Generator, rows: list[MetricRow],
                     labels: Tensor | None, device: torch.device) -> LoopState:
    """Back to ``snap``: its state in the run and the generators, its training labels copied into ``labels`` (in
    place: the diagnostics' sample is a view of them), the metric rows recorded since dropped; its loop state."""
    del rows[snap.rows:]
    if snap.labels is not None and labels is not None:
        labels.copy_(snap.labels)
    if snap.cuda_rng is not None:
        torch.cuda.set_rng_state(snap.cuda_rng, device)
    return load_train_state(run, gen, copy.deepcopy(snap.state))  # a copy: the loads may alias its tensors


def summarize(cfg: dict[str, Any], st: LoopState, status: RunStatus, batches: Batches, device: torch.device,
              rows: list[MetricRow], stop_reason: StopReason, threads: int | None = None,
              data: str | None = None) -> Summary:
    """The run's :class:`~egalitarian.grokking.Summary` from its loop state and metric rows."""
    tc, ev = cfg["train"], st.events
    mem, grok = ev["memorized"], ev["grokked"]
    shuffles = {"label_shuffles": [dict(e) for e in st.label_shuffles]} if tc.get("shuffle_labels_at") else {}
    out: Summary = {
        "name": cfg.get("name"),
        "status": status,
        "stop_reason": stop_reason,
        "grokked": grok is not None,
        "budget_exhausted": status == "budget",
        "memorized": mem,
        "grok": grok,
        "switched_off": ev["switched_off"],
        "delay_steps": grok["step"] - mem["step"] if mem and grok else None,
        "delay_epochs": grok["epoch"] - mem["epoch"] if mem and grok else None,
        "steps": st.step,
        "epochs": st.epoch,
        "seconds": st.seconds,
        "seconds_per_step": st.train_seconds / st.step if st.step else None,
        "skipped_steps": st.skipped_steps,
        "steps_per_epoch": batches.per_epoch,
        "device": str(device),
        "threads": threads if threads is not None else torch.get_num_threads(),
        **({"data": data} if data else {}),  # which data ran (image tasks: TaskData.info["data"])
        **shuffles,  # train.shuffle_labels_at: when the labels were reshuffled
        **({"refined": dict(st.refined)} if st.refined else {}),  # train.refine_grok: the replay that found grok
        **{f"final_{k}": v for k, v in st.last.items()},  # type: ignore[typeddict-item]
    }
    out["grok_status"], out["grok_status_reason"] = grok_status(  # type: ignore[typeddict-item]
        rows, tc["memorize_threshold"], tc["grok_threshold"]
    )
    return out


def train(
    cfg: dict[str, Any],
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    handle_signals: bool = False,
    on_eval=None,
) -> Summary:
    """Train one run; returns the summary (also written to ``run_dir/summary.json`` when given).

    ``on_eval(step, metrics)`` is called after each evaluation with the optimizer step and the measurements
    (``{"test_acc": …, "train_loss": …, "diag_<metric>": …}``): sweeps use it for live progress, and it is the
    hook for any tracker (docs/TRACKING.md logs it to Weights & Biases).  ``train.tensorboard`` writes the same
    measurements as TensorBoard scalars (:mod:`egalitarian.tracking`).
    Raises :class:`RunStopped` when stopped by a non-finite loss or a signal, after saving the state.

    The run uses :func:`run_threads` intra-op threads (``train.threads``, 0 = 1; ``$EGD_THREADS`` overrides it);
    the caller's thread count is restored afterwards.

    Denormals are flushed to zero for the run and the caller's setting is restored afterwards.  torch sets
    this for the calling thread; intra-op worker threads started during the run inherit it and keep it (those
    started before it do not), so a run in a fresh process flushes on every thread.
    """
    with _flush_denormals(), _threads_restored():
        return _train(cfg, run_dir, resume, handle_signals, on_eval)


def _train(cfg: dict[str, Any], run_dir: str | Path | None, resume: bool, handle_signals: bool,
           on_eval) -> Summary:
    cfg = resolve(cfg, OPTIMIZERS)
    tc = train_settings(cfg)
    if tc["tensorboard"]:  # a missing package is an error before anything is made
        tracking.writer_class(f"train.tensorboard = {tc['tensorboard']!r}")
    run_dir = _made_dir(run_dir)
    threads = run_threads(tc["threads"])
    torch.set_num_threads(threads)
    device = pick_device(tc["device"])
    cast = autocast(tc["autocast"], device)
    run = build_run(cfg, device)  # the task's split seed is in [task]; init seed train.seed
    shuffle_at = list(tc["shuffle_labels_at"])
    if shuffle_at:  # the labels are shuffled in place: the run's own copy, before anyone takes a view of it
        run.data.y_train = run.data.y_train.clone()
    if tc["switch_off_threshold"] > 0 and tc["switch_off_split"] == "val" and run.data.x_val is None:
        raise ConfigError("train.switch_off_split = 'val' needs a validation split: set task.val_frac > 0")
    diag = None
    if cfg["diagnostics"]:
        from .diagnostics import Diagnostics  # a leaf module, imported only when asked for

        diag = Diagnostics(cfg["diagnostics"], run.model, run.data, run.loss_fn)
    data = run.data
    batches = Batches.of(data.n_train, tc)
    gen = torch.Generator().manual_seed(tc["shuffle_seed"])
    max_steps = min(tc["max_steps"] or math.inf,
                    tc["max_epochs"] * batches.per_epoch if tc["max_epochs"] else math.inf)
    at_chance = chance_threshold(tc, data)
    if "scheduler" in cfg:  # before the checkpoint is loaded: it restores the schedule's step
        run.scheduler = lambda_lr(run.optimizer, cfg["scheduler"], max_steps)

    st, rows = LoopState(), []
    ckpt = run_dir / rundir.CHECKPOINT if run_dir is not None else None
    if resume and ckpt is not None and ckpt.exists():
        st, rows = load_checkpoint(ckpt, cfg, run, gen, device)
        for k in range(len(st.label_shuffles)):  # the labels as the checkpointed run had them
            shuffle_labels(data, tc["shuffle_seed"], k)
    # with nonfinite = "skip": once the skipped steps exceed this, more than max_skip_fraction of the run's
    # steps are skipped however it ends (it has at most max_steps), so it fails now rather than at its end
    skip_limit = tc["max_skip_fraction"] * max_steps if tc["nonfinite"] == "skip" else math.inf
    if run_dir is not None:
        rundir.write_config(run_dir, cfg)

    def over_time() -> bool:
        return 0 < tc["max_seconds"] < st.seconds

    def stopped() -> StopReason | None:
        """Why a run stops now: grokked (patience used up) or at chance (chance_patience used up)."""
        if st.events["grokked"] is not None and tc["stop_after_grok"] and st.evals_after_grok > tc["patience"]:
            return "grokked"
        if tc["chance_patience"] and st.evals_at_chance >= tc["chance_patience"]:
            return "at_chance"
        return None

    def record(m: dict[str, float]) -> StopReason | None:
        """Record one evaluation's measurements, update the events and counters; why the run should stop, or None."""
        new = [MetricRow(st.step, st.epoch, *k.split("_", 1), float(v)) for k, v in m.items()]
        rows.extend(new)
        if tb is not None:  # train.tensorboard (tb: the `with` of the loop below)
            tb.write(new)
        st.last = {k: m[k] for k in ("train_acc", "test_acc", "val_acc", "train_loss", "test_loss") if k in m}
        update_events(st.events, st.when(), m.get("train_acc"), m["test_acc"], tc["memorize_threshold"],
                      tc["grok_threshold"])
        switch_off(run.optimizer, st, tc, m)
        if st.events["memorized"] is not None:  # from the memorizing evaluation on
            st.evals_at_chance = st.evals_at_chance + 1 if m["test_acc"] < at_chance else 0
        if on_eval is not None:
            on_eval(st.step, m)
        if st.events["grokked"] is not None and tc["stop_after_grok"]:
            st.evals_after_grok += 1
        return stopped()

    def run_eval() -> StopReason | None:
        """Evaluate and record; why the run should stop, or None.  With ``train.refine_grok``, a first grok found
        more than one step after the snapshot (the previous evaluation) is not recorded but :func:`replay`-ed."""
        m = measure(run, st, tc, diag, cast)
        first_grok = st.events["grokked"] is None and m["test_acc"] >= tc["grok_threshold"]
        if snap is not None and first_grok and st.step > snap.step + 1:
            return replay(m)
        return record(m)

    def replay(coarse: dict[str, float]) -> StopReason | None:
        """``train.refine_grok``: back to the snapshot, then the same steps again with an evaluation after each, up
        to the first at or above the grok threshold; why the run should stop, or None.

        Training is deterministic given the state, so the replay crosses at or before the coarse evaluation's step
        (``to_step``).  If it has not crossed there (non-determinism), that step records the coarse measurements,
        so the coarse crossing is kept (``refined["exact"]`` False): the replay never runs past it.  A signal
        during the replay goes back to the snapshot, the state a checkpoint then holds."""
        nonlocal st
        assert snap is not None
        from_step, to_step = snap.step, st.step
        discarded = st.seconds + clock.lap() - snap.seconds  # the coarse steps and evaluation thrown away
        st = restore_snapshot(snap, run, gen, rows, labels, device)
        reason: StopReason | None = None
        m = coarse
        while st.events["grokked"] is None:
            if flag.get("signal"):
                st = restore_snapshot(snap, run, gen, rows, labels, device)
                return None
            if st.batch == 0:
                begin_epoch(st, data, gen, batches, shuffle_at, tc["shuffle_seed"])
            if not batch_step(run, st, batches, tc, cast, device):
                return "nonfinite"
            st.seconds += clock.lap()
            m = measure(run, st, tc, diag, cast)
            if st.step == to_step and m["test_acc"] < tc["grok_threshold"]:
                m = coarse
            reason = record(m)
            st.seconds += clock.lap()
        st.refined = {"from_step": from_step, "to_step": to_step, "exact": m is not coarse,
                      "discarded_seconds": discarded}
        return reason

    def keep() -> Snapshot | None:
        """``train.refine_grok`` with a cadence coarser than every step, before the grok: a snapshot of the run now
        (right after an evaluation); otherwise None, and the run is the run without the option."""
        if not refine or st.events["grokked"] is not None:
            return None
        return keep_snapshot(run, gen, st, rows, labels, device)

    total = int(max_steps) if max_steps < math.inf else 0
    bar = Progress(total, cfg.get("name") or "train", {"auto": None, "on": True, "off": False}[tc["progress"]])
    flag: dict[str, Any] = {}
    reason: StopReason | None = None
    refine = tc["refine_grok"] and tc["eval_every"] * (batches.per_epoch if tc["eval_unit"] == "epoch" else 1) > 1
    labels = data.y_train if shuffle_at else None  # what a snapshot keeps of the data: the shuffled labels
    snap: Snapshot | None = None  # train.refine_grok: the run right after its last evaluation
    last_ckpt = time.perf_counter()
    run.model.train()
    with _signals_to_flag(flag, handle_signals), _tensorboard(tc["tensorboard"], rows) as tb:
        if st.step == 0 and not rows:
            st.last = {}
            reason = run_eval()  # the initial point (step 0), e.g. for curves on a log-x axis
        # resuming a run that already stopped (grokked, at chance, out of time): nothing to do
        reason = reason or stopped() or ("max_seconds" if over_time() else None)
        clock = _Lap()
        snap = keep()
        while reason is None and st.step < max_steps:
            if st.batch == 0:
                begin_epoch(st, data, gen, batches, shuffle_at, tc["shuffle_seed"])
            if not batch_step(run, st, batches, tc, cast, device):
                reason = "nonfinite"
                break
            epoch_end = st.batch == 0
            st.seconds += clock.lap()
            out_of_time = over_time()
            if eval_due(st, tc, epoch_end) or st.step >= max_steps or out_of_time:  # the last step is evaluated
                reason = run_eval()
                st.seconds += clock.lap()
                snap = keep()
                bar.update(st.step, **{k: v for k, v in st.last.items() if k.endswith("acc")})
            if reason is None and out_of_time:
                reason = "max_seconds"
            if flag.get("signal"):
                reason = "interrupted"
                break
            if st.skipped_steps > skip_limit:
                reason = "too_many_skipped"
                break
            ce = tc["checkpoint_every"]
            due = (epoch_end and ce and st.epoch % ce == 0) or clock.mark - last_ckpt > tc["checkpoint_seconds"]
            if due and (snap is None or snap.step == st.step):  # refine_grok: only a state a replay can start from
                save_checkpoint(run_dir, cfg, run, gen, st, rows)
                last_ckpt = time.perf_counter()
        if reason == "interrupted" and snap is not None and snap.step != st.step:
            st = restore_snapshot(snap, run, gen, rows, labels, device)  # the last evaluation's state is saved
    bar.close()
    reason, status = final_status(reason, st, tc)
    save_checkpoint(run_dir, cfg, run, gen, st, rows)
    result = summarize(cfg, st, status, batches, device, rows, reason, threads, data.info.get("data"))
    if run_dir is not None:
        rundir.write_summary(run_dir, result)
    error = stop_error(result, st, tc, run_dir, flag.get("signal"))
    if error is not None:
        raise error
    return result


def begin_epoch(st: LoopState, data: Any, gen: torch.Generator, batches: Batches, shuffle_at: list[int],
                shuffle_seed: int) -> None:
    """The start of epoch ``st.epoch``: its data order (a permutation from ``gen``; None without shuffling),
    the running train sums reset, and the label shuffles ``train.shuffle_labels_at`` asks for by now."""
    st.perm = torch.randperm(data.n_train, generator=gen) if batches.shuffle else None
    st.epoch_loss, st.epoch_correct, st.epoch_count = 0.0, 0.0, 0
    while len(st.label_shuffles) < len(shuffle_at) and shuffle_at[len(st.label_shuffles)] <= st.epoch:
        shuffle_labels(data, shuffle_seed, len(st.label_shuffles))
        st.label_shuffles.append({"epoch": st.epoch, "step": st.step})


def batch_step(run: Assembled, st: LoopState, batches: Batches, tc: dict[str, Any], cast: Cast,
               device: torch.device) -> bool:
    """One step on batch ``st.batch`` of this epoch's order (rows ``b·size … (b+1)·size`` of ``st.perm``), with
    its bookkeeping: training seconds, the running train sums (``train_eval = "running"``), step, batch and
    epoch counters (``st.batch`` is 0 again after the epoch's last batch).

    A non-finite step (:func:`train_step`) is counted in ``st.skipped_steps`` with ``train.nonfinite = "skip"``;
    otherwise (``"stop"``) nothing is counted and False is returned: the run stops with its last good state."""
    b, size = st.batch, batches.size
    idx = slice(b * size, (b + 1) * size) if st.perm is None else st.perm[b * size : (b + 1) * size].to(device)
    xb, yb = run.data.x_train[idx], run.data.y_train[idx]
    t0 = time.perf_counter()
    loss, out, finite = train_step(run, xb, yb, tc["clip_grad_norm"], cast)
    if not finite:
        if tc["nonfinite"] != "skip":
            return False
        st.skipped_steps += 1
    st.train_seconds += time.perf_counter() - t0
    if tc["train_eval"] == "running":
        with torch.no_grad():
            st.epoch_loss += float(loss) * len(yb)
            st.epoch_correct += float(accuracy(out, yb)) * len(yb)
            st.epoch_count += len(yb)
    st.step += 1
    st.batch += 1
    if st.batch == batches.per_epoch:
        st.epoch += 1
        st.batch = 0
    return True


def eval_due(st: LoopState, tc: dict[str, Any], epoch_end: bool) -> bool:
    """Whether ``train.eval_every`` asks for an evaluation after this step: every ``eval_every`` completed
    epochs (``eval_unit = "epoch"``, at an epoch's end) or steps (``"step"``)."""
    count = st.epoch if tc["eval_unit"] == "epoch" else st.step
    return (epoch_end or tc["eval_unit"] == "step") and count % tc["eval_every"] == 0


def final_status(reason: StopReason | None, st: LoopState, tc: dict[str, Any]) -> tuple[StopReason, RunStatus]:
    """Why the run ended and its status, once the loop is left (``reason`` None: a budget ran out).

    Budgets and early stops (``max_*``, ``at_chance``) are ``budget`` (censored) unless the run grokked before;
    ``grokked``, ``nonfinite`` and ``interrupted`` are their own status; more than ``train.max_skip_fraction`` of
    the steps skipped (with ``nonfinite = "skip"``) is ``too_many_skipped`` with status ``nonfinite``."""
    if reason is None:  # the step or epoch budget (max_epochs when both are reached)
        reason = "max_epochs" if tc["max_epochs"] and st.epoch >= tc["max_epochs"] else "max_steps"
    if reason != "interrupted" and st.skipped_steps > tc["max_skip_fraction"] * st.step:
        reason = "too_many_skipped"  # (skipped steps happen only with nonfinite = "skip")
    status: RunStatus = "budget"
    if reason in ("grokked", "nonfinite", "interrupted"):
        status = reason  # type: ignore[assignment]
    elif reason == "too_many_skipped":
        status = "nonfinite"
    if status == "budget" and st.events["grokked"] is not None:
        status = "grokked"  # grokked before the budget or an early stop ended the run
    return reason, status


def stop_error(result: Summary, st: LoopState, tc: dict[str, Any], run_dir: Path | None,
               signal_name: str | None) -> RunStopped | None:
    """The :class:`RunStopped` that ends a run stopped with its state saved (too many skipped steps, a non-finite
    step, a signal), or None for a run that ended normally."""
    saved = f" in {run_dir}" if run_dir else ""
    if result["stop_reason"] == "too_many_skipped":
        return RunStopped(f"skipped {st.skipped_steps} of {st.step} steps with a non-finite loss or gradient, more "
                          f"than train.max_skip_fraction = {tc['max_skip_fraction']:g} of them; the last state is "
                          f"saved{saved}", result)
    if result["status"] == "nonfinite":
        return RunStopped(f"non-finite loss or gradient at step {st.step}; the last good state is saved{saved} "
                          "(set train.nonfinite = 'skip' to skip such steps)", result)
    if result["status"] == "interrupted":
        return RunStopped(f"stopped by {signal_name} at step {st.step}; resume with --resume", result)
    return None


class _Lap:
    """A lap timer: :meth:`lap` returns the wall-clock seconds since the previous lap (or since it was made) and
    moves ``mark``, the ``time.perf_counter()`` of that lap, on."""

    def __init__(self) -> None:
        self.mark = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        seconds, self.mark = now - self.mark, now
        return seconds


def _made_dir(run_dir: str | Path | None) -> Path | None:
    """The run directory as a Path, created (with its parents) if missing; one that cannot be made is a
    ConfigError naming it."""
    if run_dir is None:
        return None
    return fio.make_dir(run_dir, "output directory")


def _tensorboard(logdir: str, rows: list[MetricRow]) -> contextlib.AbstractContextManager[Any]:
    """``train.tensorboard``: the run's :class:`~egalitarian.tracking.TensorBoardLog`, holding the rows so far
    (a resumed run's TensorBoard then shows exactly its metrics.csv); ``""``: None."""
    return tracking.TensorBoardLog(logdir, rows) if logdir else contextlib.nullcontext(None)


def _flushing_denormals() -> bool:
    """Whether this thread flushes denormals now: torch has no getter, so multiply a denormal float32 by 1."""
    return float(torch.tensor(torch.finfo(torch.float32).tiny / 4, dtype=torch.float32) * 1) == 0.0


@contextmanager
def _flush_denormals():
    """``torch.set_flush_denormal(True)`` inside, the previous setting after (where the CPU supports it)."""
    was = _flushing_denormals()
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        if supported and not was:
            torch.set_flush_denormal(False)


@contextmanager
def _threads_restored():
    """The caller's ``torch.get_num_threads()`` is restored after the run (which sets its own)."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


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


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Dotted names of the fields that differ, ignoring budget and bookkeeping fields of ``[train]``."""
    fa, fb = _flatten(a), _flatten(b)
    skip = {f"train.{k}" for k in RESUMABLE}
    return sorted(k for k in set(fa) | set(fb) if k not in skip and fa.get(k) != fb.get(k))


__all__ = ["THREADS_ENV", "TRAIN_DEFAULTS", "LoopState", "RunStopped", "evaluate", "pick_device", "run_threads",
           "train"]
