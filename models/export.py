"""PyTorch model -> IR net, and the plain post-training 8-bit export.

:func:`to_net` turns a model whose layers all carry formats (see
:mod:`squeezeforge.models.quant`) into an IR :class:`~squeezeforge.sim.ir.Net`: conv and linear
layers become ``conv2d``, ``dense`` or ``sparse_dense`` layers with their integer weights and
biases, max pooling and flatten pass through, ReLU is folded into the layer before it (a ReLU6
or other clamp becomes its ``clamp_max``), residual adds and concats become ``add`` and
``concat`` layers, and a layer that does not read the previous layer's output names its
``inputs``. The test vectors are the whole test split quantized to the input format, with the
reference model's outputs.

:func:`post_training_export` is the shortest way from a float model to the IR: dynamic fixed
point by Ristretto's rules, calibrated on the training data, no fine-tuning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn

from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import (
    NET_INPUT,
    Add,
    AvgPool2d,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    Layer,
    MaxPool2d,
    Net,
    SparseDense,
)
from squeezeforge.sim.metrics import quality
from squeezeforge.sim.numerics import FixedFormat, quantize
from squeezeforge.sim.reference import run_net

from .capture import capture, check_input_shape, check_targets, is_stack
from .data import Dataset, load_digits
from .quant import (
    CompressedLayer,
    GraphNode,
    NetGraph,
    QuantAdd,
    QuantAvgPool,
    QuantConcat,
    clamp_limit,
    compute_stages,
    net_graph,
    prepare,
)
from .train import check_finite_state

__all__ = [
    "check_supported",
    "post_training_export",
    "reference_quality",
    "to_net",
]


def check_supported(model: nn.Module) -> None:
    """Raise a :class:`~squeezeforge.sim.errors.UserError` naming the first module the IR cannot
    express, or the first parameter that is not finite. Cheap; call it before any long work."""
    compute_stages(model)
    check_finite_state(model.state_dict(), "model")


def _ir_layer(node: GraphNode, sparse: bool) -> Conv2d | Dense | SparseDense:
    name, m = node.name, node.module
    assert isinstance(m, CompressedLayer)
    wf = m.weight_format()
    q = m.weight_quantizer
    if wf is None or m.input_format is None or m.output_format is None:
        raise UserError(f"layer {name!r} is not fully quantized (run a fixed-point step)")
    if not getattr(q, "complete", True):
        raise UserError(f"layer {name!r}: INQ has not quantized every weight yet")
    common: dict[str, Any] = {
        "name": name,
        "input_format": m.input_format,
        "weight_format": wf,
        "output_format": m.output_format,
        "relu": node.relu,
        "bias": m.stored_bias(),
        "clamp_max": (None if node.clamp is None else clamp_limit(node.clamp, m.output_format)),
    }
    stored = m.stored_weights()
    layer = m.layer
    if isinstance(layer, nn.Conv2d):
        return Conv2d(
            in_channels=layer.in_channels,
            out_channels=layer.out_channels,
            kernel=tuple(layer.kernel_size),
            stride=int(layer.stride[0]),
            padding=int(layer.padding[0]),
            groups=int(layer.groups),
            weight=stored,
            **common,
        )
    if sparse:
        # The net keeps the pruned matrix; its layout over PEs is the compiler's (the Target's).
        return SparseDense.from_dense(stored, **common)
    return Dense(
        in_features=layer.in_features, out_features=layer.out_features, weight=stored, **common
    )


def _unformatted(kind: str, name: str) -> UserError:
    return UserError(f"{kind} {name!r} has no format (run a fixed-point step)")


def to_net(
    model: nn.Module,
    data: Dataset,
    *,
    name: str = "net",
    sparse: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
) -> Net:
    """The IR of a prepared, fully quantized ``model``, with the test split as test vectors.

    ``sparse`` names the linear layers that become ``sparse_dense`` (run on the sparse unit,
    accounted in CSC form over the Target's PEs).
    """
    sparse = set(sparse)
    graph = net_graph(model)
    layers: list[Layer] = []
    shapes: dict[str, tuple[int, ...]] = {NET_INPUT: tuple(data.input_shape)}
    previous = NET_INPUT
    for node in graph.nodes:
        lname, m = node.name, node.module
        # Only a layer that reads another tensor than the previous layer's names its inputs:
        # a stack is written exactly as before.
        inputs = node.sources if node.sources != (previous,) else ()
        layer: Layer
        if isinstance(m, CompressedLayer):
            enc = lname in sparse
            sparse.discard(lname)
            if enc and m.is_conv:
                raise UserError(f"layer {lname!r} is a convolution; only linear layers are sparse")
            layer = _ir_layer(node, enc)
        elif isinstance(m, nn.MaxPool2d):
            layer = MaxPool2d(name=lname)
        elif isinstance(m, QuantAvgPool):
            if m.format is None:
                raise _unformatted("average pool", lname)
            r, s = m.multiplier
            layer = AvgPool2d(lname, m.kernel, m.stride, r, s, m.format)
        elif isinstance(m, nn.Flatten):
            layer = Flatten(name=lname)
        elif isinstance(m, QuantAdd):
            if m.format is None:
                raise _unformatted("add", lname)
            layer = Add(lname, node.sources, m.format, relu=node.relu)
        elif isinstance(m, QuantConcat):
            layer = Concat(lname, node.sources)
        else:
            raise UserError(f"layer {lname!r} ({type(m).__name__}): run prepare() first")
        if inputs and not isinstance(layer, Add | Concat):
            layer = replace(layer, inputs=inputs)
        in_shapes = [shapes[src] for src in node.sources]
        if isinstance(layer, Concat):
            shapes[lname] = (sum(s[0] for s in in_shapes), *in_shapes[0][1:])
        else:
            shapes[lname] = tuple(layer.output_shape(in_shapes[0]))
        layers.append(layer)
        previous = lname
        # ReLU and clamps are part of the layer before them; Identity and Dropout vanish.
    if sparse:
        raise UserError(f"sparse encoding asked for unknown layer(s): {', '.join(sorted(sparse))}")
    input_format = _input_format(graph)
    test_inputs = quantize(data.x_test, input_format)
    shape = shapes[graph.output]
    net = Net(
        name=name,
        input_shape=data.input_shape,
        input_format=input_format,
        layers=tuple(layers),
        test_inputs=test_inputs,
        test_labels=_test_targets(data, shape),
        test_outputs=np.zeros((test_inputs.shape[0], *shape), dtype=np.int64),
        metadata=dict(metadata or {}),
    )
    return net.replace(test_outputs=run_net(net, test_inputs))


def _input_format(graph: NetGraph) -> FixedFormat:
    """The format of the net's input: that of the layers that read it (through pools)."""
    for node in graph.nodes:
        m = node.module
        if isinstance(m, CompressedLayer):
            fmt = m.input_format
        elif isinstance(m, QuantAdd):
            fmt = m.input_formats and m.input_formats[0]
        else:
            continue
        if fmt is None:
            raise UserError(f"layer {node.name!r} is not fully quantized (run a fixed-point step)")
        return fmt
    raise UserError("the model has no conv or linear layer")


def _test_targets(data: Dataset, out_shape: tuple[int, ...]) -> np.ndarray:
    if data.task == "classification":
        return np.asarray(data.y_test, dtype=np.int64)
    y = np.asarray(data.y_test, dtype=np.float64)
    if y.size != len(y) * int(np.prod(out_shape)):
        raise UserError(
            f"data set {data.name!r}: {y.size // len(y)} target(s) per sample, but the model"
            f" has {int(np.prod(out_shape))} output(s)"
        )
    return y.reshape(len(y), *out_shape)


def reference_quality(net: Net) -> dict[str, float]:
    """Accuracy, or MSE and max abs error of the real-valued outputs (regression), of the
    bit-accurate reference on the net's own test vectors."""
    return quality(net.test_outputs * 2.0**-net.output_format.frac, net.test_labels)


def post_training_export(
    model: nn.Module,
    *,
    bits: int = 8,
    data: Dataset | None = None,
    name: str = "net",
    metadata: Mapping[str, Any] | None = None,
) -> Net:
    """Float model -> IR with ``bits``-wide dynamic fixed point, calibrated, no fine-tuning."""
    from .compress.base import Context
    from .compress.fixed import FixedPoint

    if not 2 <= bits <= 16:
        raise UserError(f"bits must be in 2..16, got {bits}")
    if is_stack(model):
        check_supported(model)  # before the data loads: a plain stack needs no input shape
    data = data if data is not None else load_digits()
    check_targets(check_input_shape(model, data.input_shape, data.name), data)
    if not is_stack(model):
        notes: list[str] = []
        model = capture(model, data.input_shape, notes=notes)
        if notes:
            metadata = {**(metadata or {}), "notes": notes}
        check_supported(model)
    prepared = prepare(model)
    FixedPoint(weight_bits=bits, activation_bits=bits).apply(prepared, Context(data=data))
    return to_net(prepared, data, name=name, metadata=metadata)
