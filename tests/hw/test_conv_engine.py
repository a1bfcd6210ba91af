"""Fast tier of the convolution engine: Amaranth's simulator on the PEs, the fold sequencer and
small layers against the reference model and the cycle model; the driver; parameter checks."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from amaranth.sim import Simulator

from squeezeforge.hw.conv import (
    ConvEngine,
    ConvEngineParams,
    FoldSequencer,
    check_conv_fits,
    conv_cfg_layout,
    conv_cycles,
    conv_layer_config,
    conv_load_writes,
    conv_memory_images,
    conv_output_shape,
    conv_stream_dones,
    filter_blocks,
    weight_words,
)
from squeezeforge.hw.interface import LayerFitError, pack_cfg
from squeezeforge.hw.pe import MacPE, ShiftAddPE
from squeezeforge.hw.testing import run_testbench
from squeezeforge.sim.ir import Conv2d
from squeezeforge.sim.numerics import Pow2Weights, pow2_decode, pow2_encode, pow2_max_shift
from squeezeforge.sim.random_layers import random_activations, random_conv2d
from squeezeforge.sim.reference import maxpool2x2, run_layer


def small_params(kind: str = "fixed", **kw) -> ConvEngineParams:
    base = dict(
        rows=2,
        cols=3,
        act_bits=8,
        weight_kind=kind,
        weight_bits=8 if kind == "fixed" else 5,
        acc_bits=32,
        act_depth=128,
        weight_depth=256,
        bias_depth=8,
        out_depth=64,
    )
    base.update(kw)
    return ConvEngineParams(**base)


def conv_layer(rng, kind="fixed", **kw) -> Conv2d:
    args = dict(
        kind=kind,
        in_channels=2,
        out_channels=4,
        kernel=(3, 3),
        stride=1,
        padding=1,
        act_bits=8,
        weight_bits=8 if kind == "fixed" else 5,
    )
    args.update(kw)
    return random_conv2d(rng, **args)


def expected_outputs(layer: Conv2d, x: np.ndarray, pool: bool) -> np.ndarray:
    y = run_layer(layer, x[None])
    return (maxpool2x2(y) if pool else y)[0]


def assert_outputs_equal(name: str, got, expected: np.ndarray) -> None:
    """Scoreboard: every element, failing with the layer, position, expected and got."""
    flat = expected.reshape(-1)
    got = [int(v) for v in got]
    assert len(got) == flat.size, f"layer {name}: {len(got)} outputs, expected {flat.size}"
    for i, (g, e) in enumerate(zip(got, flat, strict=True)):
        if g != e:
            c, y, x = (int(v) for v in np.unravel_index(i, expected.shape))
            raise AssertionError(
                f"layer {name}: output {i} (channel {c}, row {y}, column {x}):"
                f" expected {e}, got {g}"
            )


# ---------------------------------------------------------------------------------------------
# PEs


def run_pe(pe, steps):
    """Drive a PE with (a, w, valid, first, last) per cycle; record result and pass-through."""
    seen = []

    async def testbench(ctx):
        for a, w, valid, first, last in steps:
            ctx.set(pe.a_in, a)
            ctx.set(pe.w_in, w)
            ctx.set(pe.valid_in, valid)
            ctx.set(pe.first_in, first)
            ctx.set(pe.last_in, last)
            await ctx.tick()
            seen.append(
                (ctx.get(pe.result), ctx.get(pe.a_out), ctx.get(pe.w_out), ctx.get(pe.last_out))
            )

    sim = Simulator(pe)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return seen


def fold_steps(rng, values, n_folds, a_bits, gap_probability=0.2):
    """Random folds of random length with idle cycles in between: (steps, finished sums)."""
    lo, hi = -(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1
    steps, sums = [], []
    for _ in range(n_folds):
        k = int(rng.integers(1, 6))
        total = 0
        for i in range(k):
            while rng.random() < gap_probability:
                steps.append((0, 0, 0, 0, 0))
            a = int(rng.choice([lo, hi, int(rng.integers(lo, hi + 1))]))
            w, value = values[int(rng.integers(0, len(values)))]
            total += a * value
            steps.append((a, w, 1, int(i == 0), int(i == k - 1)))
        sums.append(total)
    return steps, sums


def check_pe(pe, values, a_bits):
    rng = np.random.default_rng(3)
    steps, sums = fold_steps(rng, values, 30, a_bits)
    steps += [(0, 0, 0, 0, 0)] * pe.RESULT_LATENCY
    seen = run_pe(pe, steps)
    # seen[i] is sampled after step i's clock edge: RESULT_LATENCY - 1 more edges to the sum.
    finished = [seen[i + pe.RESULT_LATENCY - 1][0] for i, s in enumerate(steps) if s[4]]
    assert finished == sums
    # One cycle early, the sum is not there yet (the fold's first sum follows a zero).
    early = [seen[i + pe.RESULT_LATENCY - 2][0] for i, s in enumerate(steps) if s[4]]
    assert early != sums
    # Activation, weight and flags reach the neighbours one cycle later, unchanged.
    assert [(s[1], s[2], s[3]) for s in seen] == [(st[0], st[1], st[4]) for st in steps]


def test_mac_pe_sums_folds_without_bubbles():
    lo, hi = -(1 << 11), (1 << 11) - 1
    values = [(w, w) for w in (lo, hi, -1, 0, 1, 1234)]
    check_pe(MacPE(act_bits=10, weight_bits=12, acc_bits=28), values, 10)


@pytest.mark.parametrize("bits", [2, 3, 6])
def test_shift_add_pe_applies_every_code(bits):
    fmt = Pow2Weights(bits=bits, n1=pow2_max_shift(bits), n2=0)
    stored = [0] + [s * (1 << e) for e in range(fmt.max_shift + 1) for s in (1, -1)]
    codes = pow2_encode(np.asarray(stored), fmt)
    assert list(pow2_decode(codes, fmt)) == stored
    values = [(int(c), v) for c, v in zip(codes, stored, strict=True)]
    check_pe(ShiftAddPE(act_bits=16, code_bits=bits, acc_bits=48), values, 16)


def test_pe_parameters_are_checked():
    with pytest.raises(ValueError, match="acc_bits must be 16..64, not 12"):
        MacPE(act_bits=8, weight_bits=8, acc_bits=12)
    with pytest.raises(ValueError, match="code_bits must be 2..6, not 7"):
        ShiftAddPE(act_bits=8, code_bits=7, acc_bits=40)
    with pytest.raises(TypeError, match="act_bits must be an integer"):
        MacPE(act_bits=8.0, weight_bits=8, acc_bits=32)


# ---------------------------------------------------------------------------------------------
# Parameters and driver


def test_params_are_checked():
    with pytest.raises(ValueError, match=r"ConvEngineParams.rows must be 1..64, not 0"):
        ConvEngineParams(rows=0)
    with pytest.raises(ValueError, match=r"weight_kind must be 'fixed' or 'pow2', not 'codebook'"):
        ConvEngineParams(weight_kind="codebook")
    with pytest.raises(ValueError, match=r"ConvEngineParams.weight_bits must be 2..6, not 8"):
        ConvEngineParams(weight_kind="pow2", weight_bits=8)
    with pytest.raises(ValueError, match=r"ConvEngineParams.acc_bits must be 16..64, not 15"):
        ConvEngineParams(act_bits=8, weight_bits=8, acc_bits=15)
    with pytest.raises(TypeError, match=r"ConvEngineParams.cols must be an integer, not '4'"):
        ConvEngineParams(cols="4")
    with pytest.raises(ValueError, match=r"init_weights has 3 words, the memory holds 2"):
        ConvEngineParams(weight_depth=2, init_weights=(0, 0, 0))
    with pytest.raises(ValueError, match=r"init_biases\[1\] = -1 is not a 64-bit word"):
        ConvEngineParams(cols=2, init_biases=(0, -1))
    with pytest.raises(TypeError, match="params must be ConvEngineParams, not dict"):
        ConvEngine({"rows": 2})


def test_memory_images_hold_the_weights_in_step_order():
    rng = np.random.default_rng(1)
    for kind in ("fixed", "pow2"):
        params = small_params(kind)
        layer = conv_layer(rng, kind, out_channels=4, weight_bits=4)
        images = conv_memory_images(layer, params)
        k = layer.fan_in
        assert len(images["weight"]) == 2 * k and len(images["bias"]) == 2
        lb = params.lane_bits
        for m in range(layer.out_channels):
            block, lane = divmod(m, params.cols)
            lanes = [
                (images["weight"][block * k + s] >> (lane * lb)) & ((1 << lb) - 1) for s in range(k)
            ]
            lanes = np.asarray(lanes)
            if kind == "fixed":
                got = np.where(lanes >= 1 << (lb - 1), lanes - (1 << lb), lanes)
            else:
                got = pow2_decode(lanes, lb)
            assert list(got) == list(layer.weight[m].reshape(-1))
            bias = (images["bias"][block] >> (lane * params.acc_bits)) & ((1 << 32) - 1)
            assert bias - ((bias >> 31) << 32) == layer.bias[m]
        # Lanes past the last filter are zero.
        assert all(w >> lb == 0 for w in images["weight"][k:])


def test_layer_config_and_packing():
    rng = np.random.default_rng(2)
    params = small_params()
    layer = conv_layer(rng, stride=2, padding=1, relu=True)
    cfg = conv_layer_config(layer, (2, 5, 7), True, params, weight_base=3, bias_base=1)
    assert cfg == {
        "in_channels": 2,
        "in_h": 5,
        "in_w": 7,
        "out_channels": 4,
        "kh": 3,
        "kw": 3,
        "stride": 2,
        "padding": 1,
        "shift": layer.shift,
        "out_bits": 8,
        "relu": 1,
        "clamp": 0,
        "clamp_max": 0,
        "pool": 1,
        "weight_base": 3,
        "bias_base": 1,
    }
    word = pack_cfg(conv_cfg_layout(params), cfg)
    for name, field in conv_cfg_layout(params):
        assert (word >> field.offset) & ((1 << field.width) - 1) == cfg[name]
    relu6 = replace(layer, clamp_max=layer.output_format.max)
    clamped = conv_layer_config(relu6, (2, 5, 7), True, params, weight_base=3, bias_base=1)
    assert clamped == {**cfg, "clamp": 1, "clamp_max": layer.output_format.max}
    with pytest.raises(ValueError, match="cfg field 'stride' = 300 does not fit 8 bits"):
        pack_cfg(conv_cfg_layout(params), {**cfg, "stride": 300})


def test_layers_that_do_not_fit_are_named():
    rng = np.random.default_rng(4)
    params = small_params()
    layer = conv_layer(rng, out_channels=7)
    with pytest.raises(LayerFitError, match=r"layer 'conv', field 'in_channels': input 2x9x9"):
        check_conv_fits(layer, (2, 9, 9), params)
    with pytest.raises(LayerFitError, match=r"field 'out_channels': 7 filters need 3 bias words"):
        check_conv_fits(layer, (2, 4, 4), params, bias_base=6)
    with pytest.raises(LayerFitError, match=r"field 'weight': 54 weight words from base 250"):
        check_conv_fits(layer, (2, 4, 4), params, weight_base=250)
    with pytest.raises(LayerFitError, match=r"field 'pool': output 1x4 is too small"):
        check_conv_fits(layer, (2, 1, 4), params, pool=True)
    with pytest.raises(LayerFitError, match=r"field 'kernel': output 9x7 = 63 pixels"):
        check_conv_fits(layer, (2, 9, 7), small_params(act_depth=256, out_depth=60))
    pow2 = conv_layer(rng, "pow2", weight_bits=6)
    with pytest.raises(LayerFitError, match=r"field 'weight_format': pow2 weights on an engine"):
        check_conv_fits(pow2, (2, 4, 4), params)
    with pytest.raises(LayerFitError, match=r"shift up to 15, the engine's 5-bit codes up to 7"):
        check_conv_fits(pow2, (2, 4, 4), small_params("pow2"))
    wide = conv_layer(rng, act_bits=12, weight_bits=8)
    with pytest.raises(LayerFitError, match=r"field 'input_format': 12-bit activations"):
        check_conv_fits(wide, (2, 4, 4), params)


# ---------------------------------------------------------------------------------------------
# Fold sequencer


def im2col(layer: Conv2d, x: np.ndarray) -> np.ndarray:
    """(E, K) matrix of the GEMM, k = (ci, ky, kx) as the engine orders it."""
    p, s = layer.padding, layer.stride
    kh, kw = layer.kernel
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    _, oh, ow = layer.output_shape(x.shape)
    rows = []
    for oy in range(oh):
        for ox in range(ow):
            rows.append(xp[:, oy * s : oy * s + kh, ox * s : ox * s + kw].reshape(-1))
    return np.asarray(rows)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "shape", "rows", "out_channels"),
    [
        ((3, 3), 1, 1, (2, 5, 6), 4, 5),
        ((2, 3), 2, 0, (3, 7, 5), 3, 2),
        ((1, 1), 3, 2, (1, 4, 4), 5, 4),
        ((3, 1), 1, 2, (1, 2, 3), 2, 7),
    ],
)
def test_fold_sequencer_walks_the_gemm(kernel, stride, padding, shape, rows, out_channels):
    """The issued (row, step) addresses rebuild im2col; folds follow without bubbles."""
    rng = np.random.default_rng(5)
    params = small_params(rows=rows, cols=3)
    layer = conv_layer(
        rng,
        in_channels=shape[0],
        out_channels=out_channels,
        kernel=kernel,
        stride=stride,
        padding=padding,
    )
    x = random_activations(rng, layer.input_format, shape)
    flat = x.reshape(-1)
    cfg = conv_layer_config(layer, shape, False, params, weight_base=5)
    seq = FoldSequencer(params)
    k = layer.fan_in
    steps = []
    folds = []

    async def testbench(ctx):
        ctx.set(seq.cfg.as_value(), pack_cfg(conv_cfg_layout(params), cfg))
        ctx.set(seq.act_ready, 1)
        # The transpose buffer is never full here.
        ctx.set(seq.emitted_blocks, params.bias_depth + 1)
        ctx.set(seq.start, 1)
        await ctx.tick()
        ctx.set(seq.start, 0)
        for cycle in range(5000):
            if ctx.get(seq.step_valid):
                steps.append(
                    (
                        cycle,
                        [ctx.get(seq.step_addr[r]) for r in range(rows)],
                        ctx.get(seq.step_inb),
                        ctx.get(seq.step_w_addr),
                        ctx.get(seq.step_first),
                    )
                )
                if ctx.get(seq.step_last):
                    folds.append(
                        (
                            ctx.get(seq.fold_e0),
                            ctx.get(seq.fold_rows),
                            ctx.get(seq.fold_block),
                            ctx.get(seq.fold_layer_last),
                        )
                    )
            if ctx.get(seq.finished):
                break
            await ctx.tick()

    sim = Simulator(seq)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()

    cols_matrix = im2col(layer, x)
    e_total = cols_matrix.shape[0]
    pixel_blocks = -(-e_total // rows)
    blocks = -(-out_channels // 3)
    assert len(folds) == blocks * pixel_blocks
    assert len(steps) == len(folds) * k
    assert [f[3] for f in folds] == [0] * (len(folds) - 1) + [1]
    rebuilt = np.full((blocks, e_total, k), -999)
    for i, (e0, row_mask, block, _) in enumerate(folds):
        assert e0 == (i % pixel_blocks) * rows and block == i // pixel_blocks
        for j, (_, addrs, inb, w_addr, first) in enumerate(steps[i * k : (i + 1) * k]):
            assert first == (j == 0)
            assert w_addr == 5 + block * k + j
            for r in range(rows):
                valid = e0 + r < e_total
                assert (row_mask >> r) & 1 == valid
                if valid:
                    rebuilt[block, e0 + r, j] = flat[addrs[r]] if (inb >> r) & 1 else 0
                else:
                    assert not (inb >> r) & 1
    for block in range(blocks):
        assert np.array_equal(rebuilt[block], cols_matrix)
    # Steps issue on consecutive cycles when a fold is at least rows + 1 steps long.
    cycles = [s[0] for s in steps]
    gaps = np.diff(cycles)
    if k >= rows + 1:
        assert set(gaps) == {1}
    else:
        assert max(gaps) == rows + 2 - k


# ---------------------------------------------------------------------------------------------
# The engine on whole layers


async def run_layers(
    ctx, dut, params, cases, *, ready_probability=1.0, valid_probability=1.0, load=True
):
    """Load, configure and run each (layer, x, pool); return (outputs, cycles start to done)."""
    rnd = random.Random(0)
    results = []
    for layer, x, pool in cases:
        # A second layer's images go above the first's, as the whole-net generator places them.
        weight_base, bias_base = (3, 1) if results else (0, 0)
        images = conv_memory_images(layer, params)
        for sel, addr, word in conv_load_writes(images, weight_base, bias_base) if load else ():
            ctx.set(dut.load.en, 1)
            ctx.set(dut.load.sel, sel)
            ctx.set(dut.load.addr, addr)
            ctx.set(dut.load.data, word)
            await ctx.tick()
        ctx.set(dut.load.en, 0)
        cfg = conv_layer_config(layer, x.shape, pool, params, weight_base, bias_base)
        ctx.set(dut.cfg.as_value(), pack_cfg(conv_cfg_layout(params), cfg))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        feed = [int(v) for v in x.reshape(-1)]
        outputs = []
        cycles = 1
        while not ctx.get(dut.done):
            offer = bool(feed) and rnd.random() < valid_probability
            ctx.set(dut.i_act.valid, offer)
            ctx.set(dut.i_act.payload, feed[0] if feed else 0)
            ctx.set(dut.o_act.ready, rnd.random() < ready_probability)
            if offer and ctx.get(dut.i_act.ready):
                feed.pop(0)
            if ctx.get(dut.o_act.valid) and ctx.get(dut.o_act.ready):
                outputs.append(ctx.get(dut.o_act.payload))
            await ctx.tick()
            cycles += 1
            assert cycles < 100_000, f"layer {layer.name}: no done"
        results.append((outputs, cycles))
    return results


def simulate(params, cases, **kw):
    dut = ConvEngine(params)
    return run_testbench(dut, lambda ctx: run_layers(ctx, dut, params, cases, **kw))


#: Small layers (pool, stride, padding, input shape, filters): each corner of the schedule.
SMALL_CASES = [
    (False, 1, 1, (2, 5, 6), 5),
    (True, 1, 1, (2, 5, 6), 4),
    (False, 2, 0, (1, 7, 5), 7),
    (True, 1, 2, (3, 3, 4), 2),
]


@pytest.mark.parametrize("kind", ["fixed", "pow2"])
def test_small_layers_match_reference_and_cycle_model(kind):
    rng = np.random.default_rng(8)
    params = small_params(kind)
    cases = []
    for pool, stride, padding, shape, m in SMALL_CASES:
        layer = conv_layer(
            rng,
            kind,
            in_channels=shape[0],
            out_channels=m,
            stride=stride,
            padding=padding,
            act_bits=int(rng.integers(2, 9)),
        )
        cases.append((layer, random_activations(rng, layer.input_format, shape), pool))
    for (layer, x, pool), (outputs, cycles) in zip(cases, simulate(params, cases), strict=True):
        assert_outputs_equal(layer.name, outputs, expected_outputs(layer, x, pool))
        assert cycles == conv_cycles(layer, x.shape, params, pool).cycles


def clamped_cases(rng, kind: str) -> list:
    """Random layers with a clamp: 0, the output maximum, then random bounds below the largest
    unclamped output, so that they cut."""
    cases = []
    for i, (pool, stride, padding, shape, m) in enumerate(
        [*SMALL_CASES, (False, 1, 0, (2, 4, 4), 6)]
    ):
        layer = conv_layer(
            rng,
            kind,
            in_channels=shape[0],
            out_channels=m,
            stride=stride,
            padding=padding,
            act_bits=int(rng.integers(2, 9)),
            clamp=True,
        )
        x = random_activations(rng, layer.input_format, shape)
        if i < 2:
            layer = replace(layer, clamp_max=(0, layer.output_format.max)[i])
        else:
            top = int(expected_outputs(replace(layer, clamp_max=None), x, pool).max())
            layer = replace(layer, clamp_max=int(rng.integers(0, max(top, 1))))
        cases.append((layer, x, pool))
    return cases


@pytest.mark.parametrize("kind", ["fixed", "pow2"])
def test_clamped_layers_match_reference_and_cycle_model(kind):
    """ReLU then clamp (ReLU6 and the like) bit-exact, in the same cycles as without."""
    rng = np.random.default_rng(13)
    params = small_params(kind)
    cases = clamped_cases(rng, kind)
    binds = 0
    for (layer, x, pool), (outputs, cycles) in zip(cases, simulate(params, cases), strict=True):
        expected = expected_outputs(layer, x, pool)
        assert_outputs_equal(layer.name, outputs, expected)
        assert cycles == conv_cycles(layer, x.shape, params, pool).cycles
        unclamped = expected_outputs(replace(layer, clamp_max=None), x, pool)
        assert expected.max(initial=0) <= layer.clamp_max
        binds += not np.array_equal(expected, unclamped)
    assert binds >= 3  # the random bounds cut


def test_wrong_clamp_in_the_cfg_fails_the_scoreboard():
    rng = np.random.default_rng(14)
    params = small_params()
    layer = conv_layer(rng, out_channels=3, act_bits=8, clamp=True)
    layer = replace(layer, clamp_max=17)
    x = random_activations(rng, layer.input_format, (2, 4, 4))
    expected = expected_outputs(layer, x, False)
    assert expected.max() == 17  # outputs reach the bound
    # The driver maps clamp_max straight to the cfg, so a layer with another bound is a cfg
    # with a wrong clamp: one more, one less, and none.
    wrong = [replace(layer, clamp_max=c) for c in (18, 16, None)]
    results = simulate(params, [(lay, x, False) for lay in [layer, *wrong]])
    assert_outputs_equal(layer.name, results[0][0], expected)
    for outputs, _ in results[1:]:
        with pytest.raises(AssertionError, match=r"layer conv: output \d+ .* expected"):
            assert_outputs_equal(layer.name, outputs, expected)


def test_stalled_streams_change_timing_not_results():
    rng = np.random.default_rng(9)
    params = small_params(rows=3, cols=2)
    layer = conv_layer(rng, out_channels=5, kernel=(2, 2), padding=0)
    x = random_activations(rng, layer.input_format, (2, 4, 5))
    cases = [(layer, x, False), (layer, x, True)]
    results = simulate(params, cases, ready_probability=0.4, valid_probability=0.6)
    for (layer, x, pool), (outputs, _) in zip(cases, results, strict=True):
        assert_outputs_equal(layer.name, outputs, expected_outputs(layer, x, pool))


def test_extreme_layer_saturates_like_the_reference():
    rng = np.random.default_rng(10)
    params = small_params()
    layer = conv_layer(rng, extreme=True, relu=False)
    layer = replace(layer, output_format=replace(layer.output_format, frac=layer.acc_frac))
    x = random_activations(rng, layer.input_format, (2, 3, 3), extreme=True)
    [(outputs, _)] = simulate(params, [(layer, x, False)])
    expected = expected_outputs(layer, x, False)
    assert expected.max() == 127  # the sums saturate
    assert_outputs_equal(layer.name, outputs, expected)


def test_scoreboard_fails_on_corrupted_golden():
    rng = np.random.default_rng(11)
    params = small_params()
    layer = conv_layer(rng, out_channels=2)
    x = random_activations(rng, layer.input_format, (2, 3, 4))
    [(outputs, _)] = simulate(params, [(layer, x, True)])
    expected = expected_outputs(layer, x, True)
    assert_outputs_equal(layer.name, outputs, expected)
    corrupted = expected.copy()
    corrupted[1, 0, 1] += 1
    message = r"layer conv: output 3 \(channel 1, row 0, column 1\): expected -?\d+, got -?\d+"
    with pytest.raises(AssertionError, match=message):
        assert_outputs_equal(layer.name, outputs, corrupted)
    assert conv_output_shape(layer, x.shape, True) == expected.shape


@pytest.mark.slow
def test_shift_add_engine_needs_no_dsp_blocks():
    """Yosys with DSP inference on: the shift-add flavour maps to zero DSP cells, the MAC one
    to at least one per PE."""
    from squeezeforge.codegen.resources import synthesize
    from squeezeforge.sim.rtl import amaranth_to_verilog

    dsps = {}
    for kind, bits in (("pow2", 5), ("fixed", 8)):
        params = small_params(kind, rows=2, cols=2, weight_bits=bits, acc_bits=24)
        params = replace(params, act_depth=64, weight_depth=64, bias_depth=4, out_depth=32)
        verilog = amaranth_to_verilog(ConvEngine(params), "conv_engine")
        dsps[kind] = synthesize(verilog, "conv_engine", "ice40", dsp=True).dsp
    assert dsps["pow2"] == 0
    assert dsps["fixed"] >= 4


def test_initial_memory_contents_need_no_load():
    rng = np.random.default_rng(12)
    layer = conv_layer(rng, "pow2", out_channels=4, stride=2)
    x = random_activations(rng, layer.input_format, (2, 6, 5))
    images = conv_memory_images(layer, small_params("pow2"))
    params = small_params(
        "pow2", init_weights=tuple(images["weight"]), init_biases=tuple(images["bias"])
    )
    [(outputs, _)] = simulate(params, [(layer, x, False)], load=False)
    assert_outputs_equal(layer.name, outputs, expected_outputs(layer, x, False))


# ---------------------------------------------------------------------------------------------
# Two input banks: runs back to back, the next input loading while the current run computes


async def stream_layers(ctx, dut, params, cases, *, ready_probability=1.0, valid_probability=1.0):
    """Load every layer's memories, then offer each run's ``start`` as soon as the engine takes
    one and all inputs as one stream; return each run's outputs and the cycle of each ``done``
    counted from the first start."""
    rnd = random.Random(1)
    layout = conv_cfg_layout(params)
    cfgs = []
    bases: dict[int, tuple[int, int]] = {}  # a layer run twice is loaded once
    weight_base = bias_base = 0
    for layer, x, pool in cases:
        if id(layer) not in bases:
            bases[id(layer)] = (weight_base, bias_base)
            images = conv_memory_images(layer, params)
            for sel, addr, word in conv_load_writes(images, weight_base, bias_base):
                ctx.set(dut.load.en, 1)
                ctx.set(dut.load.sel, sel)
                ctx.set(dut.load.addr, addr)
                ctx.set(dut.load.data, word)
                await ctx.tick()
            weight_base += weight_words(layer, params)
            bias_base += filter_blocks(layer, params)
        cfg = conv_layer_config(layer, x.shape, pool, params, *bases[id(layer)])
        cfgs.append(pack_cfg(layout, cfg))
    ctx.set(dut.load.en, 0)
    feed = [int(v) for _, x, _ in cases for v in x.reshape(-1)]
    outputs: list[list[int]] = [[] for _ in cases]
    dones: list[int] = []
    started = cycle = 0
    while len(dones) < len(cases):
        offering = started < len(cases)
        ctx.set(dut.start, offering)
        if offering:
            ctx.set(dut.cfg.as_value(), cfgs[started])
        offer = bool(feed) and rnd.random() < valid_probability
        ctx.set(dut.i_act.valid, offer)
        ctx.set(dut.i_act.payload, feed[0] if feed else 0)
        ctx.set(dut.o_act.ready, rnd.random() < ready_probability)
        taken = offering and not ctx.get(dut.busy)
        if offer and ctx.get(dut.i_act.ready):
            feed.pop(0)
        if ctx.get(dut.o_act.valid) and ctx.get(dut.o_act.ready):
            outputs[len(dones)].append(ctx.get(dut.o_act.payload))
        if ctx.get(dut.done):
            dones.append(cycle)
        await ctx.tick()
        cycle += 1
        started += taken
        assert cycle < 100_000, "no done"
    return outputs, dones


def stream(params, cases, **kw):
    dut = ConvEngine(params)
    return run_testbench(dut, lambda ctx: stream_layers(ctx, dut, params, cases, **kw))


def stream_cases(rng, kind: str) -> list:
    """Runs whose loads are shorter than the compute before them (hidden), longer (the next
    run waits for its input), and of one layer on several images."""
    cases = []
    same = conv_layer(rng, kind, in_channels=2, out_channels=4)
    for _ in range(3):
        cases.append((same, random_activations(rng, same.input_format, (2, 4, 5)), False))
    wide = conv_layer(rng, kind, in_channels=3, out_channels=2, kernel=(1, 1), padding=0)
    cases.append((wide, random_activations(rng, wide.input_format, (3, 6, 6)), True))
    deep = conv_layer(rng, kind, in_channels=1, out_channels=5, stride=2, padding=0)
    cases.append((deep, random_activations(rng, deep.input_format, (1, 7, 5)), False))
    cases.append((same, random_activations(rng, same.input_format, (2, 3, 3)), True))
    # Short runs, then a long load: the next run waits for its input (its start is then taken
    # while nothing computes).
    tiny = conv_layer(rng, kind, in_channels=1, out_channels=1, kernel=(1, 1), padding=0)
    for _ in range(2):
        cases.append((tiny, random_activations(rng, tiny.input_format, (1, 2, 2)), False))
    cases.append((wide, random_activations(rng, wide.input_format, (3, 7, 6)), False))
    cases.append((tiny, random_activations(rng, tiny.input_format, (1, 2, 2)), False))
    return cases


@pytest.mark.parametrize("kind", ["fixed", "pow2"])
def test_two_banks_run_back_to_back_as_the_stream_model_says(kind):
    rng = np.random.default_rng(13)
    params = small_params(kind, input_banks=2)
    cases = stream_cases(rng, kind)
    outputs, dones = stream(params, cases)
    for (layer, x, pool), got in zip(cases, outputs, strict=True):
        assert_outputs_equal(layer.name, got, expected_outputs(layer, x, pool))
    runs = [(layer, x.shape, pool) for layer, x, pool in cases]
    assert dones == conv_stream_dones(runs, params)
    # The loads overlapped: back to back beats the same runs one at a time.
    alone = sum(conv_cycles(layer, x.shape, params, pool).cycles for layer, x, pool in cases)
    assert dones[-1] < alone - 40


def test_two_banks_with_stalled_streams_keep_every_result():
    rng = np.random.default_rng(14)
    params = small_params(input_banks=2)
    cases = stream_cases(rng, "fixed")
    outputs, _ = stream(params, cases, ready_probability=0.5, valid_probability=0.6)
    for (layer, x, pool), got in zip(cases, outputs, strict=True):
        assert_outputs_equal(layer.name, got, expected_outputs(layer, x, pool))


def test_one_bank_takes_no_start_while_it_computes():
    """The same stream on one bank: each run starts after the last one's done, and its cycles
    are the one-at-a-time model's (the start is taken the cycle after done)."""
    rng = np.random.default_rng(13)
    params = small_params()
    cases = stream_cases(rng, "fixed")[:3]
    outputs, dones = stream(params, cases)
    for (layer, x, pool), got in zip(cases, outputs, strict=True):
        assert_outputs_equal(layer.name, got, expected_outputs(layer, x, pool))
    each = [conv_cycles(layer, x.shape, params, pool).cycles for layer, x, pool in cases]
    assert dones == [sum(each[: j + 1]) + j for j in range(len(cases))]
