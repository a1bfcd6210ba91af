"""A Brevitas-style QONNX model, built here, maps onto the IR bit-exactly against QONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from squeezeforge.models.qonnx_import import load_qonnx
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.reference import run_net

QONNX_DOMAIN = "qonnx.custom_op.general"


def _quant(name: str, src: str, frac: float, bits: int, signed: int, mode: str, inits: list):
    """A QONNX Quant node with scale 2**-frac (or any scale when ``frac`` is a float)."""
    scale = 2.0**-frac if isinstance(frac, int) else frac
    for suffix, value in (("scale", scale), ("zp", 0.0), ("bw", float(bits))):
        inits.append(numpy_helper.from_array(np.array(value, np.float32), f"{name}_{suffix}"))
    return helper.make_node(
        "Quant",
        [src, f"{name}_scale", f"{name}_zp", f"{name}_bw"],
        [name],
        name=name,
        domain=QONNX_DOMAIN,
        signed=signed,
        narrow=0,
        rounding_mode=mode,
    )


def _model(tmp_path: Path, *, act_mode="HALF_UP", w_scale=5, relu=True, name="q.onnx") -> Path:
    rng = np.random.default_rng(1)
    inits: list = []
    w1 = rng.normal(0, 0.4, (4, 1, 3, 3)).astype(np.float32)
    b1 = (rng.integers(-200, 200, 4) * 2.0**-12).astype(np.float32)  # acc scale 2**-(7+5)
    w2 = rng.normal(0, 0.3, (10, 64)).astype(np.float32)
    b2 = (rng.integers(-50, 50, 10) * 2.0**-7).astype(np.float32)  # acc scale 2**-(4+3)
    for arr, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")):
        inits.append(numpy_helper.from_array(arr, n))
    nodes = [
        _quant("xq", "inp", 7, 7, 0, "ROUND", inits),  # unsigned 7-bit input, any rounding
        _quant("w1q", "w1", w_scale, 6, 1, "ROUND", inits),
        helper.make_node("Conv", ["xq", "w1q", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
    ]
    last = "c1"
    if relu:
        nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="relu1"))
        last = "r1"
    nodes += [
        helper.make_node("MaxPool", [last], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        _quant("a1", "p1", 4, 4, 0, act_mode, inits),
        helper.make_node("Flatten", ["a1"], ["f"], axis=1),
        _quant("w2q", "w2", 3, 4, 1, "ROUND", inits),
        helper.make_node("Gemm", ["f", "w2q", "b2"], ["out"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "brevitas_like",
        [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)]
    )
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _qonnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    model = ModelWrapper(str(path)).transform(InferShapes())
    rows = [execute_onnx(model, {"inp": x[i : i + 1]})["out"] for i in range(len(x))]
    return np.concatenate(rows).astype(np.float64)


def test_qonnx_model_is_bit_exact_against_qonnx_execution(tmp_path: Path) -> None:
    path = _model(tmp_path)
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


def test_the_comparison_fails_on_a_corrupted_weight(tmp_path: Path) -> None:
    path = _model(tmp_path)
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
def test_unsupported_quant_nodes_are_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        load_qonnx(_model(tmp_path, **kwargs))
    assert "\n" not in str(err.value)


def test_export_turns_a_qonnx_file_into_a_net(tmp_path: Path, capsys) -> None:
    from squeezeforge.cli.main import main
    from squeezeforge.sim.ir import load_net

    path = _model(tmp_path)
    assert main(["export", str(path), "--data", "digits", "-o", str(tmp_path / "q.sfnet")]) == 0
    assert "imported QONNX" in capsys.readouterr().out
    net = load_net(tmp_path / "q.sfnet")
    assert net.test_inputs.shape == (360, 1, 8, 8)
    assert np.array_equal(run_net(net, net.test_inputs), net.test_outputs)
    # The same file is refused by compress, which would quantize it a second time.
    assert main(["compress", str(path), "--recipe", "fixed8", "-o", str(tmp_path / "c")]) == 2
    assert "needs no compression" in capsys.readouterr().err
