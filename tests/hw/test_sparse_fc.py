"""Fast tier of the sparse FC unit: Amaranth's simulator on the FIFO, the pointer banks, the
broadcast and small layers against the reference model and the cycle model."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import unsigned
from amaranth.sim import Simulator

from squeezeforge.hw.fifo import StreamFIFO
from squeezeforge.hw.interface import pack_cfg
from squeezeforge.hw.sparse_fc import (
    PointerBanks,
    SparseFC,
    SparseFCMemory,
    SparseFCParams,
    SparseFCPlacement,
    load_writes,
    place_layers,
    sparse_fc_config,
    sparse_fc_cycles,
    sparse_fc_init,
    sparse_fc_layer,
    sparse_fc_memory_images,
)
from squeezeforge.hw.testing import run_testbench
from squeezeforge.sim.ir import Dense, SparseDense
from squeezeforge.sim.numerics import FixedFormat, FixedWeights
from squeezeforge.sim.random_layers import random_activations, random_dense, random_sparse_dense
from squeezeforge.sim.reference import run_layer

MAX_CYCLES = 20_000
WEIGHT_BITS = {"codebook": 4, "pow2": 6, "fixed": 8}


def small_params(kind: str = "codebook", n_pe: int = 4, **kw) -> SparseFCParams:
    base = dict(
        n_pe=n_pe,
        weight_kind=kind,
        act_bits=8,
        weight_bits=WEIGHT_BITS[kind],
        codebook_value_bits=16,
        acc_bits=40,
        bias_bits=26,
        fifo_depth=2,
        ptr_depth=64,
        entry_depth=1600,
        acc_depth=40,
    )
    base.update(kw)
    return SparseFCParams(**base)


def random_layer(rng, params: SparseFCParams, **kw) -> SparseDense:
    kind = params.weight_kind
    args = dict(
        kind=kind,
        in_features=int(rng.integers(1, 40)),
        out_features=int(rng.integers(1, 40)),
        act_bits=int(rng.integers(2, params.act_bits + 1)),
        density=float(rng.uniform(0.02, 1.0)),
        weight_bits=int(rng.integers(1, 5)) if kind == "codebook" else params.weight_bits,
    )
    args.update(kw)
    return random_sparse_dense(rng, **args)


async def load_layer(ctx, dut, layer, params) -> None:
    """Write a layer's memory images through the load port, one word a cycle."""
    for mem, pe, addr, value in load_writes(sparse_fc_memory_images(layer, params), params):
        ctx.set(dut.load.en, 1)
        ctx.set(dut.load.memory, SparseFCMemory(int(mem)))
        ctx.set(dut.load.pe, int(pe))
        ctx.set(dut.load.addr, int(addr))
        ctx.set(dut.load.data, int(value))
        await ctx.tick()
    ctx.set(dut.load.en, 0)


async def run_layers(ctx, dut, params, cases, *, load=True, valid_prob=1.0, ready_prob=1.0):
    """Load each layer, run it, and return (outputs, cycles start to done) per layer."""
    rnd = random.Random(0)
    results = []
    for layer, x in cases:
        if load:
            await load_layer(ctx, dut, layer, params)
        ctx.set(dut.cfg, sparse_fc_config(layer, params))
        ctx.set(dut.start, 1)
        cycles, fed, outputs = 0, 0, []
        while True:
            offer = fed < len(x) and rnd.random() < valid_prob
            ctx.set(dut.i_act.valid, offer)
            ctx.set(dut.i_act.payload, int(x[fed]) if fed < len(x) else 0)
            ctx.set(dut.o_act.ready, rnd.random() < ready_prob)
            if ctx.get(dut.done):
                break
            took = ctx.get(dut.i_act.valid) and ctx.get(dut.i_act.ready)
            if ctx.get(dut.o_act.valid) and ctx.get(dut.o_act.ready):
                outputs.append(ctx.get(dut.o_act.payload))
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles += 1
            fed += int(took)
            assert cycles < MAX_CYCLES, f"layer {layer.name}: no done after {cycles} cycles"
        ctx.set(dut.i_act.valid, 0)
        results.append((np.asarray(outputs, dtype=np.int64), cycles))
    return results


def simulate(params, cases, **kw):
    dut = SparseFC(params)
    return run_testbench(dut, lambda ctx: run_layers(ctx, dut, params, cases, **kw))


# Parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"n_pe": 3}, ValueError, "n_pe must be a power of two, got 3"),
        ({"n_pe": 128}, ValueError, "n_pe must be 1..64, not 128"),
        ({"weight_kind": "ternary"}, ValueError, "weight_kind must be one of"),
        ({"weight_kind": "pow2", "weight_bits": 7}, ValueError, "weight_bits of pow2 weights"),
        ({"fifo_depth": 0}, ValueError, "fifo_depth must be 1..1024, not 0"),
        ({"acc_bits": 10}, ValueError, "acc_bits 10 is narrower than a product"),
        ({"act_bits": 8.0}, TypeError, "act_bits must be an integer"),
    ],
)
def test_params_are_checked(kw, error, message):
    with pytest.raises(error, match=message):
        SparseFCParams(**kw)


def test_component_rejects_other_params():
    with pytest.raises(TypeError, match="params must be a SparseFCParams"):
        SparseFC({"n_pe": 4})


# Building blocks -----------------------------------------------------------------------------


def test_stream_fifo_matches_a_queue_and_its_timing():
    """Payloads come out in order; a write is readable the next cycle; a full FIFO does not see a
    read of the same cycle."""
    depth = 3
    dut = StreamFIFO(unsigned(8), depth)
    rnd = random.Random(1)

    async def testbench(ctx):
        model: list[int] = []
        written_last_cycle = None
        for step in range(400):
            w = rnd.random() < 0.6
            r = rnd.random() < 0.5
            value = rnd.randrange(256)
            ctx.set(dut.w.valid, w)
            ctx.set(dut.w.payload, value)
            ctx.set(dut.r.ready, r)
            assert ctx.get(dut.level) == len(model), step
            assert ctx.get(dut.w.ready) == (len(model) < depth), step
            assert ctx.get(dut.r.valid) == bool(model), step
            if written_last_cycle is not None and len(model) == 1:
                assert ctx.get(dut.r.payload) == written_last_cycle
            popped = r and model
            if popped:
                assert ctx.get(dut.r.payload) == model.pop(0)
            written_last_cycle = None
            if w and ctx.get(dut.w.ready):
                model.append(value)
                written_last_cycle = value
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def test_registered_stream_fifo_matches_a_queue_and_its_timing():
    """The registered queue: a payload moves from the memory to the output register in the cycle
    after its write at the earliest, while the register is free or read; it is readable the cycle
    after the move; ``w.ready`` sees only the memory's level."""
    depth = 3
    dut = StreamFIFO(unsigned(8), depth, registered=True)
    rnd = random.Random(2)

    async def testbench(ctx):
        memory: list[tuple[int, int]] = []  # (payload, cycle written)
        register: list[int] = []
        for step in range(600):
            w = rnd.random() < 0.6
            r = rnd.random() < 0.5
            value = rnd.randrange(256)
            ctx.set(dut.w.valid, w)
            ctx.set(dut.w.payload, value)
            ctx.set(dut.r.ready, r)
            assert ctx.get(dut.level) == len(memory) + len(register), step
            assert ctx.get(dut.w.ready) == (len(memory) < depth), step
            assert ctx.get(dut.r.valid) == bool(register), step
            popped = r and register
            if popped:
                assert ctx.get(dut.r.payload) == register.pop()
            if memory and memory[0][1] < step and not register:
                register.append(memory.pop(0)[0])
            if w and ctx.get(dut.w.ready):
                memory.append((value, step))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def test_stream_fifo_depth_is_checked():
    with pytest.raises(ValueError, match="FIFO depth must be an integer >= 1"):
        StreamFIFO(unsigned(4), 0)


@pytest.mark.parametrize("depth", [7, 8])
def test_pointer_banks_give_start_and_end_in_one_cycle(depth):
    rnd = random.Random(depth)
    words = sorted(rnd.randrange(100) for _ in range(depth))
    dut = PointerBanks(depth, unsigned(7))

    async def testbench(ctx):
        for a, word in enumerate(words):
            ctx.set(dut.w_en, 1)
            ctx.set(dut.w_addr, a)
            ctx.set(dut.w_data, word)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        order = list(range(depth - 1))
        rnd.shuffle(order)
        for a in [*order, 0]:
            ctx.set(dut.addr, PointerBanks.split(a))
            await ctx.tick()
            got = (ctx.get(dut.start), ctx.get(dut.end))
            assert got == (words[a], words[a + 1]), f"address {a}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def test_pointer_banks_take_initial_contents():
    dut = PointerBanks(5, unsigned(4), init=[0, 3, 3, 9, 12])

    async def testbench(ctx):
        for a, pair in enumerate([(0, 3), (3, 3), (3, 9), (9, 12)]):
            ctx.set(dut.addr, PointerBanks.split(a))
            await ctx.tick()
            assert (ctx.get(dut.start), ctx.get(dut.end)) == pair

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def test_broadcast_stalls_on_a_full_fifo_but_skips_zeros():
    """PE 0 owns a long column; with one-deep queues the next non-zero waits, zeros pass."""
    params = small_params("fixed", n_pe=2, fifo_depth=1)
    rows = 24
    stored = np.zeros((rows, 9), dtype=np.int64)
    stored[0::2, 0] = 3  # 12 entries in PE 0 for column 0
    stored[1, 1:] = 1
    fmt = FixedFormat(8, 0)
    layer = SparseDense.from_dense(
        stored,
        name="stall",
        input_format=fmt,
        weight_format=FixedWeights(8, 0),
        output_format=fmt,
        relu=False,
        bias=np.zeros(rows, dtype=np.int64),
    )
    x = np.array([5, 7, 0, 0, 0, 2, 1, 3, 4])
    dut = SparseFC(params)
    trace = []

    async def testbench(ctx):
        await load_layer(ctx, dut, layer, params)
        ctx.set(dut.cfg, sparse_fc_config(layer, params))
        ctx.set(dut.start, 1)
        ctx.set(dut.o_act.ready, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        fed = 0
        for _ in range(MAX_CYCLES):
            if ctx.get(dut.done):
                break
            ctx.set(dut.i_act.valid, fed < len(x))
            ctx.set(dut.i_act.payload, int(x[fed]) if fed < len(x) else 0)
            ready = ctx.get(dut.i_act.ready)
            if fed < len(x):
                trace.append((int(x[fed]), ready))
            await ctx.tick()
            fed += int(ready and fed < len(x))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    # 5 and 7 go at once (7 into the input register), where 7 waits one cycle for the FIFO
    # PE 0 popped, and the first zero with it; then the three zeros pass back to back although
    # PE 0's FIFO is full, and 2 waits in the input register for PE 0 to finish column 0,
    # holding back the 1 behind it.
    values = [v for v, _ in trace]
    # 5 and 7 go at once (7 into the input register), where 7 waits one cycle: PE 0's queue
    # memory passes 5 on to its output register and does not see that in the same cycle. The
    # first zero waits behind 7; then the three zeros pass back to back. While column 0 runs,
    # 7 waits in PE 0's pointer stage, 2 in its queue's output register and 1 in its queue
    # memory: 3 waits in the input register for column 0 to finish, holding back the 4.
    assert trace[:3] == [(5, 1), (7, 1), (0, 0)]
    first_zero = values.index(0)
    assert [r for _, r in trace[first_zero + 1 : first_zero + 5]] == [1, 1, 1, 1]
    stalls_behind_3 = sum(1 for v, r in trace if v == 4 and not r)
    assert stalls_behind_3 >= 6
    assert sum(r for _, r in trace) == len(x)


# Layers against the reference and the cycle model ---------------------------------------------


@pytest.mark.parametrize(
    ("kind", "n_pe", "depth"),
    [("codebook", 4, 2), ("pow2", 2, 1), ("fixed", 1, 8), ("codebook", 8, 4)],
)
def test_small_layers_match_reference_and_cycle_model(kind, n_pe, depth):
    rng = np.random.default_rng(n_pe * 10 + depth)
    params = small_params(kind, n_pe, fifo_depth=depth)
    cases = []
    for _ in range(3):
        layer = random_layer(rng, params)
        x = random_activations(
            rng, layer.input_format, (layer.in_features,), density=float(rng.uniform(0, 1))
        )
        cases.append((layer, x))
    for (layer, x), (got, cycles) in zip(cases, simulate(params, cases), strict=True):
        expected = run_layer(layer, x[None])[0]
        np.testing.assert_array_equal(got, expected, err_msg=f"layer {layer.name}")
        model = sparse_fc_cycles(
            layer, x, n_pe=params.n_pe, index_bits=params.index_bits, fifo_depth=depth
        )
        assert cycles == model.cycles


def clamped_layer(rng, params: SparseFCParams, i: int) -> tuple[SparseDense, np.ndarray]:
    """A random layer with a clamp (0 for ``i == 0``, the output maximum for ``i == 1``, then a
    random bound below the largest unclamped output, so that it cuts) and an input."""
    layer = random_layer(rng, params, clamp=True)
    x = random_activations(rng, layer.input_format, (layer.in_features,))
    if i < 2:
        return replace(layer, clamp_max=(0, layer.output_format.max)[i]), x
    top = int(run_layer(replace(layer, clamp_max=None), x[None]).max())
    return replace(layer, clamp_max=int(rng.integers(0, max(top, 1)))), x


@pytest.mark.parametrize(("kind", "n_pe"), [("codebook", 4), ("pow2", 2), ("fixed", 1)])
def test_clamped_layers_match_reference_and_cycle_model(kind, n_pe):
    """ReLU then clamp (ReLU6 and the like) bit-exact, in the same cycles as without."""
    rng = np.random.default_rng(20 + n_pe)
    params = small_params(kind, n_pe)
    cases = [clamped_layer(rng, params, i) for i in range(5)]
    binds = 0
    for (layer, x), (got, cycles) in zip(cases, simulate(params, cases), strict=True):
        expected = run_layer(layer, x[None])[0]
        np.testing.assert_array_equal(got, expected, err_msg=f"layer {layer.name}")
        model = sparse_fc_cycles(
            layer, x, n_pe=n_pe, index_bits=params.index_bits, fifo_depth=params.fifo_depth
        )
        assert cycles == model.cycles
        assert expected.max(initial=0) <= layer.clamp_max
        binds += not np.array_equal(expected, run_layer(replace(layer, clamp_max=None), x[None])[0])
    assert binds >= 3  # the random bounds cut


def test_wrong_clamp_in_the_cfg_gives_a_mismatch():
    rng = np.random.default_rng(23)
    params = small_params("fixed", 2)
    layer = random_layer(rng, params, in_features=12, out_features=9, act_bits=8, clamp=True)
    x = random_activations(rng, layer.input_format, (layer.in_features,))
    top = int(run_layer(replace(layer, clamp_max=None), x[None]).max())
    layer = replace(layer, clamp_max=top // 2)
    expected = run_layer(layer, x[None])[0]
    assert expected.max() == top // 2 < top  # the bound cuts
    # The driver maps clamp_max straight to the cfg, so a layer with another bound is a cfg
    # with a wrong clamp: one more, one less, and none.
    wrong = [replace(layer, clamp_max=c) for c in (top // 2 + 1, top // 2 - 1, None)]
    results = simulate(params, [(lay, x) for lay in [layer, *wrong]])
    np.testing.assert_array_equal(results[0][0], expected)
    for lay, (got, _) in zip(wrong, results[1:], strict=True):
        with pytest.raises(AssertionError, match="Arrays are not equal"):
            np.testing.assert_array_equal(got, expected, err_msg=f"clamp_max {lay.clamp_max}")


def test_backpressure_and_input_gaps_keep_results_exact():
    rng = np.random.default_rng(7)
    params = small_params("codebook", 4, fifo_depth=1)
    cases = []
    for _ in range(2):
        layer = random_layer(rng, params)
        cases.append((layer, random_activations(rng, layer.input_format, (layer.in_features,))))
    results = simulate(params, cases, valid_prob=0.6, ready_prob=0.4)
    for (layer, x), (got, _) in zip(cases, results, strict=True):
        np.testing.assert_array_equal(got, run_layer(layer, x[None])[0])


def test_dense_layer_runs_at_full_density():
    rng = np.random.default_rng(3)
    params = small_params("fixed", 2)
    layer = random_dense(
        rng, kind="fixed", in_features=9, out_features=5, act_bits=8, weight_bits=8
    )
    x = random_activations(rng, layer.input_format, (9,))
    ((got, cycles),) = simulate(params, [(layer, x)])
    np.testing.assert_array_equal(got, run_layer(layer, x[None])[0])
    model = sparse_fc_cycles(layer, x, n_pe=2, index_bits=params.index_bits, fifo_depth=2)
    assert cycles == model.cycles


def test_initial_contents_serve_two_layers_without_loading():
    """The whole-net path: two layers placed at different bases in the memories' init."""
    rng = np.random.default_rng(11)
    probe = small_params("codebook", 2, ptr_depth=32, entry_depth=256, acc_depth=16)
    layers = [
        random_layer(rng, probe, in_features=10, out_features=12),
        random_layer(rng, probe, in_features=12, out_features=7),
    ]
    places = place_layers(layers, probe)
    assert places[1].ptr_base == 11
    init = sparse_fc_init(
        probe,
        [sparse_fc_memory_images(lay, probe, at) for lay, at in zip(layers, places, strict=True)],
    )
    params = small_params("codebook", 2, ptr_depth=32, entry_depth=256, acc_depth=16, init=init)
    dut = SparseFC(params)
    xs = [random_activations(rng, lay.input_format, (lay.in_features,)) for lay in layers]
    got = []

    async def testbench(ctx):
        ctx.set(dut.o_act.ready, 1)
        for layer, at, x in zip(layers, places, xs, strict=True):
            ctx.set(dut.cfg, sparse_fc_config(layer, params, at))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            fed, outs = 0, []
            for _ in range(MAX_CYCLES):
                if ctx.get(dut.done):
                    break
                ctx.set(dut.i_act.valid, fed < len(x))
                ctx.set(dut.i_act.payload, int(x[fed]) if fed < len(x) else 0)
                took = ctx.get(dut.i_act.valid) and ctx.get(dut.i_act.ready)
                if ctx.get(dut.o_act.valid):
                    outs.append(ctx.get(dut.o_act.payload))
                await ctx.tick()
                fed += int(took)
                assert len(outs) <= layer.out_features
            ctx.set(dut.i_act.valid, 0)
            got.append(outs)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    for layer, x, outs in zip(layers, xs, got, strict=True):
        np.testing.assert_array_equal(outs, run_layer(layer, x[None])[0])


# Driver --------------------------------------------------------------------------------------


def test_driver_rejects_layers_that_do_not_fit():
    rng = np.random.default_rng(5)
    params = small_params("codebook", 4, ptr_depth=16, acc_depth=4, entry_depth=32)
    too_wide = random_layer(rng, params, in_features=20, out_features=4)
    with pytest.raises(ValueError, match="20 inputs need 21 pointers"):
        sparse_fc_config(too_wide, params)
    too_tall = random_layer(rng, params, in_features=4, out_features=17)
    with pytest.raises(ValueError, match="17 outputs need 5 accumulators per PE"):
        sparse_fc_config(too_tall, params)
    crowded = random_layer(rng, params, in_features=15, out_features=16, density=1.0)
    with pytest.raises(ValueError, match="entries from address 0, the entry memory has 32"):
        sparse_fc_memory_images(crowded, params)
    pow2 = random_layer(rng, small_params("pow2"), in_features=4, out_features=4)
    with pytest.raises(ValueError, match="has pow2 weights; this unit decodes codebook"):
        sparse_fc_config(pow2, params)
    wide_acts = random_layer(rng, params, in_features=4, out_features=4, act_bits=12)
    with pytest.raises(ValueError, match="input activations of 12 bits, the unit has 8"):
        sparse_fc_config(wide_acts, params)
    with pytest.raises(ValueError, match="from address 14, the pointer memory has 16"):
        sparse_fc_config(
            random_layer(rng, params, in_features=2, out_features=4),
            params,
            SparseFCPlacement(ptr_base=14),
        )


def test_driver_reencodes_for_the_unit_and_packs_cfg():
    rng = np.random.default_rng(9)
    params = small_params("codebook", 4)
    layer = random_layer(rng, small_params("codebook", 2, index_bits=2), in_features=6)
    enc = sparse_fc_layer(layer, params)
    assert (enc.n_pe, enc.index_bits) == (4, params.index_bits)
    np.testing.assert_array_equal(enc.stored_dense(), layer.stored_dense())
    cfg = sparse_fc_config(layer, params)
    const = params.cfg_layout().const(cfg)
    assert pack_cfg(params.cfg_layout(), cfg) == const.as_value().value
    assert (cfg["clamp"], cfg["clamp_max"]) == (0, 0)
    relu6 = replace(layer, relu=True, clamp_max=layer.output_format.max)
    clamped = sparse_fc_config(relu6, params)
    assert clamped == {**cfg, "relu": 1, "clamp": 1, "clamp_max": layer.output_format.max}
    assert (
        pack_cfg(params.cfg_layout(), clamped)
        == params.cfg_layout().const(clamped).as_value().value
    )


def test_driver_init_rejects_overlapping_layers():
    rng = np.random.default_rng(2)
    params = small_params("fixed", 2)
    a = random_layer(rng, params, in_features=5, out_features=4)
    b = random_layer(rng, params, in_features=5, out_features=4)
    images = [sparse_fc_memory_images(lay, params) for lay in (a, b)]
    with pytest.raises(ValueError, match="two layers write different values"):
        sparse_fc_init(params, images)


def test_driver_encodes_dense_layers_at_full_density():
    layer = random_dense(np.random.default_rng(0), kind="fixed", weight_bits=8, act_bits=8)
    assert isinstance(layer, Dense)
    enc = sparse_fc_layer(layer, small_params("fixed", 4))
    np.testing.assert_array_equal(enc.stored_dense(), layer.weight)


@pytest.mark.slow
def test_resources_script_reports_a_small_unit():
    script = Path(__file__).resolve().parents[2] / "scripts" / "resources_eie.py"
    done = subprocess.run(
        [sys.executable, str(script), "--n-pe", "1", "--targets", "ice40", "--act-bits", "8"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("| N | target | LUT | FF | DSP | BRAM")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:2] == ["1", "ice40"] and int(cells[2]) > 0 and int(cells[3]) > 0
