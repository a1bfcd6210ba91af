"""The folding choice (codegen/folding.py): its logic on the model alone (fast), and its
resource estimate against Yosys (slow)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from squeezeforge.cli.main import main
from squeezeforge.codegen.build import write_build
from squeezeforge.codegen.folding import (
    FOLD_PASSES,
    MemoryShape,
    bram_blocks,
    choose_folding,
    estimate_resources,
    map_memory,
)
from squeezeforge.codegen.plan import compile_net
from squeezeforge.codegen.report_resources import build_resources
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import save_net
from squeezeforge.sim.manifest import read_manifest
from squeezeforge.sim.random_layers import random_net
from squeezeforge.sim.target import Budget, Target, resolve_target


@pytest.fixture(scope="module")
def net():
    return random_net(np.random.default_rng(9), kind="fixed")


def _part(lut: int, dsp: int, bram_kbit: int) -> Target:
    return Target(
        name="part", family="ecp5", budget=Budget(lut=lut, ff=lut, dsp=dsp, bram_kbit=bram_kbit)
    )


def test_block_counts_follow_the_block_shapes() -> None:
    assert bram_blocks(16, 280, "ice40") == 2  # 256 x 16 blocks
    assert bram_blocks(8, 542, "ice40") == 2  # 512 x 8
    assert bram_blocks(20, 234, "ecp5") == 1  # 512 x 36
    assert bram_blocks(6, 2429, "ecp5") == 2
    # memory_libmap's costs: a small ROM stays in logic, a RAM with four read ports takes four
    # blocks, a FIFO (read without a clock) never takes a block.
    assert map_memory(MemoryShape("b", 24, 6, rom=True), "ice40").bram == 0
    assert map_memory(MemoryShape("a", 16, 96, read_ports=4), "ecp5").bram == 4
    assert map_memory(MemoryShape("f", 25, 8, async_read=True), "ice40").bram == 0
    assert map_memory(MemoryShape("f", 25, 8, async_read=True), "ecp5").lutram == 7


def test_the_choice_compiles_to_the_cycles_it_promised(net) -> None:
    folding = choose_folding(net, resolve_target("ecp5-25f"))
    plan = compile_net(net, folding.target)
    assert sum(s.cycles_estimated for s in plan.steps) == folding.cycles
    assert folding.resources == estimate_resources(plan)["total"]
    assert folding.resources.fits(folding.target.budget, "ecp5")
    # As a pass: the same Target, and the choice in the log (the manifest's passes).
    folded = compile_net(net, resolve_target("ecp5-25f"), FOLD_PASSES)
    assert folded.target == folding.target
    assert folded.log[0] == folding.summary() and folded.log[0].startswith("fold_engines: conv")


def test_a_bigger_budget_never_gives_more_cycles(net) -> None:
    cycles = []
    for dsp, kbit in ((4, 72), (8, 144), (16, 288), (64, 1008), (256, 4096)):
        cycles.append(choose_folding(net, _part(200_000, dsp, kbit)).cycles)
    assert cycles == sorted(cycles, reverse=True)
    assert cycles[0] > cycles[-1]  # and the budget did bind


def test_no_budget_or_no_fit_is_one_clear_line(net) -> None:
    with pytest.raises(UserError, match="has no \\[budget\\]"):
        choose_folding(net, Target())
    with pytest.raises(UserError, match="no engine size fits .* DSP"):
        choose_folding(net, _part(200_000, 0, 1008))  # MAC PEs need multipliers
    with pytest.raises(UserError, match="no resource model for family 'xc7'"):
        choose_folding(net, resolve_target("artix7-35t"))
    assert "\n" not in str(pytest.raises(UserError, choose_folding, net, Target()).value)


def test_headroom_is_respected(net) -> None:
    tight = choose_folding(net, _part(200_000, 8, 1008), headroom=0.5)
    assert tight.resources.dsp <= 4
    assert replace(tight.resources, dsp=5).fits(tight.target.budget, "ecp5", 0.5) is False


def test_generate_fold_auto_builds_the_choice(tmp_path, net, capsys) -> None:
    path = save_net(net, tmp_path / "n.sfnet")
    out = tmp_path / "b"
    assert (
        main(["generate", str(path), "-o", str(out), "--target", "ecp5-25f", "--fold", "auto"]) == 0
    )
    printed = capsys.readouterr().out
    folding = choose_folding(net, resolve_target("ecp5-25f"))
    manifest = read_manifest(out)
    assert manifest.passes[0] == folding.summary() and folding.summary() in printed
    assert manifest.cycles_estimated == folding.cycles
    t = folding.target
    assert (manifest.target["conv_rows"], manifest.target["conv_cols"]) == (
        t.conv_rows,
        t.conv_cols,
    )
    assert manifest.target["fc_pes"] == t.fc_pes
    # No budget to fold into: one line, exit 2, nothing written.
    assert main(["generate", str(path), "-o", str(tmp_path / "c"), "--fold", "auto"]) == 2
    err = capsys.readouterr().err
    assert "has no [budget]" in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


# The LFE5U-12F's resources (its data sheet): the 25F preset's budget halved in LUTs, so the
# chosen design synthesizes in a minute rather than three.
ECP5_12F = resolve_target("ecp5-25f").with_overrides(
    name="ecp5-12f", part="LFE5U-12F", budget=Budget(lut=12288, ff=12288, dsp=28, bram_kbit=576)
)


@pytest.mark.slow
@pytest.mark.parametrize("target", [resolve_target("ice40-up5k"), ECP5_12F], ids=lambda t: t.name)
def test_the_estimate_of_the_chosen_design_matches_yosys(tmp_path, target) -> None:
    """On a net the model was not fitted on, the chosen design's LUTs and FFs are within 20% of
    Yosys', its DSPs equal; BRAM within one block on ECP5, and never under Yosys' on iCE40
    (docs/folding.md: the model places small conv memories in blocks that Yosys puts in
    logic, which errs on the side of fitting)."""
    net = random_net(np.random.default_rng(9), kind="pow2")
    folding = choose_folding(net, target)
    plan = compile_net(net, folding.target)
    write_build(plan, tmp_path / "b")
    found = build_resources(tmp_path / "b")["total"]
    est = folding.resources
    assert est.dsp == found["dsp"]
    assert abs(est.lut - found["lut"]) <= 0.2 * found["lut"], (est, found)
    assert abs(est.ff - found["ff"]) <= 0.2 * found["ff"], (est, found)
    if folding.target.family == "ecp5":
        assert abs(est.bram - found["bram"]) <= 1, (est, found)
    else:
        assert est.bram >= found["bram"], (est, found)
