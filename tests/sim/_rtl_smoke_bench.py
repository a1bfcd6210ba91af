"""cocotb bench for the registered adder of ``test_rtl.py``.

Drives random operand pairs, one per clock, and checks that the sum registered on each edge
equals Python's ``a + b`` (and the 8-bit wrapped sum, which exercises a narrower port). The
environment variable ``SMOKE_BENCH_CORRUPT`` set to ``1`` makes the bench expect a wrong sum so that
the caller can prove that a mismatch fails the run; ``SMOKE_BENCH_SEED`` picks the operands.
"""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

CYCLES = 64


@cocotb.test()
async def registered_sum_matches_python(dut) -> None:
    """Each registered sum equals Python's sum of the operands presented before the edge."""
    corrupt = os.environ.get("SMOKE_BENCH_CORRUPT", "0") == "1"
    rng = random.Random(int(os.environ.get("SMOKE_BENCH_SEED", "0")))

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.a.value = 0
    dut.b.value = 0
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    for _ in range(CYCLES):
        a, b = rng.randrange(256), rng.randrange(256)
        dut.a.value = a
        dut.b.value = b
        await RisingEdge(dut.clk)
        await ReadOnly()
        expected = a + b + (1 if corrupt else 0)
        assert int(dut.s.value) == expected, f"sum of {a} + {b}"
        assert int(dut.s_wrapped.value) == (a + b) % 256, f"wrapped sum of {a} + {b}"
        # Inputs change away from the sampling edge, as a registered driver would.
        await FallingEdge(dut.clk)
