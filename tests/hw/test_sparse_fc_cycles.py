"""The sparse FC unit's cycle model: encoding counts, closed-form cases, monotonicity, speed,
and the EIE load-balance script. (Agreement with the RTL is checked in tests/hw.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.hw.sparse_fc import (
    SparseFC,
    as_csc,
    sparse_fc_cycles,
    sparse_fc_cycles_from_counts,
)
from squeezeforge.sim.ir import SparseDense, csc_entry_counts, encode_csc
from squeezeforge.sim.random_layers import (
    random_activations,
    random_conv2d,
    random_dense,
    random_sparse_dense,
)

_SHAPE_KEYS = ("weight", "in_features", "out_features")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_eie.py"


@pytest.mark.parametrize("seed", range(6))
def test_entry_counts_equal_the_encoding(seed):
    rng = np.random.default_rng(seed)
    out_f, in_f = (int(v) for v in rng.integers(1, 90, size=2))
    n_pe = int(2 ** rng.integers(0, 5))
    index_bits = int(rng.integers(1, 5))
    stored = np.where(rng.random((out_f, in_f)) < rng.random(), 1, 0)
    _, _, ptr = encode_csc(stored, n_pe, index_bits)
    np.testing.assert_array_equal(csc_entry_counts(stored, n_pe, index_bits), np.diff(ptr, axis=1))


def test_any_layout_keeps_the_matrix():
    rng = np.random.default_rng(1)
    layer = random_sparse_dense(rng, in_features=9, out_features=13)
    for n_pe, index_bits in ((2, 2), (8, 1)):
        csc = as_csc(layer, n_pe, index_bits)
        assert (csc.n_pe, csc.index_bits) == (n_pe, index_bits)
        np.testing.assert_array_equal(csc.stored_dense(), layer.weight)
    dense = random_dense(rng, in_features=5, out_features=3)
    np.testing.assert_array_equal(as_csc(dense, 4, 3).stored_dense(), dense.weight)
    with pytest.raises(TypeError, match="dense and sparse_dense layers"):
        as_csc(random_conv2d(rng), 4, 3)


def test_all_zero_input_streams_then_reads_out():
    counts = np.ones((4, 10), dtype=np.int64)
    r = sparse_fc_cycles_from_counts(counts, np.zeros(10, bool), out_features=7)
    # One input per cycle from the cycle after start (then through the input register), then
    # the read-out of 7 rows.
    assert r.compute_cycles == SparseFC.INPUT_LATENCY + 10 + 1
    assert r.cycles == r.compute_cycles + 7 + SparseFC.OUTPUT_TAIL
    assert r.work == 0 and r.efficiency == 0


def test_one_column_on_one_pe():
    counts = np.zeros((1, 3), dtype=np.int64)
    counts[0, 0] = 9
    r = sparse_fc_cycles_from_counts(counts, np.array([True, False, False]), out_features=2)
    # Accepted in cycle 1, broadcast from the input register in 2, into the queue's output
    # register in 3, pop in 4, into the column stage in 5, entries issue in 6..14, pipeline
    # idle DRAIN_AFTER_ISSUE cycles later.
    assert (SparseFC.INPUT_LATENCY, SparseFC.COLUMN_LATENCY, SparseFC.POINTER_LATENCY) == (1, 2, 1)
    assert r.compute_cycles == 14 + SparseFC.DRAIN_AFTER_ISSUE
    assert r.cycles == r.compute_cycles + 2 + SparseFC.OUTPUT_TAIL
    assert r.busy.tolist() == [9]


def test_fifo_full_stalls_the_broadcast():
    # PE 1 owns long columns; with depth 1 every broadcast waits for its pop.
    counts = np.array([[1, 1, 1, 1], [5, 5, 5, 5]])
    x = np.ones(4, bool)
    shallow = sparse_fc_cycles_from_counts(counts, x, out_features=2, fifo_depth=1)
    deep = sparse_fc_cycles_from_counts(counts, x, out_features=2, fifo_depth=8)
    # PE 1 is the bottleneck either way: 4 columns of 5 entries back to back.
    # The first broadcast a cycle after the input register, its pop COLUMN_LATENCY later, its
    # move into the column stage POINTER_LATENCY after that.
    first_move = SparseFC.INPUT_LATENCY + 1 + SparseFC.COLUMN_LATENCY + SparseFC.POINTER_LATENCY
    compute = first_move + 20 + SparseFC.DRAIN_AFTER_ISSUE
    assert deep.compute_cycles == compute
    assert shallow.compute_cycles == deep.compute_cycles
    assert shallow.efficiency == deep.efficiency == pytest.approx(12 / compute)


@pytest.mark.parametrize("seed", range(4))
def test_deeper_fifos_never_cost_cycles(seed):
    rng = np.random.default_rng(seed)
    layer = random_sparse_dense(rng, in_features=120, out_features=100, density=0.1)
    x = random_activations(rng, layer.input_format, (120,), density=0.4)
    runs = [
        sparse_fc_cycles(layer, x, n_pe=8, index_bits=3, fifo_depth=d) for d in (1, 2, 4, 8, 16)
    ]
    cycles = [r.cycles for r in runs]
    assert cycles == sorted(cycles, reverse=True)
    for r in runs:
        assert 0 < r.efficiency <= 1
        assert r.ideal_cycles <= r.compute_cycles
        assert r.bubble_cycles == pytest.approx(r.compute_cycles * (1 - r.efficiency))
        assert r.work == int(np.count_nonzero(layer.stored_dense()[:, x != 0]))


def test_dense_and_sparse_forms_agree():
    rng = np.random.default_rng(3)
    dense = random_dense(rng, in_features=30, out_features=17, density=0.3)
    sparse = SparseDense.from_dense(
        dense.weight, **{k: v for k, v in dense.__dict__.items() if k not in _SHAPE_KEYS}
    )
    x = random_activations(rng, dense.input_format, (30,), density=0.5)
    a = sparse_fc_cycles(dense, x, n_pe=4, index_bits=2, fifo_depth=3)
    b = sparse_fc_cycles(sparse, x, n_pe=4, index_bits=2, fifo_depth=3)
    # The counts the model takes are those of the unit's encoding.
    counts = np.diff(as_csc(dense, 4, 2).ptr, axis=1)
    c = sparse_fc_cycles_from_counts(counts, x != 0, out_features=17, fifo_depth=3, work=a.work)
    assert a.cycles == b.cycles == c.cycles
    assert a.work == b.work
    assert a.dense_cycles == 5 * 30


def test_inputs_are_checked():
    counts = np.ones((2, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="fifo_depth must be >= 1"):
        sparse_fc_cycles_from_counts(counts, np.ones(4, bool), out_features=1, fifo_depth=0)
    with pytest.raises(ValueError, match="the layer takes"):
        sparse_fc_cycles_from_counts(counts, np.ones(5, bool), out_features=1)
    dense = random_dense(np.random.default_rng(0), in_features=4)
    with pytest.raises(ValueError, match="needs n_pe and index_bits"):
        sparse_fc_cycles(dense, np.ones(4))
    sparse = random_sparse_dense(np.random.default_rng(0), in_features=4)
    with pytest.raises(ValueError, match="needs n_pe and index_bits"):
        sparse_fc_cycles(sparse, np.ones(4), n_pe=4)
    with pytest.raises(ValueError, match="one input vector"):
        sparse_fc_cycles(dense, np.ones((1, 4)), n_pe=2, index_bits=2)


def test_eie_sized_layer():
    """Alex-7 (4096 x 4096, 9 % weights, 35 % activations) on 64 PEs: the model takes an
    EIE-sized layer (its run time is `scripts/bench_eie.py`'s to show, not a test's)."""
    rng = np.random.default_rng(0)
    weights = rng.random((4096, 4096)) < 0.09
    x = rng.random(4096) < 0.353
    counts = csc_entry_counts(weights, 64, 4)
    r = sparse_fc_cycles_from_counts(counts, x, out_features=4096, fifo_depth=8)
    assert 0.9 < r.efficiency <= 1
    assert r.speedup_over_dense > 10


def test_bench_eie_script_runs(tmp_path):
    plot = tmp_path / "eie.png"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--scale",
            "16",
            "--n-pe",
            "8",
            "--json",
            "--plot",
            str(plot),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = json.loads(done.stdout)
    assert {r["layer"] for r in rows} == {"Alex-7", "VGG-7", "NT-We"}
    assert [r["fifo_depth"] for r in rows[:6]] == [1, 2, 4, 8, 16, 32]
    for r in rows:
        assert 0 < r["efficiency"] <= 1
        assert r["cycles"] >= r["ideal_cycles"]
    assert plot.stat().st_size > 1000
    table = subprocess.run(
        [sys.executable, str(SCRIPT), "--scale", "32", "--layers", "NT-We", "--depths", "1,8"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert table.startswith("| layer |") and table.count("NT-We") == 2
