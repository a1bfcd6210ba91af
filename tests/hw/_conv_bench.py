"""cocotb bench of the convolution engine (run by ``test_conv_rtl.py`` on Verilator).

The case file named by ``CONV_BENCH_CASES`` (JSON, written by the pytest function) lists
layers: the packed ``cfg``, the weight and bias memory words, the input activations in
(C, H, W) order, the expected outputs from :mod:`squeezeforge.sim.reference`, the output shape,
the cycles :func:`squeezeforge.hw.conv.cycles.conv_cycles` predicts, and the probabilities with
which the bench offers an input and accepts an output each cycle (1.0: no stalls, and then the
measured cycles are checked against the model).

Parts of the bench:

- *loader*: writes the memory words through the ``load`` port;
- *driver*: offers the input activations on ``i_act``;
- *monitor*: accepts outputs on ``o_act`` and counts the cycles from ``start`` to ``done``;
- *scoreboard*: compares every output element with the reference and the cycles with the model,
  and fails naming the layer, the position (channel, row, column), expected and got.

All of it runs in one loop that acts at the falling edge: the engine's ``i_act.ready``,
``o_act.valid``/``payload`` and ``done`` come from registers, so they are stable there, and the
handshakes decided then happen at the next rising edge.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

CYCLE_TOLERANCE = 0.02


async def _reset(dut) -> None:
    dut.rst.value = 1
    dut.start.value = 0
    dut.cfg.value = 0
    dut.load__en.value = 0
    dut.i_act__valid.value = 0
    dut.i_act__payload.value = 0
    dut.o_act__ready.value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def _write(dut, writes) -> None:
    """Memory words through the ``load`` port, ``(sel, addr, word)`` each."""
    for sel, addr, word in writes:
        dut.load__en.value = 1
        dut.load__sel.value = sel
        dut.load__addr.value = addr
        dut.load__data.value = word
        await FallingEdge(dut.clk)
    dut.load__en.value = 0


async def _load(dut, sel: int, words: list[int]) -> None:
    await _write(dut, ((sel, addr, word) for addr, word in enumerate(words)))


async def _run_layer(dut, case: dict, act_bits: int) -> tuple[list[int], int]:
    """Drive one layer; return the outputs and the cycles from start to done."""
    rnd = random.Random(case["seed"])
    valid_p, ready_p = case["valid_probability"], case["ready_probability"]
    x = case["x"]
    mask = (1 << act_bits) - 1
    limit = 4 * case["model_cycles"] + 1000
    dut.cfg.value = case["cfg"]
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
        if int(dut.done.value):
            dut.i_act__valid.value = 0
            return outputs, cycle
        if offer and int(dut.i_act__ready.value):
            fed += 1
        if accept and int(dut.o_act__valid.value):
            outputs.append(dut.o_act__payload.value.to_signed())
        await FallingEdge(dut.clk)
    raise AssertionError(f"layer {case['name']}: no done within {limit} cycles")


def _position(index: int, shape: list[int]) -> str:
    _, h, w = shape
    return f"channel {index // (h * w)}, row {index // w % h}, column {index % w}"


def _score(case: dict, outputs: list[int], cycles: int | None) -> list[str]:
    """The scoreboard: every mismatch of the layer, as messages (the cycles too, unless None
    or the streams stalled)."""
    name, expected, shape = case["name"], case["expected"], case["out_shape"]
    problems = []
    for i, (want, got) in enumerate(zip(expected, outputs, strict=False)):
        if want != got:
            problems.append(
                f"layer {name}: output {i} ({_position(i, shape)}): expected {want}, got {got}"
            )
    if len(outputs) != len(expected):
        problems.append(f"layer {name}: {len(outputs)} outputs, expected {len(expected)}")
    stalls = case["valid_probability"] < 1 or case["ready_probability"] < 1
    model = case["model_cycles"]
    if cycles is not None and not stalls and abs(cycles - model) > CYCLE_TOLERANCE * model:
        problems.append(f"layer {name}: {cycles} cycles, the cycle model predicts {model}")
    return problems


async def _stream(dut, suite: dict) -> tuple[list[list[int]], list[int]]:
    """Runs back to back on an engine with two input banks: every memory word written first,
    then each run's ``start`` offered until the engine takes it (``busy`` low) and all inputs
    as one stream; each run's outputs and the cycle of each ``done`` from the first start."""
    await _write(dut, suite["writes"])
    runs = suite["stream"]
    mask = (1 << suite["act_bits"]) - 1
    feed = [v & mask for run in runs for v in run["x"]]
    outputs: list[list[int]] = [[] for _ in runs]
    dones: list[int] = []
    started = fed = 0
    dut.o_act__ready.value = 1
    for cycle in range(sum(4 * run["model_cycles"] for run in runs) + 1000):
        offering = started < len(runs)
        dut.start.value = int(offering)
        if offering:
            dut.cfg.value = runs[started]["cfg"]
        dut.i_act__valid.value = int(fed < len(feed))
        dut.i_act__payload.value = feed[fed] if fed < len(feed) else 0
        taken = offering and not int(dut.busy.value)
        if fed < len(feed) and int(dut.i_act__ready.value):
            fed += 1
        if int(dut.o_act__valid.value):
            outputs[len(dones)].append(dut.o_act__payload.value.to_signed())
        if int(dut.done.value):
            dones.append(cycle)
            if len(dones) == len(runs):
                return outputs, dones
        await FallingEdge(dut.clk)
        started += taken
    raise AssertionError(f"{len(dones)} of {len(runs)} runs done")


@cocotb.test()
async def conv_layers_match_reference(dut) -> None:
    """Every output of every layer equals the reference; cycles agree with the model."""
    with open(os.environ["CONV_BENCH_CASES"]) as f:
        suite = json.load(f)
    Clock(dut.clk, 10, unit="ns").start()
    await _reset(dut)
    problems: list[str] = []
    measured = []
    if "stream" in suite:
        outputs, dones = await _stream(dut, suite)
        for run, got in zip(suite["stream"], outputs, strict=True):
            problems += _score(run, got, None)
        if dones != suite["dones"]:
            problems.append(f"done at cycles {dones}, the stream model predicts {suite['dones']}")
        assert not problems, "\n".join(problems[:20])
        return
    for case in suite["layers"]:
        await _load(dut, 0, case["weight"])
        await _load(dut, 1, case["bias"])
        outputs, cycles = await _run_layer(dut, case, suite["act_bits"])
        measured.append({"name": case["name"], "cycles": cycles, "model": case["model_cycles"]})
        problems += _score(case, outputs, cycles)
        await FallingEdge(dut.clk)
    report = os.environ.get("CONV_BENCH_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump(measured, f, indent=1)
    shown = problems[:20]
    more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
    assert not problems, "\n".join(shown) + more
