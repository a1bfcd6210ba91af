"""cocotb bench of a generated accelerator: drive images, monitor scores and taps.

The case file (``SQUEEZEFORGE_CASE``, an ``.npz``) holds the input images flattened in C, H, W
order, the reference outputs and the reference taps (every step's output but the last,
concatenated). The bench runs the images one after another, records what the design produced
and how many cycles each step took, writes all of it to ``SQUEEZEFORGE_RESULT`` (JSON), and
then fails - naming the image, the output index, expected and got - if any score differs from
the reference. The Python side reads the JSON for the report either way.

The ports come from the build's manifest (``SQUEEZEFORGE_PORTS``: signature path to Verilog
name), which takes them from the top level's signature; a port the bench needs and the top does
not have is named in the failure.
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

# What the bench drives and watches, by signature path.
_USED = (
    "clk",
    "rst",
    "start",
    "busy",
    "done",
    "cycles",
    "step",
    "i_pixel.valid",
    "i_pixel.ready",
    "i_pixel.payload",
    "o_score.valid",
    "o_score.ready",
    "o_score.payload",
    "tap.valid",
    "tap.data",
)


class _Ports:
    """The top level's ports by signature path: ``ports["i_pixel.valid"]``."""

    def __init__(self, dut, names: dict[str, str]) -> None:
        missing = [path for path in _USED if path not in names]
        if missing:
            raise AssertionError(f"the top level has no port {', '.join(missing)}")
        self._handles = {path: getattr(dut, names[path]) for path in _USED}
        # Only images fed back to back need it (builds made before it existed lack it).
        if "ready" in names:
            self._handles["ready"] = getattr(dut, names["ready"])

    def __getitem__(self, path: str):
        return self._handles[path]


async def _reset(ports: _Ports) -> None:
    ports["rst"].value = 1
    ports["start"].value = 0
    ports["i_pixel.valid"].value = 0
    ports["i_pixel.payload"].value = 0
    ports["o_score.ready"].value = 1
    for _ in range(3):
        await RisingEdge(ports["clk"])
    ports["rst"].value = 0


async def _one_image(ports: _Ports, pixels: list[int], n_steps: int) -> dict:
    """Run one inference; a cycle-by-cycle loop, sampling after the falling-edge writes."""
    await FallingEdge(ports["clk"])
    ports["start"].value = 1
    await FallingEdge(ports["clk"])
    ports["start"].value = 0
    idx = 0
    scores: list[int] = []
    taps: list[int] = []
    step_cycles = [0] * n_steps
    for _ in range(MAX_CYCLES_PER_IMAGE):
        if idx < len(pixels):
            ports["i_pixel.valid"].value = 1
            ports["i_pixel.payload"].value = int(pixels[idx])
        else:
            ports["i_pixel.valid"].value = 0
        await ReadOnly()
        if idx < len(pixels) and int(ports["i_pixel.ready"].value):
            idx += 1
        if int(ports["o_score.valid"].value):
            scores.append(ports["o_score.payload"].value.to_signed())
        elif int(ports["tap.valid"].value):
            taps.append(ports["tap.data"].value.to_signed())
        if int(ports["busy"].value):
            step_cycles[int(ports["step"].value)] += 1
        if int(ports["done"].value):
            await FallingEdge(ports["clk"])
            return {
                "scores": scores,
                "taps": taps,
                "cycles": int(ports["cycles"].value),
                "step_cycles": step_cycles,
                "pixels_taken": idx,
            }
        await FallingEdge(ports["clk"])
    raise TimeoutError(f"no done after {MAX_CYCLES_PER_IMAGE} cycles")


async def _stream(ports: _Ports, inputs: np.ndarray) -> dict:
    """Feed every image back to back: a start whenever the top takes one, the pixels of all
    images as one stream. Returns each image's scores, the cycles its start was taken and its
    ``done`` came."""
    await FallingEdge(ports["clk"])
    n_images, per_image = inputs.shape[0], inputs[0].size
    pixels = inputs.reshape(-1).tolist()
    started = idx = 0
    scores: list[list[int]] = [[] for _ in range(n_images)]
    start_at: list[int] = []
    done_at: list[int] = []
    for cycle in range(MAX_CYCLES_PER_IMAGE * n_images):
        # Between edges: ``ready`` is the state the last rising edge left, and what is
        # written now is what the next rising edge sees.
        take = started < n_images and bool(int(ports["ready"].value))
        ports["start"].value = int(take)
        if take:
            start_at.append(cycle)
            started += 1
        # Only pixels of images already started: the top takes them in its first step.
        feed = idx < started * per_image
        ports["i_pixel.valid"].value = int(feed)
        ports["i_pixel.payload"].value = int(pixels[idx]) if feed else 0
        await ReadOnly()
        if feed and int(ports["i_pixel.ready"].value):
            idx += 1
        if int(ports["o_score.valid"].value):
            scores[len(done_at)].append(ports["o_score.payload"].value.to_signed())
        if int(ports["done"].value):
            done_at.append(cycle)
        await FallingEdge(ports["clk"])
        if len(done_at) == n_images:
            ports["start"].value = 0
            ports["i_pixel.valid"].value = 0
            return {"scores": scores, "start_at": start_at, "done_at": done_at}
    raise TimeoutError("images fed back to back: no done for the last one")


@cocotb.test()
async def run_images(dut) -> None:
    case = np.load(os.environ["SQUEEZEFORGE_CASE"])
    inputs, expected = case["inputs"], case["expected"]
    n_steps = int(case["n_steps"])
    ports = _Ports(dut, json.loads(os.environ["SQUEEZEFORGE_PORTS"]))
    cocotb.start_soon(Clock(ports["clk"], 10, unit="ns").start())
    await _reset(ports)
    images = []
    for n in range(inputs.shape[0]):
        images.append(await _one_image(ports, inputs[n].tolist(), n_steps))
    # A pipelined top is run a second time with the images back to back, for the interval.
    streamed = await _stream(ports, inputs) if int(case["stream"]) else None
    with open(os.environ["SQUEEZEFORGE_RESULT"], "w") as f:
        json.dump({"images": images, "streamed": streamed}, f)
    # The scoreboard: every score equal to the reference, bit for bit.
    for n, got in enumerate(images):
        want = expected[n].tolist()
        assert len(got["scores"]) == len(want), (
            f"image {n}: {len(got['scores'])} scores, expected {len(want)}"
        )
        for i, (g, w) in enumerate(zip(got["scores"], want, strict=True)):
            assert g == w, f"image {n}, output {i}: expected {w}, got {g}"
    if streamed is not None:
        for n, got in enumerate(streamed["scores"]):
            assert got == expected[n].tolist(), f"image {n} fed back to back: scores differ"
