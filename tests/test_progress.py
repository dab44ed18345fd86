"""The progress line: cut to the terminal's width, never padded past it, redrawn in place."""

from __future__ import annotations

import io

import pytest

from egalitarian.progress import Progress


def _frames(text: str) -> list[str]:
    """What each redraw wrote: the text after each carriage return (a redraw starts with one)."""
    assert text.startswith("\r")
    return text.split("\r")[1:]


@pytest.mark.parametrize("columns", [20, 40, 80])
def test_line_fits_the_terminal_width(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    stream = io.StringIO()
    bar = Progress(1000, "a-long-label", enabled=True, stream=stream)
    bar.update(10, force=True, train_acc=0.5, test_acc=0.25, note="x" * 200)
    bar.update(500, force=True)
    bar.update(900, force=True, test_acc=0.125)
    frames = _frames(stream.getvalue())
    assert len(frames) == 3
    assert all(len(f) <= columns - 1 for f in frames)  # one short of the width: the cursor never wraps
    assert "\n" not in stream.getvalue()
    assert frames[0] == frames[0][: columns - 1] and len(frames[0]) == columns - 1  # the long one is cut


def test_wide_terminal_shows_the_whole_line_without_padding(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    stream = io.StringIO()
    bar = Progress(4, "run", enabled=True, stream=stream)
    bar.update(2, force=True, test_acc=0.75)
    (frame,) = _frames(stream.getvalue())
    assert frame.startswith("run [############            ] 2/4")
    assert frame.endswith("test_acc 0.750")  # all of it, and no trailing blanks (it used to be padded to 100)


def test_a_shorter_redraw_blanks_what_the_longer_one_left(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    stream = io.StringIO()
    bar = Progress(4, "run", enabled=True, stream=stream)
    bar.update(1, force=True, note="y" * 50)
    bar.update(2, force=True)
    first, second = _frames(stream.getvalue())
    assert len(second) == len(first)  # covers every character of the previous line, no more
    assert second.startswith("run [############            ] 2/4") and "y" not in second
    bar.close()
    assert stream.getvalue().endswith("\n")


def test_disabled_writes_nothing():
    stream = io.StringIO()
    bar = Progress(4, "run", enabled=False, stream=stream)
    bar.update(1, force=True)
    bar.close()
    assert stream.getvalue() == ""


def test_not_drawn_with_log_every_writes_a_plain_line_at_most_once_per_interval(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("egalitarian.progress.time.perf_counter", lambda: clock[0])
    stream = io.StringIO()
    bar = Progress(10, "sweep s", enabled=False, stream=stream, log_every=600)
    for t, done in [(100, 0), (699, 3), (700, 4), (701, 5), (1299, 6), (1300, 8)]:
        clock[0] = float(t)
        bar.update(done, force=True, failed=0)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()  # at 700 s and 1300 s after the start, no others
    assert lines[0].endswith("sweep s [#########               ] 4/10    600s< 900s  failed 0")
    assert lines[1].endswith("sweep s [###################     ] 8/10   1200s< 300s  failed 0")
    assert all(line[:4].isdigit() and line[19] == "Z" for line in lines)  # stamped with the UTC time


def test_sweep_output_not_on_a_terminal_logs_only_when_progress_is_left_to_auto(tmp_path, monkeypatch):
    import egalitarian.sweep.execute as ex

    made = []
    monkeypatch.setattr(ex, "Progress", lambda *a, **k: made.append(k.get("log_every")) or Progress(*a, **k))
    monkeypatch.setattr(ex, "_run_local", lambda *a, **k: None)  # no runs: only how the bar is made
    from egalitarian.sweep.spec import PlannedRun, Sweep

    runs = [PlannedRun(id="r", params={}, group="g", label="g", config={})]
    for progress in (None, False, True):
        ex.run_sweep(Sweep(name="s", store=tmp_path / "s.sqlite", baseline=None, runs=runs), workers=1,
                     progress=progress)
    assert made == [ex.LOG_EVERY, None, None]
