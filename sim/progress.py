"""Progress display for long steps, built on :mod:`tqdm.auto`.

Usage::

    with progress(total=200, label="train") as bar:
        for step in range(200):
            ...
            bar.update(1, info=f"loss {loss:.3f}")

``tqdm.auto`` draws a widget in Jupyter and a text bar on a terminal. Where stderr is a file or
a pipe (a CI log, ``2> log``) the bars stay silent: redrawn lines would only fill the log.
``quiet`` silences them everywhere (``--quiet`` and ``--json`` on the command line). Nothing is
drawn at import.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm.auto import tqdm

__all__ = ["Progress", "activity", "interactive", "progress"]


def interactive(stream: TextIO | None = None) -> bool:
    """Whether bars are worth drawing on ``stream`` (stderr by default): a terminal, or a
    notebook, where tqdm.auto draws widgets whatever the stream says of itself."""
    if tqdm.__module__.startswith("tqdm.notebook"):
        return True
    out = stream if stream is not None else sys.stderr
    return bool(getattr(out, "isatty", lambda: False)())


class Progress:
    """Counts completed steps of ``total`` on a tqdm bar; ``info`` is the bar's trailing text."""

    def __init__(
        self, total: int, label: str, *, stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.done = 0
        self.info = ""
        self._bar = tqdm(
            total=self.total or None,
            desc=label,
            file=stream if stream is not None else sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
            leave=True,
        )

    def update(self, n: int = 1, info: str | None = None) -> None:
        """Record ``n`` more completed steps; ``info`` replaces the trailing status text."""
        self.done += n
        if info is not None:
            self.info = info
            self._bar.set_postfix_str(info, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


@contextmanager
def progress(
    total: int, label: str, *, quiet: bool = False, stream: TextIO | None = None
) -> Iterator[Progress]:
    """A :class:`Progress` bar on stderr (or ``stream``), silent when ``quiet``."""
    bar = Progress(total, label, stream=stream, enabled=not quiet and interactive(stream))
    try:
        yield bar
    finally:
        bar.close()


# How often an activity's elapsed time is redrawn while the tool behind it runs.
_ACTIVITY_REFRESH_S = 0.5


@contextmanager
def activity(label: str, *, quiet: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """A bar with a running clock for one long call that reports no steps of its own (a
    Verilator build, a Yosys or nextpnr run, a simulation): it shows what runs and for how
    long, redrawn from a background thread until the call returns."""
    quiet = quiet or not interactive(stream)
    bar = tqdm(
        total=None,
        desc=label,
        file=stream if stream is not None else sys.stderr,
        disable=quiet,
        bar_format="{desc}: {elapsed}",
        leave=False,
    )
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(_ACTIVITY_REFRESH_S):
            bar.refresh()

    ticker = threading.Thread(target=tick, daemon=True)
    if not quiet:
        ticker.start()
    try:
        yield
    finally:
        stop.set()
        if ticker.is_alive():
            ticker.join()
        bar.close()
