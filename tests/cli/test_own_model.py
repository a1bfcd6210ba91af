"""A user's own model and data through the command line: state_dict + class, ONNX, QONNX."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from squeezeforge.cli.main import main
from squeezeforge.sim.ir import load_net
from squeezeforge.sim.reference import run_net

MLP = textwrap.dedent(
    """
    import torch.nn.functional as F
    from torch import nn


    class Tabular(nn.Module):
        def __init__(self, features=6, classes=3):
            super().__init__()
            self.hidden = nn.Linear(features, 16)
            self.out = nn.Linear(16, classes)

        def forward(self, x):
            return self.out(F.relu(self.hidden(x)))
    """
)

RECIPE = '[[steps]]\npass = "fixed-point"\nweight_bits = 8\nactivation_bits = 8\n'


@pytest.fixture
def tabular(tmp_path: Path) -> dict[str, Path]:
    """A user's MLP class, its state_dict and an .npz data set of her own."""
    (tmp_path / "tabular.py").write_text(MLP)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    np.savez(tmp_path / "tab.npz", x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import torch; from tabular import Tabular; torch.manual_seed(0);"
            " torch.save(Tabular().state_dict(), 'tab.pt')",
        ],
        cwd=tmp_path,
        check=True,
    )
    (tmp_path / "quick.toml").write_text(RECIPE)
    return {"dir": tmp_path, "model": tmp_path / "tabular.py", "weights": tmp_path / "tab.pt"}


def test_state_dict_class_and_npz_data_compress(tabular, capsys) -> None:
    d = tabular["dir"]
    args = [
        "compress", str(tabular["weights"]), "--model", f"{tabular['model']}:Tabular",
        "--model-args", '{"features": 6, "classes": 3}', "--data", str(d / "tab.npz"),
        "--recipe", str(d / "quick.toml"), "-o", str(d / "tab.sfnet"), "--json",
    ]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    net = load_net(d / "tab.sfnet")
    assert net.input_shape == (6,) and net.test_inputs.shape[0] == 30
    assert [layer.name for layer in net.layers] == ["hidden", "out"]
    assert np.array_equal(run_net(net, net.test_inputs), net.test_outputs)
    assert report["accuracy"]["agreement"] >= 0.95


def test_a_model_that_does_not_take_the_digits_says_so(tabular, capsys) -> None:
    d = tabular["dir"]
    args = [
        "compress", str(tabular["weights"]), "--model", f"{tabular['model']}:Tabular",
        "--recipe", str(d / "quick.toml"), "-o", str(d / "x.sfnet"),
    ]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not take digits's inputs of shape [1, 8, 8]" in err[0]
    assert "--data" in err[0] and not (d / "x.sfnet").exists()


def test_bad_model_args_are_one_line(tabular, capsys) -> None:
    d = tabular["dir"]
    base = ["compress", str(tabular["weights"]), "--recipe", "fixed8", "-o", str(d / "y.sfnet")]
    assert main([*base, "--model", f"{tabular['model']}:Tabular", "--model-args", "{"]) == 2
    assert "--model-args is not valid JSON" in capsys.readouterr().err
    assert main([*base, "--model", f"{tabular['model']}:Tabular", "--model-args", "[1]"]) == 2
    assert "must be a JSON object" in capsys.readouterr().err
    assert main(base) == 2
    assert "holds a state_dict" in capsys.readouterr().err


def test_an_onnx_model_exports(tabular, capsys) -> None:
    d = tabular["dir"]
    sys.path.insert(0, str(d))
    try:
        from tabular import Tabular  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(d))
    model = Tabular()
    model.load_state_dict(torch.load(tabular["weights"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, 6),), str(d / "tab.onnx"), dynamo=False)
    args = ["export", str(d / "tab.onnx"), "--data", str(d / "tab.npz"), "-o", str(d / "o.sfnet")]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"]["reference"] >= result["accuracy"]["float"] - 0.05
    assert load_net(d / "o.sfnet").input_shape == (6,)
