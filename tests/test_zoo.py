"""A zoo of models written the way users write them, each from the command line and from the
Python API to bit-exact RTL on a few samples of its own data.

- ``DigitsNet``: a custom ``forward`` with functional ops, a nested module with BatchNorm, an
  unnamed ``nn.Sequential`` with Dropout; brought as a state_dict with its class path, as a
  pickled module, as an ``nn.Module`` in Python and as an ONNX export;
- ``Regressor``: an MLP with two real-valued outputs on tabular data (scored by MSE);
- a Brevitas-style QONNX model built here, imported without retraining.

The forms of one model must give the same net, so one Verilator build per model serves both
the CLI and the API run (the API generates into the CLI's build folder: the same Verilog).
"""

from __future__ import annotations

import json
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import squeezeforge as sf
from squeezeforge.cli.main import main
from squeezeforge.models.data import load_digits
from squeezeforge.sim.ir import Net, load_net, net_to_bytes

ZOO = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, padding=1)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))


    class DigitsNet(nn.Module):
        def __init__(self, width=6, classes=10):
            super().__init__()
            self.features = Block(1, width)
            self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(width * 16, classes))

        def forward(self, x):
            x = F.max_pool2d(self.features(x), 2)
            return self.head(x.view(x.size(0), -1))


    class Regressor(nn.Module):
        def __init__(self, features=4, outputs=2):
            super().__init__()
            self.hidden = nn.Linear(features, 24)
            self.out = nn.Linear(24, outputs)

        def forward(self, x):
            return self.out(torch.relu(self.hidden(x)))
    """
)

# Post-training fixed point, no fine-tuning: seconds per model.
RECIPE = '[[steps]]\npass = "fixed-point"\nepochs = 0\n'
IMAGES = 3


def _train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, steps: int) -> None:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        out = model(xt)
        loss = F.mse_loss(out, yt) if yt.is_floating_point() else F.cross_entropy(out, yt)
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The user's files: model source, weights in every form, data, recipe."""
    d = tmp_path_factory.mktemp("zoo")
    (d / "zoo.py").write_text(ZOO)
    (d / "quick.toml").write_text(RECIPE)
    sys.path.insert(0, str(d))
    try:
        import zoo as module  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(d))
    digits = load_digits()
    torch.manual_seed(0)
    cnn = module.DigitsNet()
    _train(cnn, digits.x_train, digits.y_train, 40)
    torch.save(cnn.state_dict(), d / "digits.pt")
    torch.save(cnn, d / "digits.pkl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(cnn, (torch.zeros(1, 1, 8, 8),), str(d / "digits.onnx"), dynamo=False)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(300, 4)).astype(np.float32)
    y = np.stack([np.sin(2 * x[:, 0]) + x[:, 1], 0.5 * x[:, 2] * x[:, 3]], 1).astype(np.float32)
    np.savez(d / "tab.npz", x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:])
    torch.manual_seed(0)
    reg = module.Regressor()
    _train(reg, x[:240], y[:240], 300)
    torch.save(reg.state_dict(), d / "reg.pt")
    return {"dir": d, "module": module, "cnn": cnn, "reg": reg, "digits": digits, "tab": (x, y)}


def _same_net(a: Net, b: Net) -> bool:
    """Equal layers, formats and test vectors (the name and metadata say where it came from)."""
    return net_to_bytes(a.replace(name="n", metadata={})) == net_to_bytes(
        b.replace(name="n", metadata={})
    )


def _cli(args: list[str], capsys: pytest.CaptureFixture) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _rtl_both_ways(net_file: Path, net: sf.CompressedNet, own: np.ndarray, capsys) -> dict:
    """CLI generate + simulate of the net's test vectors, then the API's own inputs on the same
    hardware; returns the CLI's simulation report."""
    build = net_file.with_suffix("")
    assert main(["generate", str(net_file), "-o", str(build)]) == 0
    capsys.readouterr()
    report = _cli(["simulate", str(build), "--images", str(IMAGES)], capsys)
    assert report["bit_exact"] == IMAGES and report["golden_consistent"], report
    acc = sf.generate(net, out=build, force=True)
    result = acc.simulate(own)
    assert result.bit_exact, result.first_mismatch
    assert np.array_equal(result.ints, net.predict(own).ints)
    assert result.cycles_per_inference == pytest.approx(report["cycles_per_inference"], rel=0.1)
    return report


@pytest.mark.rtl
def test_custom_forward_cnn_in_every_form(zoo: dict, capsys) -> None:
    d = zoo["dir"]
    common = ["--recipe", str(d / "quick.toml")]
    cls = f"{d / 'zoo.py'}:DigitsNet"
    from_state = _cli(["compress", str(d / "digits.pt"), "--model", cls, *common, "-o",
                       str(d / "state.sfnet")], capsys)  # fmt: skip
    _cli(["compress", str(d / "digits.pkl"), "--model", cls, *common, "-o",
          str(d / "pickled.sfnet")], capsys)  # fmt: skip
    _cli(["compress", str(d / "digits.onnx"), *common, "-o", str(d / "onnx.sfnet")], capsys)
    api = sf.compress(zoo["cnn"], str(d / "quick.toml"), quiet=True)
    state = load_net(d / "state.sfnet")
    assert _same_net(state, load_net(d / "pickled.sfnet"))
    assert _same_net(state, api.ir)
    # The files through the API too: the same net as the command line made from them.
    for name, cls_path in (("digits.pt", cls), ("digits.pkl", cls), ("digits.onnx", None)):
        from_file = sf.compress(d / name, str(d / "quick.toml"), model_class=cls_path, quiet=True)
        assert np.array_equal(from_file.ir.test_outputs, state.test_outputs), name
    # ONNX carries the same weights, BatchNorm already folded by the exporter: the same
    # integer outputs on every test image.
    assert np.array_equal(load_net(d / "onnx.sfnet").test_outputs, state.test_outputs)
    acc = from_state["accuracy"]
    assert acc["float"] > 0.8 and acc["reference"] >= acc["float"] - 0.03 and acc["agreement"] == 1
    own = np.roll(zoo["digits"].x_train[:2], 1, axis=-1)  # not test images
    report = _rtl_both_ways(d / "state.sfnet", api, own, capsys)
    assert report["accuracy"] is not None


@pytest.mark.rtl
def test_regression_mlp_cli_and_api(zoo: dict, capsys) -> None:
    d = zoo["dir"]
    args = ["compress", str(d / "reg.pt"), "--model", f"{d / 'zoo.py'}:Regressor",
            "--data", str(d / "tab.npz"), "--recipe", str(d / "quick.toml"),
            "-o", str(d / "reg.sfnet")]  # fmt: skip
    report = _cli(args, capsys)
    assert report["task"] == "regression" and report["accuracy"] is None
    err = report["error"]
    # The reference is the fake-quantized model exactly, and close to the float model.
    assert err["agreement"] == 1.0 and err["reference"] == err["fake_quant"]
    assert err["float"]["mse"] < 0.05 and err["reference"]["mse"] < 1.5 * err["float"]["mse"]
    assert err["reference_vs_float"]["max_abs_error"] < 0.1
    x, y = zoo["tab"]
    api = sf.compress(zoo["reg"], str(d / "quick.toml"), data=(x[:240], y[:240], x[240:], y[240:]))
    assert _same_net(load_net(d / "reg.sfnet"), api.ir)
    assert api.report["error"] == err
    sim = _rtl_both_ways(d / "reg.sfnet", api, x[:2] * 0.9, capsys)
    # The RTL scores its outputs against the targets, as the reference does.
    ref = api.ir
    want = np.mean((ref.test_outputs[:IMAGES] * 2.0**-ref.output_format.frac - y[240:243]) ** 2)
    assert sim["error"]["mse"] == pytest.approx(want) and sim["accuracy"] is None


def test_regression_bad_targets_are_one_line(zoo: dict, capsys, tmp_path: Path) -> None:
    x, y = zoo["tab"]
    np.savez(tmp_path / "three.npz", x_train=x, y_train=np.c_[y, y[:, :1]], x_test=x,
             y_test=np.c_[y, y[:, :1]])  # fmt: skip
    np.savez(tmp_path / "classes.npz", x_train=x, y_train=np.arange(len(x)) % 5, x_test=x,
             y_test=np.arange(len(x)) % 5)  # fmt: skip
    d = zoo["dir"]
    base = ["compress", str(d / "reg.pt"), "--model", f"{d / 'zoo.py'}:Regressor",
            "--recipe", str(d / "quick.toml"), "-o", str(tmp_path / "x.sfnet")]  # fmt: skip
    assert main([*base, "--data", str(tmp_path / "three.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 regression target(s) per sample but the model has 2" in err[0]
    assert main([*base, "--data", str(tmp_path / "classes.npz")]) == 2
    assert "labels 0..4 but the model has 2 output(s)" in capsys.readouterr().err
    assert not (tmp_path / "x.sfnet").exists()


@pytest.mark.rtl
def test_qonnx_model_cli_and_api(zoo: dict, capsys, tmp_path: Path, brevitas_qonnx) -> None:
    from squeezeforge.models.qonnx_import import load_qonnx

    path = brevitas_qonnx()
    out = _cli(["export", str(path), "-o", str(tmp_path / "q.sfnet")], capsys)
    api = sf.import_qonnx(path)
    assert _same_net(load_net(tmp_path / "q.sfnet"), api.ir)
    assert _same_net(api.ir, load_qonnx(path, test_inputs=zoo["digits"].x_test,
                                       test_labels=zoo["digits"].y_test))  # fmt: skip
    assert 0 <= out["reference"]["accuracy"] <= 1
    _rtl_both_ways(tmp_path / "q.sfnet", api, zoo["digits"].x_train[:2], capsys)


def test_regression_net_on_the_reference_command(zoo: dict, capsys, tmp_path: Path) -> None:
    d = zoo["dir"]
    args = ["compress", str(d / "reg.pt"), "--model", f"{d / 'zoo.py'}:Regressor",
            "--data", str(d / "tab.npz"), "--recipe", str(d / "quick.toml"),
            "-o", str(tmp_path / "r.sfnet")]  # fmt: skip
    compressed = _cli(args, capsys)
    report = _cli(["reference", str(tmp_path / "r.sfnet")], capsys)
    # Scored by error, not by classes; the same figures the compression report gave.
    assert "predictions" not in report and report["accuracy"] is None
    assert report["error"] == compressed["error"]["reference"]
    assert main(["reference", str(tmp_path / "r.sfnet")]) == 0
    text = capsys.readouterr().out
    assert "MSE" in text and "predictions" not in text
