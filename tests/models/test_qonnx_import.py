"""A Brevitas-style QONNX model, built here, maps onto the IR bit-exactly against QONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from squeezeforge.models.qonnx_import import load_qonnx
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.reference import run_net


def _qonnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    model = ModelWrapper(str(path)).transform(InferShapes())
    rows = [execute_onnx(model, {"inp": x[i : i + 1]})["out"] for i in range(len(x))]
    return np.concatenate(rows).astype(np.float64)


def test_qonnx_model_is_bit_exact_against_qonnx_execution(brevitas_qonnx) -> None:
    path = brevitas_qonnx()
    x = np.random.default_rng(2).uniform(-0.2, 1.2, (12, 1, 8, 8)).astype(np.float32)
    net = load_qonnx(path, test_inputs=x)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Conv2d", "MaxPool2d", "Flatten", "Dense"]
    conv, fc = net.layers[0], net.layers[3]
    assert (net.input_format.bits, net.input_format.frac) == (8, 7)
    assert conv.relu and (conv.output_format.bits, conv.output_format.frac) == (5, 4)
    assert (fc.weight_format.bits, fc.weight_format.frac) == (4, 3) and not fc.relu
    # The reference's integers, scaled, are QONNX's floats exactly.
    got = run_net(net, net.test_inputs) * 2.0**-fc.output_format.frac
    assert np.array_equal(got, _qonnx_outputs(path, x))
    assert np.array_equal(run_net(net, net.test_inputs), net.test_outputs)


def test_the_comparison_fails_on_a_corrupted_weight(brevitas_qonnx) -> None:
    path = brevitas_qonnx()
    x = np.random.default_rng(2).uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)
    net = load_qonnx(path, test_inputs=x)
    fc = net.layers[3]
    weight = fc.weight.copy()
    weight[0, :] += 1  # one output's every weight one step larger
    bad = net.replace(layers=(*net.layers[:3], fc.__class__(**{**vars(fc), "weight": weight})))
    got = run_net(bad, bad.test_inputs) * 2.0**-fc.output_format.frac
    assert not np.array_equal(got, _qonnx_outputs(path, x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"act_mode": "ROUND"}, r"node 'a1' \(Quant\): rounding_mode ROUND differs"),
        ({"w_scale": 0.03}, r"node 'w1q' \(Quant\): scale 0\.03\d* is not a power of two"),
    ],
)
def test_unsupported_quant_nodes_are_named(brevitas_qonnx, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        load_qonnx(brevitas_qonnx(**kwargs))
    assert "\n" not in str(err.value)


def test_export_turns_a_qonnx_file_into_a_net(brevitas_qonnx, tmp_path: Path, capsys) -> None:
    from squeezeforge.cli.main import main
    from squeezeforge.sim.ir import load_net

    path = brevitas_qonnx()
    assert main(["export", str(path), "--data", "digits", "-o", str(tmp_path / "q.sfnet")]) == 0
    assert "imported QONNX" in capsys.readouterr().out
    net = load_net(tmp_path / "q.sfnet")
    assert net.test_inputs.shape == (360, 1, 8, 8)
    assert np.array_equal(run_net(net, net.test_inputs), net.test_outputs)
    # The same file is refused by compress, which would quantize it a second time.
    assert main(["compress", str(path), "--recipe", "fixed8", "-o", str(tmp_path / "c")]) == 2
    assert "needs no compression" in capsys.readouterr().err
