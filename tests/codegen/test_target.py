"""The Target drives the compiler: engine sizes, the manifest, and storage bytes that equal the
generated memories' bytes (the compression report's numbers describe the built hardware)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from squeezeforge.cli.main import main
from squeezeforge.codegen.build import generate
from squeezeforge.codegen.plan import Plan, compile_net
from squeezeforge.codegen.report_resources import utilization
from squeezeforge.models.compress import net_costs
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import save_net
from squeezeforge.sim.random_layers import random_net
from squeezeforge.sim.target import Target, resolve_target, target_from_dict

# Every memory of these nets holds at least two words on these Targets: an engine memory is
# never built shallower than two words, so a layer needing one word would leave one unused.
TARGETS = {
    "conv2x2_fc2": Target(conv_rows=2, conv_cols=2, fc_pes=2),
    "conv4x1_fc4_index2": Target(conv_rows=4, conv_cols=1, fc_pes=4, index_bits=2),
    "conv8x1_fc1_index1": Target(conv_rows=8, conv_cols=1, fc_pes=1, index_bits=1),
}


def _bytes(bits: int) -> int:
    return -(-bits // 8)


def generated_memory_bytes(plan: Plan) -> dict[str, dict[str, int]]:
    """Per step's layer: the bytes of its engine's memories as elaborated (depth x width, one
    copy per PE), for a plan where each engine runs one layer."""
    out = {}
    for step in plan.steps:
        assert [s.engine for s in plan.steps].count(step.engine) == 1
        p = plan.params[step.engine]
        images = plan.images[step.engine]
        if step.engine.startswith("conv"):
            parts = {
                "weights": len(images["weight"]) * p.weight_word_bits,
                "index": 0,
                "codebook": 0,
                "bias": len(images["bias"]) * p.cols * p.acc_bits,
            }
        else:
            init = SimpleNamespace(**images)
            entry_words = init.entry.size  # n_pe memories of entry_depth words
            parts = {
                "weights": entry_words * p.weight_bits,
                "index": entry_words * p.index_bits + init.ptr.size * p.ptr_value_shape.width,
                # The table lives in every PE.
                "codebook": p.n_pe * init.codebook.size * p.codebook_value_bits
                if p.weight_kind == "codebook"
                else 0,
                "bias": init.bias.size * p.bias_bits,
            }
        parts = {k: _bytes(v) for k, v in parts.items()}
        out[step.layer.name] = {**parts, "total": sum(parts.values())}
    return out


def report_bytes(net, target: Target) -> dict[str, dict[str, int]]:
    layers, _ = net_costs(net, target)
    return {e["name"]: e["bytes"] for e in layers}


@pytest.mark.parametrize("kind", ["fixed", "pow2"])
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_report_bytes_equal_generated_memories(name: str, kind: str) -> None:
    net = random_net(np.random.default_rng(5), kind=kind)
    target = TARGETS[name]
    plan = compile_net(net, target)
    assert report_bytes(net, target) == generated_memory_bytes(plan)


def test_report_for_another_target_disagrees_with_the_memories() -> None:
    net = random_net(np.random.default_rng(5))
    built = generated_memory_bytes(compile_net(net, TARGETS["conv2x2_fc2"]))
    for other in (Target(conv_rows=2, conv_cols=2, fc_pes=4), Target(conv_cols=1, fc_pes=2)):
        got = report_bytes(net, other)
        assert got != built
        # The comparison sees the difference in the layers the changed knob touches.
        changed = {n for n in built if got[n] != built[n]}
        assert changed == ({"fc1", "fc2"} if other.fc_pes == 4 else {"conv1"})


def test_manifest_records_the_target_and_storage(tmp_path: Path) -> None:
    net = random_net(np.random.default_rng(5))
    target = TARGETS["conv4x1_fc4_index2"]
    manifest = generate(net, tmp_path / "b", target)
    assert manifest.target == target.to_dict()
    assert target_from_dict(manifest.target) == target
    by_layer = report_bytes(net, target)
    for step in manifest.steps:
        assert step.storage_bytes == by_layer[step.layers[0]]
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["target"]["fc_pes"] == 4


def test_default_target_keeps_the_headline_hardware() -> None:
    net = random_net(np.random.default_rng(0), n_tests=4)
    plan = compile_net(net)
    assert plan.target == Target()
    assert (plan.params["conv_mac"].rows, plan.params["conv_mac"].cols) == (4, 4)
    assert plan.params["fc_fixed"].n_pe == plan.params["fc_codebook"].n_pe == 8
    assert plan.params["fc_fixed"].fifo_depth == 8 and plan.params["fc_fixed"].index_bits == 4


def test_more_pes_fewer_fc_cycles() -> None:
    net = random_net(np.random.default_rng(0), n_tests=4)
    one = compile_net(net, Target(fc_pes=1))
    many = compile_net(net, Target(fc_pes=16))
    fc1 = [s for s in one.steps if s.layers == ("fc1",)][0]
    fc16 = [s for s in many.steps if s.layers == ("fc1",)][0]
    assert fc16.cycles_estimated < fc1.cycles_estimated


def test_act_bits_policy() -> None:
    net = random_net(np.random.default_rng(0), n_tests=2)
    assert compile_net(net, Target(act_bits=12)).act_bits == 12
    with pytest.raises(UserError, match="target key 'act_bits': 4 bits, but the net has 8-bit"):
        compile_net(net, Target(act_bits=4))


def test_preset_by_name_equals_the_same_flags(tmp_path: Path, capsys) -> None:
    net_file = save_net(random_net(np.random.default_rng(9), n_tests=1), tmp_path / "n.sfnet")
    runs = {}
    for label, flags in (
        ("preset", ["--target", "ecp5-85f"]),
        ("flags", ["--conv-array", "8x8", "--fc-pes", "16"]),
    ):
        argv = ["generate", str(net_file), "-o", str(tmp_path / label), "--json", *flags]
        assert main(argv) == 0
        runs[label] = json.loads(capsys.readouterr().out)
    assert runs["preset"]["target"]["name"] == "ecp5-85f"
    assert runs["preset"]["target"]["family"] == "ecp5"
    assert runs["preset"]["engines"] == runs["flags"]["engines"]
    assert runs["preset"]["cycles_estimated"] == runs["flags"]["cycles_estimated"]
    top = {label: (tmp_path / label / "top.v").read_text() for label in runs}
    assert top["preset"] == top["flags"]


def test_bad_target_flag_is_one_line(tmp_path: Path, capsys) -> None:
    net_file = save_net(random_net(np.random.default_rng(9), n_tests=1), tmp_path / "n.sfnet")
    argv = ["generate", str(net_file), "-o", str(tmp_path / "x"), "--fc-pes", "3"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "squeezeforge generate: error: target key 'fc_pes': must be a power of two, got 3"
    )
    assert not (tmp_path / "x").exists()


def test_utilization_against_the_budget() -> None:
    budget = resolve_target("ice40-up5k").budget.to_dict()
    total = {"lut": 2640, "ff": 528, "dsp": 8, "bram": 15}
    # 120 kbit of 4 kbit EBR: 30 blocks.
    assert utilization(total, budget, "ice40") == {"lut": 0.5, "ff": 0.1, "dsp": 1.0, "bram": 0.5}
    hx8k = resolve_target("ice40-hx8k").budget.to_dict()
    assert utilization({**total, "dsp": 1}, hx8k, "ice40")["dsp"] == float("inf")
    assert utilization({**total, "dsp": 0}, hx8k, "ice40")["dsp"] == 0.0


def test_generate_builds_for_the_target_the_net_was_compressed_for(tmp_path: Path, capsys) -> None:
    recorded = resolve_target("ice40-up5k")
    net = random_net(np.random.default_rng(4), n_tests=1)
    net = net.replace(metadata={**net.metadata, "target": recorded.to_dict()})
    assert generate(net, tmp_path / "a").target == recorded.to_dict()
    path = save_net(net, tmp_path / "n.sfnet")
    # A flag overrides one knob of the recorded Target; --target replaces it.
    assert main(["generate", str(path), "-o", str(tmp_path / "b"), "--fc-pes", "2", "--json"]) == 0
    t = json.loads(capsys.readouterr().out)["target"]
    assert t["name"] == "ice40-up5k+custom" and t["fc_pes"] == 2
    assert t["conv_rows"] == recorded.conv_rows and t["budget"] == recorded.to_dict()["budget"]
    assert main(["generate", str(path), "-o", str(tmp_path / "c"), "--target", "ecp5-85f"]) == 0
    assert "target ecp5-85f" in capsys.readouterr().out
    bad = net.replace(metadata={**net.metadata, "target": {"fc_pes": 3}})
    assert (
        main(["generate", str(save_net(bad, tmp_path / "bad.sfnet")), "-o", str(tmp_path / "d")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the net's recorded target" in err[0]
