"""A tiny net end to end on Verilator: bit-exact, cycles as estimated, and failing loudly on a
corrupted golden value or a corrupted weight in the generated memories."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.cli.main import main
from squeezeforge.codegen.build import generate, write_build
from squeezeforge.codegen.plan import PASSES, Plan, place_weights
from squeezeforge.sim.ir import Conv2d, save_net
from squeezeforge.sim.netsim import simulate
from squeezeforge.sim.random_layers import random_net
from squeezeforge.sim.reference import run_net

pytestmark = pytest.mark.rtl

IMAGES = 5


@pytest.fixture(scope="module")
def net():
    # A seed whose outputs neither saturate nor vanish, so one wrong weight shows.
    return random_net(np.random.default_rng(9), n_tests=IMAGES, kind="pow2")


@pytest.fixture(scope="module")
def build(net, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "tiny"
    generate(net, out)
    return out


def test_bit_exact_and_cycles_as_estimated(build: Path, net) -> None:
    report = simulate(build, IMAGES)
    assert report["golden_consistent"]
    assert report["bit_exact"] == IMAGES, report["first_mismatch"]
    assert report["first_mismatch"] is None
    assert report["inputs"] == "test vectors"
    assert report["outputs"] == report["expected_outputs"]
    assert np.array_equal(np.asarray(report["outputs"]), net.test_outputs[:IMAGES])
    assert report["steps"][0]["engine"] == "conv_pow2"
    for step in report["steps"]:
        est, got = step["cycles_estimated"], step["cycles_measured"]
        assert abs(got - est) <= 0.02 * est + 1, step
    total = report["cycles_estimated"]
    assert abs(report["cycles_per_inference"] - total) <= 0.02 * total


def test_corrupted_golden_value_fails_the_command(build: Path, net, capsys, reseal_build) -> None:
    bad = net.test_outputs.copy()
    v = bad[IMAGES - 1, 2]
    bad[IMAGES - 1, 2] = v - 1 if v > net.output_format.min else v + 1
    save_net(net.replace(test_outputs=bad), build / "net.sfnet")
    try:
        # A net swapped into a build is refused before the simulator runs ...
        assert main(["simulate", str(build), "--images", str(IMAGES)]) == 2
        assert "net.sfnet is not the file" in capsys.readouterr().err
        # ... and one whose hashes were updated to match reaches the golden comparison.
        reseal_build(build)
        rc = main(["simulate", str(build), "--images", str(IMAGES)])
        out = capsys.readouterr().out
        assert rc == 1
        assert "GOLDEN MISMATCH" in out and f"'image': {IMAGES - 1}" in out
    finally:
        save_net(net, build / "net.sfnet")
        reseal_build(build)


def _one_weight_changed(net):
    """The net with one conv weight negated (or set), chosen so that the outputs change."""
    conv = net.layers[0]
    for idx in np.ndindex(conv.weight.shape):
        w = conv.weight.copy()
        w[idx] = -w[idx] if w[idx] else 1
        bad = net.replace(layers=(Conv2d(**{**conv.__dict__, "weight": w}), *net.layers[1:]))
        if not np.array_equal(run_net(bad, net.test_inputs), net.test_outputs):
            return bad
    raise AssertionError("no single weight changes this net's outputs")


def _plan_until(net, last: str) -> Plan:
    plan = Plan.start(net)
    for p in PASSES:
        plan = p(plan)
        if p.__name__ == last:
            return plan
    raise AssertionError(last)


def test_corrupted_weight_fails_and_names_the_layer(net, tmp_path: Path, capsys) -> None:
    # The build of the good net, but with the conv memory image of a net one weight apart:
    # the generated memories hold one wrong weight, the golden model is the good net.
    bad_images = _plan_until(_one_weight_changed(net), "place_weights").images["conv_pow2"]
    plan = _plan_until(net, "place_weights")
    good = plan.images["conv_pow2"]
    assert sum(a != b for a, b in zip(good["weight"], bad_images["weight"], strict=True)) == 1
    plan = replace(plan, images={**plan.images, "conv_pow2": bad_images})
    for p in PASSES[PASSES.index(place_weights) + 1 :]:
        plan = p(plan)
    write_build(plan, tmp_path / "bad")
    rc = main(["simulate", str(tmp_path / "bad"), "--images", str(IMAGES), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert report["bit_exact"] < IMAGES and report["golden_consistent"]
    assert report["first_mismatch"]["first_bad_layer"] == "conv1"


def test_simulate_takes_a_relative_build_path(build: Path, monkeypatch) -> None:
    monkeypatch.chdir(build.parent)
    report = simulate(build.name, 1)
    assert report["bit_exact"] == 1


def test_waves_are_written(build: Path) -> None:
    report = simulate(build, 1, waves=True)
    assert report["bit_exact"] == 1
    dump = Path(report["waves"])
    # FST where Verilator finds the lz4 headers, VCD otherwise (sim/rtl.py says which).
    assert dump.suffix in (".fst", ".vcd") and dump.stat().st_size > 1000


@pytest.mark.slow
def test_resources_command_per_engine_and_total(
    build: Path, capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert main(["resources", str(build), "--target", "ecp5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    engines = report["engines"]
    assert set(engines) == {"conv_pow2", "fc_pow2", "fc_codebook"}
    assert engines["conv_pow2"]["dsp"] == engines["fc_pow2"]["dsp"] == 0  # shifts, no multiplier
    total = report["total"]
    assert total["lut"] >= sum(e["lut"] for e in engines.values())
    assert main(["resources", str(build), "--target", "stratix"]) == 2
    assert "unknown target 'stratix'" in capsys.readouterr().err
    # Asked again, the build answers from its synthesis cache: no Yosys run, the same figures.
    from squeezeforge.codegen import report_resources

    def no_yosys(*args, **kwargs):
        raise AssertionError("Yosys ran again for the same Verilog")

    monkeypatch.setattr(report_resources, "synthesize_hierarchy", no_yosys)
    assert main(["resources", str(build), "--target", "ecp5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == report
    # Without the cache, Yosys runs (the spy above is what raises).
    (build / "synth_cache").rename(tmp_path / "moved")
    with pytest.raises(AssertionError, match="Yosys ran again"):
        main(["resources", str(build), "--target", "ecp5"])
