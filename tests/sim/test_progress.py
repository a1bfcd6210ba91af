"""The progress display: counted bars and running clocks for single long calls."""

from __future__ import annotations

import io
import time

from squeezeforge.sim.progress import activity


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_activity_shows_its_label_and_clock_until_the_call_returns() -> None:
    shown = Terminal()
    with activity("yosys: synth", stream=shown):
        time.sleep(1.2)  # two redraws of the clock at least
    text = shown.getvalue()
    assert text.count("yosys: synth: 00:0") >= 2
    for stream, quiet in ((Terminal(), True), (io.StringIO(), False)):
        # Silent when asked, and in a log or a pipe, where redrawn lines would only pile up.
        with activity("yosys: synth", stream=stream, quiet=quiet):
            time.sleep(0.6)
        assert stream.getvalue() == ""
