"""Two pipeline stages (``Target.pipeline``): where the compiler splits a net, what the top
level accepts as a split, and the interval the plan estimates. The RTL behaviour is in
``test_pipeline_rtl.py``."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from squeezeforge.cli.main import main
from squeezeforge.codegen.plan import compile_net, stage_interval, top_params
from squeezeforge.hw.interface import discard
from squeezeforge.hw.top import Top, TopParams, port_list, split_problem
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import Net, save_net
from squeezeforge.sim.manifest import Manifest, read_manifest
from squeezeforge.sim.random_layers import random_net
from squeezeforge.sim.reference import run_net
from squeezeforge.sim.target import Target, load_target, resolve_target


@pytest.fixture(scope="module")
def net() -> Net:
    return random_net(np.random.default_rng(9), n_tests=3, kind="pow2")


def test_latency_mode_is_unchanged_by_default(net: Net) -> None:
    plan = compile_net(net)
    assert plan.split is None and plan.interval_estimated == plan.cycles_estimated
    assert plan.log[-1] == "pipeline_stages: one image at a time"
    assert top_params(plan).split is None


def test_split_balances_the_stages(net: Net) -> None:
    # conv_pow2 | fc_pow2 | fc_codebook: two places to split; the first balances better.
    plan = compile_net(net, Target(pipeline=True))
    assert [s.engine for s in plan.steps] == ["conv_pow2", "fc_pow2", "fc_codebook"]
    assert plan.split == 1
    cycles = [s.cycles_estimated for s in plan.steps]
    assert plan.interval_estimated == max(cycles[0], cycles[1] + cycles[2]) + Top.IDLE_CYCLES
    assert plan.interval_estimated < plan.cycles_estimated
    assert "interval" in plan.log[-1] and "steps 0-0 then 1-2" in plan.log[-1]
    # The second stage's first step reads the boundary queue, which feeds it at once: it
    # saves the activation memory's prefetch against the same step one image at a time.
    single = compile_net(net)
    assert cycles[1] == single.steps[1].cycles_estimated - Top.PREFETCH_CYCLES
    assert cycles[0] == single.steps[0].cycles_estimated
    assert top_params(plan).split == 1


def test_a_net_on_one_engine_runs_one_image_at_a_time(net: Net) -> None:
    fc = net.layers[3]
    x = np.zeros((1, 27), np.int64)
    no_labels = np.zeros(1, np.int64)
    probe = Net("fc", (27,), fc.input_format, (fc,), x, no_labels, np.zeros((1, 12), np.int64))
    dense_only = probe.replace(test_outputs=run_net(probe, x))
    plan = compile_net(dense_only, Target(pipeline=True))
    assert plan.split is None
    assert plan.log[-1].startswith("pipeline_stages: no split into stages on disjoint engines")


def test_interval_is_the_slower_stage() -> None:
    assert stage_interval([400, 1000], [750, 500, 100]) == 1401
    assert stage_interval([10], [30, 5]) == 36


def test_top_refuses_a_split_it_cannot_run(net: Net) -> None:
    params = top_params(compile_net(net))
    steps = params.steps
    assert split_problem(steps, 1) is None
    assert split_problem(steps, 0) == "must be in 1..2"
    # Two stages on one engine.
    same = (steps[0], replace(steps[1], engine=steps[0].engine), steps[2])
    assert "runs in both stages" in split_problem(same, 1)
    # The second stage's first step reads something else than the first stage's output.
    moved = (steps[0], replace(steps[1], in_segments=((1, steps[1].in_count),)), steps[2])
    assert "exactly the first stage's last output" in split_problem(moved, 1)
    # A later step of the second stage reads the boundary tensor too: the second stage's
    # memory never held it.
    boundary = (steps[0].out_address, steps[2].in_count)
    twice = (*steps[:2], replace(steps[2], in_segments=(boundary,)))
    assert "reads a tensor of the first other than its output" in split_problem(twice, 1)
    with pytest.raises(ValueError, match=r"TopParams.split = 3: must be in 1..2"):
        TopParams(params.act_bits, steps, params.engines, split=3)


def test_pipelined_top_has_the_same_ports_and_a_ready(net: Net) -> None:
    one = Top(top_params(compile_net(net)))
    two = Top(top_params(compile_net(net, Target(pipeline=True))))
    discard(one)
    discard(two)
    assert port_list(one) == port_list(two)
    assert ("ready", "ready", "out", 1) in port_list(two)


def test_target_key_and_flag(tmp_path) -> None:
    assert "pipeline" not in Target().to_dict()  # Targets written before it keep their form
    t = Target(pipeline=True)
    assert t.to_dict()["pipeline"] is True and "pipelined" in repr(t)
    (tmp_path / "t.toml").write_text(t.to_toml())
    assert load_target(tmp_path / "t.toml").pipeline
    assert resolve_target("ecp5-25f", pipeline=True).name == "ecp5-25f+custom"
    with pytest.raises(UserError, match="target key 'pipeline': must be true or false, got 1"):
        Target(pipeline=1)


def test_generate_pipeline_flag(net: Net, tmp_path, capsys) -> None:
    save_net(net, tmp_path / "n.sfnet")
    args = ["generate", str(tmp_path / "n.sfnet"), "-o", str(tmp_path / "b"), "--pipeline"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "pipelined: steps 0-0 and 1-2 overlap; estimated interval" in out
    manifest = read_manifest(tmp_path / "b")
    plan = compile_net(net, Target(pipeline=True))
    assert manifest.split == 1 and manifest.interval_estimated == plan.interval_estimated
    assert manifest.target["pipeline"] is True
    # A manifest of a build made one image at a time names no split.
    raw = json.loads((tmp_path / "b" / "manifest.json").read_text())
    del raw["split"], raw["interval_estimated"]
    assert Manifest.from_dict(raw).split is None
