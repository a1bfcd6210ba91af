"""Whole-net fuzzing (codegen/fuzz.py): drawn mixed-engine nets (graphs included) compile with
small engine shapes; on Verilator one of them, with a residual add or a concat, runs bit exact
with every step's cycles as estimated, and the checks fail on a corrupted golden value and on a
corrupted cycle estimate."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed

from squeezeforge.codegen.fuzz import (
    build_whole_net,
    check_whole_net,
    compile_with_shapes,
    run_whole_net,
)
from squeezeforge.sim.fuzz import mixed_nets
from squeezeforge.sim.ir import Add, Concat, load_net, save_net
from squeezeforge.sim.manifest import manifest_checksum

REGRESSIONS = Path(__file__).resolve().parents[2] / "tests" / "regressions"


def test_drawn_mixed_nets_compile_with_their_engine_shapes() -> None:
    @settings(
        max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(mixed_nets(images=2))
    def check(net) -> None:
        plan = compile_with_shapes(net)
        shapes = net.metadata["fuzz"]["engines"]
        for name, binding in plan.engines.items():
            if name.startswith("conv"):
                assert (binding.rows, binding.cols) == (
                    shapes["conv"]["rows"],
                    shapes["conv"]["cols"],
                )
            else:
                assert binding.n_pe == shapes["fc"]["n_pe"]

    check()


def _mixed_net():
    """A drawn graph net (a residual add or a concat) with conv and FC engines, three or more
    of them, whose outputs vary over its images."""
    found = []

    @settings(
        max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @hypothesis_seed(5)
    @given(mixed_nets(images=4))
    def collect(net) -> None:
        engines = compile_with_shapes(net).engines
        families = {e.split("_")[0] for e in engines}
        graph = any(isinstance(layer, Add | Concat) for layer in net.layers)
        varied = len(np.unique(net.test_outputs.reshape(4, -1), axis=0)) > 1
        if graph and families == {"conv", "fc"} and len(engines) >= 3 and varied and not found:
            found.append(net)

    collect()
    return found[0]


@pytest.mark.rtl
def test_whole_net_matches_and_checks_fail_on_corrupted_data(tmp_path: Path) -> None:
    net = _mixed_net()
    build = build_whole_net(net, tmp_path / "build")
    good = check_whole_net(net, build)
    assert not good.failed, good.problems
    assert good.cycle_checks == len(compile_with_shapes(net).steps) >= 3
    assert good.mismatched_images == 0

    # A corrupted golden value (the build's copy of the net is what simulate compares with).
    bad = net.test_outputs.copy()
    bad[-1].flat[0] += 1 if bad[-1].flat[0] < net.output_format.max else -1
    save_net(net.replace(test_outputs=bad), build / "net.sfnet")
    _reseal(build)  # past the build's own integrity check, to reach the comparison
    outcome = check_whole_net(net, build)
    assert outcome.mismatched_images == 1 and outcome.cycle_misses == 0
    assert any("stored outputs differ" in p for p in outcome.problems)
    save_net(net, build / "net.sfnet")

    # A corrupted cycle estimate of one step.
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["steps"][1]["cycles_estimated"] += 20
    (build / "manifest.json").write_text(json.dumps(manifest))
    _reseal(build)
    outcome = check_whole_net(net, build)
    assert outcome.cycle_misses == 1 and outcome.mismatched_images == 0
    assert "estimated" in outcome.problems[0]


def _reseal(build: Path) -> None:
    """Record the build's files as they are now in its manifest, as generate would have."""
    path = build / "manifest.json"
    manifest = json.loads(path.read_text())
    for name in manifest["files"]:
        manifest["files"][name] = hashlib.sha256((build / name).read_bytes()).hexdigest()
    manifest["checksum"] = manifest_checksum(manifest)
    path.write_text(json.dumps(manifest, indent=1))


def _whole_net_regressions() -> list[Path]:
    return sorted(
        p
        for p in REGRESSIONS.glob("*.sfnet")
        if load_net(p).metadata.get("fuzz", {}).get("engine") == "whole-net"
    )


@pytest.mark.rtl
@pytest.mark.parametrize("path", _whole_net_regressions(), ids=lambda p: p.stem)
def test_saved_whole_net_regressions_match(path: Path, tmp_path: Path) -> None:
    net = load_net(path)
    outcome = run_whole_net(net, tmp_path)
    assert np.array_equal(net.test_outputs.shape[:1], [len(net.test_inputs)])
    assert not outcome.failed, "\n".join(outcome.problems)
