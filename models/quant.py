"""Fake quantization in PyTorch that follows the numeric contract bit for bit.

Every conv and linear layer of a model being compressed is wrapped in a
:class:`CompressedLayer`. It holds what the passes decide about the layer: a pruning mask, a
weight quantizer (fixed point, INQ power of two or a shared-weight codebook) and the fixed-point
formats of its input and output activations. Its forward pass is the layer's arithmetic in
:mod:`squeezeforge.sim.numerics`, carried out on float values that sit exactly on the fixed-point
grid:

1. the input is rounded half up to the input format and saturated (a no-op after the first
   layer: the previous layer already produced values on that grid);
2. weights are the decoded weight values times ``2**-frac``; the bias is rounded half up to the
   accumulator's fraction length and saturated to :func:`~squeezeforge.sim.numerics.bias_bits`;
3. conv or matmul plus bias is the accumulator (scaled by ``2**-acc_frac``);
4. one requantization: ``floor(acc * 2**out.frac + 0.5)`` saturated to the output format, which
   is exactly :func:`~squeezeforge.sim.numerics.round_shift` of the integer accumulator;
5. ReLU and max pooling stay separate modules; both commute with the scaling. A clamp after a
   ReLU (ReLU6) is :class:`QuantClamp`, at the integer limit the IR stores (``clamp_max``).

Graphs add two layers of several inputs: :class:`QuantAdd` computes item 7 of the contract (the
exact sum of two values on their grids, rounded half up to the output format and saturated) and
:class:`QuantConcat` joins tensors of one format.

Scaling by powers of two is exact in binary floating point, so in float64 (53-bit mantissa) every
step above is exact whenever the accumulator is at most 53 bits wide, and the fake-quantized model
predicts exactly what the bit-accurate reference predicts. Training runs in float32, where only the
widest accumulators can lose low bits; gradients pass the rounding by a straight-through estimator
that is zero where the value saturated.
"""

from __future__ import annotations

import copy
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import NET_INPUT
from squeezeforge.sim.numerics import (
    CodebookWeights,
    FixedFormat,
    FixedWeights,
    Pow2Weights,
    WeightFormat,
    avg_pool_multiplier,
    bias_bits,
    int_range,
)

from .graph import ChannelConcat, LayerGraph, ResidualAdd

__all__ = [
    "CodebookQuantizer",
    "CompressedLayer",
    "ComputeStage",
    "FixedQuantizer",
    "GraphNode",
    "NetGraph",
    "Pow2Quantizer",
    "QuantAdd",
    "QuantAvgPool",
    "QuantClamp",
    "QuantConcat",
    "activation_frac",
    "avg_pool_geometry",
    "clamp_limit",
    "compute_stages",
    "fake_quant",
    "fake_quant_format",
    "leaf_modules",
    "net_graph",
    "prepare",
    "weight_frac",
]

# Fraction lengths a FixedFormat accepts.
_FRAC_MIN, _FRAC_MAX = -32, 32

_SKIPPED = (nn.Identity, nn.modules.dropout._DropoutNd)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


class _RoundSaturate(torch.autograd.Function):
    """``clamp(floor(x * 2**frac + 0.5), lo, hi) * 2**-frac`` with a clipped straight-through
    gradient: 1 where ``x`` lies inside the representable range, 0 where it saturated."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, frac: int, lo: int, hi: int) -> torch.Tensor:  # type: ignore[override]
        scale = 2.0**frac
        scaled = x * scale
        ctx.save_for_backward((scaled >= lo) & (scaled <= hi))
        return torch.floor(scaled + 0.5).clamp(lo, hi) / scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None


def fake_quant(x: torch.Tensor, frac: int, lo: int, hi: int) -> torch.Tensor:
    """Round half up to fraction length ``frac`` and saturate the integer to ``[lo, hi]``."""
    return _RoundSaturate.apply(x, int(frac), int(lo), int(hi))


def fake_quant_format(x: torch.Tensor, fmt: FixedFormat) -> torch.Tensor:
    """:func:`~squeezeforge.sim.numerics.quantize` in float, differentiable by STE."""
    return fake_quant(x, fmt.frac, fmt.min, fmt.max)


def _clamp_frac(frac: int) -> int:
    return max(_FRAC_MIN, min(_FRAC_MAX, int(frac)))


def weight_frac(bits: int, max_abs: float) -> int:
    """Ristretto's weight rule: ``il = ceil(log2(max|W|) + 1)`` (sign included), fl = bits - il."""
    if not max_abs > 0:
        return _clamp_frac(bits - 1)
    return _clamp_frac(bits - math.ceil(math.log2(max_abs) + 1))


def activation_frac(bits: int, max_value: float) -> int:
    """Fraction length of an activation format that holds ``max_value`` without saturating.

    Ristretto writes the activation rule as ``il = ceil(log2(max))``, ``fl = bits - il``, for an
    integer length that does not count a sign bit; our activations are signed two's complement
    (the contract has no unsigned format), so the sign bit is added back: the largest ``fl`` with
    ``max_value <= (2**(bits-1) - 1) * 2**-fl``. An input in [0, 1] at 8 bits gets ``fl = 6``,
    so 1.0 is representable.
    """
    if not max_value > 0:
        return _clamp_frac(bits - 1)
    top = (1 << (bits - 1)) - 1
    return _clamp_frac(math.floor(math.log2(top / max_value)))


# ---------------------------------------------------------------------------------------------
# Weight quantizers: each maps the layer's (masked) float weight to its fake-quantized value.


class FixedQuantizer(nn.Module):
    """Dynamic fixed-point weights: round half up to ``fmt.frac``, saturate to ``fmt.bits``."""

    def __init__(self, fmt: FixedWeights) -> None:
        super().__init__()
        self.fmt = fmt

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        lo, hi = self.fmt.value_range
        return fake_quant(w, self.fmt.frac, lo, hi)

    def weight_format(self) -> WeightFormat:
        return self.fmt

    def stored(self, w_eff: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        return np.rint(w_eff.detach().double().numpy() * 2.0**self.fmt.frac).astype(np.int64)

    @property
    def complete(self) -> bool:
        return True


class Pow2Quantizer(nn.Module):
    """INQ power-of-two weights: the ``frozen`` entries take their quantized ``values``.

    Entries not yet frozen keep their float value and keep training; ``torch.where`` gives the
    frozen ones zero gradient, which is INQ's gradient mask.
    """

    def __init__(self, fmt: Pow2Weights, shape: torch.Size) -> None:
        super().__init__()
        self.fmt = fmt
        self.register_buffer("frozen", torch.zeros(shape, dtype=torch.bool))
        self.register_buffer("values", torch.zeros(shape))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.where(self.frozen, self.values.to(w.dtype), w)

    @property
    def complete(self) -> bool:
        return bool(self.frozen.all())

    def weight_format(self) -> WeightFormat:
        return self.fmt

    def stored(self, w_eff: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        # The scale 2**n2 is folded into the fraction length -n2 (see the numeric contract).
        return np.rint(w_eff.detach().double().numpy() * 2.0**self.fmt.frac).astype(np.int64)


class CodebookQuantizer(nn.Module):
    """Shared weights: each weight is ``table[index]``, ``table[0]`` is exact zero.

    ``centroids`` are the ``2**index_bits - 1`` non-zero table entries; they are parameters, so
    fine-tuning moves each shared value by the summed gradient of the weights that use it (Deep
    Compression's centroid fine-tuning). They are fake-quantized to ``value_format``.
    """

    def __init__(
        self,
        index: torch.Tensor,
        centroids: torch.Tensor,
        index_bits: int,
        value_format: FixedFormat,
    ) -> None:
        super().__init__()
        self.index_bits = int(index_bits)
        self.value_format = value_format
        self.register_buffer("index", index.to(torch.long))
        self.centroids = nn.Parameter(centroids.clone().float())

    def table(self) -> torch.Tensor:
        quantized = fake_quant_format(self.centroids, self.value_format)
        return torch.cat([quantized.new_zeros(1), quantized])

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.table().to(w.dtype)[self.index]

    @property
    def complete(self) -> bool:
        return True

    def weight_format(self) -> WeightFormat:
        vf = self.value_format
        table = np.rint(self.table().detach().double().numpy() * 2.0**vf.frac).astype(np.int64)
        return CodebookWeights(
            index_bits=self.index_bits,
            value_bits=vf.bits,
            frac=vf.frac,
            table=tuple(int(t) for t in table),
        )

    def stored(self, w_eff: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        return (self.index * (mask != 0)).numpy().astype(np.int64)


WeightQuantizer = FixedQuantizer | Pow2Quantizer | CodebookQuantizer


class CompressedLayer(nn.Module):
    """A conv or linear layer with its pruning mask, weight quantizer and activation formats."""

    def __init__(self, layer: nn.Conv2d | nn.Linear) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("mask", torch.ones_like(layer.weight, dtype=torch.float32))
        self.weight_quantizer: nn.Module | None = None
        self.input_format: FixedFormat | None = None
        self.output_format: FixedFormat | None = None

    # -- what the passes read

    @property
    def is_conv(self) -> bool:
        return isinstance(self.layer, nn.Conv2d)

    @property
    def weight(self) -> torch.Tensor:
        """The float weight under the mask (before any quantizer)."""
        return self.layer.weight * self.mask.to(self.layer.weight.dtype)

    def weight_format(self) -> WeightFormat | None:
        q = self.weight_quantizer
        return None if q is None else q.weight_format()  # type: ignore[operator]

    @property
    def acc_frac(self) -> int | None:
        wf = self.weight_format()
        if self.input_format is None or wf is None:
            return None
        return self.input_format.frac + wf.frac

    def effective_weight(self) -> torch.Tensor:
        w = self.weight
        return w if self.weight_quantizer is None else self.weight_quantizer(w)

    def effective_bias(self) -> torch.Tensor | None:
        b = self.layer.bias
        wf = self.weight_format()
        if b is None or self.input_format is None or wf is None:
            return b
        lo, hi = int_range(bias_bits(self.input_format, wf))
        return fake_quant(b, self.input_format.frac + wf.frac, lo, hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_format is not None:
            x = fake_quant_format(x, self.input_format)
        w, b = self.effective_weight(), self.effective_bias()
        if self.is_conv:
            conv = self.layer
            y = F.conv2d(x, w, b, stride=conv.stride, padding=conv.padding, groups=conv.groups)
        else:
            y = F.linear(x, w, b)
        if self.output_format is not None:
            y = fake_quant_format(y, self.output_format)
        return y

    def enforce(self) -> None:
        """Keep pruned weights exactly zero in the parameter itself, after every optimizer step."""
        with torch.no_grad():
            self.layer.weight.mul_(self.mask.to(self.layer.weight.dtype))

    def stored_weights(self) -> np.ndarray:
        """Integer stored weights for the IR (values, or codebook indices)."""
        q = self.weight_quantizer
        if q is None:
            raise ValueError("layer has no weight format")
        with torch.no_grad():
            w = self.effective_weight().double()
        return q.stored(w, self.mask)  # type: ignore[operator]

    def stored_bias(self) -> np.ndarray:
        acc_frac = self.acc_frac
        if acc_frac is None:
            raise ValueError("layer has no input or weight format")
        b = self.effective_bias()
        if b is None:
            return np.zeros(self.layer.weight.shape[0], dtype=np.int64)
        return np.rint(b.detach().double().numpy() * 2.0**acc_frac).astype(np.int64)

    def extra_repr(self) -> str:
        return f"input={self.input_format}, output={self.output_format}"


class QuantAvgPool(nn.Module):
    """Average pooling (window ``kernel``, ``stride``, no padding); once :attr:`format` is set
    (by the fixed-point pass: the format of the activations it pools, which it keeps), its
    forward computes item 6 of the numeric contract exactly, with a straight-through gradient.
    """

    def __init__(self, kernel: tuple[int, int], stride: int) -> None:
        super().__init__()
        self.kernel = (int(kernel[0]), int(kernel[1]))
        self.stride = int(stride)
        self.format: FixedFormat | None = None

    @property
    def multiplier(self) -> tuple[int, int]:
        """``(r, s)``: the sum is multiplied by ``r / 2**s``."""
        return avg_pool_multiplier(self.kernel[0] * self.kernel[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(x, self.kernel, self.stride)
        fmt = self.format
        if fmt is None:
            return y
        r, s = self.multiplier
        # In float64 the integer sums are exact (a window of 2**16 16-bit values stays below
        # 2**53), and so is the floor of (S * r + 2**(s-1)) / 2**s, the contract's shift.
        q = torch.floor(x.detach().double() * 2.0**fmt.frac + 0.5)
        total = F.avg_pool2d(q, self.kernel, self.stride, divisor_override=1)
        exact = torch.floor((total * r + (2.0 ** (s - 1) if s else 0.0)) / 2.0**s)
        exact = exact.clamp(fmt.min, fmt.max) * 2.0**-fmt.frac
        return y + (exact.to(y.dtype) - y).detach()

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, format={self.format}"


def clamp_limit(max_value: float, fmt: FixedFormat) -> int:
    """The IR's ``clamp_max`` of a clamp at ``max_value`` on ``fmt``: ``floor(max_value *
    2**frac)``, or the format's largest value when ``max_value`` lies beyond it (item 4)."""
    return max(0, min(math.floor(max_value * 2.0**fmt.frac), fmt.max))


class QuantClamp(nn.Module):
    """ReLU, then a clamp at ``max_value`` (ReLU6 is ``max_value = 6``). Once :attr:`format`
    is set (by the fixed-point pass: the output format of the layer it follows), the clamp is
    at :func:`clamp_limit` on that format's grid, as the IR's ``clamp_max`` is."""

    def __init__(self, max_value: float) -> None:
        super().__init__()
        self.max_value = float(max_value)
        self.format: FixedFormat | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmt = self.format
        top = self.max_value if fmt is None else clamp_limit(self.max_value, fmt) * fmt.scale
        return torch.clamp(x, 0.0, top)

    def extra_repr(self) -> str:
        return f"max_value={self.max_value}, format={self.format}"


class QuantAdd(ResidualAdd):
    """A residual add. Once :attr:`format` and :attr:`input_formats` are set (by the
    fixed-point pass), its forward computes item 7 of the numeric contract exactly: both inputs
    sit on their grids, so their float sum is the exactly aligned sum, and rounding it half up
    to ``format`` and saturating is the contract's requantization; the gradient passes by the
    straight-through estimator of :func:`fake_quant`."""

    def __init__(self) -> None:
        super().__init__()
        self.format: FixedFormat | None = None
        self.input_formats: tuple[FixedFormat, FixedFormat] | None = None

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.format is None or self.input_formats is None:
            return a + b
        fa, fb = self.input_formats
        # No-ops on values the layers before produced; they place an unquantized input.
        a, b = fake_quant_format(a, fa), fake_quant_format(b, fb)
        return fake_quant_format(a + b, self.format)

    def extra_repr(self) -> str:
        return f"inputs={self.input_formats}, format={self.format}"


class QuantConcat(ChannelConcat):
    """A concat along the channels; its inputs share :attr:`format`, which it keeps."""

    def __init__(self) -> None:
        super().__init__()
        self.format: FixedFormat | None = None

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        fmt = self.format
        if fmt is not None:
            xs = tuple(fake_quant_format(x, fmt) for x in xs)
        return torch.cat(xs, dim=1)

    def extra_repr(self) -> str:
        return f"format={self.format}"


def avg_pool_geometry(m: nn.Module) -> tuple[tuple[int, int], int] | None:
    """``(kernel, stride)`` of an ``nn.AvgPool2d`` the IR can express, None if it cannot."""
    k = m.kernel_size
    kernel = (k, k) if isinstance(k, int) else tuple(k)
    st = m.stride if m.stride is not None else kernel
    stride = (st, st) if isinstance(st, int) else tuple(st)
    pad = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
    if stride[0] != stride[1] or pad != (0, 0) or m.ceil_mode or m.divisor_override:
        return None
    return (int(kernel[0]), int(kernel[1])), int(stride[0])


# ---------------------------------------------------------------------------------------------
# Walking a model


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in execution order, with qualified names.

    Only :class:`torch.nn.Sequential` containers are entered: their order *is* the execution
    order. Any other module with children has a ``forward`` we cannot read, so it is refused.
    """
    out: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, m: nn.Module) -> None:
        if isinstance(m, CompressedLayer):
            out.append((prefix, m))
        elif isinstance(m, LayerGraph) and prefix:
            raise UserError(
                f"module {prefix!r} is a LayerGraph inside another module; a graph is read only"
                " as the whole model"
            )
        elif isinstance(m, nn.Sequential):
            for name, child in m.named_children():
                visit(f"{prefix}.{name}" if prefix else name, child)
        elif any(True for _ in m.children()):
            raise UserError(
                f"module {prefix or type(m).__name__!r} ({type(m).__name__}) has its own forward;"
                " squeezeforge reads only nn.Sequential stacks of supported layers"
            )
        else:
            out.append((prefix or type(m).__name__, m))

    visit("", model)
    return out


def graph_leaves(model: nn.Module) -> list[tuple[str, nn.Module, tuple[str, ...]]]:
    """Leaf modules in execution order, each with the names of the tensors it reads (earlier
    leaves, or :data:`~squeezeforge.sim.ir.NET_INPUT`): in a stack the previous leaf, in a
    :class:`~squeezeforge.models.graph.LayerGraph` what its ``inputs`` say."""
    if isinstance(model, LayerGraph):
        out = model.sources()
        for name, m, _ in out:
            if not isinstance(m, CompressedLayer) and any(True for _ in m.children()):
                raise UserError(
                    f"layer {name!r} ({type(m).__name__}) of the graph holds other modules; a"
                    " LayerGraph holds leaf layers"
                )
    else:
        out = []
        previous = NET_INPUT
        for name, m in leaf_modules(model):
            out.append((name, m, (previous,)))
            previous = name
    seen = {NET_INPUT}
    for name, _, srcs in out:
        if name == NET_INPUT:
            raise UserError(f"a layer is named {NET_INPUT!r}, the name of the net's input")
        for src in srcs:
            if src not in seen:
                raise UserError(f"layer {name!r} reads {src!r}, which is no earlier layer")
        seen.add(name)
    return out


def _describe(name: str, m: nn.Module) -> str:
    return f"{name!r} ({type(m).__name__})"


def _check_module(name: str, m: nn.Module) -> None:
    """Refuse a module the IR cannot express, naming it."""
    if isinstance(m, nn.Conv2d):
        pad = m.padding
        if isinstance(pad, str):
            raise UserError(f"{_describe(name, m)}: padding={pad!r}; give the padding as integers")
        problems = []
        if tuple(m.dilation) != (1, 1):
            problems.append(f"dilation={m.dilation}")
        if m.stride[0] != m.stride[1]:
            problems.append(f"stride={m.stride} (must be square)")
        if pad[0] != pad[1]:
            problems.append(f"padding={pad} (must be the same on both axes)")
        if m.padding_mode != "zeros":
            problems.append(f"padding_mode={m.padding_mode!r}")
        if problems:
            raise UserError(f"{_describe(name, m)} is not supported: {', '.join(problems)}")
    elif isinstance(m, nn.MaxPool2d):
        k = m.kernel_size if isinstance(m.kernel_size, int) else tuple(m.kernel_size)
        s = m.stride if isinstance(m.stride, int) else tuple(m.stride)
        ok = (
            k in (2, (2, 2))
            and s in (2, (2, 2))
            and m.padding in (0, (0, 0))
            and m.dilation in (1, (1, 1))
            and not m.ceil_mode
        )
        if not ok:
            raise UserError(
                f"{_describe(name, m)}: only 2x2 max pooling with stride 2 is supported"
            )
    elif isinstance(m, nn.AvgPool2d):
        if avg_pool_geometry(m) is None:
            raise UserError(
                f"{_describe(name, m)}: only average pooling with a square stride, no padding"
                " and no ceil_mode or divisor_override is supported"
            )
    elif isinstance(m, nn.AdaptiveAvgPool2d):
        raise UserError(
            f"{_describe(name, m)}: adaptive pooling needs the input size; pass the model"
            " through squeezeforge's capture (compress and export do)"
        )
    elif isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise UserError(f"{_describe(name, m)}: only Flatten(start_dim=1) is supported")
    elif isinstance(m, nn.Hardtanh):  # nn.ReLU6 is Hardtanh(0, 6)
        if m.min_val != 0 or not m.max_val > 0:
            raise UserError(
                f"{_describe(name, m)}: clamps to [{m.min_val}, {m.max_val}]; only a clamp to"
                " [0, c] with c > 0 (a ReLU with a ceiling, as ReLU6) is supported"
            )
    elif not isinstance(
        m,
        (
            nn.Linear,
            nn.ReLU,
            nn.Hardsigmoid,
            CompressedLayer,
            QuantAvgPool,
            QuantClamp,
            ResidualAdd,
            ChannelConcat,
            *_SKIPPED,
            *_BATCHNORM,
        ),
    ):
        raise UserError(
            f"module {_describe(name, m)} cannot be expressed in the IR (supported: Conv2d,"
            " grouped and depthwise too, Linear, ReLU, ReLU6 and clamps to [0, c], Hardsigmoid,"
            " MaxPool2d(2), AvgPool2d, global average pooling, Flatten, residual adds, channel"
            " concats, BatchNorm after a conv or linear layer, Dropout and Identity)"
        )


_COMPUTE = (nn.Conv2d, nn.Linear, CompressedLayer)
_POOLS = (nn.AvgPool2d, QuantAvgPool)
# Layers of the IR that read one tensor and pass its format on.
_PASS_THROUGH = (nn.MaxPool2d, nn.Flatten, *_POOLS)


@dataclass(eq=False)
class GraphNode:
    """A layer of the IR net: a leaf module of the model, the IR tensors it reads (layer names
    or :data:`~squeezeforge.sim.ir.NET_INPUT`), and, for a compute layer or an add, the ReLU and
    the clamp (its ``max_value``) that fuse into it."""

    name: str
    module: nn.Module
    sources: tuple[str, ...] = ()
    relu: bool = False
    clamp: float | None = None


#: What :func:`compute_stages` lists: a conv or linear layer and what fuses into it.
ComputeStage = GraphNode


@dataclass
class NetGraph:
    """A model as the IR sees it: ``nodes`` are its layers in order (ReLU and clamps fused into
    the layer before, BatchNorm, Dropout and Identity gone); ``folds`` names the layer each
    BatchNorm and Hardsigmoid folds into; ``tensor_of`` gives, for every leaf, the IR tensor its
    output is (a fused or dropped leaf passes its input's on)."""

    nodes: list[GraphNode]
    folds: dict[str, str]
    tensor_of: dict[str, str]

    @property
    def output(self) -> str:
        return self.nodes[-1].name

    def node(self, name: str) -> GraphNode:
        return next(n for n in self.nodes if n.name == name)

    def readers(self, tensor: str) -> list[GraphNode]:
        """The layers that read IR tensor ``tensor``."""
        return [n for n in self.nodes if tensor in n.sources]


@dataclass
class _Path:
    """How a tensor came from the compute layer or add whose ReLU it may still take: that layer
    (None after the net's input or a concat), the modules since, and whether every tensor on
    the way, this one excluded, has that one reader."""

    stage: GraphNode | None
    since: list[nn.Module] = field(default_factory=list)
    sole: bool = True


def net_graph(model: nn.Module) -> NetGraph:
    """Validate ``model`` and give its layers as the IR will have them.

    Raises :class:`~squeezeforge.sim.errors.UserError` naming the first module the IR cannot
    express, a ReLU, clamp, BatchNorm or Hardsigmoid with no layer to fuse into (or whose
    layer's output another layer reads before it), an add or concat with the wrong number of
    inputs, or a layer whose output nothing reads. Cheap: call it before any training.
    """
    leaves = graph_leaves(model)
    if not leaves:
        raise UserError("the model has no conv or linear layer")
    readers = Counter(src for _, _, srcs in leaves for src in srcs)
    readers[leaves[-1][0]] += 1  # the net's output
    nodes: list[GraphNode] = []
    folds: dict[str, str] = {}
    tensor_of = {NET_INPUT: NET_INPUT}
    paths = {NET_INPUT: _Path(None)}
    for name, m, srcs in leaves:
        _check_module(name, m)
        if isinstance(m, ResidualAdd) and len(srcs) != 2:
            raise UserError(f"add {name!r} reads {len(srcs)} tensors; an add takes 2")
        if isinstance(m, ChannelConcat) and len(srcs) < 2:
            raise UserError(f"concat {name!r} reads {len(srcs)} tensor; a concat takes 2 or more")
        if not isinstance(m, ResidualAdd | ChannelConcat) and len(srcs) != 1:
            raise UserError(f"layer {_describe(name, m)} reads {len(srcs)} tensors; it takes 1")
        if readers[name] == 0:
            raise UserError(
                f"layer {name!r}: its output is read by no layer (only the last layer's output"
                " leaves the net)"
            )
        before = paths[srcs[0]]
        sole = before.sole and readers[srcs[0]] == 1
        if isinstance(m, (*_COMPUTE, *_PASS_THROUGH, ResidualAdd, ChannelConcat)):
            node = GraphNode(name, m, tuple(tensor_of[src] for src in srcs))
            nodes.append(node)
            tensor_of[name] = name
            if isinstance(m, (*_COMPUTE, ResidualAdd)):
                paths[name] = _Path(node)
            elif isinstance(m, ChannelConcat):
                paths[name] = _Path(None)
            else:
                paths[name] = _Path(before.stage, [*before.since, m], sole)
            continue
        # Fused into the layer before, or dropped: the IR tensor passes through.
        tensor_of[name] = tensor_of[srcs[0]]
        if isinstance(m, _SKIPPED):
            paths[name] = _Path(before.stage, before.since, sole)
            continue
        if isinstance(m, nn.ReLU):
            _fuse_relu(name, before, sole)
        elif isinstance(m, nn.Hardtanh | QuantClamp):
            _fuse_clamp(name, m, before, sole)
        elif isinstance(m, nn.Hardsigmoid):
            _fuse_hardsigmoid(name, m, before, sole)
            assert before.stage is not None
            folds[name] = before.stage.name
        elif isinstance(m, _BATCHNORM):
            _check_batchnorm(name, m, before, sole)
            assert before.stage is not None
            folds[name] = before.stage.name
        paths[name] = _Path(before.stage, [*before.since, m], sole)
    if not any(isinstance(n.module, _COMPUTE) for n in nodes):
        raise UserError("the model has no conv or linear layer")
    last = tensor_of[leaves[-1][0]]
    if last != nodes[-1].name:
        raise UserError(
            f"the model's output is that of {last!r}, not of its last layer {nodes[-1].name!r}"
        )
    return NetGraph(nodes, folds, tensor_of)


def _read_before(name: str, what: str, stage: GraphNode) -> UserError:
    return UserError(
        f"{what} {name!r}: another layer reads the output of {stage.name!r} before it; the IR"
        f" applies it as part of {stage.name!r}, so every reader would see it"
    )


def _fuse_relu(name: str, before: _Path, sole: bool) -> None:
    stage = before.stage
    if any(isinstance(p, _POOLS) for p in before.since):
        # An average of ReLU outputs is never negative: a ReLU after it changes nothing.
        # Without a ReLU before the pool it would, and the IR has no ReLU of its own.
        if stage is None or not stage.relu:
            raise UserError(
                f"ReLU {name!r} follows an average pool of values that can be negative; the"
                " IR applies ReLU only as part of a conv or linear layer (put it before the"
                " pool)"
            )
        return
    if stage is None or stage.relu:
        raise UserError(
            f"ReLU {name!r} does not follow a conv, linear or add layer; the IR applies ReLU"
            " only as part of a layer"
        )
    if not sole:
        raise _read_before(name, "ReLU", stage)
    stage.relu = True


def _fuse_clamp(name: str, m: nn.Module, before: _Path, sole: bool) -> None:
    top = float(m.max_value if isinstance(m, QuantClamp) else m.max_val)
    stage = before.stage
    what = f"clamp {_describe(name, m)}"
    if stage is None or not isinstance(stage.module, _COMPUTE):
        after = f"add {stage.name!r}" if stage is not None else "no conv or linear layer"
        raise UserError(
            f"{what} follows {after}; the IR clamps only the output of a conv or linear layer"
        )
    if any(isinstance(p, _POOLS) for p in before.since):
        if stage.clamp is not None and stage.clamp <= top:
            return  # the average of clamped values: nothing left to clamp
        raise UserError(
            f"{what} follows an average pool; the IR clamps only as part of a conv or linear"
            " layer (put it before the pool)"
        )
    if not sole:
        raise _read_before(name, "clamp", stage)
    stage.relu = True
    stage.clamp = top if stage.clamp is None else min(stage.clamp, top)


def _fuse_hardsigmoid(name: str, m: nn.Module, before: _Path, sole: bool) -> None:
    """``hardsigmoid(y) = min(relu(y / 6 + 1/2), 1)``: folded into the layer's weights and
    bias (:func:`~squeezeforge.models.compress.batchnorm.fold_hardsigmoid`), then a clamp."""
    stage = before.stage
    direct = (
        stage is not None
        and isinstance(stage.module, _COMPUTE)
        and not stage.relu
        and all(isinstance(p, _BATCHNORM) for p in before.since)
    )
    if not direct:
        raise UserError(
            f"{_describe(name, m)} does not directly follow a conv or linear layer; it folds"
            " into that layer's weights and bias"
        )
    assert stage is not None
    if not sole:
        raise _read_before(name, "Hardsigmoid", stage)
    stage.relu = True
    stage.clamp = 1.0


def _check_batchnorm(name: str, bn: nn.Module, before: _Path, sole: bool) -> None:
    stage = before.stage
    prev = stage.module if stage is not None else None
    if isinstance(prev, CompressedLayer):
        prev = prev.layer
    direct = isinstance(prev, nn.Conv2d | nn.Linear) and not before.since
    why = None
    if not direct:
        why = "it does not directly follow a conv or linear layer"
    elif isinstance(bn, nn.BatchNorm2d) != isinstance(prev, nn.Conv2d):
        why = f"a {type(bn).__name__} cannot follow a {type(prev).__name__}"
    elif not bn.track_running_stats or bn.running_mean is None:
        why = "it keeps no running statistics"
    elif prev is not None and bn.num_features != prev.weight.shape[0]:
        why = f"it has {bn.num_features} features, the layer before has {prev.weight.shape[0]}"
    elif not sole:
        assert stage is not None
        why = f"another layer reads the output of {stage.name!r} before it"
    if why:
        raise UserError(f"BatchNorm {name!r} cannot be folded: {why}")


def compute_stages(model: nn.Module) -> list[GraphNode]:
    """Validate ``model`` (:func:`net_graph`) and list its conv and linear layers in order,
    with the ReLU and clamp fused into each. Cheap: call it before any training."""
    return [n for n in net_graph(model).nodes if isinstance(n.module, _COMPUTE)]


def prepare(model: nn.Module) -> nn.Sequential:
    """A copy of ``model`` ready for compression passes.

    Validates the model (errors name the module), folds each BatchNorm and Hardsigmoid into the
    layer before it, drops Dropout/Identity, flattens nested stacks into one
    :class:`torch.nn.Sequential` (a :class:`~squeezeforge.models.graph.LayerGraph` when a layer
    reads another tensor than the previous layer's output) whose child names are the layer
    names of the IR, wraps every conv and linear layer in a :class:`CompressedLayer`, and turns
    average pools, clamps, adds and concats into their fake-quantized modules. An already
    prepared model is just copied.
    """
    from .compress.batchnorm import fold_batchnorm, fold_hardsigmoid

    net_graph(model)
    model = fold_hardsigmoid(fold_batchnorm(copy.deepcopy(model)))
    layers: dict[str, nn.Module] = {}
    inputs: dict[str, tuple[str, ...]] = {}
    renamed = {NET_INPUT: NET_INPUT}
    previous = NET_INPUT
    for name, m, srcs in graph_leaves(model):
        if isinstance(m, _SKIPPED):
            renamed[name] = renamed[srcs[0]]
            continue
        if isinstance(m, nn.Conv2d | nn.Linear):
            m = CompressedLayer(m)
        elif isinstance(m, nn.AvgPool2d):
            geometry = avg_pool_geometry(m)
            assert geometry is not None  # net_graph checked it
            m = QuantAvgPool(*geometry)
        elif isinstance(m, nn.Hardtanh):
            m = QuantClamp(m.max_val)
        elif isinstance(m, ResidualAdd) and not isinstance(m, QuantAdd):
            m = QuantAdd()
        elif isinstance(m, ChannelConcat) and not isinstance(m, QuantConcat):
            m = QuantConcat()
        new = name.replace(".", "_")
        reads = tuple(renamed[src] for src in srcs)
        if reads != (previous,):
            inputs[new] = reads
        layers[new] = m
        renamed[name] = previous = new
    out = LayerGraph(layers, inputs) if inputs else nn.Sequential(OrderedDict(layers))
    out.eval()
    return out
