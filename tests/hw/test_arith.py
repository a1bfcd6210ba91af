"""The shared arithmetic blocks against the numeric contract, exhaustively at small widths."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, unsigned

from squeezeforge.hw.arith import Pow2Decoder, Requantizer
from squeezeforge.hw.testing import run_testbench
from squeezeforge.sim.numerics import FixedFormat, Pow2Weights, pow2_decode, pow2_encode, requantize

ACC_BITS, BIAS_BITS, ACT_BITS = 4, 3, 4
SHIFTS = (0, 1, 2, 3, 4, 5, 6, 63)
OUT_BITS = (2, 3, 4, 0)  # 0 is outside 2..act_bits: saturates to act_bits


def contract(
    acc: int, bias: int, shift: int, out_bits: int, relu: int, clamp_max: int | None = None
) -> int:
    """The numeric contract's value of one sum (sim.numerics.requantize)."""
    y = requantize(
        np.asarray([acc + bias]),
        shift,
        FixedFormat(saturation_bits(out_bits), 0),
        apply_relu=bool(relu),
        clamp_max=clamp_max,
    )
    return int(y[0])


def saturation_bits(out_bits: int) -> int:
    return out_bits if 2 <= out_bits <= ACT_BITS else ACT_BITS


def every_cfg():
    """Every (shift, out_bits, relu, clamp_max) of the test widths: no clamp, and every bound
    the IR allows (0..out.max), with ReLU as the IR requires and without it (the requantizer
    clamps either way)."""
    cfgs = []
    for shift, out_bits, relu in itertools.product(SHIFTS, OUT_BITS, (0, 1)):
        top = (1 << (saturation_bits(out_bits) - 1)) - 1
        cfgs += [(shift, out_bits, relu, c) for c in (None, *range(top + 1))]
    return cfgs


def clocked(dut) -> Module:
    """``dut`` beside a register, so that a combinational block has a clock to step by."""
    m = Module()
    m.submodules.dut = dut
    toggle = Signal()
    m.d.sync += toggle.eq(~toggle)
    return m


def every_sum():
    acc_lo, acc_hi = -(1 << (ACC_BITS - 1)), 1 << (ACC_BITS - 1)
    bias_lo, bias_hi = -(1 << (BIAS_BITS - 1)), 1 << (BIAS_BITS - 1)
    return list(itertools.product(range(acc_lo, acc_hi), range(bias_lo, bias_hi)))


def run_requantizer(dut: Requantizer, batches, ready_probability: float = 1.0, seed: int = 0):
    """Stream each batch ``(cfg, [(acc, bias, tag)])`` through ``dut``; outputs per batch.

    ``cfg`` is ``(shift, out_bits, relu)`` or ``(shift, out_bits, relu, clamp_max)``, a
    ``clamp_max`` of None (or none given) leaving the clamp off.

    The cfg changes only between batches, once the pipeline is empty (as an engine holds its
    cfg for a layer). ``o.ready`` is random with the given probability.
    """
    rng = random.Random(seed)

    async def bench(ctx):
        results = []
        for cfg, items in batches:
            shift, out_bits, relu, clamp_max = (*cfg, None)[:4]
            ctx.set(dut.cfg.shift, shift)
            ctx.set(dut.cfg.out_bits, out_bits)
            ctx.set(dut.cfg.relu, relu)
            ctx.set(dut.cfg.clamp, clamp_max is not None)
            ctx.set(dut.cfg.clamp_max, clamp_max or 0)
            got = []
            sent = 0
            while len(got) < len(items):
                valid = sent < len(items)
                ctx.set(dut.i.valid, valid)
                if valid:
                    acc, bias, tag = items[sent]
                    ctx.set(dut.i.payload.acc, acc)
                    ctx.set(dut.i.payload.bias, bias)
                    ctx.set(dut.i.payload.tag, tag)
                ctx.set(dut.o.ready, rng.random() < ready_probability)
                if valid and ctx.get(dut.i.ready):
                    sent += 1
                if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                    got.append((ctx.get(dut.o.payload.value), ctx.get(dut.o.payload.tag)))
                await ctx.tick()
            ctx.set(dut.i.valid, 0)
            results.append(got)
        return results

    return run_testbench(clocked(dut), bench)


@pytest.mark.parametrize("pipelined", [True, False])
def test_requantizer_matches_the_contract_on_every_input(pipelined):
    sums = every_sum()
    batches = [(cfg, [(a, b, i % 8) for i, (a, b) in enumerate(sums)]) for cfg in every_cfg()]
    dut = Requantizer(ACC_BITS, BIAS_BITS, ACT_BITS, pipelined=pipelined, tag_shape=unsigned(3))
    results = run_requantizer(dut, batches)
    for (cfg, items), got in zip(batches, results, strict=True):
        expected = [(contract(a, b, *cfg), tag) for a, b, tag in items]
        assert got == expected, f"cfg (shift, out_bits, relu, clamp_max) = {cfg}"


def test_requantizer_latency_is_its_constant():
    dut = Requantizer(8, 8, 8, pipelined=True)
    assert dut.latency == Requantizer.PIPELINED_LATENCY == 2

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload.acc, 5)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        cycles = 1
        while not ctx.get(dut.o.valid):
            await ctx.tick()
            cycles += 1
        return cycles, ctx.get(dut.o.payload.value)

    assert run_testbench(dut, bench) == (Requantizer.PIPELINED_LATENCY, 5)
    assert Requantizer.latency_of(False) == Requantizer.COMBINATIONAL_LATENCY == 0


def test_requantizer_holds_its_outputs_under_backpressure():
    rng = random.Random(5)
    sums = every_sum()
    items = [(a, b, rng.randrange(8)) for a, b in rng.sample(sums, 60)]
    batches = [((2, 3, 1), items), ((0, 0, 0), items), ((1, 4, 1, 2), items)]
    dut = Requantizer(ACC_BITS, BIAS_BITS, ACT_BITS, tag_shape=unsigned(3))
    results = run_requantizer(dut, batches, ready_probability=0.4, seed=2)
    for (cfg, batch), got in zip(batches, results, strict=True):
        assert got == [(contract(a, b, *cfg), tag) for a, b, tag in batch]


def test_requantizer_comparison_fails_on_a_corrupted_reference():
    sums = every_sum()[:40]
    cfg = (1, 3, 0)
    dut = Requantizer(ACC_BITS, BIAS_BITS, ACT_BITS, pipelined=False)
    (got,) = run_requantizer(dut, [(cfg, [(a, b, 0) for a, b in sums])])
    expected = [(contract(a, b, *cfg), 0) for a, b in sums]
    assert got == expected
    corrupted = list(expected)
    corrupted[7] = (corrupted[7][0] + 1, 0)
    assert got != corrupted


def test_requantizer_comparison_fails_on_a_wrong_clamp():
    """The bound the cfg carries is the one applied: one off, or no clamp, and the values of a
    clamping batch differ from the contract's."""
    sums = every_sum()
    right = (0, 4, 1, 3)
    items = [(a, b, 0) for a, b in sums]
    expected = [(contract(a, b, *right), 0) for a, b, _ in items]
    dut = Requantizer(ACC_BITS, BIAS_BITS, ACT_BITS, pipelined=False)
    wrong = [(0, 4, 1, 2), (0, 4, 1, 4), (0, 4, 1, None)]
    got, *corrupted = run_requantizer(dut, [(cfg, items) for cfg in (right, *wrong)])
    assert got == expected
    for cfg, values in zip(wrong, corrupted, strict=True):
        assert values != expected, f"clamp_max {cfg[3]} instead of 3"


def test_requantizer_parameters_are_checked():
    with pytest.raises(ValueError, match="Requantizer act_bits must be 2..16, not 17"):
        Requantizer(32, 32, 17)
    with pytest.raises(ValueError, match="Requantizer acc_bits must be 2..64, not 65"):
        Requantizer(65, 32, 8)
    with pytest.raises(TypeError, match="Requantizer bias_bits must be an integer"):
        Requantizer(32, "16", 8)
    with pytest.raises(TypeError, match="pipelined must be True or False"):
        Requantizer(32, 16, 8, pipelined=1)


@pytest.mark.parametrize("code_bits", [2, 3, 4, 5, 6])
def test_pow2_decoder_matches_the_contract_on_every_code(code_bits):
    fmt = Pow2Weights(bits=code_bits, n1=(1 << (code_bits - 2)) - 1, n2=0)
    stored = [0] + [s * (1 << e) for e in range(fmt.max_shift + 1) for s in (1, -1)]
    codes = [int(c) for c in pow2_encode(np.asarray(stored), fmt)]
    dut = Pow2Decoder(code_bits)
    assert dut.max_shift == fmt.max_shift

    async def bench(ctx):
        seen = []
        ctx.set(dut.o.ready, 1)
        for code in codes:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, code)
            assert ctx.get(dut.o.valid) and ctx.get(dut.i.ready)  # latency 0
            term = dut.o.payload
            zero, negative, shift = (ctx.get(f) for f in (term.zero, term.negative, term.shift))
            seen.append(0 if zero else (-1 if negative else 1) << shift)
            await ctx.tick()
        return seen

    decoded = run_testbench(clocked(dut), bench)
    assert decoded == [int(v) for v in pow2_decode(np.asarray(codes), fmt)] == stored
    assert Pow2Decoder.LATENCY == 0


def test_pow2_decoder_parameters_are_checked():
    with pytest.raises(ValueError, match="Pow2Decoder code_bits must be 2..6, not 7"):
        Pow2Decoder(7)
    with pytest.raises(TypeError, match="Pow2Decoder code_bits must be an integer"):
        Pow2Decoder(True)
