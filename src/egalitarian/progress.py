"""A dependency-free progress line: redrawn in place on a terminal; elsewhere silent, or a plain line now and then
(``log_every``: a long sweep in the background says how far it is in its log)."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total, enabled)``; ``update(done, **fields)`` redraws at most 10 times a second.

    Not drawn (``enabled`` false, e.g. output to a file) and with ``log_every`` seconds, ``update`` writes the
    same line, newline-terminated and stamped with the UTC time, at most once per ``log_every`` seconds (the first
    after ``log_every``): a sweep run with ``nohup … > log`` tells its log how far it is.

    The line is cut to the terminal's width minus one (``shutil.get_terminal_size``: ``COLUMNS``, else the
    terminal, else 80), read at every redraw, and padded only over what the previous line showed, never past
    the width: a line as wide as the terminal would wrap, and every redraw would then scroll.
    """

    def __init__(self, total: int, label: str = "", enabled: bool | None = None, stream: TextIO | None = None,
                 log_every: float | None = None):
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.log_every = log_every
        self.start = time.perf_counter()
        self._last = 0.0
        self._logged = self.start
        self._shown = 0  # characters of the line on screen now

    def _line(self, done: int, now: float, fields: dict[str, object]) -> str:
        frac = min(done / self.total, 1.0) if self.total else 0.0
        bar = "#" * int(24 * frac)
        elapsed = now - self.start
        eta = f"{elapsed * (1 - frac) / frac:4.0f}s" if frac > 0 else "   ?"
        extra = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        return f"{self.label} [{bar:<24}] {done}/{self.total}  {elapsed:5.0f}s<{eta}  {extra}".rstrip()

    def update(self, done: int, force: bool = False, **fields: object) -> None:
        now = time.perf_counter()
        if not self.enabled:
            if self.log_every is not None and now - self._logged >= self.log_every:
                self._logged = now
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                self.stream.write(f"{stamp} {self._line(done, now, fields)}\n")
                self.stream.flush()
            return
        if not force and now - self._last < 0.1:
            return
        self._last = now
        line = self._line(done, now, fields)
        line = line[: max(shutil.get_terminal_size().columns - 1, 1)]
        self.stream.write("\r" + line + " " * max(self._shown - len(line), 0))  # blank the rest of the last one
        self._shown = len(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._shown = 0
            self.stream.write("\n")
            self.stream.flush()
