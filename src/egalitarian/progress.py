"""A dependency-free progress line: redrawn in place on a terminal, silent otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total, enabled)``; ``update(done, **fields)`` redraws at most 10 times a second."""

    def __init__(self, total: int, label: str = "", enabled: bool | None = None, stream: TextIO | None = None):
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, done: int, force: bool = False, **fields: object) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = min(done / self.total, 1.0) if self.total else 0.0
        bar = "#" * int(24 * frac)
        elapsed = now - self.start
        eta = f"{elapsed * (1 - frac) / frac:4.0f}s" if frac > 0 else "   ?"
        extra = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        line = f"\r{self.label} [{bar:<24}] {done}/{self.total}  {elapsed:5.0f}s<{eta}  {extra}"
        self.stream.write(line[:160].ljust(100))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
