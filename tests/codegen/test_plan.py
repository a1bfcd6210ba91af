"""The compiler's passes: each one testable alone, the whole list on a small net."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.codegen.build import BuildError, generate, read_manifest
from squeezeforge.codegen.plan import PASSES, Plan, compile_net
from squeezeforge.sim.ir import Conv2d, Dense, Flatten, IRError, MaxPool2d, Net
from squeezeforge.sim.numerics import CodebookWeights
from squeezeforge.sim.random_layers import random_dense, random_net


@pytest.fixture(scope="module")
def net():
    return random_net(np.random.default_rng(0), n_tests=4)


def test_passes_one_by_one(net) -> None:
    plan = Plan.start(net)
    names = []
    for p in PASSES:
        plan = p(plan)
        names.append(p.__name__)
    assert names[:4] == ["check_supported", "fuse_steps", "place_activations", "assign_engines"]
    assert len(plan.log) == len(PASSES)
    # conv + pool fused, flatten free, two fully connected steps.
    assert [s.layers for s in plan.steps] == [("conv1", "pool1"), ("fc1",), ("fc2",)]
    assert plan.steps[0].pool and plan.steps[0].out_shape == (3, 3, 3)
    assert [s.engine for s in plan.steps] == ["conv_mac", "fc_fixed", "fc_codebook"]
    assert all(s.cycles_estimated > 0 for s in plan.steps)
    assert plan.steps[0].cfg["pool"] == 1 and plan.steps[0].cfg["shift"] == net.layers[0].shift
    # The input streams in, the output streams out; in between, two regions ping-pong.
    assert [(s.from_pixels, s.to_scores) for s in plan.steps] == [
        (True, False),
        (False, False),
        (False, True),
    ]
    assert plan.steps[1].in_segments == ((0, 27),) and plan.steps[1].out_address == 27


def test_layers_share_an_engine_at_different_bases(net) -> None:
    # Two fixed-point FC layers on one unit: the second starts where the first ends.
    fc2 = net.layers[4]
    stored = fc2.stored_dense()
    from squeezeforge.sim.ir import Dense
    from squeezeforge.sim.numerics import FixedWeights

    fmt = FixedWeights(8, 4)
    dense = Dense(
        "fc2",
        fc2.in_features,
        fc2.out_features,
        fc2.input_format,
        fmt,
        fc2.output_format,
        fc2.relu,
        np.clip(stored, -128, 127),
        np.zeros(fc2.out_features, np.int64),
    )
    net2 = net.replace(layers=(*net.layers[:4], dense))
    from squeezeforge.sim.reference import run_net

    net2 = net2.replace(test_outputs=run_net(net2, net2.test_inputs))
    plan = compile_net(net2)
    fc_steps = [s for s in plan.steps if s.engine == "fc_fixed"]
    assert len(fc_steps) == 2
    assert fc_steps[0].cfg["ptr_base"] == 0
    assert fc_steps[1].cfg["ptr_base"] == net.layers[3].in_features + 1


def test_unsupported_layers_fail_before_any_work(net) -> None:
    fc = random_dense(
        np.random.default_rng(1), in_features=9, out_features=3, act_bits=8, name="fc"
    )
    fc = Dense(**{**fc.__dict__, "input_format": net.input_format})
    x = net.test_inputs
    bad_pool = Net(
        "lonely-pool",
        net.input_shape,
        net.input_format,
        (MaxPool2d("lonely"), Flatten("flat"), fc),
        x,
        net.test_labels,
        np.zeros((len(x), 3), np.int64),
    )
    with pytest.raises(IRError, match="layer 'lonely', field 'kind': a max pool must follow"):
        compile_net(bad_pool)
    conv = net.layers[0]
    table = CodebookWeights(index_bits=1, value_bits=8, frac=4, table=(0, 3))
    coded = Conv2d(
        **{
            **conv.__dict__,
            "weight_format": table,
            "weight": (conv.weight != 0) * 1,
            "bias": np.zeros_like(conv.bias),
        }
    )
    with pytest.raises(IRError, match="layer 'conv1', field 'weight_format'"):
        compile_net(net.replace(layers=(coded, *net.layers[1:])))


def test_generate_writes_atomically_and_checks_builds(net, tmp_path: Path) -> None:
    out = tmp_path / "b"
    manifest = generate(net, out)
    assert (out / "top.v").read_text().count("module top") == 1
    assert read_manifest(out) == manifest
    assert sorted(p.name for p in (out / "engines").iterdir()) == [
        "conv_mac.v",
        "fc_codebook.v",
        "fc_fixed.v",
    ]
    # A second generate replaces the folder whole; nothing temporary is left beside it.
    generate(net, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    # Missing, foreign-version and half-written builds are one clear error each.
    with pytest.raises(BuildError, match="no such build folder"):
        read_manifest(tmp_path / "nothing")
    m = json.loads((out / "manifest.json").read_text())
    m["version"] = 99
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BuildError, match="build version 99"):
        read_manifest(out)
    (out / "manifest.json").unlink()
    with pytest.raises(BuildError, match="not a finished build"):
        read_manifest(out)


def test_interrupted_generate_keeps_previous_build(net, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "b"
    generate(net, out)
    before = (out / "top.v").read_text()
    from squeezeforge.codegen import build

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "manifest_of", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(net, out)
    assert (out / "top.v").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
