import argparse
import json

import pytest

from squeezeforge.cli import export as export_cmd
from squeezeforge.cli import train as train_cmd
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import load_net


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squeezeforge")
    sub = parser.add_subparsers()
    train_cmd.register(sub)
    export_cmd.register(sub)
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


def test_train_then_export(tmp_path, capsys):
    ckpt = tmp_path / "mlp.pt"
    assert _run(["train", "--model", "mlp", "--epochs", "2", "-o", str(ckpt), "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["model"] == "mlp" and ckpt.is_file()
    assert 0.5 < trained["accuracy"]["test"] <= 1.0
    net_path = tmp_path / "mlp.sfnet"
    assert _run(["export", str(ckpt), "--bits", "8", "-o", str(net_path), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["accuracy"]["float"] == pytest.approx(trained["accuracy"]["test"])
    assert abs(exported["accuracy"]["reference"] - exported["accuracy"]["float"]) <= 0.02
    assert [layer["name"] for layer in exported["layers"]] == ["fc1", "fc2", "fc3"]
    assert load_net(net_path).test_inputs.shape[0] == 360
    assert _run(["export", str(ckpt), "-o", str(tmp_path / "plain.sfnet")]) == 0
    assert "reference accuracy" in capsys.readouterr().out


def test_cli_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        _run(["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "x.sfnet")])
    with pytest.raises(UserError, match="--bits must be in 2..16"):
        _run(["export", "x.pt", "--bits", "17", "-o", str(tmp_path / "x.sfnet")])
    with pytest.raises(UserError, match="--epochs must be >= 1"):
        _run(["train", "--epochs", "0", "-o", str(tmp_path / "x.pt")])
    assert not (tmp_path / "x.sfnet").exists()


def test_help_explains_itself():
    parser = _parser()
    for cmd in ("train", "export"):
        text = parser._subparsers._group_actions[0].choices[cmd].format_help()
        assert "examples:" in text and "--json" in text
