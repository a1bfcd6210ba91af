"""A quantized QONNX model (Brevitas' export, FINN's input) straight to the IR, no retraining.

A QONNX ``Quant`` node quantizes a tensor to ``bitwidth``-bit integers with a ``scale``. Where
every scale is a power of two, ``scale = 2**-frac`` is exactly a fraction length of the numeric
contract (:mod:`squeezeforge.sim.numerics`), so the model maps onto the IR with nothing
approximated:

* a ``Quant`` on an initializer gives a layer's integer weights (computed with QONNX's own
  ``int_quant``, so rounding and clipping are QONNX's) and their :class:`FixedWeights`;
* the ``Quant`` on the graph input gives the net's input format;
* a ``Quant`` after a conv or linear layer (with ``Relu`` and ``MaxPool`` between, in any order)
  gives the layer's output format: the layer's requantization.

The requantization of the contract rounds half up (``floor(x + 0.5)``). QONNX's ``HALF_UP``
rounds half away from zero: the same on values >= 0, so it is accepted after a ``Relu`` (both
then give 0 for negative sums). ``ROUND`` (half to even), the Brevitas default, and every other
mode would differ on ties and are refused naming the node, as are non-power-of-two scales,
non-zero zero points, per-channel scales that differ and narrow-range activations. A last layer
with no output ``Quant`` keeps its sums exactly (an output format of the accumulator's fraction
length) when they fit 16 bits.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import Conv2d, Dense, Flatten, MaxPool2d, Net
from squeezeforge.sim.metrics import task_of
from squeezeforge.sim.numerics import FixedFormat, FixedWeights, accumulator_bits
from squeezeforge.sim.reference import run_net

__all__ = ["is_qonnx", "load_qonnx"]

_QUANT_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")
_MAX_ACT_BITS = 16


@dataclass
class _Quant:
    scale_frac: int
    bits: int
    signed: bool
    narrow: bool
    rounding: str


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    out = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in out.items()}


class _Reader:
    def __init__(self, path: Path, model: Any) -> None:
        from onnx import numpy_helper

        self.path = path
        self.graph = model.graph
        self.consts: dict[str, np.ndarray] = {
            i.name: numpy_helper.to_array(i) for i in self.graph.initializer
        }
        for node in self.graph.node:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])

    def where(self, node: Any) -> str:
        return f"{self.path.name}: node {node.name or node.op_type!r} ({node.op_type})"

    def quant(self, node: Any) -> _Quant:
        a = _attrs(node)
        names = node.input[1:4]
        if any(n not in self.consts for n in names):
            raise UserError(
                f"{self.where(node)}: scale, zero point and bit width must be constants"
            )
        scale, zero, bits = (np.asarray(self.consts[n], dtype=np.float64) for n in names)
        if np.any(zero != 0):
            raise UserError(f"{self.where(node)}: zero point {zero.ravel()[:3]} is not 0")
        if np.unique(scale).size != 1:
            raise UserError(f"{self.where(node)}: per-channel scales differ; one scale per tensor")
        s = float(scale.ravel()[0])
        frac = -math.log2(s) if s > 0 else math.nan
        if not math.isfinite(frac) or frac != round(frac):
            raise UserError(
                f"{self.where(node)}: scale {s:g} is not a power of two; the numeric contract's"
                " formats are fixed point"
            )
        b = float(bits.ravel()[0])
        if b != round(b) or b < 1:
            raise UserError(f"{self.where(node)}: bit width {b} is not a whole number")
        return _Quant(
            scale_frac=int(round(frac)),
            bits=int(b),
            signed=bool(a.get("signed", 1)),
            narrow=bool(a.get("narrow", 0)),
            rounding=str(a.get("rounding_mode", "ROUND")).upper(),
        )

    def act_format(self, node: Any, q: _Quant, after_relu: bool) -> FixedFormat:
        if q.narrow:
            raise UserError(f"{self.where(node)}: narrow-range activations are not supported")
        if q.rounding != "HALF_UP" or not (after_relu or not q.signed):
            raise UserError(
                f"{self.where(node)}: rounding_mode {q.rounding} differs from the numeric"
                " contract's round-half-up on ties; export with HALF_UP after a Relu"
            )
        # An unsigned b-bit value fits a signed (b+1)-bit format with the same upper bound.
        bits = q.bits if q.signed else q.bits + 1
        if not 2 <= bits <= _MAX_ACT_BITS:
            raise UserError(f"{self.where(node)}: {q.bits}-bit activations; 1..15 supported")
        return FixedFormat(bits=bits, frac=q.scale_frac)


def _weights(reader: _Reader, node: Any, consumer: Any) -> tuple[np.ndarray, FixedWeights]:
    """Integer weights of the Quant ``node`` on an initializer, as QONNX computes them."""
    from qonnx.custom_op.general.intquant import int_quant

    q = reader.quant(node)
    if node.input[0] not in reader.consts:
        raise UserError(f"{reader.where(consumer)}: its weights are not a quantized constant")
    w = np.asarray(reader.consts[node.input[0]], dtype=np.float64)
    scale = 2.0**-q.scale_frac
    quantized = int_quant(w, scale, 0.0, np.array(float(q.bits)), q.signed, q.narrow, q.rounding)
    ints = np.rint(np.asarray(quantized) / scale).astype(np.int64)
    bits = q.bits if q.signed else q.bits + 1
    if not 2 <= bits <= 16:
        raise UserError(f"{reader.where(node)}: {q.bits}-bit weights; 2..16 supported")
    return ints, FixedWeights(bits=bits, frac=q.scale_frac)


def is_qonnx(path: str | os.PathLike) -> bool:
    """Whether the ONNX file at ``path`` holds QONNX ``Quant`` nodes (an already quantized
    model, which maps to the IR without compression)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX at all: the float importer says why
        return False
    return any(n.op_type == "Quant" for n in model.graph.node)


def load_qonnx(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    test_inputs: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
) -> Net:
    """The QONNX model in ``path`` as an IR net; ``test_inputs`` (float) become its test vectors,
    quantized exactly as the model's input ``Quant`` does."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path} is not a valid ONNX model ({type(exc).__name__})") from None
    reader = _Reader(path, model)
    graph = reader.graph
    producers = {out: node for node in graph.node for out in node.output}
    inputs = [i for i in graph.input if i.name not in reader.consts]
    if len(inputs) != 1:
        raise UserError(f"{path}: the graph has {len(inputs)} inputs; one is supported")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) < 2 or any(d <= 0 for d in dims[1:]):
        raise UserError(f"{path}: input {inputs[0].name!r} has no fixed shape per sample")
    input_shape = tuple(dims[1:])

    chain = [n for n in graph.node if n.op_type != "Constant" and not _is_const_quant(n, reader)]
    if not chain or chain[0].op_type != "Quant":
        raise UserError(f"{path}: the input must go through a Quant node first")
    # The input is quantized in software (test vectors here, a user's inputs later), with
    # QONNX's own int_quant: any rounding mode is exact there.
    input_quant = reader.quant(chain[0])
    in_bits = input_quant.bits if input_quant.signed else input_quant.bits + 1
    if not 2 <= in_bits <= _MAX_ACT_BITS:
        raise UserError(f"{reader.where(chain[0])}: {input_quant.bits}-bit input; 1..15 supported")
    in_fmt = FixedFormat(bits=in_bits, frac=input_quant.scale_frac)

    layers: list[Any] = []
    fmt = in_fmt
    current = chain[0].output[0]
    pending: dict[str, Any] | None = None  # the compute layer waiting for its output format
    deferred_pools: list[MaxPool2d] = []

    def finish(out_fmt: FixedFormat | None, relu: bool) -> None:
        nonlocal fmt, pending
        assert pending is not None
        layer_cls = pending.pop("cls")
        acc_frac = fmt.frac + pending["weight_format"].frac
        if out_fmt is None:
            acc = accumulator_bits(fmt, pending["weight_format"], pending.pop("fan_in"))
            if acc > _MAX_ACT_BITS:
                raise UserError(
                    f"{path}: layer {pending['name']!r} has no output Quant and its sums need"
                    f" {acc} bits; add a Quant node after it"
                )
            out_fmt = FixedFormat(bits=max(acc, 2), frac=acc_frac)
        else:
            pending.pop("fan_in")
        bias = pending.pop("bias_float")
        bias_int = np.zeros(pending["weight"].shape[0], dtype=np.int64)
        if bias is not None:
            scaled = np.asarray(bias, dtype=np.float64) * 2.0**acc_frac
            if np.any(scaled != np.rint(scaled)):
                raise UserError(
                    f"{path}: layer {pending['name']!r}: its bias is not a multiple of the"
                    f" accumulator's scale 2**-{acc_frac}; quantize the bias (Int32Bias)"
                )
            bias_int = np.rint(scaled).astype(np.int64)
        layers.append(
            layer_cls(input_format=fmt, output_format=out_fmt, relu=relu, bias=bias_int, **pending)
        )
        layers.extend(deferred_pools)
        deferred_pools.clear()
        fmt, pending = out_fmt, None

    relu_seen = False
    for node in chain[1:]:
        op = node.op_type
        data = [x for x in node.input if x and x not in reader.consts and x in producers]
        data = [x for x in data if not _is_const_quant(producers[x], reader)]
        if data != [current]:
            raise UserError(f"{reader.where(node)} combines tensors; the IR is a chain of layers")
        if op in ("Conv", "Gemm", "MatMul"):
            if pending is not None:
                finish(None, relu_seen)
            relu_seen = False
            wq = producers.get(node.input[1])
            if wq is None or wq.op_type != "Quant":
                raise UserError(f"{reader.where(node)}: its weights have no Quant node")
            ints, wfmt = _weights(reader, wq, node)
            bias = None
            if len(node.input) > 2 and node.input[2]:
                b = node.input[2]
                bias = reader.consts.get(b)
                if bias is None and b in producers and producers[b].op_type == "Quant":
                    bq = producers[b]
                    qb = reader.quant(bq)
                    bias = np.asarray(reader.consts[bq.input[0]], dtype=np.float64)
                    bias = np.rint(bias * 2.0**qb.scale_frac) * 2.0**-qb.scale_frac
            lname = f"{op.lower()}{len(layers)}"
            if op == "Conv":
                a = _attrs(node)
                pads, strides = list(a.get("pads", [0] * 4)), list(a.get("strides", [1, 1]))
                if a.get("group", 1) != 1 or len(set(pads)) > 1 or len(set(strides)) > 1:
                    raise UserError(f"{reader.where(node)}: grouped or asymmetric convolution")
                pending = dict(
                    cls=Conv2d, name=lname, in_channels=ints.shape[1],
                    out_channels=ints.shape[0], kernel=tuple(ints.shape[2:]), stride=strides[0],
                    padding=pads[0], weight_format=wfmt, weight=ints, bias_float=bias,
                    fan_in=int(np.prod(ints.shape[1:])),
                )  # fmt: skip
            else:
                a = _attrs(node)
                w = ints if (op == "Gemm" and a.get("transB", 0)) else ints.T
                pending = dict(
                    cls=Dense, name=lname, in_features=w.shape[1], out_features=w.shape[0],
                    weight_format=wfmt, weight=np.ascontiguousarray(w), bias_float=bias,
                    fan_in=w.shape[1],
                )  # fmt: skip
        elif op == "Add" and pending is not None and pending["bias_float"] is None:
            const = [x for x in node.input if x in reader.consts]
            if len(const) != 1:
                raise UserError(f"{reader.where(node)}: only a constant bias add is supported")
            pending["bias_float"] = reader.consts[const[0]]
        elif op == "Relu":
            if pending is None:
                raise UserError(f"{reader.where(node)}: a Relu must follow a conv or linear layer")
            relu_seen = True
        elif op == "Quant":
            if pending is None:
                raise UserError(f"{reader.where(node)}: a Quant must follow a conv or linear layer")
            finish(reader.act_format(node, reader.quant(node), relu_seen), relu_seen)
            relu_seen = False
        elif op == "MaxPool":
            a = _attrs(node)
            if list(a.get("kernel_shape", [])) != [2, 2] or list(a.get("strides", [2, 2])) != [
                2,
                2,
            ]:
                raise UserError(f"{reader.where(node)}: only 2x2 max pools of stride 2")
            pool = MaxPool2d(name=f"pool{len(layers) + len(deferred_pools)}")
            # Max commutes with the monotonic requantization: a pool before the layer's Quant
            # runs after the layer's output in the IR.
            (deferred_pools if pending is not None else layers).append(pool)
        elif op in ("Flatten", "Reshape"):
            if pending is not None:
                finish(None, relu_seen)
                relu_seen = False
            layers.append(Flatten(name=f"flatten{len(layers)}"))
        elif op in ("Identity", "Dropout"):
            pass
        else:
            raise UserError(f"{reader.where(node)} has no equivalent in the IR")
        current = node.output[0]
    if pending is not None:
        finish(None, relu_seen)
    if current != graph.output[0].name:
        raise UserError(f"{path}: the graph's output is not its last layer's")

    x = np.zeros((0, *input_shape), dtype=np.int64)
    labels = np.zeros(0, dtype=np.int64)
    if test_inputs is not None:
        x = _quantize_input(np.asarray(test_inputs, dtype=np.float64), input_quant)
        labels = np.asarray(test_labels if test_labels is not None else np.zeros(len(x), np.int64))
        if task_of(labels) == "regression":
            out_shape = _out_shape(layers, input_shape)
            if labels.size != len(labels) * int(np.prod(out_shape)):
                raise UserError(
                    f"{path}: {labels.size // max(len(labels), 1)} regression target(s) per"
                    f" sample, but the model has {int(np.prod(out_shape))} output(s)"
                )
            labels = labels.astype(np.float64).reshape(len(labels), *out_shape)
        else:
            labels = labels.astype(np.int64)
    net = Net(
        name=name or path.stem,
        input_shape=input_shape,
        input_format=in_fmt,
        layers=tuple(layers),
        test_inputs=x[:0],
        test_labels=labels[:0],
        test_outputs=np.zeros((0, *_out_shape(layers, input_shape)), dtype=np.int64),
        metadata={
            "source": "qonnx",
            "file": path.name,
            "input_quant": {
                "signed": input_quant.signed,
                "narrow": input_quant.narrow,
                "rounding_mode": input_quant.rounding,
            },
        },
    )
    return net.replace(test_inputs=x, test_labels=labels, test_outputs=run_net(net, x))


def _quantize_input(x: np.ndarray, q: _Quant) -> np.ndarray:
    """Float inputs to the input format's integers exactly as the model's input Quant does."""
    from qonnx.custom_op.general.intquant import int_quant

    scale = 2.0**-q.scale_frac
    y = int_quant(x, scale, 0.0, np.array(float(q.bits)), q.signed, q.narrow, q.rounding)
    return np.rint(np.asarray(y) / scale).astype(np.int64)


def _out_shape(layers: list[Any], shape: tuple[int, ...]) -> tuple[int, ...]:
    for layer in layers:
        shape = layer.output_shape(shape)
    return shape


def _is_const_quant(node: Any, reader: _Reader) -> bool:
    return node.op_type == "Quant" and node.input[0] in reader.consts
