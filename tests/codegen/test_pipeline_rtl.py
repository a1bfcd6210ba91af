"""A net in two pipeline stages on Verilator, its images fed back to back: bit-exact both
ways, the stages' cycles exact, and the interval set by the slower stage.

The net is FC-bound (its second stage is the slower), so the first stage runs ahead until the
boundary queue is full and its last step waits on it: the backpressure path is exercised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from squeezeforge.cli.main import main
from squeezeforge.codegen.build import generate
from squeezeforge.hw.top import Top
from squeezeforge.sim.ir import Dense, FixedFormat, Net, SparseDense
from squeezeforge.sim.netsim import simulate
from squeezeforge.sim.random_layers import random_dense, random_net, random_sparse_dense
from squeezeforge.sim.reference import run_net
from squeezeforge.sim.target import Target

pytestmark = pytest.mark.rtl

IMAGES = 6


@pytest.fixture(scope="module")
def net() -> Net:
    rng = np.random.default_rng(3)
    base = random_net(rng, n_tests=IMAGES, kind="pow2")
    a = base.layers[3].input_format
    fc = random_dense(rng, kind="pow2", in_features=27, out_features=96, act_bits=8, name="fc1")
    fc = Dense(**{**fc.__dict__, "input_format": a, "output_format": a, "relu": True})
    sp = random_sparse_dense(
        rng, kind="codebook", in_features=96, out_features=5, act_bits=8, name="fc2", density=0.4
    )
    sp = SparseDense(**{**sp.__dict__, "input_format": a, "output_format": FixedFormat(8, 0)})
    probe = base.replace(layers=(*base.layers[:3], fc, sp))
    return probe.replace(test_outputs=run_net(probe, probe.test_inputs))


@pytest.fixture(scope="module")
def report(net: Net, tmp_path_factory: pytest.TempPathFactory) -> dict:
    build = tmp_path_factory.mktemp("pipe") / "b"
    manifest = generate(net, build, Target(pipeline=True))
    assert manifest.split == 1
    return {**simulate(build, IMAGES), "manifest": manifest}


def test_bit_exact_one_at_a_time_and_back_to_back(report: dict) -> None:
    assert report["pipelined"]
    assert report["bit_exact"] == IMAGES and report["golden_consistent"]
    assert report["streamed_bit_exact"] == IMAGES
    # One image at a time, every step as its model says: the conv exactly, the FC steps
    # within the rounding of a mean over images (their zeros are skipped).
    for step in report["steps"]:
        assert (
            abs(step["cycles_measured"] - step["cycles_estimated"])
            <= 0.02 * step["cycles_estimated"] + 1
        ), step
    assert report["steps"][0]["cycles_measured"] == report["steps"][0]["cycles_estimated"]


def test_interval_is_the_slower_stage(report: dict) -> None:
    split = report["manifest"].split
    first = report["steps"][0]["cycles_measured"]
    second = [sum(per[split:]) for per in report["step_cycles_per_image"]]
    assert min(second) > first  # FC-bound: the second stage sets the pace
    # The second stage takes the next image the cycle after it idles: its interval is exactly
    # its own cycles for that image plus the idle cycle.
    assert report["intervals"] == [s + Top.IDLE_CYCLES for s in second[1:]]
    # The first stage starts its next image as soon as it has idled, until the boundary queue
    # holds two images; then its last step waits for room.
    assert report["start_intervals"][0] == first + Top.IDLE_CYCLES
    assert max(report["start_intervals"]) > first + Top.IDLE_CYCLES
    # The estimate: the slower stage's estimated cycles plus the idle cycle.
    assert report["interval_estimated"] == report["manifest"].interval_estimated
    assert report["interval"] == pytest.approx(report["interval_estimated"], rel=0.03)
    assert report["interval"] < 0.8 * report["cycles_per_inference"]


def test_corrupted_golden_fails_back_to_back_too(
    report: dict, net: Net, capsys, golden_corrupted
) -> None:
    with golden_corrupted(Path(report["build"]), net, IMAGES - 1, 0):
        assert main(["simulate", report["build"], "--images", str(IMAGES)]) == 1
        out = capsys.readouterr().out
        assert f"images back to back: {IMAGES - 1}/{IMAGES} bit-exact" in out


def test_api_runs_own_inputs_back_to_back(report: dict, net: Net) -> None:
    import squeezeforge as sf

    # The same hardware generated again into the build: its Verilator model is reused.
    acc = sf.generate(net, Target(pipeline=True), out=report["build"], force=True)
    assert f"(interval {report['interval_estimated']})" in repr(acc)
    own = np.flip(net.test_inputs[:3], axis=-1).copy()  # not the stored test vectors
    result = acc.simulate(own)
    assert result.bit_exact and result.report["streamed_bit_exact"] == 3
    assert np.array_equal(result.ints.reshape(3, -1), run_net(net, own).reshape(3, -1))
    assert result.interval is not None and "interval" in repr(result)
