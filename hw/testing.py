"""Run one Amaranth testbench on a block and return what it returns (tests and notebooks)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from amaranth.sim import Simulator


def run_testbench(dut: Any, bench: Callable[[Any], Awaitable[Any]]) -> Any:
    """Simulate ``dut`` with a 100 MHz clock and the async ``bench(ctx)``; return its result."""
    box = {}

    async def testbench(ctx):
        box["result"] = await bench(ctx)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return box["result"]
