"""A progress bar on stderr: rows done, share of the input read, rate and time left.

On a terminal one line is redrawn; otherwise (a log) a line is printed every
few seconds. pyarrow and the rest of banditd's dependencies have no progress
bar, and one line of arithmetic does not warrant a new dependency.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class ProgressBar:
    """Draws ``done / total`` (total: bytes of input, or rows when known) with rows/s and ETA."""

    def __init__(
        self, total: int, label: str, *, stream: TextIO | None = None, every: float | None = None
    ) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every if every is not None else (0.2 if self.tty else 5.0)
        self.started = time.monotonic()
        self.shown = float("-inf")

    def update(self, rows: int, done: int, *, final: bool = False) -> None:
        """Show ``rows`` scored and ``done`` of ``total`` read (at most every ``every`` s)."""
        now = time.monotonic()
        if not final and now - self.shown < self.every:
            return
        self.shown = now
        seconds = max(now - self.started, 1e-9)
        share = min(done / self.total, 1.0)
        left = seconds * (1 - share) / share if share > 0 else float("inf")
        bar = "#" * int(WIDTH * share) + "." * (WIDTH - int(WIDTH * share))
        text = (
            f"{self.label} [{bar}] {share:6.1%} {rows:,} rows, {rows / seconds:,.0f} rows/s, "
            + (f"{seconds:.1f} s" if final else f"{left:.0f} s left")
        )
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
