"""The conv engine's stream components one by one in Amaranth's simulator: the systolic array,
the fold drain and the output emitter (the sequencer, the requantizer and the FIFO have their
own tests in test_conv_engine.py, test_arith.py and test_sparse_fc.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Module, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory

from squeezeforge.hw.conv.engine import (
    OUTPUT_QUEUE_DEPTH,
    ConvEngineParams,
    FoldDrain,
    OutputEmitter,
    PoolWriter,
    SystolicArray,
    col_field,
    row_field,
)
from squeezeforge.hw.fifo import StreamFIFO
from squeezeforge.hw.testing import run_testbench
from squeezeforge.sim.numerics import Pow2Weights, pow2_decode, pow2_encode


def params_for(kind: str = "fixed", **kw) -> ConvEngineParams:
    base = dict(
        rows=2,
        cols=3,
        act_bits=6,
        weight_kind=kind,
        weight_bits=6 if kind == "fixed" else 4,
        acc_bits=24,
        act_depth=64,
        weight_depth=64,
        bias_depth=4,
        out_depth=12,
    )
    base.update(kw)
    return ConvEngineParams(**base)


# ---------------------------------------------------------------------------------------------
# Systolic array


def random_folds(rng, p: ConvEngineParams, n_folds: int):
    """Folds of random length with idle cycles between steps: (a, w codes, w values) per step."""
    a_lo, a_hi = -(1 << (p.act_bits - 1)), (1 << (p.act_bits - 1)) - 1
    if p.weight_kind == "fixed":
        values = list(range(-(1 << (p.weight_bits - 1)), 1 << (p.weight_bits - 1)))
        codes = values
    else:
        fmt = Pow2Weights(bits=p.weight_bits, n1=p.max_shift, n2=0)
        values = [0] + [s << e for e in range(p.max_shift + 1) for s in (1, -1)]
        codes = [int(c) for c in pow2_encode(np.asarray(values), fmt)]
        assert [int(v) for v in pow2_decode(np.asarray(codes), fmt)] == values
    folds = []
    for _ in range(n_folds):
        k = int(rng.integers(p.rows + 1, p.rows + 6))
        steps = []
        for _ in range(k):
            a = [
                int(rng.choice([a_lo, a_hi, int(rng.integers(a_lo, a_hi + 1))]))
                for _ in range(p.rows)
            ]
            picks = [int(rng.integers(0, len(values))) for _ in range(p.cols)]
            steps.append((a, [codes[i] for i in picks], [values[i] for i in picks]))
        folds.append(steps)
    return folds


@pytest.mark.parametrize("kind", ["fixed", "pow2"])
def test_systolic_array_sums_each_fold_on_its_wavefront(kind):
    """PE (r, c) holds the fold's sum from RESULT_LATENCY + r + c cycles after its last step,
    and the previous fold's sum until then."""
    p = params_for(kind)
    rng = np.random.default_rng(11)
    folds = random_folds(rng, p, 8)
    dut = SystolicArray(p)
    gaps = random.Random(4)

    async def bench(ctx):
        schedule = []  # (cycle of the last step, sums)
        seen = []
        cycle = 0
        for steps in folds:
            for i, (a, w, _) in enumerate(steps):
                while gaps.random() < 0.2:
                    ctx.set(dut.step.valid, 0)
                    seen.append(sums_of(ctx, dut, p))
                    await ctx.tick()
                    cycle += 1
                ctx.set(dut.step.valid, 1)
                for r in range(p.rows):
                    ctx.set(dut.step.payload.a[row_field(r)], a[r])
                for c in range(p.cols):
                    ctx.set(dut.step.payload.w[col_field(c)], w[c])
                ctx.set(dut.step.payload.first, i == 0)
                ctx.set(dut.step.payload.last, i == len(steps) - 1)
                seen.append(sums_of(ctx, dut, p))
                await ctx.tick()
                cycle += 1
            a = np.asarray([s[0] for s in steps])
            w = np.asarray([s[2] for s in steps])
            schedule.append((cycle - 1, a.T @ w))
        ctx.set(dut.step.valid, 0)
        for _ in range(p.rows + p.cols + 2):
            seen.append(sums_of(ctx, dut, p))
            await ctx.tick()
        return schedule, seen

    schedule, seen = run_testbench(dut, bench)
    assert wavefront_mismatches(p, schedule, seen, SystolicArray.RESULT_LATENCY) == []
    # The check fails on a wrong latency and on a corrupted sum.
    assert wavefront_mismatches(p, schedule, seen, SystolicArray.RESULT_LATENCY + 1)
    corrupted = [(t, sums.copy()) for t, sums in schedule]
    corrupted[3][1][1, 2] += 1
    bad = wavefront_mismatches(p, corrupted, seen, SystolicArray.RESULT_LATENCY)
    assert bad and bad[0].startswith("fold 3, PE (1, 2)")


def sums_of(ctx, dut: SystolicArray, p: ConvEngineParams) -> list[list[int]]:
    result = dut.result
    return [
        [ctx.get(result[row_field(r)][col_field(c)]) for c in range(p.cols)] for r in range(p.rows)
    ]


def wavefront_mismatches(p, schedule, seen, latency: int) -> list[str]:
    """Where PE (r, c) does not hold the fold's sum from ``latency + r + c`` cycles after its
    last step, or already holds it a cycle earlier."""
    bad = []
    for f, (t_last, sums) in enumerate(schedule):
        before = schedule[f - 1][1] if f else np.zeros_like(sums)
        for r in range(p.rows):
            for c in range(p.cols):
                final = t_last + latency + r + c
                if seen[final][r][c] != sums[r, c]:
                    bad.append(f"fold {f}, PE ({r}, {c}): {seen[final][r][c]} != {sums[r, c]}")
                elif seen[final - 1][r][c] != before[r, c]:
                    bad.append(f"fold {f}, PE ({r}, {c}): final a cycle early")
    return bad


# ---------------------------------------------------------------------------------------------
# Fold drain


@pytest.mark.parametrize("pool", [False, True])
def test_fold_drain_follows_the_wavefront_with_tags_and_bias_addresses(pool):
    p = params_for(rows=3, cols=2, out_depth=10)
    out_w = 4  # a filter block is two folds: 6 pixels, output rows wrap inside a fold
    dut = FoldDrain(p)
    rng = random.Random(7)
    bias_base = 1
    # (cycle of the fold event, e0, row mask, block, last pixel block of its filter block)
    events = []
    t = 2
    for i in range(6):
        block = i // 2
        e0 = (i % 2) * p.rows
        mask = (1 << p.rows) - 1 if i % 2 == 0 else rng.choice([0b001, 0b011, 0b111])
        events.append((t, e0, mask, block, i % 2))
        t += p.rows + 1 + rng.randrange(3)
    end = t + p.rows + p.cols + FoldDrain.LATENCY + 2

    def value(f: int, r: int, c: int) -> int:
        return (1000 * (f + 1) + 10 * r + c) * (-1 if (f + r + c) % 2 else 1)

    async def bench(ctx):
        ctx.set(dut.bias_base, bias_base)
        ctx.set(dut.pool, pool)
        ctx.set(dut.out_w, out_w)
        outs = {c: [] for c in range(p.cols)}
        bias = {c: [] for c in range(p.cols)}
        for cycle in range(end):
            # The array's results, each PE on its wavefront (SystolicArray.RESULT_LATENCY).
            for r in range(p.rows):
                for c in range(p.cols):
                    done = [
                        f
                        for f, ev in enumerate(events)
                        if ev[0] + SystolicArray.RESULT_LATENCY + r + c <= cycle
                    ]
                    ctx.set(
                        dut.result[row_field(r)][col_field(c)], value(done[-1], r, c) if done else 0
                    )
            event = [ev for ev in events if ev[0] == cycle]
            ctx.set(dut.fold.valid, bool(event))
            if event:
                _, e0, mask, block, last = event[0]
                ctx.set(dut.fold.payload.e0, e0)
                ctx.set(dut.fold.payload.rows, mask)
                ctx.set(dut.fold.payload.block, block)
                ctx.set(dut.fold.payload.block_last, last)
            for c in range(p.cols):
                bias[c].append(ctx.get(dut.bias_addr[col_field(c)]))
                if ctx.get(dut.col[c].valid):
                    pl = dut.col[c].payload
                    outs[c].append(
                        (
                            cycle,
                            ctx.get(pl.acc),
                            ctx.get(pl.tag.write),
                            ctx.get(pl.tag.addr),
                            ctx.get(pl.tag.x_odd),
                            ctx.get(pl.tag.y_odd),
                            ctx.get(pl.tag.line),
                            ctx.get(pl.tag.block_end),
                        )
                    )
            await ctx.tick()
        return outs, bias

    outs, bias = run_testbench(dut, bench)
    for c in range(p.cols):
        expected = []
        for f, (t0, e0, mask, block, last) in enumerate(events):
            for r in range(p.rows):
                cycle = t0 + FoldDrain.LATENCY + r + c
                y, x = divmod(e0 + r, out_w)
                slot = (y // 2) * (out_w // 2) + x // 2 if pool else e0 + r
                addr = (block % 2) * p.out_depth + slot
                end_of_block = int(last and r == p.rows - 1)
                expected.append(
                    (
                        cycle,
                        value(f, r, c),
                        (mask >> r) & 1,
                        addr,
                        x % 2,
                        y % 2,
                        x // 2,
                        end_of_block,
                    )
                )
                # The bias word leads its sum by the bias memory's read latency.
                assert bias[c][cycle - 1] == bias_base + block, f"column {c}, fold {f}, row {r}"
        assert outs[c] == expected, f"column {c}"
        # The comparison sees one wrong sum.
        corrupted = list(expected)
        corrupted[4] = (corrupted[4][0], corrupted[4][1] + 1, *corrupted[4][2:])
        assert outs[c] != corrupted


# ---------------------------------------------------------------------------------------------
# Pool writer


def pool_writer_stream(rng, p, out_h, out_w, blocks, pool):
    """A column's drained values as the drain tags them: raster order, two halves, idle cycles
    between values (a fold's rows are back to back, folds are apart)."""
    items = []
    for b in range(blocks):
        half = (b % 2) * p.out_depth
        plane = rng.integers(-(1 << (p.act_bits - 1)), 1 << (p.act_bits - 1), (out_h, out_w))
        for e in range(out_h * out_w):
            y, x = divmod(e, out_w)
            slot = (y // 2) * (out_w // 2) + x // 2 if pool else e
            tag = dict(
                write=1,
                addr=half + slot,
                x_odd=x % 2,
                y_odd=y % 2,
                line=x // 2,
                block_end=int(e == out_h * out_w - 1),
            )
            items.append((int(plane[y, x]), tag, int(rng.integers(0, 3)) if e % p.rows == 0 else 0))
        yield b, plane, items
        items = []


def pool_reference(plane: np.ndarray, pool: bool) -> list[int]:
    if not pool:
        return [int(v) for v in plane.reshape(-1)]
    ph, pw = plane.shape[0] // 2, plane.shape[1] // 2
    return [
        int(v) for v in plane[: 2 * ph, : 2 * pw].reshape(ph, 2, pw, 2).max(axis=(1, 3)).reshape(-1)
    ]


@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize(("out_h", "out_w"), [(4, 4), (5, 3), (2, 2), (3, 7), (1, 6)])
def test_pool_writer_writes_each_window_maximum_once(pool, out_h, out_w):
    p = params_for(rows=3, out_depth=out_h * out_w)
    dut = PoolWriter(p)
    rng = np.random.default_rng(out_h * 10 + out_w)
    blocks = list(pool_writer_stream(rng, p, out_h, out_w, 3, pool))

    async def bench(ctx):
        ctx.set(dut.pool, pool)
        bank = {}
        writes = []
        ends = []
        cycle = 0

        async def tick():
            nonlocal cycle
            await ctx.tick()
            cycle += 1
            if ctx.get(dut.write.en):
                addr = ctx.get(dut.write.addr)
                bank[addr] = ctx.get(dut.write.data)
                writes.append((cycle, addr))
            if ctx.get(dut.block_end):
                ends.append(cycle)

        contents = []
        sent = []
        for b, _, items in blocks:
            for value, tag, idle in items:
                for _ in range(idle):
                    ctx.set(dut.i.valid, 0)
                    await tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload.value, value)
                for name, v in tag.items():
                    ctx.set(getattr(dut.i.payload.tag, name), v)
                sent.append(cycle)
                await tick()
            ctx.set(dut.i.valid, 0)
            for _ in range(PoolWriter.LATENCY):
                await tick()
            half = (b % 2) * p.out_depth
            contents.append([bank.get(half + i) for i in range(p.out_depth)])
        return contents, writes, ends, sent

    contents, writes, ends, sent = run_testbench(dut, bench)
    for (b, plane, _), got in zip(blocks, contents, strict=True):
        expected = pool_reference(plane, pool)
        assert got[: len(expected)] == expected, f"block {b}"
    # One write per output (per window with pooling), LATENCY cycles after its last pixel.
    n_out = len(pool_reference(blocks[0][1], pool))
    assert len(writes) == 3 * n_out
    last_pixel = [sent[(b + 1) * out_h * out_w - 1] for b in range(3)]
    assert ends == [t + PoolWriter.LATENCY for t in last_pixel]


def test_pool_writer_comparison_fails_on_a_corrupted_reference():
    plane = np.arange(20).reshape(4, 5) - 10
    good = pool_reference(plane, True)
    plane[1, 1] += 100
    assert pool_reference(plane, True) != good


# ---------------------------------------------------------------------------------------------
# Output emitter


class EmitterHarness(wiring.Component):
    """The emitter between a preloaded transpose buffer and its output queue."""

    def __init__(self, p: ConvEngineParams, banks: list[list[int]], depth: int) -> None:
        self.p = p
        self.banks = banks
        self.depth = depth
        self.emitter = OutputEmitter(p, depth)
        super().__init__({"o": wiring.Out(stream.Signature(signed(p.act_bits)))})

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.p
        m.submodules.emitter = em = self.emitter
        m.submodules.queue = queue = StreamFIFO(signed(p.act_bits), self.depth)
        for c, words in enumerate(self.banks):
            mem = Memory(shape=signed(p.act_bits), depth=2 * p.out_depth, init=words)
            m.submodules[f"bank_{c}"] = mem
            rp = mem.read_port()
            m.d.comb += [rp.addr.eq(em.rd_addr), em.rd_data[col_field(c)].eq(rp.data)]
        m.d.comb += em.queue_level.eq(queue.level)
        wiring.connect(m, em.o, queue.w)
        wiring.connect(m, queue.r, wiring.flipped(self.o))
        return m


def emitter_reference(banks, p, out_h, out_w, out_channels, pool, blocks):
    out = []
    for b in range(blocks):
        half = (b % 2) * p.out_depth
        for lane in range(min(p.cols, out_channels - b * p.cols)):
            plane = np.asarray(banks[lane][half : half + out_h * out_w]).reshape(out_h, out_w)
            if pool:  # the pool writer left the windows' maxima in the first slots
                plane = np.asarray(banks[lane][half : half + (out_h // 2) * (out_w // 2)])
            out.extend(int(v) for v in plane.reshape(-1))
    return out


@pytest.mark.parametrize(("pool", "ready_probability"), [(False, 1.0), (True, 1.0), (True, 0.5)])
def test_output_emitter_streams_blocks_in_chw_order(pool, ready_probability):
    p = params_for(rows=2, cols=3, out_depth=20)
    out_h, out_w, out_channels = 4, 5, 5  # two filter blocks, the second with two lanes
    rng = np.random.default_rng(3)
    banks = [[int(v) for v in rng.integers(-32, 32, size=2 * p.out_depth)] for _ in range(p.cols)]
    dut = EmitterHarness(p, banks, depth=OUTPUT_QUEUE_DEPTH)
    em = dut.emitter
    ready = random.Random(1)
    expected = emitter_reference(banks, p, out_h, out_w, out_channels, pool, blocks=2)

    async def bench(ctx):
        ctx.set(em.cfg.out_channels, out_channels)
        ctx.set(em.cfg.pool, pool)
        ctx.set(em.out_h, out_h)
        ctx.set(em.out_w, out_w)
        got = []
        emitted_at = []
        latched = []
        done_at = None
        for cycle in range(2000):
            # Block 1 is drained a while after block 0.
            ctx.set(em.drained, 1 if cycle < 30 else 2)
            ctx.set(dut.o.ready, ready.random() < ready_probability)
            if latched:
                # The run's sizes were sampled: later values belong to another run.
                ctx.set(em.out_w, 1)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                got.append(ctx.get(dut.o.payload))
            emitted_at.append(ctx.get(em.emitted))
            if ctx.get(em.latch):
                latched.append(cycle)
            if ctx.get(em.run_done):
                done_at = cycle
                break
            await ctx.tick()
        return got, emitted_at, latched, done_at

    got, emitted_at, latched, done_at = run_testbench(dut, bench)
    assert got == expected
    assert emitted_at[-1] == 2
    # The run's cfg is sampled once, when block 0 begins; done comes once every output is out.
    assert len(latched) == 1 and emitted_at[latched[0]] == 0
    assert done_at is not None and len(got) == len(expected)
    # Block 1 waits for its drain.
    assert emitted_at[30] <= 1
    reads = out_h * out_w if not pool else (out_h // 2) * (out_w // 2)
    if ready_probability == 1.0:
        # A read per cycle: block 0 (three lanes) is out in 3 * reads cycles and a few more.
        assert emitted_at.index(1) <= 3 * reads + 2


def test_emitter_comparison_fails_on_a_corrupted_reference():
    p = params_for(out_depth=20)
    banks = [[c * 7 + i for i in range(2 * p.out_depth)] for c in range(p.cols)]
    good = emitter_reference(banks, p, 4, 5, 5, False, 2)
    banks[1][3] += 1
    assert emitter_reference(banks, p, 4, 5, 5, False, 2) != good


def test_components_check_their_parameters():
    with pytest.raises(TypeError, match="params must be ConvEngineParams, not dict"):
        SystolicArray({})
    with pytest.raises(TypeError, match="params must be ConvEngineParams, not NoneType"):
        FoldDrain(None)
    with pytest.raises(ValueError, match="OutputEmitter queue_depth must be 1..1024, not 0"):
        OutputEmitter(params_for(), 0)


@pytest.mark.slow
def test_engine_synthesizes_with_its_hierarchy_kept():
    """Each component is its own Verilog module; Yosys maps them without flattening (the
    per-engine resource breakdown does this). Array-typed ports once aborted ABC9 there."""
    from squeezeforge.codegen.resources import synthesize_hierarchy
    from squeezeforge.hw.conv.engine import ConvEngine
    from squeezeforge.sim.rtl import amaranth_to_verilog

    params = params_for("pow2", rows=2, cols=2, weight_bits=4, acc_bits=20, out_depth=16)
    verilog = amaranth_to_verilog(ConvEngine(params), "conv_engine")
    reports = synthesize_hierarchy(verilog, "conv_engine", "xc7")
    assert {"conv_engine.array", "conv_engine.drain", "conv_engine.emitter"} <= set(reports)
    assert reports["conv_engine.array"].lut > 0
    assert reports["conv_engine"].dsp == 0
