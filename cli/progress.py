"""A one-line progress display on stderr, shared by every long-running subcommand.

Usage::

    with progress(total=200, label="train") as p:
        for step in range(200):
            ...
            p.update(1, info=f"loss {loss:.3f}")

The line is redrawn in place with ``\\r``. It stays silent when stderr is not a terminal (logs, CI,
pipes) or when ``quiet`` is set, so piped and ``--json`` output is never interleaved with it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Progress", "progress"]

# Redrawing more often than this only costs time on a slow terminal.
_MIN_INTERVAL_S = 0.1


class Progress:
    """Counts completed steps of ``total`` and redraws one status line."""

    def __init__(
        self, total: int, label: str, *, stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.done = 0
        self.info = ""
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._width = 0

    def update(self, n: int = 1, info: str | None = None) -> None:
        """Record ``n`` more completed steps; ``info`` replaces the trailing status text."""
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        if info is not None:
            self.info = info
        now = time.monotonic()
        if self.done >= self.total or now - self._last_draw >= _MIN_INTERVAL_S:
            self._draw(now)

    def _draw(self, now: float) -> None:
        if not self._enabled:
            return
        self._last_draw = now
        elapsed = now - self._start
        if self.total:
            pct = 100.0 * self.done / self.total
            line = f"{self.label}: {self.done}/{self.total} ({pct:3.0f}%) {elapsed:5.1f}s"
        else:
            line = f"{self.label}: {self.done} {elapsed:5.1f}s"
        if self.info:
            line += f"  {self.info}"
        # Pad with spaces so a shorter line fully covers the previous one.
        self._stream.write("\r" + line.ljust(self._width))
        self._stream.flush()
        self._width = len(line)

    def close(self) -> None:
        """End the line so later output starts on a fresh one."""
        if self._enabled and self._width:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()


@contextmanager
def progress(
    total: int, label: str, *, quiet: bool = False, stream: TextIO | None = None
) -> Iterator[Progress]:
    """A :class:`Progress` line, enabled only on an interactive stderr and when not ``quiet``."""
    out = stream if stream is not None else sys.stderr
    enabled = not quiet and bool(getattr(out, "isatty", lambda: False)())
    p = Progress(total, label, stream=out, enabled=enabled)
    try:
        yield p
    finally:
        p.close()
