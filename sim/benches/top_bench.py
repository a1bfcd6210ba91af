"""cocotb bench of a generated accelerator: drive images, monitor scores and taps.

The case file (``SQUEEZEFORGE_CASE``, an ``.npz``) holds the input images flattened in C, H, W
order, the reference outputs and the reference taps (every step's output but the last,
concatenated). The bench runs the images one after another, records what the design produced
and how many cycles each step took, writes all of it to ``SQUEEZEFORGE_RESULT`` (JSON), and
then fails - naming the image, the output index, expected and got - if any score differs from
the reference. The Python side reads the JSON for the report either way.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

# A hung design must not hang the flow: no step of any net here takes this many cycles.
MAX_CYCLES_PER_IMAGE = 5_000_000


async def _reset(dut) -> None:
    dut.rst.value = 1
    dut.start.value = 0
    dut.i_pixel__valid.value = 0
    dut.i_pixel__payload.value = 0
    dut.o_score__ready.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def _one_image(dut, pixels: list[int], n_steps: int) -> dict:
    """Run one inference; a cycle-by-cycle loop, sampling after the falling-edge writes."""
    await FallingEdge(dut.clk)
    dut.start.value = 1
    await FallingEdge(dut.clk)
    dut.start.value = 0
    idx = 0
    scores: list[int] = []
    taps: list[int] = []
    step_cycles = [0] * n_steps
    for _ in range(MAX_CYCLES_PER_IMAGE):
        if idx < len(pixels):
            dut.i_pixel__valid.value = 1
            dut.i_pixel__payload.value = int(pixels[idx])
        else:
            dut.i_pixel__valid.value = 0
        await ReadOnly()
        if idx < len(pixels) and int(dut.i_pixel__ready.value):
            idx += 1
        if int(dut.o_score__valid.value):
            scores.append(dut.o_score__payload.value.to_signed())
        elif int(dut.tap__valid.value):
            taps.append(dut.tap__data.value.to_signed())
        if int(dut.busy.value):
            step_cycles[int(dut.step.value)] += 1
        if int(dut.done.value):
            await FallingEdge(dut.clk)
            return {
                "scores": scores,
                "taps": taps,
                "cycles": int(dut.cycles.value),
                "step_cycles": step_cycles,
                "pixels_taken": idx,
            }
        await FallingEdge(dut.clk)
    raise TimeoutError(f"no done after {MAX_CYCLES_PER_IMAGE} cycles")


@cocotb.test()
async def run_images(dut) -> None:
    case = np.load(os.environ["SQUEEZEFORGE_CASE"])
    inputs, expected = case["inputs"], case["expected"]
    n_steps = int(case["n_steps"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await _reset(dut)
    images = []
    for n in range(inputs.shape[0]):
        images.append(await _one_image(dut, inputs[n].tolist(), n_steps))
    with open(os.environ["SQUEEZEFORGE_RESULT"], "w") as f:
        json.dump({"images": images}, f)
    # The scoreboard: every score equal to the reference, bit for bit.
    for n, got in enumerate(images):
        want = expected[n].tolist()
        assert len(got["scores"]) == len(want), (
            f"image {n}: {len(got['scores'])} scores, expected {len(want)}"
        )
        for i, (g, w) in enumerate(zip(got["scores"], want, strict=True)):
            assert g == w, f"image {n}, output {i}: expected {w}, got {g}"
