"""Two input banks in the conv engine, in a whole net on Verilator (the Target's
``double_buffer``): a conv step that reads exactly the conv step before it takes that step's
outputs as they leave the engine. Three convs in a row, so one step is chained to the step
before and the next is chained to it, in two pipeline stages (one image at a time, then back to
back)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from squeezeforge.cli.main import main
from squeezeforge.codegen.build import generate
from squeezeforge.codegen.plan import compile_net
from squeezeforge.sim.ir import Conv2d, Dense, Flatten, MaxPool2d, Net
from squeezeforge.sim.netsim import simulate
from squeezeforge.sim.numerics import FixedFormat
from squeezeforge.sim.random_layers import random_activations, random_conv2d, random_dense
from squeezeforge.sim.reference import run_net
from squeezeforge.sim.target import Target

pytestmark = pytest.mark.rtl

IMAGES = 6


def chain_net(images: int = IMAGES) -> Net:
    """conv + pool, conv, 1x1 conv + pool, dense: the second and third convs read exactly what
    the conv before them wrote."""
    rng = np.random.default_rng(5)
    inp, a = FixedFormat(8, 4), FixedFormat(8, 3)

    def conv(name: str, cin: int, cout: int, k: int, fmt: FixedFormat) -> Conv2d:
        c = random_conv2d(
            rng,
            kind="pow2",
            in_channels=cin,
            out_channels=cout,
            kernel=(k, k),
            stride=1,
            padding=k // 2,
            act_bits=8,
            relu=True,
            name=name,
        )
        return Conv2d(**{**c.__dict__, "input_format": fmt, "output_format": a})

    fc = random_dense(rng, kind="pow2", in_features=8, out_features=5, act_bits=8, name="fc")
    fc = Dense(**{**fc.__dict__, "input_format": a, "output_format": FixedFormat(8, 0)})
    layers = (
        conv("conv1", 1, 3, 3, inp),
        MaxPool2d("pool1"),
        conv("conv2", 3, 4, 3, a),
        conv("conv3", 4, 2, 1, a),
        MaxPool2d("pool3"),
        Flatten("flatten"),
        fc,
    )
    x = random_activations(rng, inp, (images, 1, 8, 8))
    labels, outputs = np.zeros(images, np.int64), np.zeros((images, 5), np.int64)
    probe = Net("chain", (1, 8, 8), inp, layers, x, labels, outputs)
    return probe.replace(test_outputs=run_net(probe, x))


@pytest.fixture(scope="module")
def net() -> Net:
    return chain_net()


@pytest.fixture(scope="module")
def report(net: Net, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two stages (the chain is the first stage's); simulate runs its images one at a time,
    through the same sequencer as a latency-mode build, and then back to back."""
    build = tmp_path_factory.mktemp("chain") / "b"
    manifest = generate(net, build, Target(double_buffer=True, pipeline=True))
    assert manifest.split == 3
    assert manifest.passes[-1].endswith("the next image's pixels load during step 2")
    return {**simulate(build, IMAGES), "manifest": manifest}


def test_the_plan_chains_the_convs_that_read_the_conv_before(net: Net) -> None:
    plan = compile_net(net, Target(double_buffer=True))
    assert [s.chained for s in plan.steps] == [False, True, True, False]
    assert plan.params[plan.steps[0].engine].input_banks == 2
    plain = compile_net(net, Target())
    assert not any(s.chained for s in plain.steps)
    assert plain.params[plain.steps[0].engine].input_banks == 1
    # A chained step's load hides behind the step before; the others cost the same.
    pairs = zip(plain.steps, plan.steps, strict=True)
    saved = [p.cycles_estimated - s.cycles_estimated for p, s in pairs]
    assert saved[0] == saved[3] == 0
    assert saved[1] > 0.8 * plan.steps[1].in_count and saved[2] > 0.8 * plan.steps[2].in_count


def test_bit_exact_and_every_conv_step_exact(report: dict, net: Net) -> None:
    assert report["bit_exact"] == IMAGES and report["golden_consistent"]
    for step in report["steps"][:3]:  # the conv steps, chained or not: exactly as estimated
        assert step["cycles_measured"] == step["cycles_estimated"], step
    assert report["streamed_bit_exact"] == IMAGES
    # Conv-bound: the first stage sets the pace, and the interval is its estimate exactly:
    # the next image's pixels load while the last conv finishes, so the first conv's load
    # goes too, the next image's first conv computes while the last one's outputs leave, and
    # the stage never idles between images.
    plan = compile_net(net, Target(double_buffer=True, pipeline=True))
    assert plan.stage_period is not None
    one_at_a_time = sum(step["cycles_measured"] for step in report["steps"][:3])
    # Most of the 64-pixel load goes (the last conv, 49 cycles, is shorter than it).
    assert plan.stage_period < one_at_a_time - 0.6 * 64
    assert report["interval"] == report["interval_estimated"] == plan.interval_estimated
    assert report["intervals"] == [report["interval_estimated"]] * (IMAGES - 1)


def test_corrupted_golden_fails(report: dict, net: Net, capsys, golden_corrupted) -> None:
    with golden_corrupted(Path(report["build"]), net, 1, 2):
        assert main(["simulate", report["build"], "--images", str(IMAGES)]) == 1
        out = capsys.readouterr().out
        assert f"bit-exact images: {IMAGES - 1}/{IMAGES}" in out
        assert f"images back to back: {IMAGES - 1}/{IMAGES} bit-exact" in out
