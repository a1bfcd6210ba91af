"""The top-level Python API end to end on a small user-written model: compress from arrays,
dicts and torch loaders, predict on floats against the reference, save and load, and (RTL)
the user's own inputs on Verilator, bit for bit, failing on a corrupted golden output."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import squeezeforge as sf
from squeezeforge.cli.main import main
from squeezeforge.models.compress import parse_recipe
from squeezeforge.models.data import Dataset, load_digits
from squeezeforge.sim import netsim
from squeezeforge.sim.ir import net_to_bytes
from squeezeforge.sim.numerics import quantize
from squeezeforge.sim.reference import run_net

torch.set_num_threads(1)


class TinyDigits(nn.Module):
    """A user's own model: a custom forward over functional calls, for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(x, 1))


# One pass, no fine-tuning: seconds, not minutes.
RECIPE = parse_recipe({"steps": [{"pass": "fixed-point", "epochs": 0}]}, "one-pass")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="module")
def model(digits: Dataset) -> nn.Module:
    torch.manual_seed(0)
    m = TinyDigits()
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    x, y = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def net(model: nn.Module, digits: Dataset) -> sf.CompressedNet:
    data = (digits.x_train, digits.y_train, digits.x_test, digits.y_test)
    return sf.compress(model, RECIPE, data=data, quiet=True)


def _in_subprocess(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_import_loads_neither_torch_nor_amaranth() -> None:
    out = _in_subprocess(
        "import sys, squeezeforge as sf\n"
        "heavy = [m for m in ('torch', 'amaranth', 'matplotlib', 'cocotb') if m in sys.modules]\n"
        "print(heavy, sf.__version__)\n"
        "sf.load_net\n"
        "print([m for m in ('torch', 'amaranth') if m in sys.modules])"
    )
    first, second = out.splitlines()
    assert first.startswith("[] ") and first != "[] "
    # Loading and predicting with a net file needs NumPy alone.
    assert second == "[]"


def test_public_names() -> None:
    assert set(sf.__all__) <= set(dir(sf))
    for name in sf.__all__:
        assert getattr(sf, name) is not None
    assert sf.Target().name == "default"
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        sf.nonsense  # noqa: B018


def test_compress_returns_a_net_with_its_report(net: sf.CompressedNet) -> None:
    assert net.report["recipe"] == "one-pass"
    assert net.report["accuracy"]["reference"] > 0.8
    assert net.ir.input_shape == (1, 8, 8)
    assert [layer.kind for layer in net.ir.layers] == ["conv2d", "maxpool2d", "flatten", "dense"]


def test_predict_is_the_reference_on_quantized_floats(
    net: sf.CompressedNet, digits: Dataset
) -> None:
    x = digits.x_test[:20]
    pred = net.predict(x)
    want = run_net(net.ir, quantize(x, net.ir.input_format))
    assert pred.ints.dtype == np.int64 and np.array_equal(pred.ints, want)
    assert np.array_equal(pred.outputs, want * 2.0**-net.ir.output_format.frac)
    assert np.array_equal(pred.classes, np.argmax(want, axis=1))
    # Integers are taken as already quantized; one input is a batch of one.
    assert np.array_equal(net.predict(net.quantize(x)).ints, want)
    assert np.array_equal(net.predict(x[3]).ints, want[3:4])
    # The stored test vectors are the same quantization of the same images.
    assert np.array_equal(net.predict(digits.x_test).ints, net.ir.test_outputs)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.full((2, 1, 8, 8), np.nan), "NaN"),
        (np.zeros((2, 64)), "the net takes"),
        (np.zeros((0, 1, 8, 8)), "holds no inputs"),
        (np.full((1, 1, 8, 8), 1000), "outside the input format"),
        (np.array([["a"] * 8] * 8)[None], "numeric array"),
    ],
)
def test_predict_refuses_bad_inputs(net: sf.CompressedNet, bad, message: str) -> None:
    with pytest.raises(sf.UserError, match=message) as info:
        net.predict(bad)
    assert "\n" not in str(info.value)


def test_save_and_load_net(net: sf.CompressedNet, digits: Dataset, tmp_path: Path) -> None:
    net.save(tmp_path / "tiny.sfnet")
    loaded = sf.load_net(tmp_path / "tiny.sfnet")
    assert loaded.report is None
    assert net_to_bytes(loaded.ir) == net_to_bytes(net.ir)
    x = digits.x_test[:5]
    assert np.array_equal(loaded.predict(x).ints, net.predict(x).ints)


def test_data_as_dict_or_torch_loaders_gives_the_same_net(
    model: nn.Module, net: sf.CompressedNet, digits: Dataset
) -> None:
    as_dict = {k: getattr(digits, k) for k in ("x_train", "y_train", "x_test", "y_test")}
    train = TensorDataset(torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train))
    test = TensorDataset(torch.from_numpy(digits.x_test), torch.from_numpy(digits.y_test))
    for data in (as_dict, (train, test), (DataLoader(train, batch_size=100), test)):
        again = sf.compress(model, RECIPE, data=data, quiet=True)
        assert net_to_bytes(again.ir) == net_to_bytes(net.ir)


def test_compress_a_state_dict_file(digits: Dataset, tmp_path: Path) -> None:
    (tmp_path / "mlp.py").write_text(
        "from torch import nn\n"
        "class Mlp(nn.Module):\n"
        "    def __init__(self, hidden):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),"
        " nn.Linear(hidden, 10))\n"
        "    def forward(self, x):\n"
        "        return self.body(x)\n"
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10))
    torch.save({f"body.{k}": v for k, v in model.state_dict().items()}, tmp_path / "w.pt")
    net = sf.compress(
        tmp_path / "w.pt",
        RECIPE,
        data=digits,
        model_class=f"{tmp_path / 'mlp.py'}:Mlp",
        model_args={"hidden": 12},
        quiet=True,
    )
    assert net.report["model"] == "mlp"
    assert [layer.kind for layer in net.ir.layers][-2:] == ["dense", "dense"]
    with pytest.raises(sf.UserError, match="state_dict"):
        sf.compress(tmp_path / "w.pt", RECIPE, data=digits, quiet=True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"x_train": np.zeros((2, 1, 8, 8))}, "lacks y_train"),
        ((np.zeros((2, 1, 8, 8)), np.zeros(2)), "expected"),
        ("digits", "expected"),
        ((np.zeros((2, 1, 8, 8)), np.zeros(3, int), np.zeros((2, 1, 8, 8)), np.zeros(2)), "3"),
    ],
)
def test_bad_data_is_one_line(model: nn.Module, data, message: str) -> None:
    with pytest.raises(sf.UserError, match=message):
        sf.compress(model, RECIPE, data=data, quiet=True)


def test_reprs_are_short(net: sf.CompressedNet, digits: Dataset) -> None:
    for obj in (net, net.ir, net.predict(digits.x_test)):
        text = repr(obj)
        assert len(text) < 200, text
        assert "\n" not in text
    assert "tiny" in repr(net) and "conv:conv2d" in repr(net.ir)


# ---------------------------------------------------------------------------------------------
# The user's own inputs on Verilator


@pytest.fixture(scope="module")
def accelerator(net: sf.CompressedNet) -> sf.Accelerator:
    return sf.generate(net)


@pytest.mark.rtl
def test_own_inputs_bit_exact_on_verilator(
    accelerator: sf.Accelerator, net: sf.CompressedNet, digits: Dataset
) -> None:
    # Not test vectors: the user's own images, one of them shifted so it is no test image.
    x = np.concatenate([digits.x_train[:2], np.roll(digits.x_test[:1], 1, axis=-1)])
    result = accelerator.simulate(x)
    assert result.bit_exact, result.first_mismatch
    want = net.predict(x)
    assert np.array_equal(result.ints, want.ints)
    assert np.array_equal(result.reference_ints, want.ints)
    assert np.array_equal(result.outputs, want.outputs)
    est = accelerator.manifest.cycles_estimated
    assert abs(result.cycles_per_inference - est) <= 0.02 * est + 1
    assert len(repr(result)) < 200 and len(repr(accelerator)) < 300


@pytest.mark.rtl
def test_corrupted_golden_output_is_a_mismatch(
    accelerator: sf.Accelerator, digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = netsim._golden

    def corrupted(*args, **kwargs):
        out, taps = real(*args, **kwargs)
        out = out.copy()
        out[1, 4] += 1
        return out, taps

    monkeypatch.setattr(netsim, "_golden", corrupted)
    result = accelerator.simulate(digits.x_train[:2])
    assert not result.bit_exact
    assert result.first_mismatch["image"] == 1 and result.first_mismatch["output"] == 4
    assert "MISMATCH" in repr(result)


@pytest.mark.rtl
def test_cli_simulate_own_inputs(
    accelerator: sf.Accelerator, net: sf.CompressedNet, digits: Dataset, tmp_path: Path, capsys
) -> None:
    x = digits.x_train[5:7]
    np.save(tmp_path / "x.npy", x)
    args = ["simulate", str(accelerator.build_dir), "--inputs", str(tmp_path / "x.npy")]
    assert main([*args, "--outputs", str(tmp_path / "y.npy")]) == 0
    assert "bit-exact inputs: 2/2" in capsys.readouterr().out
    assert np.array_equal(np.load(tmp_path / "y.npy"), net.predict(x).ints)
    # Integers in the input format go through unchanged.
    np.save(tmp_path / "q.npy", net.quantize(x).astype(np.int16))
    args = ["simulate", str(accelerator.build_dir), "--inputs", str(tmp_path / "q.npy")]
    assert main([*args, "--outputs", str(tmp_path / "z.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "z.npy"), np.load(tmp_path / "y.npy"))


@pytest.mark.rtl
def test_cli_simulate_own_inputs_mismatch_exits_1(
    accelerator: sf.Accelerator, digits: Dataset, tmp_path: Path, monkeypatch, capsys
) -> None:
    real = netsim._golden

    def corrupted(*args, **kwargs):
        out, taps = real(*args, **kwargs)
        return out - (np.arange(out.size).reshape(out.shape) == 3), taps

    monkeypatch.setattr(netsim, "_golden", corrupted)
    np.save(tmp_path / "x.npy", digits.x_train[:1])
    assert main(["simulate", str(accelerator.build_dir), "--inputs", str(tmp_path / "x.npy")]) == 1
    out = capsys.readouterr().out
    assert "bit-exact inputs: 0/1" in out and "'output': 3" in out


def test_temporary_build_goes_with_the_object(net: sf.CompressedNet) -> None:
    acc = sf.generate(net)
    folder = acc.build_dir
    assert (folder / "top.v").is_file()
    del acc
    gc.collect()
    assert not folder.exists()
    kept = sf.generate(net)
    kept.close()
    assert not kept.build_dir.exists()
