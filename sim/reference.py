"""The bit-accurate reference model: the golden outputs every RTL result must equal.

Integers only, following :mod:`squeezeforge.sim.numerics`. Whole batches are vectorized; a
layer's sums run through float64 BLAS only when the accumulator width (at most 53 bits) proves
every partial sum exact in a double, and through int64 otherwise.
"""

from __future__ import annotations

import numpy as np

from .errors import UserError
from .ir import (
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
from .metrics import predictions  # re-exported: callers import it from here
from .numerics import FixedFormat, add_aligned, quantize, requantize

__all__ = [
    "conv2d_acc",
    "dense_acc",
    "maxpool2x2",
    "net_inputs",
    "predictions",
    "run_join",
    "run_layer",
    "run_net",
]

_EXACT_DOUBLE_BITS = 53


def _matmul(a: np.ndarray, b: np.ndarray, acc_bits: int) -> np.ndarray:
    if acc_bits <= _EXACT_DOUBLE_BITS:
        return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a.astype(np.int64) @ b.astype(np.int64)


def conv2d_acc(layer: Conv2d, x: np.ndarray) -> np.ndarray:
    """Accumulator values (N, M, OH, OW) of a conv layer, bias included, before requantizing."""
    n, c, h, w = x.shape
    p, s = layer.padding, layer.stride
    kh, kw = layer.kernel
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, ::s, ::s]  # (N, C, OH, OW, kh, kw)
    _, _, oh, ow = win.shape[:4]
    g = layer.groups
    cg, mg = c // g, layer.out_channels // g
    # One GEMM per group: its input channels against its filters.
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, g, cg * kh * kw)
    wmat = layer.weight_values().reshape(g, mg, cg * kh * kw)
    acc = np.concatenate(
        [_matmul(cols[:, j], wmat[j].T, layer.acc_bits) for j in range(g)], axis=1
    ) + layer.bias.astype(np.int64)
    return acc.reshape(n, oh, ow, layer.out_channels).transpose(0, 3, 1, 2)


def dense_acc(layer: Dense | SparseDense, x: np.ndarray) -> np.ndarray:
    """Accumulator values (N, out) of a (sparse) dense layer, bias included."""
    return _matmul(x, layer.weight_values().T, layer.acc_bits) + layer.bias.astype(np.int64)


def maxpool2x2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    x = x[:, :, : h - h % 2, : w - w % 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def run_layer(layer: Layer, x: np.ndarray) -> np.ndarray:
    """One layer on a batch of integer activations."""
    if isinstance(layer, Conv2d):
        acc = conv2d_acc(layer, x)
    elif isinstance(layer, Dense | SparseDense):
        acc = dense_acc(layer, x)
    elif isinstance(layer, MaxPool2d):
        return maxpool2x2(x)
    elif isinstance(layer, AvgPool2d):
        return run_layer(layer.as_conv(x.shape[1]), x)
    elif isinstance(layer, Flatten):
        return x.reshape(x.shape[0], -1)
    else:  # pragma: no cover - the IR admits no other kind
        raise TypeError(f"unknown layer {layer!r}")
    return requantize(
        acc,
        layer.acc_frac,
        layer.output_format,
        apply_relu=layer.relu,
        clamp_max=layer.clamp_max,
    )


def run_join(layer: Add | Concat, xs: list[np.ndarray], formats: list[FixedFormat]) -> np.ndarray:
    """A layer of several inputs on batches ``xs`` whose formats are ``formats``."""
    if isinstance(layer, Add):
        (a, b), (fa, fb) = xs, formats
        return add_aligned(a, fa.frac, b, fb.frac, layer.format, apply_relu=layer.relu)
    return np.concatenate(xs, axis=1)


def run_net(net: Net, x: np.ndarray, *, taps: bool = False) -> np.ndarray | list[np.ndarray]:
    """Run ``net`` on integer inputs ``x`` of shape (N, *input_shape).

    With ``taps=True`` returns every layer's output (the last one is the net's output), to
    locate where an RTL result first departs from the reference.
    """
    x = np.asarray(x, dtype=np.int64)
    if x.shape[1:] != net.input_shape:
        raise ValueError(f"inputs have shape {x.shape[1:]}, the net takes {net.input_shape}")
    lo, hi = net.input_format.min, net.input_format.max
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"inputs outside the input format's range [{lo}, {hi}]")
    formats = net.tensor_formats()
    values = {NET_INPUT: x}
    # A tensor is dropped after its last reader, so a plain stack holds two at a time.
    last_use = {src: k for k in range(len(net.layers)) for src in net.sources(k)}
    outs: list[np.ndarray] = []
    for k, layer in enumerate(net.layers):
        srcs = net.sources(k)
        if isinstance(layer, Add | Concat):
            x = run_join(layer, [values[s] for s in srcs], [formats[s] for s in srcs])
        else:
            x = run_layer(layer, values[srcs[0]])
        for src in srcs:
            if last_use[src] == k and not taps:
                values.pop(src, None)
        values[layer.name] = x
        outs.append(x)
    return outs if taps else x


def net_inputs(net: Net, x: object, *, what: str = "inputs", floats: bool = True) -> np.ndarray:
    """A user's inputs as the integers the net takes, shape (N, *input_shape), int64.

    Floats are real values, quantized to the net's input format (round half up, saturate: what
    the hardware's own input stage would do); integers are taken as already in that format and
    must lie in its range. ``floats=False`` refuses floats (a caller that only takes integers).
    A single input of ``input_shape`` is taken as a batch of one. Every problem is one
    :class:`UserError` naming ``what``.
    """
    a = np.asarray(x)
    fmt = net.input_format
    if a.dtype.kind not in "iuf":
        raise UserError(f"{what}: expected a numeric array (integers or floats), got {a.dtype}")
    if a.ndim == len(net.input_shape):
        a = a[np.newaxis]
    if a.shape[1:] != net.input_shape:
        takes = ", ".join(map(str, net.input_shape))
        raise UserError(f"{what}: shape {tuple(a.shape)}; the net takes (N, {takes})")
    if a.shape[0] == 0:
        raise UserError(f"{what}: holds no inputs (shape {tuple(a.shape)})")
    if a.dtype.kind == "f":
        if not floats:
            raise UserError(
                f"{what}: expected integers in the net's input format ({fmt.bits}-bit, fraction"
                f" length {fmt.frac}), got {a.dtype}"
            )
        if not np.isfinite(a).all():
            raise UserError(f"{what}: holds NaN or infinite values")
        return quantize(a, fmt)
    lo, hi = int(a.min()), int(a.max())
    if lo < fmt.min or hi > fmt.max:
        bad = lo if lo < fmt.min else hi
        raise UserError(
            f"{what}: integer {bad} is outside the input format ({fmt.bits}-bit, fraction length"
            f" {fmt.frac}: {fmt.min}..{fmt.max}); pass floats to have them quantized"
        )
    return a.astype(np.int64)
