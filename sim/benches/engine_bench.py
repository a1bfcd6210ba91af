"""cocotb bench of one engine (conv engine or sparse FC unit) serving many nets in one build.

Used by :mod:`squeezeforge.sim.fuzz`. The case file named by ``SQUEEZEFORGE_ENGINE_CASES``
(JSON) holds ``engine`` (``"conv"`` or ``"fc"``), ``act_bits`` and a list of nets. Per net the
bench writes the memory words through the ``load`` port (every layer of the net at its own base
addresses), then runs the net's layers image by image: per run it drives ``cfg`` and ``start``,
offers the input activations on ``i_act`` from the cycle after ``start`` (every cycle, or with
random gaps), takes outputs from ``o_act`` (always ready, or with random backpressure) and
counts the cycles from ``start`` to ``done``.

The bench only observes: it writes every run's outputs and cycles to
``SQUEEZEFORGE_ENGINE_RESULT`` (JSON), and the Python side compares them with the reference
and the cycle models. A run that sees no ``done`` within its limit is recorded as timed out and
the engine is reset before the next net.

The loop acts at the falling edge and samples in the read-only phase after it, so a handshake
seen there happens at the next rising edge.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly


async def _reset(dut) -> None:
    dut.rst.value = 1
    dut.start.value = 0
    dut.load__en.value = 0
    dut.i_act__valid.value = 0
    dut.i_act__payload.value = 0
    dut.o_act__ready.value = 0
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0


async def _load(dut, engine: str, writes: list[list[int]]) -> None:
    """Write ``writes`` through the load port: ``[sel, addr, data]`` (conv) or
    ``[memory, pe, addr, data]`` (sparse FC)."""
    for write in writes:
        dut.load__en.value = 1
        if engine == "conv":
            sel, addr, data = write
            dut.load__sel.value = sel
        else:
            memory, pe, addr, data = write
            dut.load__memory.value = memory
            dut.load__pe.value = pe
        dut.load__addr.value = addr
        dut.load__data.value = data
        await FallingEdge(dut.clk)
    dut.load__en.value = 0


async def _run(dut, run: dict, act_bits: int, rnd: random.Random) -> dict:
    """One layer on one image; the caller is at a falling edge."""
    valid_p, ready_p = run["valid_probability"], run["ready_probability"]
    x = run["x"]
    mask = (1 << act_bits) - 1
    limit = 20 * run["model_cycles"] + 2000
    dut.cfg.value = run["cfg"]
    dut.start.value = 1
    await FallingEdge(dut.clk)
    dut.start.value = 0
    fed = 0
    outputs: list[int] = []
    for cycle in range(1, limit):
        offer = fed < len(x) and rnd.random() < valid_p
        dut.i_act__valid.value = int(offer)
        dut.i_act__payload.value = (x[fed] & mask) if fed < len(x) else 0
        accept = rnd.random() < ready_p
        dut.o_act__ready.value = int(accept)
        await ReadOnly()
        if offer and int(dut.i_act__ready.value):
            fed += 1
        if accept and int(dut.o_act__valid.value):
            outputs.append(dut.o_act__payload.value.to_signed())
        done = int(dut.done.value)
        await FallingEdge(dut.clk)
        if done:
            dut.i_act__valid.value = 0
            dut.o_act__ready.value = 0
            return {"outputs": outputs, "cycles": cycle, "taken": fed, "timeout": False}
    dut.i_act__valid.value = 0
    dut.o_act__ready.value = 0
    return {"outputs": outputs, "cycles": None, "taken": fed, "timeout": True}


@cocotb.test()
async def engine_runs_nets(dut) -> None:
    """Run every net of the case file; record outputs and cycles (compared in Python)."""
    with open(os.environ["SQUEEZEFORGE_ENGINE_CASES"]) as f:
        suite = json.load(f)
    engine, act_bits = suite["engine"], suite["act_bits"]
    Clock(dut.clk, 10, unit="ns").start()
    await _reset(dut)
    results = []
    for net in suite["nets"]:
        rnd = random.Random(net["seed"])
        await _load(dut, engine, net["writes"])
        runs = []
        for run in net["runs"]:
            measured = await _run(dut, run, act_bits, rnd)
            runs.append(measured)
            if measured["timeout"]:
                await _reset(dut)  # the next net starts from a known state
                break
        results.append(runs)
    with open(os.environ["SQUEEZEFORGE_ENGINE_RESULT"], "w") as f:
        json.dump(results, f)
