"""The Target's ``double_buffer`` (two input banks in the conv engine) without a simulator:
which steps the compiler chains, the engine's second bank in its size and resource estimate,
the Target key and the flag. On Verilator: ``test_double_buffer_rtl.py``."""

from __future__ import annotations

from dataclasses import replace

import pytest

from squeezeforge.cli.main import main
from squeezeforge.codegen.folding import plan_memories
from squeezeforge.codegen.plan import chain_steps, compile_net, top_params
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import save_net
from squeezeforge.sim.manifest import read_manifest
from squeezeforge.sim.target import Target, load_target, resolve_target

from .test_double_buffer_rtl import chain_net


def test_only_a_step_reading_exactly_the_step_before_on_its_engine_is_chained() -> None:
    net = chain_net(2)
    plan = compile_net(net, Target(double_buffer=True))
    assert [s.chained for s in plan.steps] == [False, True, True, False]
    assert "chain_steps: 1, 2" in plan.log
    # The FC step reads the last conv's output, but on another engine: not chained.
    assert plan.steps[3].engine != plan.steps[2].engine
    # A step reading anything else (here: only part of the words before) is not chained.
    steps = list(plan.steps)
    address, count = steps[1].in_segments[0]
    steps[1] = replace(steps[1], in_segments=((address, count - 1),), chained=False)
    again = chain_steps(replace(plan, steps=tuple(steps)))
    assert [s.chained for s in again.steps] == [False, False, True, False]


def test_the_second_bank_is_in_the_size_and_the_resource_estimate() -> None:
    net = chain_net(2)
    one, two = (compile_net(net, Target(double_buffer=db)) for db in (False, True))
    conv = one.steps[0].engine
    assert (one.params[conv].input_banks, two.params[conv].input_banks) == (1, 2)
    depth = {
        label: next(m.depth for m in plan_memories(plan)[conv] if m.name.endswith(".act_mem"))
        for label, plan in (("one", one), ("two", two))
    }
    assert depth["two"] == 2 * (1 << (depth["one"] - 1).bit_length())


def test_target_key_and_flag(tmp_path, capsys) -> None:
    assert "double_buffer" not in Target().to_dict()  # Targets written before it keep their form
    t = Target(double_buffer=True)
    assert t.to_dict()["double_buffer"] is True and "double-buffered" in repr(t)
    (tmp_path / "t.toml").write_text(t.to_toml())
    assert load_target(tmp_path / "t.toml").double_buffer
    assert resolve_target("ecp5-25f", double_buffer=True).name == "ecp5-25f+custom"
    with pytest.raises(UserError, match="target key 'double_buffer': must be true or false"):
        Target(double_buffer="yes")
    save_net(chain_net(2), tmp_path / "n.sfnet")
    args = ["generate", str(tmp_path / "n.sfnet"), "-o", str(tmp_path / "b"), "--double-buffer"]
    assert main(args) == 0
    assert "conv input double-buffered" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "b")
    assert manifest.target["double_buffer"] is True
    assert "chain_steps: 1, 2" in manifest.passes


def test_prefetch_needs_a_first_stage_that_begins_and_ends_on_one_engine() -> None:
    net = chain_net(2)
    plan = compile_net(net, Target(double_buffer=True, pipeline=True))
    assert plan.steps[0].prefetched and plan.stage_period is not None
    params = top_params(plan)
    assert params.prefetch
    # Without two stages, or with a first stage ending on another engine: refused.
    with pytest.raises(ValueError, match="TopParams.prefetch: needs two stages"):
        replace(params, split=None)
    latency = compile_net(net, Target(double_buffer=True))
    assert latency.stage_period is None and not top_params(latency).prefetch
    assert not latency.steps[0].prefetched  # one image at a time: nothing to prefetch
