"""The software side of :class:`~squeezeforge.hw.conv.engine.ConvEngine`: from an IR layer to the
engine's run-time configuration and memory images.

Benches and the whole-net generator both use these functions, so a layer is laid out in one
place: the GEMM step order ``k = (ci, ky, kx)`` (``kx`` fastest, as the sequencer walks it), one
weight word per filter block and step, one bias word per filter block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ...sim.ir import Conv2d
from ...sim.numerics import FixedWeights, Pow2Weights, pow2_encode
from ..interface import SHIFT_BITS, LayerFitError
from .engine import (
    LOAD_BIASES,
    LOAD_WEIGHTS,
    OUT_BITS_BITS,
    ConvEngineParams,
)

__all__ = [
    "LayerFitError",
    "check_conv_fits",
    "conv_layer_config",
    "conv_load_writes",
    "conv_memory_images",
    "conv_output_shape",
    "filter_blocks",
    "weight_words",
]


def filter_blocks(layer: Conv2d, params: ConvEngineParams) -> int:
    """Filter blocks (``ceil(out_channels / cols)``): bias words, and weight words per step."""
    return -(-layer.out_channels // params.cols)


def weight_words(layer: Conv2d, params: ConvEngineParams) -> int:
    """Weight memory words of the layer: one per filter block and GEMM step."""
    return filter_blocks(layer, params) * layer.fan_in


def check_conv_fits(
    layer: Conv2d,
    in_shape: Sequence[int],
    params: ConvEngineParams,
    *,
    pool: bool = False,
    weight_base: int = 0,
    bias_base: int = 0,
) -> tuple[int, int, int]:
    """Raise :class:`LayerFitError` unless the engine built with ``params`` runs ``layer``.

    Returns
    -------
    tuple
        The layer's output shape ``(out_channels, out_h, out_w)`` before pooling.
    """
    if not isinstance(layer, Conv2d):
        raise TypeError(f"expected a Conv2d layer, not {type(layer).__name__}")
    name = layer.name

    def fail(field: str, message: str) -> None:
        raise LayerFitError(name, field, message)

    wf = layer.weight_format
    if params.weight_kind == "fixed":
        if not isinstance(wf, FixedWeights):
            fail("weight_format", f"{wf.kind} weights on an engine built for fixed-point weights")
        if wf.bits > params.weight_bits:
            fail("weight_format", f"{wf.bits}-bit weights, the engine has {params.weight_bits}")
    else:
        if not isinstance(wf, Pow2Weights):
            fail("weight_format", f"{wf.kind} weights on an engine built for power-of-two weights")
        if wf.max_shift > params.max_shift:
            fail(
                "weight_format",
                f"{wf.bits}-bit power-of-two weights shift up to {wf.max_shift},"
                f" the engine's {params.weight_bits}-bit codes up to {params.max_shift}",
            )
    for field in ("input_format", "output_format"):
        bits = getattr(layer, field).bits
        if bits > params.act_bits:
            fail(field, f"{bits}-bit activations, the engine streams {params.act_bits}")
    if layer.acc_bits > params.acc_bits:
        fail(
            "acc_bits",
            f"needs a {layer.acc_bits}-bit accumulator, the engine has {params.acc_bits}",
        )
    if layer.shift >= 1 << SHIFT_BITS:
        fail(
            "output_format",
            f"requantization shift {layer.shift} exceeds {(1 << SHIFT_BITS) - 1}",
        )
    if layer.output_format.bits >= 1 << OUT_BITS_BITS:  # pragma: no cover - bits <= 16
        fail("output_format", "output width too large")
    c, h, w = (int(s) for s in in_shape)
    if c != layer.in_channels:
        fail("in_channels", f"{layer.in_channels}, but the input has {c} channels")
    if c * h * w > params.act_depth:
        fail(
            "in_channels",
            f"input {c}x{h}x{w} = {c * h * w} words exceeds act_depth {params.act_depth}",
        )
    limit = 1 << params.dim_bits
    for field, value in (
        ("kernel", max(layer.kernel)),
        ("stride", layer.stride),
        ("padding", layer.padding),
    ):
        if value >= limit:
            fail(field, f"{value} does not fit the {params.dim_bits}-bit cfg field")
    m, oh, ow = layer.output_shape((c, h, w))
    if oh * ow > params.out_depth:
        fail("kernel", f"output {oh}x{ow} = {oh * ow} pixels exceeds out_depth {params.out_depth}")
    if pool and (oh < 2 or ow < 2):
        fail("pool", f"output {oh}x{ow} is too small for a 2x2 max pool")
    blocks = filter_blocks(layer, params)
    if bias_base + blocks > params.bias_depth:
        fail(
            "out_channels",
            f"{m} filters need {blocks} bias words from base {bias_base},"
            f" bias_depth is {params.bias_depth}",
        )
    words = weight_words(layer, params)
    if weight_base + words > params.weight_depth:
        fail(
            "weight",
            f"{words} weight words from base {weight_base} exceed weight_depth"
            f" {params.weight_depth}",
        )
    return m, oh, ow


def conv_layer_config(
    layer: Conv2d,
    in_shape: Sequence[int],
    pool: bool,
    params: ConvEngineParams,
    weight_base: int = 0,
    bias_base: int = 0,
) -> dict[str, int]:
    """The engine's ``cfg`` field values for ``layer`` (checked with :func:`check_conv_fits`).

    Parameters
    ----------
    layer
        The conv layer.
    in_shape
        Its input shape ``(C, H, W)``.
    pool
        Fuse the 2x2 max pool that follows the layer.
    params
        The engine's parameters.
    weight_base, bias_base
        Where the layer's images from :func:`conv_memory_images` were placed.
    """
    check_conv_fits(
        layer, in_shape, params, pool=pool, weight_base=weight_base, bias_base=bias_base
    )
    c, h, w = (int(s) for s in in_shape)
    return {
        "in_channels": c,
        "in_h": h,
        "in_w": w,
        "out_channels": int(layer.out_channels),
        "kh": int(layer.kernel[0]),
        "kw": int(layer.kernel[1]),
        "stride": int(layer.stride),
        "padding": int(layer.padding),
        "shift": int(layer.shift),
        "out_bits": int(layer.output_format.bits),
        "relu": int(bool(layer.relu)),
        "clamp": int(layer.clamp_max is not None),
        "clamp_max": int(layer.clamp_max or 0),
        "pool": int(bool(pool)),
        "weight_base": int(weight_base),
        "bias_base": int(bias_base),
    }


def _lanes(rows: Sequence[Sequence[int]] | np.ndarray, lane_bits: int) -> list[int]:
    """Pack each row of non-negative lane values into one word, lane 0 in the low bits."""
    words = []
    for row in rows:
        word = 0
        for i, v in enumerate(row):
            word |= int(v) << (i * lane_bits)
        words.append(word)
    return words


def _weight_lanes(layer: Conv2d, params: ConvEngineParams) -> np.ndarray:
    """Stored weights as (out_channels, K) lane values of the engine's weight width."""
    stored = np.asarray(layer.weight, dtype=np.int64).reshape(layer.out_channels, -1)
    if params.weight_kind == "pow2":
        return pow2_encode(stored, params.weight_bits)
    return stored & ((1 << params.weight_bits) - 1)


def conv_memory_images(layer: Conv2d, params: ConvEngineParams) -> dict[str, list[int]]:
    """Weight and bias memory words of ``layer``, to be placed at the cfg's base addresses.

    Returns
    -------
    dict
        ``"weight"``: word ``fb * K + k`` holds, in lane ``c``, filter ``fb * cols + c``'s weight
        for GEMM step ``k`` (a value of ``weight_bits`` for fixed weights, a
        :func:`~squeezeforge.sim.numerics.pow2_encode` code for power-of-two weights).
        ``"bias"``: word ``fb`` holds the biases of filter block ``fb``, ``acc_bits`` per lane.
        Lanes past the last filter are zero.
    """
    blocks = filter_blocks(layer, params)
    cols = params.cols
    lanes = _weight_lanes(layer, params)
    padded = np.zeros((blocks * cols, layer.fan_in), dtype=np.int64)
    padded[: layer.out_channels] = lanes
    # (blocks, cols, K) -> (blocks, K, cols): one word per step, a lane per column.
    per_step = padded.reshape(blocks, cols, layer.fan_in).transpose(0, 2, 1)
    weight = _lanes(per_step.reshape(-1, cols), params.lane_bits)
    mask = (1 << params.acc_bits) - 1
    bias = [int(b) & mask for b in layer.bias] + [0] * (blocks * cols - layer.out_channels)
    bias_rows = [bias[i * cols : (i + 1) * cols] for i in range(blocks)]
    return {"weight": weight, "bias": _lanes(bias_rows, params.acc_bits)}


def conv_output_shape(layer: Conv2d, in_shape: Sequence[int], pool: bool) -> tuple[int, ...]:
    """Shape of what ``o_act`` streams: the conv output, pooled when ``pool``."""
    m, oh, ow = layer.output_shape(tuple(in_shape))
    return (m, oh // 2, ow // 2) if pool else (m, oh, ow)


def conv_load_writes(
    images: Mapping[str, Sequence[int]], weight_base: int = 0, bias_base: int = 0
) -> list[tuple[int, int, int]]:
    """The ``load`` port writes ``(sel, addr, data)`` placing ``images`` at the base addresses."""
    writes = [(LOAD_WEIGHTS, weight_base + i, int(w)) for i, w in enumerate(images["weight"])]
    writes += [(LOAD_BIASES, bias_base + i, int(b)) for i, b in enumerate(images["bias"])]
    return writes
