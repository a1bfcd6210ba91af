"""The progress display: counted bars and running clocks for single long calls."""

from __future__ import annotations

import io
import time

from squeezeforge.sim.progress import activity


def test_activity_shows_its_label_and_clock_until_the_call_returns() -> None:
    shown = io.StringIO()
    with activity("yosys: synth", stream=shown):
        time.sleep(1.2)  # two redraws of the clock at least
    text = shown.getvalue()
    assert text.count("yosys: synth: 00:0") >= 2
    quiet = io.StringIO()
    with activity("yosys: synth", stream=quiet, quiet=True):
        pass
    assert quiet.getvalue() == ""
