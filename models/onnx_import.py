"""A float ONNX model (as ``torch.onnx.export`` or tf2onnx write it) as a torch model.

The graph is read with the ``onnx`` package and rebuilt from the layers the IR expresses, with
the ONNX initializers as weights: an ``nn.Sequential`` for a plain chain, a
:class:`~squeezeforge.models.graph.LayerGraph` when a node reads more than the node before it
(a residual ``Add``, a ``Concat``). Compression then treats it like any PyTorch model. The
rebuilt model is checked against ONNX Runtime on a random input, so an import that would change
the model's outputs is refused instead of compressed.

Mapped: Conv (grouped too), Gemm, MatMul + Add, Relu, Clip at 0 (ReLU6), MaxPool, AveragePool,
GlobalAveragePool, Flatten, Reshape to one vector per sample, BatchNormalization, Add of two
tensors, Concat along the channels, Dropout and Identity; a trailing Softmax or LogSoftmax is
dropped (the class with the highest score is unchanged). Anything else is one error line naming
the node.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezeforge.sim.errors import UserError

from .graph import NET_INPUT, ChannelConcat, LayerGraph, ResidualAdd

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
    """The model in the ONNX file ``path`` in eval mode: an ``nn.Sequential``, or a
    :class:`~squeezeforge.models.graph.LayerGraph` for a graph."""
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

    layers: dict[str, nn.Module] = {}
    reads: dict[str, tuple[str, ...]] = {}  # layer -> the layers (or NET_INPUT) it reads
    taken: set[str] = set()
    # ONNX tensor name -> the layer whose output it is (Dropout and Identity pass it on).
    producer: dict[str, str] = {inputs[0].name: NET_INPUT}
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
        unknown = [x for x in data if x not in producer]
        if unknown:
            raise UserError(f"{where(node)} reads {unknown[0]!r}, which no earlier node makes")
        joins = op == "Concat" or (op == "Add" and len(data) == 2)
        if not joins and len(data) != 1:
            raise UserError(f"{where(node)} combines {len(data)} tensors")
        a = _attrs(node)
        module: nn.Module | None = None
        if pending_matmul is not None and not (op == "Add" and data == [current]):
            raise UserError(
                f"{where(pending_matmul[0])}: a MatMul must be followed by its bias Add"
            )
        if op == "Conv":
            w = consts[node.input[1]]
            b = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            groups = int(a.get("group", 1))
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
                w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=strides[0],
                padding=pads[0], groups=groups, bias=b is not None,
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
            producer[node.output[0]] = producer[data[0]]
            current = node.output[0]
            continue
        elif op == "Add" and pending_matmul is not None:
            matmul, w = pending_matmul
            pending_matmul = None
            module = _linear(w, consts[[x for x in node.input if x in consts][0]])
            data = [x for x in matmul.input if x and x not in consts]
            node = matmul
        elif op == "Add" and len(data) == 2:
            module = ResidualAdd()
        elif op == "Concat":
            if a.get("axis") not in (1, -3) or len(data) < 2:
                raise UserError(f"{where(node)}: only a concat of tensors along axis 1")
            module = ChannelConcat()
        elif op == "Relu":
            module = nn.ReLU()
        elif op == "Clip":
            lo, hi = (consts.get(x) if x else None for x in (list(node.input) + ["", ""])[1:3])
            if lo is None or float(lo) != 0.0 or hi is None:
                raise UserError(f"{where(node)}: only a clip to [0, c] (ReLU6)")
            module = nn.Hardtanh(0.0, float(hi))
        elif op == "MaxPool":
            k = list(a["kernel_shape"])
            s = list(a.get("strides", k))
            p = list(a.get("pads", [0, 0, 0, 0]))
            if a.get("ceil_mode", 0) or len(set(k)) > 1 or len(set(s)) > 1 or len(set(p)) > 1:
                raise UserError(f"{where(node)}: only square max pools without ceil_mode")
            module = nn.MaxPool2d(k[0], stride=s[0], padding=p[0])
        elif op == "AveragePool":
            k = list(a["kernel_shape"])
            s = list(a.get("strides", k))
            if a.get("ceil_mode", 0) or any(a.get("pads", [0])) or len(set(s)) > 1:
                raise UserError(f"{where(node)}: only average pools without padding or ceil_mode")
            module = nn.AvgPool2d(tuple(k), stride=s[0])
        elif op == "GlobalAveragePool":
            module = nn.AdaptiveAvgPool2d(1)
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
            last = layers.get(producer[data[0]])
            bn_cls = nn.BatchNorm2d if isinstance(last, nn.Conv2d) else nn.BatchNorm1d
            bn = bn_cls(len(scale), eps=float(a.get("epsilon", 1e-5)))
            for t, v in ((bn.weight, scale), (bn.bias, bias)):
                t.data = torch.from_numpy(v.astype(np.float32).copy())
            bn.running_mean = torch.from_numpy(mean.astype(np.float32).copy())
            bn.running_var = torch.from_numpy(var.astype(np.float32).copy())
            module = bn
        elif op in _SKIPPED:
            producer[node.output[0]] = producer[data[0]]
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
                " Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape,"
                " BatchNormalization, Add, Concat, Dropout)"
            )
        weight = node.input[1] if op in ("Conv", "Gemm", "MatMul") else None
        name = _layer_name(node, weight, taken)
        srcs = tuple(producer[x] for x in data)
        previous = next(reversed(layers), NET_INPUT)
        if srcs != (previous,):
            reads[name] = srcs
        layers[name] = module
        # The layer's output is this node's (the bias Add's, for a MatMul + Add).
        current = nodes[i].output[0]
        producer[current] = name
    if current != graph.output[0].name and not (
        nodes and nodes[-1].op_type in _TRAILING and nodes[-1].output[0] == graph.output[0].name
    ):
        raise UserError(f"{path}: the graph's output is not its last layer's")
    stack = LayerGraph(layers, reads) if reads else nn.Sequential(OrderedDict(layers))
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
