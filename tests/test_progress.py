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
