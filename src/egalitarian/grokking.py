"""Grokking as first-class events: the memorized/grokked events, the run summary's schema, the grok status.

* :func:`update_events` latches the first evaluation at which train accuracy reaches ``memorize_threshold``
  (**memorized**) and test accuracy reaches ``grok_threshold`` (**grokked**).
* :class:`Summary` declares ``summary.json`` once: ``grok`` is the grokking *event* (or None) and ``grokked``
  the bool ``grok is not None``; ``status`` is the run's *end state* (:data:`RUN_STATUSES`), distinct from
  ``grok_status``, the *phase* a run is in (:data:`GROK_STATUSES`, from :func:`grok_status`).

A leaf of the package: it reads metric rows and knows nothing of models or optimizers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, TypedDict

from .rundir import MetricRow

RunStatus = Literal["grokked", "budget", "nonfinite", "interrupted"]
RUN_STATUSES: tuple[RunStatus, ...] = ("grokked", "budget", "nonfinite", "interrupted")
"""How a run ended: reached the grokking threshold, used its budget, hit a non-finite loss, or a signal."""

StopReason = Literal["grokked", "max_steps", "max_epochs", "max_seconds", "at_chance", "nonfinite", "too_many_skipped",
                     "interrupted"]
STOP_REASONS: tuple[StopReason, ...] = (
    "grokked", "max_steps", "max_epochs", "max_seconds", "at_chance", "nonfinite", "too_many_skipped", "interrupted"
)
"""Why the loop ended (``summary.stop_reason``): stopped after grokking (``train.stop_after_grok`` and
``patience``), a budget (steps, epochs, wall-clock seconds), test accuracy stuck at chance after memorizing
(``train.chance_patience``), a non-finite loss, more than ``train.max_skip_fraction`` of the steps skipped
(``train.nonfinite = "skip"``; status ``nonfinite``), or a signal.  Every reason but ``grokked``, ``nonfinite``,
``too_many_skipped`` and ``interrupted`` ends with status ``budget`` (censored), unless the run had grokked
before."""

GrokStatus = Literal["memorizing", "progressing", "grokked", "stalled"]
GROK_STATUSES: tuple[GrokStatus, ...] = ("memorizing", "progressing", "grokked", "stalled")
"""Which phase a run is in, judged from its metrics by :func:`grok_status`."""


class Event(TypedDict):
    """When something happened: optimizer steps, completed epochs, wall-clock seconds of the loop."""

    step: int
    epoch: int
    seconds: float


class Summary(TypedDict, total=False):
    """``summary.json``: what one run measured (``final_*`` keys are present when evaluated)."""

    name: str | None
    status: RunStatus
    # why the loop ended (STOP_REASONS): "max_seconds" and "at_chance" are early stops with status "budget"
    # (censored), like "max_steps"/"max_epochs"; a run that grokked before any of them keeps status "grokked"
    stop_reason: StopReason
    grokked: bool  # grok is not None
    budget_exhausted: bool  # status == "budget"
    memorized: Event | None  # first evaluation with train accuracy >= memorize_threshold
    grok: Event | None  # first evaluation with test accuracy >= grok_threshold
    switched_off: Event | None  # when the switch-off rule stopped whitening
    delay_steps: int | None  # grok - memorized
    delay_epochs: int | None
    steps: int
    epochs: int  # completed epochs (the EGD paper's "epochs to 95%")
    seconds: float  # wall-clock seconds of the loop (steps + evaluations), summed over resumes
    seconds_per_step: float | None  # training-step seconds only
    skipped_steps: int  # non-finite steps skipped (train.nonfinite = "skip")
    steps_per_epoch: int
    device: str
    threads: int  # intra-op CPU threads the run used (train.threads, or $EGD_THREADS; 0 = auto = 1)
    data: str  # image tasks only: which data ran, e.g. "mnist (genuine, DIR)" or the digits stand-in
    # train.shuffle_labels_at only: the label shuffles done, {"epoch": completed epochs, "step": optimizer steps}
    label_shuffles: list[dict[str, int]]
    # train.refine_grok only, when a replay found the grok step: {"from_step", "to_step" (the coarse evaluations
    # around the crossing), "exact" (False: the replay did not reproduce it, the coarse step is kept),
    # "discarded_seconds" (the thrown-away coarse steps, in neither seconds nor grok.seconds)}
    refined: dict[str, Any]
    final_train_acc: float
    final_test_acc: float
    final_val_acc: float
    final_train_loss: float
    final_test_loss: float
    grok_status: GrokStatus
    grok_status_reason: str


def update_events(
    events: dict[str, Any],
    when: Event,
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




def _series(rows: Sequence[MetricRow]) -> dict[str, list[tuple[int, int, float]]]:
    """``{"split_metric": [(step, epoch, value), ...]}`` from metric rows."""
    out: dict[str, list[tuple[int, int, float]]] = {}
    for step, epoch, split, metric, value in rows:
        out.setdefault(f"{split}_{metric}", []).append((int(step), int(epoch), float(value)))
    return out


def _trend(points: list[tuple[int, int, float]], since: int) -> tuple[float, float, float] | None:
    """(mean of the first quarter, mean of the last quarter, epochs between the quarters' centres) of the finite
    values at steps ≥ ``since``."""
    pts = [(e, v) for s, e, v in points if s >= since and math.isfinite(v)]
    if len(pts) < 4:
        return None
    q = len(pts) // 4
    first, last = pts[:q], pts[-q:]
    span = (sum(e for e, _ in last) - sum(e for e, _ in first)) / q
    return sum(v for _, v in first) / q, sum(v for _, v in last) / q, span


def grok_status(rows: Sequence[MetricRow] | Sequence[tuple[int, int, str, str, float]],
                memorize_threshold: float = 0.99, grok_threshold: float = 0.95, *, window: float = 0.25,
                min_evals: int = 8, rel: float = 0.01, acc_gain: float = 0.01,
                fit_rate: float = 2e-4) -> tuple[str, str]:
    """Classify a run from its metric rows: ``(status, reason)``, status one of :data:`GROK_STATUSES`.

    The window is the last ``window`` (25%) of the run's evaluations, at least ``min_evals`` (8); a trend is
    the mean of the window's last quarter against its first quarter.  A loss "falls" or "rises" when it moves
    by more than ``rel`` (1%) relatively; an accuracy "rises" when it gains ``acc_gain`` (0.01 absolute).
    Before memorization the train loss counts as falling when it falls by at least ``fit_rate`` (0.02%)
    relatively per epoch (1% per 50 epochs): SGD on the paper's recipe fits slowly (experiments/06-diagnostics,
    "Grokking status").

    1. **grokked**: test accuracy reached ``grok_threshold`` at some evaluation (latched, like the trainer's
       ``grokked`` event).
    2. Not yet memorized (last train accuracy < ``memorize_threshold``): **progressing** if test accuracy
       rises; else **memorizing** if the train loss falls (``fit_rate``) or train accuracy rises; else
       **stalled**.
    3. Memorized, not grokked:

       * **stalled** if the softmax-collapse fraction (``diag_collapse_frac``, when logged) is ≥ 0.5 at the
         last evaluation and test accuracy does not rise (Prieto et al. 2025: learning has halted);
       * **progressing** if test accuracy rises, or the test loss falls, or the restricted loss
         (``diag_restricted``, when logged) falls, or the embedding's Fourier Gini (``diag_fourier_gini``,
         when logged) rises by more than 0.002;
       * **memorizing** if the test loss rises (the train/test gap still widens);
       * otherwise everything is flat over the window: the same rules over **twice** the window decide
         (a turning point, e.g. the test-loss peak between memorizing and progressing, is flat over a
         short window); **stalled** if that is flat too.

    Fewer than ``min_evals`` evaluations: ``grokked`` if so, else ``memorizing`` (too early to tell).

    The rules were calibrated on mod-add p=97 runs with the paper's MLP (EGD and SGD, with and without
    weight decay, and a network too small to fit): experiments/06-diagnostics, "Grokking status".  LAR is not used: on
    that MLP it does not separate the phases (experiments/06-diagnostics).
    """
    s = _series(rows)
    test_acc = s.get("test_acc", [])
    for step, _, v in test_acc:
        if v >= grok_threshold:
            return "grokked", f"test accuracy >= {grok_threshold} at step {step}"
    steps = sorted({st for st, _, _ in test_acc})
    if len(steps) < min_evals:
        return "memorizing", f"only {len(steps)} evaluations: too early to see a trend"

    def start(frac: float) -> int:
        return steps[-min(len(steps), max(min_evals, math.ceil(frac * len(steps))))]

    def change(key: str, since: int, relative: bool = False) -> float:
        t = _trend(s.get(key, []), since)
        if t is None or (relative and t[0] == 0):
            return 0.0
        return (t[1] - t[0]) / abs(t[0]) if relative else t[1] - t[0]

    def rate(key: str, since: int) -> float:
        t = _trend(s.get(key, []), since)
        return 0.0 if t is None or t[0] == 0 else (t[1] - t[0]) / abs(t[0]) / max(t[2], 1.0)

    since = start(window)
    acc_up = change("test_acc", since) >= acc_gain
    train_acc = s.get("train_acc", [])
    if not train_acc or train_acc[-1][2] < memorize_threshold:
        if acc_up:
            return "progressing", "train accuracy below the memorization threshold, test accuracy rising"
        fall = rate("train_loss", since)
        if change("train_acc", since) >= acc_gain or fall <= -fit_rate:
            return "memorizing", f"fitting the training set (train loss {fall:+.3%} per epoch), test accuracy flat"
        return "stalled", f"train accuracy below the memorization threshold, train loss {fall:+.3%} per epoch"
    collapse = s.get("diag_collapse_frac", [])
    if collapse and collapse[-1][2] >= 0.5 and not acc_up:
        return "stalled", f"softmax collapse on {collapse[-1][2]:.0%} of the training sample, test accuracy flat"

    def memorized(since: int) -> tuple[str, str] | None:
        signals = []
        if change("test_acc", since) >= acc_gain:
            signals.append("test accuracy rising")
        test_loss = change("test_loss", since, True)
        if test_loss < -rel:
            signals.append(f"test loss falling ({test_loss:+.1%})")
        restricted = change("diag_restricted", since, True)
        if restricted < -rel:
            signals.append(f"restricted loss falling ({restricted:+.1%})")
        gini_up = change("diag_fourier_gini", since)
        if gini_up > 0.002:
            signals.append(f"Fourier Gini rising ({gini_up:+.3f})")
        if signals:
            return "progressing", "memorized; " + ", ".join(signals)
        if test_loss > rel:
            return "memorizing", f"memorized; test loss still rising ({test_loss:+.1%})"
        return None

    out = memorized(since)
    if out is not None:
        return out
    out = memorized(start(2 * window))
    if out is not None:
        return out[0], out[1] + " (over twice the window; flat over the last one)"
    return "stalled", "memorized; test accuracy, test loss and the logged progress measures are flat"
