"""cocotb bench of the sparse FC unit: many layers through one Verilator build.

The case file named by ``SPARSE_FC_CASES`` (JSON, written by ``test_sparse_fc_rtl.py``) holds
``act_bits`` and a list of layers, each with its name, the packed ``cfg`` value, the ``load``
writes ``[memory, pe, addr, data]``, the input vector, the reference outputs and the cycles the
cycle model predicts. Per layer the bench loads the memories, starts the unit, and runs

- a driver offering the input vector on ``i_act`` (every cycle, or with random gaps),
- a monitor taking outputs from ``o_act`` (always ready, or with random backpressure),
- a scoreboard comparing each output row with the reference,

and counts the cycles from ``start`` to ``done``. With a continuous input and an always-ready
output, the count must match the model within ``tolerance`` (a fraction). Every mismatch is
reported with layer, row, expected and got.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

# A layer that has not finished after this many cycles per expected cycle is hung.
_HANG_FACTOR = 20


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


async def _load(dut, writes) -> None:
    for memory, pe, addr, data in writes:
        dut.load__en.value = 1
        dut.load__memory.value = memory
        dut.load__pe.value = pe
        dut.load__addr.value = addr
        dut.load__data.value = data
        await FallingEdge(dut.clk)
    dut.load__en.value = 0


async def _drive_inputs(dut, xs, act_bits, valid_prob, rng) -> None:
    """Offer each activation until the unit takes it; values change after a clock edge."""
    mask = (1 << act_bits) - 1
    for x in xs:
        while rng.random() >= valid_prob:
            dut.i_act__valid.value = 0
            await FallingEdge(dut.clk)
        dut.i_act__valid.value = 1
        dut.i_act__payload.value = x & mask
        while True:
            await ReadOnly()
            taken = bool(dut.i_act__ready.value)
            await FallingEdge(dut.clk)
            if taken:
                break
    dut.i_act__valid.value = 0


async def _collect_outputs(dut, count, act_bits, ready_prob, rng, outputs) -> None:
    while len(outputs) < count:
        dut.o_act__ready.value = int(rng.random() < ready_prob)
        await ReadOnly()
        if dut.o_act__valid.value and dut.o_act__ready.value:
            outputs.append(_signed(int(dut.o_act__payload.value), act_bits))
        await FallingEdge(dut.clk)
    dut.o_act__ready.value = 0


async def _run_layer(dut, layer, act_bits, rng) -> tuple[list[int], int]:
    """Start one layer (the caller is at a falling edge) and return its outputs and cycles."""
    valid_prob = layer.get("valid_prob", 1.0)
    ready_prob = layer.get("ready_prob", 1.0)
    expected = layer["expected"]
    outputs: list[int] = []
    dut.cfg.value = layer["cfg"]
    dut.start.value = 1
    cocotb.start_soon(_drive_inputs(dut, layer["x"], act_bits, valid_prob, rng))
    monitor = cocotb.start_soon(
        _collect_outputs(dut, len(expected), act_bits, ready_prob, rng, outputs)
    )
    limit = _HANG_FACTOR * max(layer["cycles"], 100)
    cycles = 0
    while True:
        await FallingEdge(dut.clk)
        dut.start.value = 0
        cycles += 1
        await ReadOnly()
        if dut.done.value:
            break
        assert cycles < limit, f"layer {layer['name']}: no done after {cycles} cycles"
    await FallingEdge(dut.clk)
    if not monitor.done():
        monitor.cancel()
    return outputs, cycles


@cocotb.test()
async def layers_match_reference(dut) -> None:
    """Every layer's outputs equal the reference; cycles agree with the cycle model."""
    with open(os.environ["SPARSE_FC_CASES"]) as f:
        case = json.load(f)
    act_bits = case["act_bits"]
    tolerance = case.get("tolerance", 0.02)
    rng = random.Random(case.get("seed", 0))

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.start.value = 0
    dut.load__en.value = 0
    dut.i_act__valid.value = 0
    dut.o_act__ready.value = 0
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0

    problems: list[str] = []
    report: list[str] = []
    for layer in case["layers"]:
        name = layer["name"]
        await _load(dut, layer["writes"])
        outputs, cycles = await _run_layer(dut, layer, act_bits, rng)
        expected = layer["expected"]
        if len(outputs) != len(expected):
            problems.append(f"layer {name}: {len(outputs)} outputs, expected {len(expected)}")
        for row, (want, got) in enumerate(zip(expected, outputs, strict=False)):
            if want != got:
                problems.append(f"layer {name}, row {row}: expected {want}, got {got}")
        timed = layer.get("valid_prob", 1.0) == 1.0 and layer.get("ready_prob", 1.0) == 1.0
        if timed:
            model = layer["cycles"]
            report.append(f"{name}: rtl {cycles} model {model}")
            if abs(cycles - model) > tolerance * model:
                problems.append(
                    f"layer {name}: {cycles} cycles measured, the cycle model says {model}"
                )
    dut._log.info("cycles, RTL vs model:\n  %s", "\n  ".join(report))
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:40])
