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
5. ReLU and max pooling stay separate modules; both commute with the scaling.

Scaling by powers of two is exact in binary floating point, so in float64 (53-bit mantissa) every
step above is exact whenever the accumulator is at most 53 bits wide, and the fake-quantized model
predicts exactly what the bit-accurate reference predicts. Training runs in float32, where only the
widest accumulators can lose low bits; gradients pass the rounding by a straight-through estimator
that is zero where the value saturated.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from squeezeforge.sim.errors import UserError
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

__all__ = [
    "CodebookQuantizer",
    "CompressedLayer",
    "ComputeStage",
    "FixedQuantizer",
    "Pow2Quantizer",
    "QuantAvgPool",
    "activation_frac",
    "avg_pool_geometry",
    "compute_stages",
    "fake_quant",
    "fake_quant_format",
    "leaf_modules",
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
    elif not isinstance(
        m, (nn.Linear, nn.ReLU, CompressedLayer, QuantAvgPool, *_SKIPPED, *_BATCHNORM)
    ):
        raise UserError(
            f"module {_describe(name, m)} cannot be expressed in the IR (supported: Conv2d,"
            " grouped and depthwise too, Linear, ReLU, MaxPool2d(2), AvgPool2d, global average"
            " pooling, Flatten, BatchNorm after a conv or linear layer, Dropout and Identity)"
        )


@dataclass
class ComputeStage:
    """A conv or linear layer of the model, and whether a ReLU follows it."""

    name: str
    module: nn.Module
    relu: bool


def compute_stages(model: nn.Module) -> list[ComputeStage]:
    """Validate ``model`` and list its compute layers in order, with their fused ReLU.

    Raises :class:`~squeezeforge.sim.errors.UserError` naming the first module the IR cannot
    express, a BatchNorm that cannot be folded or a ReLU with no layer to attach to. Cheap: call
    it before any training.
    """
    stages: list[ComputeStage] = []
    # What lies between the last compute layer and here: max pool and flatten commute with ReLU,
    # so a ReLU after them still belongs to that layer; a BatchNorm must follow it directly.
    since_compute: list[nn.Module] = []
    for name, m in leaf_modules(model):
        _check_module(name, m)
        if isinstance(m, nn.Conv2d | nn.Linear | CompressedLayer):
            stages.append(ComputeStage(name, m, relu=False))
            since_compute = []
        elif isinstance(m, nn.ReLU) and any(
            isinstance(p, nn.AvgPool2d | QuantAvgPool) for p in since_compute
        ):
            # An average of ReLU outputs is never negative: a ReLU after it changes nothing.
            # Without a ReLU before the pool it would, and the IR has no ReLU of its own.
            if not stages or not stages[-1].relu:
                raise UserError(
                    f"ReLU {name!r} follows an average pool of values that can be negative; the"
                    " IR applies ReLU only as part of a conv or linear layer (put it before the"
                    " pool)"
                )
            since_compute.append(m)
        elif isinstance(m, nn.ReLU):
            if not stages or stages[-1].relu or any(isinstance(p, nn.ReLU) for p in since_compute):
                raise UserError(
                    f"ReLU {name!r} does not follow a conv or linear layer; the IR applies ReLU"
                    " only as part of a layer"
                )
            stages[-1].relu = True
            since_compute.append(m)
        elif isinstance(m, _BATCHNORM):
            _check_batchnorm(name, m, stages, since_compute)
            since_compute.append(m)
        elif isinstance(m, _SKIPPED):
            continue
        else:
            since_compute.append(m)
    if not stages:
        raise UserError("the model has no conv or linear layer")
    return stages


def _check_batchnorm(
    name: str, bn: nn.Module, stages: list[ComputeStage], since: list[nn.Module]
) -> None:
    prev = stages[-1].module if stages else None
    if isinstance(prev, CompressedLayer):
        prev = prev.layer
    direct = prev is not None and not since
    why = None
    if not direct:
        why = "it does not directly follow a conv or linear layer"
    elif isinstance(bn, nn.BatchNorm2d) != isinstance(prev, nn.Conv2d):
        why = f"a {type(bn).__name__} cannot follow a {type(prev).__name__}"
    elif not bn.track_running_stats or bn.running_mean is None:
        why = "it keeps no running statistics"
    elif prev is not None and bn.num_features != prev.weight.shape[0]:
        why = f"it has {bn.num_features} features, the layer before has {prev.weight.shape[0]}"
    if why:
        raise UserError(f"BatchNorm {name!r} cannot be folded: {why}")


def prepare(model: nn.Module) -> nn.Sequential:
    """A copy of ``model`` ready for compression passes.

    Validates the model (errors name the module), folds each BatchNorm into the layer before it,
    drops Dropout/Identity, flattens nested stacks into one :class:`torch.nn.Sequential` whose
    child names are the layer names of the IR, and wraps every conv and linear layer in a
    :class:`CompressedLayer`. An already prepared model is just copied.
    """
    from .compress.batchnorm import fold_batchnorm

    compute_stages(model)
    model = fold_batchnorm(copy.deepcopy(model))
    out = nn.Sequential()
    for name, m in leaf_modules(model):
        if isinstance(m, _SKIPPED):
            continue
        if isinstance(m, nn.Conv2d | nn.Linear):
            m = CompressedLayer(m)
        elif isinstance(m, nn.AvgPool2d):
            geometry = avg_pool_geometry(m)
            assert geometry is not None  # compute_stages checked it
            m = QuantAvgPool(*geometry)
        out.add_module(name.replace(".", "_"), m)
    out.eval()
    return out
