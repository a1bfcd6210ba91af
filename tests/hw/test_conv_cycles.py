"""The conv engine's cycle model as a function: counts, bounds and the utilization targets.
Its agreement with the hardware is tested against Amaranth's simulator (tests/hw/
test_conv_engine.py) and Verilator (tests/hw/test_conv_rtl.py)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from squeezeforge.hw.conv import ConvCycles, conv_cycles
from squeezeforge.sim.random_layers import random_conv2d


def layer(cin: int, cout: int, kernel=(3, 3), stride=1, padding=1):
    rng = np.random.default_rng(0)
    return random_conv2d(
        rng,
        in_channels=cin,
        out_channels=cout,
        kernel=kernel,
        stride=stride,
        padding=padding,
        act_bits=8,
        weight_bits=8,
    )


def array(rows: int, cols: int) -> SimpleNamespace:
    return SimpleNamespace(rows=rows, cols=cols)


@pytest.mark.parametrize("side", [8, 16])
def test_large_layer_reaches_the_utilization_target(side):
    """3x3, 64->64, 32x32, padding 1: >= 85% of the array busy once the input is loaded."""
    c = conv_cycles(layer(64, 64), (64, 32, 32), array(side, side))
    assert c.macs == 32 * 32 * 64 * 576
    assert c.ideal_cycles == c.macs / side**2
    assert c.load_cycles == 64 * 32 * 32
    assert c.steps == 576 and c.fold_cycles == 576
    assert c.folds == (1024 // side) * (64 // side)
    assert c.utilization_compute >= 0.85
    assert c.utilization == pytest.approx(c.macs / (c.cycles * side * side))
    # Compute runs back to back; what remains is the load and the last block's emission.
    tail = c.cycles - c.load_cycles - c.folds * c.fold_cycles
    assert 0 < tail <= side * 32 * 32 + 2 * side + 600
    if side == 8:
        assert c.utilization >= 0.85


def test_counts_of_a_small_layer():
    c = conv_cycles(layer(6, 16), (6, 4, 4), array(4, 4), pool=True)
    assert isinstance(c, ConvCycles)
    assert (c.filter_blocks, c.pixel_blocks, c.folds) == (4, 4, 16)
    assert c.steps == 54 and c.fold_cycles == 54
    assert c.macs == 16 * 16 * 54
    assert c.cycles >= c.load_cycles + c.folds * c.fold_cycles


def test_short_folds_wait_for_the_pixel_cursor():
    """A fold of K < rows + 1 steps still takes rows + 1 cycles."""
    c = conv_cycles(layer(1, 4, kernel=(1, 1), padding=0), (1, 8, 8), array(8, 4))
    assert c.steps == 1 and c.fold_cycles == 9


def test_pooling_changes_only_the_emission():
    base = conv_cycles(layer(4, 8), (4, 8, 8), array(4, 4))
    pooled = conv_cycles(layer(4, 8), (4, 8, 8), array(4, 4), pool=True)
    assert pooled.macs == base.macs and pooled.folds == base.folds
    # One read per pooled output: block 0's emission hides behind block 1's folds either way,
    # the last block's four lanes read 16 windows each instead of 64 pixels.
    assert base.cycles - pooled.cycles == 4 * (64 - 16)


def test_emission_bound_layers_stall_on_the_transpose_buffer():
    """With K tiny and many filter blocks, blocks wait for the emitter to free their half."""
    one = conv_cycles(layer(1, 1, kernel=(1, 1), padding=0), (1, 8, 8), array(2, 1))
    eight = conv_cycles(layer(1, 8, kernel=(1, 1), padding=0), (1, 8, 8), array(2, 1))
    # Eight blocks of 64 outputs, each emitted in 64 cycles, in sequence.
    assert eight.cycles - one.cycles >= 7 * 64


def test_model_is_a_pure_function():
    lay = layer(3, 5, kernel=(2, 3), stride=2, padding=0)
    a = conv_cycles(lay, (3, 9, 7), array(3, 2))
    b = conv_cycles(lay, [3, 9, 7], array(3, 2), pool=False)
    assert a == b


def test_more_pes_never_cost_more_compute():
    lay = layer(16, 32)
    previous = None
    for side in (2, 4, 8, 16):
        c = conv_cycles(lay, (16, 16, 16), array(side, side))
        compute = c.cycles - c.load_cycles
        if previous is not None:
            assert compute < previous
        previous = compute


def test_bench_script_prints_the_table(capsys):
    script = Path(__file__).parents[2] / "scripts" / "bench_conv.py"
    bench = runpy.run_path(str(script), run_name="bench_conv")
    assert bench["main"](["--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    large = [r for r in table if r["layer"].startswith("3x3 64->64")]
    assert [r["array"] for r in large] == ["8x8", "16x16"]
    assert all(r["utilization_compute"] >= 0.85 for r in large)
    # Two input banks hide the load behind the run before, and the next run computes while
    # the emitter reads this one's last block: back to back, the folds set the pace.
    for r in large:
        assert r["ideal_cycles"] <= r["interval_two_banks"] < r["ideal_cycles"] + 100
    assert {r["layer"] for r in table} >= {"digits conv1", "digits conv2"}
    assert bench["main"]([]) == 0
    assert capsys.readouterr().out.startswith("| layer | array |")
