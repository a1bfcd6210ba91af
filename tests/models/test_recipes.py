"""Recipes, the compress pipeline, its report and the CLI."""

import argparse
import json

import numpy as np
import pytest
from torch import nn

from squeezeforge.cli import compress as compress_cmd
from squeezeforge.models.compress import (
    INQ,
    FixedPoint,
    MagnitudePrune,
    WeightShare,
    compress,
    load_recipe,
    net_costs,
    parse_recipe,
    pipeline,
    shipped_recipes,
)
from squeezeforge.models.quant import prepare
from squeezeforge.models.train import save_checkpoint
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import load_net, net_to_bytes
from squeezeforge.sim.target import Target

# Small and fast: one epoch per fine-tuning step.
FAST = {
    "seed": 3,
    "steps": [
        {"pass": "prune", "layers": "fc", "sparsity": {"fc1": 0.8, "fc2": 0.9}, "epochs": 1},
        {"pass": "share", "layers": "fc", "bits": 4, "epochs": 1},
        {"pass": "fixed-point", "epochs": 1, "distill": True},
    ],
    "export": {"sparse": "auto"},
}


def test_shipped_recipes_parse():
    assert shipped_recipes() == [
        "deep-compression",
        "fixed8",
        "inq5",
        "low-rank",
        "low-rank-inq5",
        "prune-fc",
        "smallest",
        "student",
    ]
    dc = load_recipe("deep-compression")
    assert [type(s) for s in dc.steps] == [MagnitudePrune, WeightShare, FixedPoint]
    assert dc.steps[0].layers == "fc" and dc.steps[1].bits == 4
    inq = load_recipe("inq5")
    assert isinstance(inq.steps[0], INQ) and inq.steps[0].bits == 5
    assert tuple(inq.steps[0].portions) == (0.5, 0.75, 0.875, 1.0)
    assert load_recipe("fixed8").steps[0].finetune.distillation is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, r"top level: unknown key 'colour'"),
        ({"steps": [{"pass": "inq", "bitz": 5}]}, r"steps\[0\] \(inq\): unknown key 'bitz'"),
        ({"steps": [{"pass": "inq", "bits": 9}]}, r"\(inq\): bits = 9 is out of range 2..6"),
        ({"steps": [{"pass": "fixed-point", "weight_bits": 1}]}, r"weight_bits = 1 is out of"),
        ({"steps": [{"pass": "share", "bits": "four"}]}, r"bits must be an integer, got 'four'"),
        ({"steps": [{"pass": "prune"}]}, r"exactly one of sparsity, global_sparsity, threshold"),
        ({"steps": [{"pass": "prune", "sparsity": 1.5}]}, r"sparsity = 1.5 is out of range"),
        ({"steps": [{"pass": "prune", "sparsity": {"fc1": -1}}]}, r"sparsity.fc1 = -1 is out"),
        ({"steps": [{"pass": "inq", "portions": [0.5, 0.9]}]}, r"portions must end at 1.0"),
        ({"steps": [{"pass": "inq", "portions": [0.7, 0.5, 1]}]}, r"must increase strictly"),
        ({"steps": [{"pass": "quantum"}]}, r"unknown pass 'quantum'"),
        ({"steps": [{"pass": "finetune", "distill": {"temp": 2}}]}, r"unknown key 'temp'"),
        ({"steps": [{"pass": "finetune", "lr": 0}]}, r"lr = 0 is out of range"),
        ({"steps": [{"pass": "share", "layers": "dense"}]}, r"layers = 'dense'; use one of"),
        ({"steps": []}, r"steps must be a non-empty array"),
        ({"export": {"n_pe": 4}}, r"export: n_pe moved to the Target \(key 'fc_pes'"),
        ({"export": {"index_bits": 4}}, r"export: index_bits moved to the Target"),
    ],
)
def test_recipe_errors_name_the_key(change, message):
    recipe = {"steps": [{"pass": "fixed-point"}], **change}
    with pytest.raises(UserError, match=message):
        parse_recipe(recipe, "mine")


def test_recipe_files_and_names(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = [ {pass = 'inq' ")
    with pytest.raises(UserError, match="is not valid TOML"):
        load_recipe(bad)
    with pytest.raises(UserError, match=r"no shipped recipe of that name \(shipped: deep-comp"):
        load_recipe("fixed9")
    good = tmp_path / "mine.toml"
    good.write_text('[[steps]]\npass = "fixed-point"\nweight_bits = 6\n')
    assert load_recipe(good).name == "mine" and load_recipe(good).steps[0].weight_bits == 6


def test_layer_names_are_checked_before_training(monkeypatch, digits, mlp_short, tmp_path):
    def no_training(*args, **kwargs):
        raise AssertionError("training started before the recipe was checked")

    monkeypatch.setattr("squeezeforge.models.compress.base.fit", no_training)
    recipe = parse_recipe({"steps": [{"pass": "prune", "sparsity": {"conv9": 0.5}, "epochs": 3}]})
    with pytest.raises(UserError, match=r"sparsity: no layer 'conv9' in this model"):
        compress(mlp_short, recipe, tmp_path / "x.sfnet", data=digits)
    recipe = parse_recipe({"steps": [{"pass": "inq", "layers": ["fc7"], "epochs": 3}]})
    with pytest.raises(UserError, match=r"no layer 'fc7' in this model \(layers: fc1, fc2, fc3;"):
        compress(mlp_short, recipe, tmp_path / "x.sfnet", data=digits)
    lstm = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.LSTM(16, 8))
    with pytest.raises(UserError, match=r"module '2' \(LSTM\) cannot be expressed"):
        compress(lstm, "fixed8", tmp_path / "x.sfnet", data=digits)
    assert not (tmp_path / "x.sfnet").exists()


def test_same_seed_gives_identical_bytes(tmp_path, digits, mlp_short):
    recipe = parse_recipe(FAST, "fast")
    a = compress(mlp_short, recipe, tmp_path / "a.sfnet", data=digits, model_name="mlp")
    b = compress(mlp_short, recipe, tmp_path / "b.sfnet", data=digits, model_name="mlp")
    c = compress(mlp_short, recipe, tmp_path / "c.sfnet", data=digits, model_name="mlp", seed=4)
    assert (tmp_path / "a.sfnet").read_bytes() == (tmp_path / "b.sfnet").read_bytes()
    assert (tmp_path / "a.sfnet").read_bytes() != (tmp_path / "c.sfnet").read_bytes()
    assert a["layers"] == b["layers"] and a["accuracy"] == b["accuracy"]
    assert c["seed"] == 4


def test_report_counts_bytes_and_agrees_with_reference(tmp_path, digits, mlp_short):
    report = compress(mlp_short, parse_recipe(FAST, "fast"), tmp_path / "n.sfnet", data=digits)
    net = load_net(tmp_path / "n.sfnet")
    acc = report["accuracy"]
    assert set(acc) == {"float", "fake_quant", "reference", "agreement"}
    assert acc["agreement"] >= 0.995 and acc["fake_quant"] == acc["reference"]
    assert abs(acc["reference"] - acc["float"]) < 0.1
    by_name = {e["name"]: e for e in report["layers"]}
    fc1, fc3 = by_name["fc1"], by_name["fc3"]
    assert fc1["storage"] == "sparse" and fc1["weight_format"] == "codebook"
    assert fc1["density"] == pytest.approx(0.2, abs=0.01) and fc1["params"] == 64 * 300
    layer = next(layer for layer in net.layers if layer.name == "fc1")
    # The default Target: 8 FC PEs, each holding as many entry words as the busiest one.
    csc = layer.csc(8, 4)
    words = 8 * int(csc.pe_entries.max())
    assert fc1["entries"] == csc.entries >= fc1["nonzeros"]
    assert fc1["bytes"]["weights"] == -(-words * 4 // 8)
    pointer_bits = int(csc.pe_entries.max()).bit_length()
    assert fc1["bytes"]["index"] == -(-(words * 4 + 8 * 65 * pointer_bits) // 8)
    assert fc1["bytes"]["codebook"] == 8 * 16 * 8 // 8  # a copy per PE
    assert fc1["bytes"]["bias"] == -(-8 * 38 * layer.bias_bits // 8)  # ceil(300 / 8) per PE
    assert fc1["macs"] == {"dense": 19200, "effective": fc1["nonzeros"]}
    # fc3 is not pruned: the FC unit holds it at full density, an index per entry all the same.
    assert fc3["storage"] == "dense" and fc3["engine"] == "fc"
    # 10 outputs over 8 PEs: two PEs own two rows, and every bank is as deep as theirs.
    assert fc3["entries"] == 1000 and fc3["bytes"]["weights"] == 8 * 2 * 100 * 4 // 8
    assert fc3["bytes"]["index"] > fc3["bytes"]["weights"]
    # Fewer PEs, less padding in the banks: the same net costs less on a 1-PE Target.
    one_pe = {e["name"]: e for e in net_costs(net, Target(fc_pes=1))[0]}
    assert one_pe["fc1"]["bytes"]["total"] < fc1["bytes"]["total"]
    assert report["target"] == Target().to_dict()
    totals = report["totals"]
    assert totals["float_bytes"] == 4 * (50200 + 410)
    assert report["compression_ratio"] == pytest.approx(totals["float_bytes"] / totals["bytes"])
    assert net.metadata["recipe"] == "fast" and net.metadata["seed"] == 3


def test_missing_fixed_point_step_is_added(tmp_path, digits, mlp_short):
    recipe = parse_recipe({"steps": [{"pass": "prune", "sparsity": 0.5}]}, "prune-only")
    report = compress(mlp_short, recipe, tmp_path / "p.sfnet", data=digits)
    assert [s["pass"] for s in report["steps"]] == ["prune", "fixed-point"]
    assert report["accuracy"]["agreement"] == 1.0


def test_cli_compress(tmp_path, capsys, digits, cnn_short, monkeypatch):
    monkeypatch.setattr(pipeline, "load_digits", lambda: digits)
    ckpt = save_checkpoint(tmp_path / "cnn.pt", "cnn", cnn_short)
    parser = argparse.ArgumentParser()
    compress_cmd.register(parser.add_subparsers())
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('[[steps]]\npass = "inq"\nportions = [0.5, 1.0]\nepochs = 1\n')
    out = tmp_path / "cnn.sfnet"
    md = tmp_path / "report.md"
    argv = ["compress", str(ckpt), "--recipe", str(recipe), "-o", str(out), "--json", "--report"]
    args = parser.parse_args([*argv, str(md), "--target", "ice40-up5k", "--fc-pes", "2"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["recipe"] == "tiny" and report["model"] == "cnn"
    assert {"float", "reference"} <= set(report["accuracy"]) and report["compression_ratio"] > 2
    assert report["target"]["name"] == "ice40-up5k+custom" and report["target"]["fc_pes"] == 2
    assert "on target `ice40-up5k+custom`: conv 2x4, 2 FC PEs" in md.read_text()
    assert [e["weight_format"] for e in report["layers"]] == ["pow2"] * 5
    assert "| conv1 | dense | pow2 |" in md.read_text()
    assert np.array_equal(load_net(out).test_labels, digits.y_test)
    assert net_to_bytes(load_net(out)) == out.read_bytes()
    help_text = parser._subparsers._group_actions[0].choices["compress"].format_help()
    assert "shipped recipes: deep-compression, fixed8, inq5" in help_text


def test_layers_are_selected_by_name_kind_or_position():
    from squeezeforge.models.compress.base import per_layer, select_layers
    from squeezeforge.models.quant import prepare

    model = prepare(
        nn.Sequential(
            nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 8), nn.Linear(8, 3)
        )
    )  # fmt: skip
    names = lambda sel: [n for n, _ in sel]  # noqa: E731
    assert names(select_layers(model, "fc", "t")) == ["3", "4"]
    assert names(select_layers(model, ["fc[-1]", "conv[0]"], "t")) == ["0", "4"]
    fc = select_layers(model, "fc", "t")
    # The shipped deep-compression table on a net with two linear layers.
    table = {"fc[0]": 0.9, "fc[-1]": 0.7, "default": 0.93}
    assert per_layer(model, table, fc, "prune") == {"3": 0.9, "4": 0.7}
    assert per_layer(model, {"all[1]": 0.5}, fc, "prune") == {"3": 0.5}
    with pytest.raises(UserError, match=r"'fc\[2\]' selects no layer \(2 fc layers"):
        per_layer(model, {"fc[2]": 0.5}, fc, "prune")
    with pytest.raises(UserError, match=r"'fc\[1\]' and 'fc\[-1\]' both select layer '4'"):
        per_layer(model, {"fc[1]": 0.5, "fc[-1]": 0.7}, fc, "prune")
    with pytest.raises(UserError, match=r"'conv\[0\]' is layer '0', not among the selected"):
        per_layer(model, {"conv[0]": 0.5}, fc, "prune")


def test_a_layer_no_engine_runs_is_refused_before_training(
    monkeypatch, digits, cnn_short, tmp_path
):
    def no_training(*args, **kwargs):
        raise AssertionError("training started before the engines were asked")

    monkeypatch.setattr("squeezeforge.models.compress.base.fit", no_training)
    monkeypatch.setattr(pipeline, "load_digits", lambda: digits)
    ckpt = save_checkpoint(tmp_path / "cnn.pt", "cnn", cnn_short)
    recipe = tmp_path / "coded-conv.toml"
    recipe.write_text('[[steps]]\npass = "share"\nlayers = "all"\nbits = 4\nepochs = 1\n')
    parser = argparse.ArgumentParser()
    compress_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["compress", str(ckpt), "--recipe", str(recipe), "-o", "x.sfnet"])
    with pytest.raises(UserError, match=r"layer 'conv1' would get codebook weights, which no"):
        args.func(args)
    # The same recipe with the codebooks on the FC layers only passes the check.
    kinds = pipeline.planned_layer_kinds(
        parse_recipe({"steps": [{"pass": "share", "layers": "fc"}]}), prepare(cnn_short)
    )
    assert {k for k, (layer, _) in kinds.items() if layer == "conv2d"} == {"conv1", "conv2"}
    assert {w for layer, w in kinds.values() if layer == "dense"} == {"codebook"}
    assert {w for layer, w in kinds.values() if layer == "conv2d"} == {"fixed"}
