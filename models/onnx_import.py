"""A float ONNX model (as ``torch.onnx.export`` or tf2onnx write it) as a torch layer stack.

The graph is read with the ``onnx`` package and rebuilt as an ``nn.Sequential`` of the layers
the IR expresses, with the ONNX initializers as weights; compression then treats it like any
PyTorch model. The rebuilt stack is checked against ONNX Runtime on a random input, so an
import that would change the model's outputs is refused instead of compressed.

Mapped: Conv, Gemm, MatMul + Add, Relu, MaxPool, Flatten, Reshape to one vector per sample,
BatchNormalization, Dropout and Identity; a trailing Softmax or LogSoftmax is dropped (the class
with the highest score is unchanged). Anything else is one error line naming the node.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezeforge.sim.errors import UserError

__all__ = ["load_onnx"]

_SKIPPED = {"Dropout", "Identity"}
_TRAILING = {"Softmax", "LogSoftmax"}


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _layer_name(node: Any, weight: str | None, taken: set[str]) -> str:
    base = ""
    if weight and not weight.startswith("onnx::"):
        base = weight.rsplit(".", 1)[0] if weight.endswith((".weight", ".bias")) else weight
    if not base and node.name:
        # '/features/features.0/Conv' -> 'features.0'
        parts = [p for p in node.name.split("/") if p]
        base = parts[-2] if len(parts) >= 2 else parts[0]
    base = re.sub(r"\W", "_", base or node.op_type.lower()).strip("_") or node.op_type.lower()
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def load_onnx(path: str | os.PathLike, *, notes: list[str] | None = None) -> nn.Sequential:
    """The model in the ONNX file ``path`` as an ``nn.Sequential`` in eval mode."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a valid ONNX model ({first})") from None
    graph = model.graph
    consts: dict[str, np.ndarray] = {
        init.name: numpy_helper.to_array(init) for init in graph.initializer
    }
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UserError(
            f"{path}: the graph has {len(inputs)} inputs and {len(graph.output)} outputs;"
            " squeezeforge maps models with one input and one output"
        )
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) < 2 or any(d <= 0 for d in dims[1:]):
        raise UserError(f"{path}: input {inputs[0].name!r} has no fixed shape per sample ({dims})")
    sample_shape = tuple(dims[1:])

    stack = nn.Sequential()
    taken: set[str] = set()
    current = inputs[0].name
    pending_matmul: tuple[Any, np.ndarray] | None = None
    dropped = False
    nodes = list(graph.node)

    def where(node: Any) -> str:
        return f"{path.name}: node {node.name or node.op_type!r} ({node.op_type})"

    for i, node in enumerate(nodes):
        op = node.op_type
        if op == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
            continue
        data = [x for x in node.input if x and x not in consts]
        if data != [current]:
            raise UserError(
                f"{where(node)} combines tensors or reads an earlier one; the IR is a chain of"
                " layers"
            )
        a = _attrs(node)
        module: nn.Module | None = None
        if pending_matmul is not None and op != "Add":
            raise UserError(
                f"{where(pending_matmul[0])}: a MatMul must be followed by its bias Add"
            )
        if op == "Conv":
            w = consts[node.input[1]]
            b = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            if a.get("group", 1) != 1:
                raise UserError(f"{where(node)}: grouped convolution (group={a['group']})")
            if any(d != 1 for d in a.get("dilations", [1, 1])):
                raise UserError(f"{where(node)}: dilated convolution")
            pads = list(a.get("pads", [0, 0, 0, 0]))
            strides = list(a.get("strides", [1, 1]))
            if (
                len(set(pads)) > 1
                or len(set(strides)) > 1
                or a.get("auto_pad", b"NOTSET")
                not in (
                    b"NOTSET",
                    "NOTSET",
                )
            ):
                raise UserError(f"{where(node)}: asymmetric padding or stride ({pads}, {strides})")
            conv = nn.Conv2d(
                w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=strides[0], padding=pads[0],
                bias=b is not None,
            )  # fmt: skip
            conv.weight.data = torch.from_numpy(w.astype(np.float32).copy())
            if b is not None:
                conv.bias.data = torch.from_numpy(b.astype(np.float32).copy())
            module = conv
        elif op == "Gemm":
            w = consts[node.input[1]]
            if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
                raise UserError(f"{where(node)}: Gemm with alpha, beta or transA")
            w = w if a.get("transB", 0) else w.T
            b = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            module = _linear(w, b)
        elif op == "MatMul":
            pending_matmul = (node, consts[node.input[1]].T)
            current = node.output[0]
            continue
        elif op == "Add" and pending_matmul is not None:
            matmul, w = pending_matmul
            pending_matmul = None
            module = _linear(w, consts[[x for x in node.input if x in consts][0]])
            node = matmul
        elif op == "Relu":
            module = nn.ReLU()
        elif op == "MaxPool":
            k = list(a["kernel_shape"])
            s = list(a.get("strides", k))
            p = list(a.get("pads", [0, 0, 0, 0]))
            if a.get("ceil_mode", 0) or len(set(k)) > 1 or len(set(s)) > 1 or len(set(p)) > 1:
                raise UserError(f"{where(node)}: only square max pools without ceil_mode")
            module = nn.MaxPool2d(k[0], stride=s[0], padding=p[0])
        elif op == "Flatten":
            if a.get("axis", 1) != 1:
                raise UserError(f"{where(node)}: Flatten with axis {a.get('axis')}")
            module = nn.Flatten()
        elif op == "Reshape":
            shape = consts.get(node.input[1])
            # A reshape to (batch, n): anything but flattening changes the batch size or the
            # values' order, which the comparison with ONNX Runtime below refuses.
            if shape is None or shape.ndim != 1 or len(shape) != 2:
                raise UserError(f"{where(node)}: only a reshape to one vector per sample")
            module = nn.Flatten()
        elif op == "BatchNormalization":
            scale, bias, mean, var = (consts[x] for x in node.input[1:5])
            last = stack[-1] if len(stack) else None
            bn_cls = nn.BatchNorm2d if isinstance(last, nn.Conv2d) else nn.BatchNorm1d
            bn = bn_cls(len(scale), eps=float(a.get("epsilon", 1e-5)))
            for t, v in ((bn.weight, scale), (bn.bias, bias)):
                t.data = torch.from_numpy(v.astype(np.float32).copy())
            bn.running_mean = torch.from_numpy(mean.astype(np.float32).copy())
            bn.running_var = torch.from_numpy(var.astype(np.float32).copy())
            module = bn
        elif op in _SKIPPED:
            current = node.output[0]
            continue
        elif op in _TRAILING and i == len(nodes) - 1:
            dropped = True
            if notes is not None:
                notes.append(f"{where(node)} dropped: argmax is unchanged")
            current = node.output[0]
            break
        else:
            raise UserError(
                f"{where(node)} has no equivalent in the IR (supported: Conv, Gemm, MatMul+Add,"
                " Relu, MaxPool, Flatten, Reshape, BatchNormalization, Dropout)"
            )
        weight = node.input[1] if op in ("Conv", "Gemm", "MatMul") else None
        stack.add_module(_layer_name(node, weight, taken), module)
        current = node.output[0]
    if current != graph.output[0].name and not (
        nodes and nodes[-1].op_type in _TRAILING and nodes[-1].output[0] == graph.output[0].name
    ):
        raise UserError(f"{path}: the graph's output is not its last layer's")
    stack.eval()
    _check_against_onnxruntime(path, model, stack, sample_shape, dropped=dropped)
    return stack


def _linear(w: np.ndarray, b: np.ndarray | None) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    lin.weight.data = torch.from_numpy(w.astype(np.float32).copy())
    if b is not None:
        lin.bias.data = torch.from_numpy(b.astype(np.float32).copy())
    return lin


def _check_against_onnxruntime(
    path: Path, model: Any, stack: nn.Sequential, sample_shape: tuple[int, ...], dropped: bool
) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, *sample_shape)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        got = stack(torch.from_numpy(x)).numpy()
    if dropped:
        # The dropped softmax keeps the order of the scores.
        same = np.array_equal(np.argsort(got, axis=1), np.argsort(expected, axis=1))
    else:
        same = got.shape == expected.shape and np.allclose(got, expected, rtol=1e-4, atol=1e-5)
    if not same:
        raise UserError(
            f"{path}: the imported layers do not reproduce ONNX Runtime's outputs; the graph does"
            " something the IR cannot express"
        )
