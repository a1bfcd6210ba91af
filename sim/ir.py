"""The compressed-net format (IR): one frozen dataclass per layer kind, and its file.

A net file (``*.sfnet``) is a zip archive holding ``manifest.json`` and one ``.npy`` file per
integer array. The manifest names the format and its version, the input shape and format, the
layers in order (their scalar fields, formats and, per array, file, shape and dtype), the test
vectors and free-form metadata. Everything is validated on load; any disagreement raises one
:class:`IRError` naming the layer and the field.

Layer kinds: ``conv2d`` (grouped and depthwise too), ``maxpool2d`` (2x2, stride 2),
``avgpool2d`` (any window, global included), ``flatten`` (C, H, W order, as PyTorch),
``dense`` and ``sparse_dense`` (a pruned matrix for the sparse unit; its EIE compressed sparse
column layout over the unit's PEs, :func:`encode_csc`, is made by the compiler from the Target),
``add`` (a residual connection) and ``concat`` (along the channels).

The layers form a graph of named tensors listed in a topological order: each layer reads the
tensors its ``inputs`` name (layer names, or :data:`NET_INPUT`), by default the previous layer's
output; the last layer's output is the net's. Version 1 files, which held the CSC layout for one
PE count, and version 2 files (plain stacks) are still read.
Arrays hold *stored* weights: integer values for fixed-point and power-of-two formats, indices for
codebook formats; in every format a stored 0 is an exact zero weight.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .errors import SqueezeforgeError, UserError
from .metrics import task_of
from .numerics import (
    ADD_MAX_ALIGN,
    AVG_MULTIPLIER_BITS,
    MAX_ACC_BITS,
    MAX_SHIFT,
    CodebookWeights,
    FixedFormat,
    FixedWeights,
    FormatError,
    Pow2Weights,
    WeightFormat,
    accumulator_bits,
    bias_bits,
    int_range,
    weight_format_from_dict,
)

FORMAT_NAME = "squeezeforge-net"
FORMAT_VERSION = 3
# Version 1 stored sparse_dense layers in CSC form for a fixed PE count; they are still read
# (decoded to the matrix). Version 3 added the graph (``inputs``, ``add``, ``concat``); a net
# that is a plain stack is still written as version 2, byte for byte as before, so that older
# readers take it.
CHAIN_VERSION = 2
READ_VERSIONS = (1, 2, 3)

__all__ = [
    "FORMAT_VERSION",
    "NET_INPUT",
    "Add",
    "AvgPool2d",
    "Concat",
    "Conv2d",
    "CscMatrix",
    "Dense",
    "Flatten",
    "IRError",
    "Layer",
    "MaxPool2d",
    "Net",
    "SparseDense",
    "atomic_write_bytes",
    "check_writable",
    "current_umask",
    "busiest_pe_entries",
    "csc_entry_counts",
    "csc_padding",
    "decode_csc",
    "encode_csc",
    "load_net",
    "net_from_bytes",
    "save_net",
]


class IRError(SqueezeforgeError, ValueError):
    """A net that is malformed; the message names the layer and the field."""

    def __init__(self, layer: str, field_name: str, message: str) -> None:
        self.layer = layer
        self.field = field_name
        super().__init__(f"layer {layer!r}, field {field_name!r}: {message}")


def _storage_dtype(lo: int, hi: int) -> np.dtype:
    for dt in (np.int8, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise OverflowError(f"no integer dtype holds [{lo}, {hi}]")


def _check_array(
    layer: str, name: str, arr: Any, shape: tuple[int, ...], lo: int, hi: int
) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise IRError(layer, name, f"expected a NumPy array, got {type(arr).__name__}")
    if arr.dtype.kind not in "iu":
        raise IRError(layer, name, f"dtype {arr.dtype} is not an integer type")
    if tuple(arr.shape) != tuple(shape):
        raise IRError(layer, name, f"shape {tuple(arr.shape)} disagrees with expected {shape}")
    if arr.size:
        amin, amax = int(arr.min()), int(arr.max())
        if amin < lo or amax > hi:
            bad = amin if amin < lo else amax
            raise IRError(layer, name, f"value {bad} outside the format's range [{lo}, {hi}]")
    return arr


class _ComputeLayer:
    """What conv2d, dense and sparse_dense share: formats, requantization, ReLU."""

    name: str
    input_format: FixedFormat
    weight_format: WeightFormat
    output_format: FixedFormat
    relu: bool
    bias: np.ndarray
    clamp_max: int | None

    def __repr__(self) -> str:
        # The dataclass repr would print the weight and bias arrays.
        w = self.weight_format
        return (
            f"{type(self).__name__}({self.name!r}, fan-in {self.fan_in},"
            f" {w.kind} weights {w.stored_bits} bits, in {format_summary(self.input_format)},"
            f" out {format_summary(self.output_format)}{', relu' if self.relu else ''}"
            f"{f', clamp {self.clamp_max}' if self.clamp_max is not None else ''})"
        )

    @property
    def fan_in(self) -> int:
        raise NotImplementedError

    @property
    def acc_frac(self) -> int:
        """Fraction length of products, bias and accumulator."""
        return self.input_format.frac + self.weight_format.frac

    @property
    def shift(self) -> int:
        """Right shift of the requantization."""
        return self.acc_frac - self.output_format.frac

    @property
    def acc_bits(self) -> int:
        return accumulator_bits(self.input_format, self.weight_format, self.fan_in)

    @property
    def bias_bits(self) -> int:
        return bias_bits(self.input_format, self.weight_format)

    def _check_common(self) -> None:
        for fname, kind in (
            ("input_format", FixedFormat),
            ("output_format", FixedFormat),
            ("weight_format", WeightFormat),
        ):
            if not isinstance(getattr(self, fname), kind):
                raise IRError(self.name, fname, f"expected {kind}, got {getattr(self, fname)!r}")
        if self.shift < 0:
            raise IRError(
                self.name,
                "output_format",
                f"fraction length {self.output_format.frac} exceeds the accumulator's"
                f" {self.acc_frac}; requantization only shifts right",
            )
        if self.shift > MAX_SHIFT:
            raise IRError(
                self.name,
                "output_format",
                f"requantization shift {self.shift} exceeds {MAX_SHIFT}"
                f" (input frac {self.input_format.frac} + weight frac {self.weight_format.frac}"
                f" - output frac {self.output_format.frac})",
            )
        if self.acc_bits > MAX_ACC_BITS:
            raise IRError(
                self.name,
                "weight_format",
                f"accumulator needs {self.acc_bits} bits, at most {MAX_ACC_BITS} are supported",
            )
        if self.clamp_max is not None:
            hi = self.output_format.max
            if not _is_int(self.clamp_max) or not 0 <= self.clamp_max <= hi:
                raise IRError(
                    self.name, "clamp_max", f"must be an integer in 0..{hi}, got {self.clamp_max!r}"
                )
            if not self.relu:
                raise IRError(self.name, "clamp_max", "clamps only after a ReLU (relu: true)")

    def _check_bias(self, n_out: int) -> None:
        lo, hi = int_range(self.bias_bits)
        _check_array(self.name, "bias", self.bias, (n_out,), lo, hi)

    def _format_dict(self) -> dict:
        return {
            "input_format": self.input_format.to_dict(),
            "weight_format": self.weight_format.to_dict(),
            "output_format": self.output_format.to_dict(),
            "relu": bool(self.relu),
            **({"clamp_max": int(self.clamp_max)} if self.clamp_max is not None else {}),
        }

    def _stored_range(self) -> tuple[int, int]:
        wf = self.weight_format
        if isinstance(wf, CodebookWeights):
            return 0, len(wf.table) - 1
        return wf.value_range

    def _check_stored(self, name: str, stored: np.ndarray, shape: tuple[int, ...]) -> None:
        lo, hi = self._stored_range()
        _check_array(self.name, name, stored, shape, lo, hi)
        bad = self.weight_format.invalid(stored)
        if np.any(bad):
            value = stored[bad].flat[0]
            raise IRError(self.name, name, f"value {value} is not in the {self.weight_format}")

    def bias_dtype(self) -> np.dtype:
        return _storage_dtype(*int_range(self.bias_bits))

    def stored_dtype(self) -> np.dtype:
        return _storage_dtype(*self._stored_range())


@dataclass(frozen=True, eq=False, repr=False)
class Conv2d(_ComputeLayer):
    """2-D convolution, square stride and symmetric zero padding; weight (M, C / groups, kh, kw).

    With ``groups = g`` the channels split into ``g`` equal groups and filter block ``j`` of
    ``M / g`` filters sees only input group ``j``, as in PyTorch: ``g = C = M`` is a depthwise
    convolution. The manifest names ``groups`` only when it is not 1.
    """

    name: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: int
    padding: int
    input_format: FixedFormat
    weight_format: WeightFormat
    output_format: FixedFormat
    relu: bool
    weight: np.ndarray
    bias: np.ndarray
    kind: ClassVar[str] = "conv2d"
    arrays: ClassVar[tuple[str, ...]] = ("weight", "bias")
    groups: int = 1
    inputs: tuple[str, ...] = ()
    clamp_max: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", tuple(int(k) for k in self.kernel))
        for fname in ("in_channels", "out_channels", "stride", "groups"):
            if int(getattr(self, fname)) < 1:
                raise IRError(self.name, fname, f"must be >= 1, got {getattr(self, fname)}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise IRError(
                self.name,
                "groups",
                f"{self.groups} does not divide in_channels {self.in_channels} and out_channels"
                f" {self.out_channels}",
            )
        if len(self.kernel) != 2 or min(self.kernel) < 1:
            raise IRError(self.name, "kernel", f"must be two sizes >= 1, got {self.kernel}")
        if self.padding < 0:
            raise IRError(self.name, "padding", f"must be >= 0, got {self.padding}")
        self._check_common()
        self._check_stored(
            "weight",
            self.weight,
            (self.out_channels, self.in_channels // self.groups, *self.kernel),
        )
        self._check_bias(self.out_channels)

    @property
    def fan_in(self) -> int:
        return self.in_channels // self.groups * self.kernel[0] * self.kernel[1]

    def group(self, g: int) -> Conv2d:
        """Group ``g`` of a grouped conv as a conv of its own (``groups = 1``), named
        ``name[g]``: input channels ``g * C/groups ...``, filters ``g * M/groups ...``."""
        m = self.out_channels // self.groups
        return replace(
            self,
            name=f"{self.name}[{g}]",
            in_channels=self.in_channels // self.groups,
            out_channels=m,
            weight=self.weight[g * m : (g + 1) * m],
            bias=self.bias[g * m : (g + 1) * m],
            groups=1,
        )

    def output_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        c, h, w = in_shape
        oh = (h + 2 * self.padding - self.kernel[0]) // self.stride + 1
        ow = (w + 2 * self.padding - self.kernel[1]) // self.stride + 1
        if c != self.in_channels:
            raise IRError(self.name, "in_channels", f"{self.in_channels}, but input has {c}")
        if oh < 1 or ow < 1:
            raise IRError(self.name, "kernel", f"{self.kernel} larger than padded input {h}x{w}")
        return (self.out_channels, oh, ow)

    def macs(self, in_shape: Sequence[int]) -> int:
        _, oh, ow = self.output_shape(in_shape)
        return oh * ow * self.out_channels * self.fan_in

    def weight_values(self) -> np.ndarray:
        return self.weight_format.decode(self.weight)

    def to_manifest(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel": list(self.kernel),
            "stride": self.stride,
            "padding": self.padding,
            **({"groups": self.groups} if self.groups != 1 else {}),
            **self._format_dict(),
        }


@dataclass(frozen=True, eq=False)
class MaxPool2d:
    """2x2 max pool, stride 2; odd rows and columns at the edge are dropped."""

    name: str
    kernel: int = 2
    stride: int = 2
    inputs: tuple[str, ...] = ()
    kind: ClassVar[str] = "maxpool2d"
    arrays: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.kernel != 2 or self.stride != 2:
            raise IRError(self.name, "kernel", "only 2x2 max pooling with stride 2 is supported")

    def output_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        if len(in_shape) != 3:
            raise IRError(self.name, "input", f"needs a (C, H, W) input, got {tuple(in_shape)}")
        c, h, w = in_shape
        if h < 2 or w < 2:
            raise IRError(self.name, "input", f"{h}x{w} is too small to pool")
        return (c, h // 2, w // 2)

    def to_manifest(self) -> dict:
        return {"kind": self.kind, "name": self.name, "kernel": 2, "stride": 2}


@dataclass(frozen=True, eq=False)
class AvgPool2d:
    """Average pooling: window ``kernel`` (kh, kw), square ``stride``, no padding; the
    activation format ``format`` is kept (:func:`~squeezeforge.sim.numerics.avg_pool_multiplier`
    gives ``multiplier`` and ``shift``, item 6 of the numeric contract). Global average pooling
    is a window of the whole input."""

    name: str
    kernel: tuple[int, int]
    stride: int
    multiplier: int
    shift: int
    format: FixedFormat
    inputs: tuple[str, ...] = ()
    kind: ClassVar[str] = "avgpool2d"
    arrays: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", tuple(int(k) for k in self.kernel))
        if len(self.kernel) != 2 or min(self.kernel) < 1:
            raise IRError(self.name, "kernel", f"must be two sizes >= 1, got {self.kernel}")
        if not isinstance(self.format, FixedFormat):
            raise IRError(self.name, "format", f"expected {FixedFormat}, got {self.format!r}")
        for fname, lo, hi in (
            ("stride", 1, 1 << 16),
            ("multiplier", 1, int_range(AVG_MULTIPLIER_BITS)[1]),
            ("shift", 0, MAX_SHIFT - self.format.frac if self.format.frac > 0 else MAX_SHIFT),
        ):
            value = getattr(self, fname)
            if not _is_int(value) or not lo <= value <= hi:
                raise IRError(self.name, fname, f"must be an integer in {lo}..{hi}, got {value!r}")

    def output_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        if len(in_shape) != 3:
            raise IRError(self.name, "input", f"needs a (C, H, W) input, got {tuple(in_shape)}")
        c, h, w = in_shape
        if h < self.kernel[0] or w < self.kernel[1]:
            raise IRError(self.name, "kernel", f"{self.kernel} larger than the input {h}x{w}")
        return (
            c,
            (h - self.kernel[0]) // self.stride + 1,
            (w - self.kernel[1]) // self.stride + 1,
        )

    def as_conv(self, channels: int, weight_kind: str = "fixed") -> Conv2d:
        """The depthwise conv that computes this pooling exactly (every weight the multiplier,
        fraction length the shift, no bias): what the reference and the conv engine run.

        ``weight_kind="pow2"`` asks for power-of-two weights where the multiplier is 1 (a
        power-of-two window), so an engine with shift-add PEs runs it; the arithmetic is the
        same (the weight value 1, fraction length ``shift``).
        """
        wf: FixedWeights | Pow2Weights = FixedWeights(
            max(2, self.multiplier.bit_length() + 1), self.shift
        )
        if weight_kind == "pow2" and self.multiplier == 1:
            wf = Pow2Weights(2, -self.shift, -self.shift)
        return Conv2d(
            name=self.name,
            in_channels=channels,
            out_channels=channels,
            kernel=self.kernel,
            stride=self.stride,
            padding=0,
            input_format=self.format,
            weight_format=wf,
            output_format=self.format,
            relu=False,
            weight=np.full((channels, 1, *self.kernel), self.multiplier, dtype=np.int64),
            bias=np.zeros(channels, dtype=np.int64),
            groups=channels,
        )

    def to_manifest(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "kernel": list(self.kernel),
            "stride": self.stride,
            "multiplier": self.multiplier,
            "shift": self.shift,
            "format": self.format.to_dict(),
        }


@dataclass(frozen=True, eq=False)
class Flatten:
    """(C, H, W) to C*H*W features in C, H, W order."""

    name: str
    inputs: tuple[str, ...] = ()
    kind: ClassVar[str] = "flatten"
    arrays: ClassVar[tuple[str, ...]] = ()

    def output_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        return (math.prod(in_shape),)

    def to_manifest(self) -> dict:
        return {"kind": self.kind, "name": self.name}


@dataclass(frozen=True, eq=False, repr=False)
class Dense(_ComputeLayer):
    """Fully connected layer, weight (out_features, in_features)."""

    name: str
    in_features: int
    out_features: int
    input_format: FixedFormat
    weight_format: WeightFormat
    output_format: FixedFormat
    relu: bool
    weight: np.ndarray
    bias: np.ndarray
    kind: ClassVar[str] = "dense"
    arrays: ClassVar[tuple[str, ...]] = ("weight", "bias")
    inputs: tuple[str, ...] = ()
    clamp_max: int | None = None

    def __post_init__(self) -> None:
        for fname in ("in_features", "out_features"):
            if int(getattr(self, fname)) < 1:
                raise IRError(self.name, fname, f"must be >= 1, got {getattr(self, fname)}")
        self._check_common()
        self._check_stored("weight", self.weight, (self.out_features, self.in_features))
        self._check_bias(self.out_features)

    @property
    def fan_in(self) -> int:
        return self.in_features

    def output_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        if tuple(in_shape) != (self.in_features,):
            raise IRError(self.name, "in_features", f"{self.in_features}, input is {in_shape}")
        return (self.out_features,)

    def macs(self, in_shape: Sequence[int] | None = None) -> int:
        return self.in_features * self.out_features

    def weight_values(self) -> np.ndarray:
        return self.weight_format.decode(self.weight)

    def to_manifest(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "in_features": self.in_features,
            "out_features": self.out_features,
            **self._format_dict(),
        }


def csc_padding(gap: int | np.ndarray, index_bits: int) -> int | np.ndarray:
    """Padding entries EIE inserts for ``gap`` zero rows before an entry: one per
    ``2**index_bits`` rows, each padding entry ``(0, 2**index_bits - 1)`` covering that many."""
    return gap >> index_bits


def encode_csc(
    stored: np.ndarray, n_pe: int, index_bits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EIE's interleaved compressed sparse column encoding of a stored (out, in) matrix.

    Row ``i`` belongs to PE ``i % n_pe`` as its local row ``i // n_pe``. Per PE and column, each
    non-zero is an entry ``(v, z)``: ``v`` the stored weight, ``z`` the number of zero local rows
    since the previous entry of the column. A gap longer than ``2**index_bits - 1`` inserts
    :func:`csc_padding` entries ``(0, 2**index_bits - 1)``. Entries of PE ``k`` lie in
    ``v[ptr[k, 0]:ptr[k, -1]]`` and those of its column ``j`` in ``v[ptr[k, j]:ptr[k, j + 1]]``
    (pointers are absolute).
    """
    out_f, in_f = stored.shape
    max_gap = (1 << index_bits) - 1
    vs: list[int] = []
    zs: list[int] = []
    ptr = np.zeros((n_pe, in_f + 1), dtype=np.int64)
    for k in range(n_pe):
        local = stored[k::n_pe, :]
        ptr[k, 0] = len(vs)
        for j in range(in_f):
            prev = -1
            for r in np.flatnonzero(local[:, j]):
                gap = int(r) - prev - 1
                pads = int(csc_padding(gap, index_bits))
                vs += [0] * pads
                zs += [max_gap] * pads
                vs.append(int(local[r, j]))
                zs.append(gap - (pads << index_bits))
                prev = int(r)
            ptr[k, j + 1] = len(vs)
    return np.asarray(vs, dtype=np.int64), np.asarray(zs, dtype=np.int64), ptr


def csc_entry_counts(stored: np.ndarray, n_pe: int, index_bits: int) -> np.ndarray:
    """Entries (padding included) per PE and column of :func:`encode_csc`, without encoding.

    Vectorized, so a 4096 x 4096 matrix takes well under a second.

    Parameters
    ----------
    stored : ndarray, shape (out_features, in_features)
        Stored weights; non-zero means a weight.
    n_pe, index_bits
        The interleaving and the relative-index width.

    Returns
    -------
    ndarray, shape (n_pe, in_features)
        ``np.diff(ptr, axis=1)`` of the encoding.
    """
    stored = np.asarray(stored)
    out_f, in_f = stored.shape
    counts = np.zeros((n_pe, in_f), dtype=np.int64)
    rows, cols = np.nonzero(stored)
    if rows.size == 0:
        return counts
    pe = rows % n_pe
    local = rows // n_pe
    order = np.lexsort((local, cols, pe))
    pe, local, cols = pe[order], local[order], cols[order]
    new_group = np.ones(rows.size, dtype=bool)
    new_group[1:] = (pe[1:] != pe[:-1]) | (cols[1:] != cols[:-1])
    prev = np.where(new_group, -1, np.concatenate(([-1], local[:-1])))
    np.add.at(counts, (pe, cols), 1 + csc_padding(local - prev - 1, index_bits))
    return counts


def decode_csc(v: np.ndarray, z: np.ndarray, ptr: np.ndarray, out_features: int) -> np.ndarray:
    """Inverse of :func:`encode_csc`: the stored (out, in) matrix."""
    n_pe, cols = ptr.shape[0], ptr.shape[1] - 1
    dense = np.zeros((out_features, cols), dtype=np.int64)
    for k in range(n_pe):
        for j in range(cols):
            row = -1
            for e in range(int(ptr[k, j]), int(ptr[k, j + 1])):
                row += int(z[e]) + 1
                if v[e] != 0:
                    dense[row * n_pe + k, j] = v[e]
    return dense


@dataclass(frozen=True, eq=False)
class CscMatrix:
    """A stored (out, in) matrix in EIE's interleaved CSC form over ``n_pe`` PEs.

    See :func:`encode_csc` for the layout.

    Not part of the net: how a matrix is laid out over a unit's PEs is the compiler's choice,
    driven by the Target. ``name`` is the layer's, for error messages.
    """

    name: str
    out_features: int
    in_features: int
    n_pe: int
    index_bits: int
    v: np.ndarray
    z: np.ndarray
    ptr: np.ndarray

    def __post_init__(self) -> None:
        if self.n_pe < 1 or self.n_pe & (self.n_pe - 1) or self.n_pe > 64:
            raise IRError(self.name, "n_pe", f"must be a power of two in 1..64, got {self.n_pe}")
        if not 1 <= self.index_bits <= 8:
            raise IRError(self.name, "index_bits", f"must be in 1..8, got {self.index_bits}")
        n = self.v.shape[0] if isinstance(self.v, np.ndarray) and self.v.ndim == 1 else -1
        if n < 0:
            raise IRError(self.name, "v", "must be a one-dimensional integer array")
        _check_array(self.name, "z", self.z, (n,), 0, (1 << self.index_bits) - 1)
        _check_array(self.name, "ptr", self.ptr, (self.n_pe, self.in_features + 1), 0, n)
        flat = self.ptr.reshape(-1)
        if np.any(np.diff(flat.astype(np.int64)) < 0) or (flat.size and flat[0] != 0):
            raise IRError(self.name, "ptr", "column pointers must start at 0 and never decrease")
        if flat.size and flat[-1] != n:
            raise IRError(self.name, "ptr", f"last pointer {flat[-1]} != {n} entries")
        if np.any(self.ptr[1:, 0] != self.ptr[:-1, -1]):
            raise IRError(self.name, "ptr", "each PE's entries must follow the previous PE's")
        for k in range(self.n_pe):
            local_rows = (self.out_features - k + self.n_pe - 1) // self.n_pe
            for j in range(self.in_features):
                s, e = int(self.ptr[k, j]), int(self.ptr[k, j + 1])
                last = int(np.sum(self.z[s:e].astype(np.int64) + 1)) - 1
                if e > s and last >= local_rows:
                    raise IRError(
                        self.name,
                        "z",
                        f"PE {k} column {j} reaches local row {last} of {local_rows}",
                    )

    @classmethod
    def encode(cls, stored: np.ndarray, n_pe: int, index_bits: int, name: str = "<matrix>"):
        stored = np.asarray(stored)
        v, z, ptr = encode_csc(stored, n_pe, index_bits)
        out_f, in_f = stored.shape
        return cls(name, out_f, in_f, n_pe, index_bits, v, z, ptr)

    @property
    def entries(self) -> int:
        """Entries in the sparse memories, padding included."""
        return int(self.v.shape[0])

    @property
    def pe_entries(self) -> np.ndarray:
        """Entries of each PE (padding included)."""
        return np.diff(self.ptr[:, [0, -1]].astype(np.int64), axis=1).ravel()

    @property
    def nonzeros(self) -> int:
        return int(np.count_nonzero(self.v))

    def stored_dense(self) -> np.ndarray:
        return decode_csc(self.v, self.z, self.ptr, self.out_features)


@dataclass(frozen=True, eq=False, repr=False)
class SparseDense(_ComputeLayer):
    """A pruned fully connected layer, weight (out_features, in_features) with its zeros.

    It runs on the sparse FC unit, which stores it in EIE's CSC form (:class:`CscMatrix`); that
    layout depends on the unit's PE count and index width, so the compiler makes it from the
    Target (:meth:`csc`) and the net keeps only the matrix.
    """

    name: str
    in_features: int
    out_features: int
    input_format: FixedFormat
    weight_format: WeightFormat
    output_format: FixedFormat
    relu: bool
    weight: np.ndarray
    bias: np.ndarray
    kind: ClassVar[str] = "sparse_dense"
    arrays: ClassVar[tuple[str, ...]] = ("weight", "bias")
    inputs: tuple[str, ...] = ()
    clamp_max: int | None = None

    def __post_init__(self) -> None:
        for fname in ("in_features", "out_features"):
            if int(getattr(self, fname)) < 1:
                raise IRError(self.name, fname, f"must be >= 1, got {getattr(self, fname)}")
        self._check_common()
        self._check_stored("weight", self.weight, (self.out_features, self.in_features))
        self._check_bias(self.out_features)

    @classmethod
    def from_dense(cls, stored: np.ndarray, **kw: Any) -> SparseDense:
        out_f, in_f = np.shape(stored)
        return cls(in_features=in_f, out_features=out_f, weight=np.asarray(stored), **kw)

    @property
    def fan_in(self) -> int:
        return self.in_features

    @property
    def nonzeros(self) -> int:
        return int(np.count_nonzero(self.weight))

    def csc(self, n_pe: int, index_bits: int) -> CscMatrix:
        """The weight matrix in CSC form over ``n_pe`` PEs with ``index_bits`` relative indices."""
        return CscMatrix.encode(self.weight, n_pe, index_bits, name=self.name)

    def output_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        if tuple(in_shape) != (self.in_features,):
            raise IRError(self.name, "in_features", f"{self.in_features}, input is {in_shape}")
        return (self.out_features,)

    def macs(self, in_shape: Sequence[int] | None = None) -> int:
        return self.in_features * self.out_features

    def stored_dense(self) -> np.ndarray:
        """A copy of the stored matrix (callers may edit it)."""
        return np.array(self.weight, dtype=np.int64)

    def weight_values(self) -> np.ndarray:
        return self.weight_format.decode(self.weight)

    def to_manifest(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "in_features": self.in_features,
            "out_features": self.out_features,
            **self._format_dict(),
        }


@dataclass(frozen=True, eq=False)
class Add:
    """Element-wise sum of two tensors of one shape (a residual connection), item 7 of the
    numeric contract: the inputs aligned exactly to the larger fraction length, summed, then
    requantized to ``format`` (round half up, saturate) and, with ``relu``, clipped at 0."""

    name: str
    inputs: tuple[str, ...]
    format: FixedFormat
    relu: bool = False
    kind: ClassVar[str] = "add"
    arrays: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not isinstance(self.format, FixedFormat):
            raise IRError(self.name, "format", f"expected {FixedFormat}, got {self.format!r}")
        if len(self.inputs) != 2:
            raise IRError(self.name, "inputs", f"an add takes 2 inputs, got {len(self.inputs)}")

    def output_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(in_shape)

    def as_conv(
        self, a: FixedFormat, b: FixedFormat, channels: int, weight_kind: str = "fixed"
    ) -> Conv2d:
        """The 1x1 conv over the two inputs stacked along the channels (``a``'s first) that
        computes this add exactly: filter ``c`` has weight ``2**(F - fa)`` on channel ``c`` of
        ``a`` and ``2**(F - fb)`` on channel ``c`` of ``b``, no bias, ``F = max(fa, fb,
        out.frac)``, so the accumulator is the aligned sum at fraction length ``F`` and the
        conv's requantization (a right shift by ``F - out.frac``) is item 7's. What the
        hardware runs; ``weight_kind="pow2"`` gives power-of-two weights (same values)."""
        big = max(a.frac, b.frac, self.format.frac)
        ea, eb = big - a.frac, big - b.frac
        if max(ea, eb) > ADD_MAX_ALIGN:
            raise IRError(
                self.name,
                "format",
                f"inputs at fraction lengths {a.frac} and {b.frac} and the output at"
                f" {self.format.frac} lie more than {ADD_MAX_ALIGN} apart",
            )
        wf: FixedWeights | Pow2Weights = FixedWeights(max(ea, eb) + 2, 0)
        if weight_kind == "pow2":
            bits = 2 + max(ea, eb).bit_length()
            wf = Pow2Weights(bits, (1 << (bits - 2)) - 1, 0)
        eye = np.eye(channels, dtype=np.int64)
        weight = np.concatenate([eye << ea, eye << eb], axis=1)
        return Conv2d(
            name=self.name,
            in_channels=2 * channels,
            out_channels=channels,
            kernel=(1, 1),
            stride=1,
            padding=0,
            input_format=FixedFormat(max(a.bits, b.bits), big),
            weight_format=wf,
            output_format=self.format,
            relu=self.relu,
            weight=weight[:, :, None, None],
            bias=np.zeros(channels, dtype=np.int64),
        )

    def to_manifest(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "format": self.format.to_dict(),
            "relu": self.relu,
        }


@dataclass(frozen=True, eq=False)
class Concat:
    """Its inputs joined along the channels (the first axis: channels of a (C, H, W) tensor,
    features of a flat one) in the order listed; they share one format, which is kept."""

    name: str
    inputs: tuple[str, ...]
    kind: ClassVar[str] = "concat"
    arrays: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if len(self.inputs) < 2:
            raise IRError(self.name, "inputs", f"a concat takes 2 or more, got {len(self.inputs)}")

    def output_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(in_shape)  # of one input; Net joins the shapes of all of them

    def to_manifest(self) -> dict:
        return {"kind": self.kind, "name": self.name}


Layer = Conv2d | MaxPool2d | AvgPool2d | Flatten | Dense | SparseDense | Add | Concat
LAYER_KINDS: dict[str, type] = {
    cls.kind: cls
    for cls in (Conv2d, MaxPool2d, AvgPool2d, Flatten, Dense, SparseDense, Add, Concat)
}
COMPUTE_KINDS = (Conv2d, Dense, SparseDense)
#: Kinds that take more than one input.
JOIN_KINDS = (Add, Concat)
#: The name by which a layer refers to the net's input.
NET_INPUT = "input"


def busiest_pe_entries(layer: Dense | SparseDense, n_pe: int, index_bits: int) -> int:
    """Entries (padding included) of the PE that holds the most of ``layer`` in EIE's layout.

    Each PE stores its own part of the layer, so this is what the layer takes of every PE's entry
    memory, and what a pointer into a PE's part must span. Counted from the stored matrix
    (:func:`csc_entry_counts`) without encoding it.
    """
    per_pe = csc_entry_counts(np.asarray(layer.weight), n_pe, index_bits).sum(axis=1)
    return int(per_pe.max()) if per_pe.size else 0


def format_summary(fmt: FixedFormat) -> str:
    """A fixed-point format in a few characters: ``8b frac 7``."""
    return f"{fmt.bits}b frac {fmt.frac}"


@dataclass(frozen=True, eq=False)
class Net:
    """A compressed net: input shape and format, layers, test vectors, metadata."""

    name: str
    input_shape: tuple[int, ...]
    input_format: FixedFormat
    layers: tuple[Layer, ...]
    test_inputs: np.ndarray
    test_labels: np.ndarray
    test_outputs: np.ndarray
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise IRError(self.name, "layers", "a net needs at least one layer")
        names = [layer.name for layer in self.layers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise IRError(sorted(dup)[0], "name", "layer names must be unique")
        if NET_INPUT in names:
            raise IRError(NET_INPUT, "name", f"{NET_INPUT!r} names the net's input, not a layer")
        # Walked once here, where the graph is checked; every query below reads the result.
        shapes, formats = self._tensors()
        object.__setattr__(self, "_shapes", shapes)
        object.__setattr__(self, "_formats", formats)
        out_shape = shapes[self.layers[-1].name]
        used = {src for k in range(len(self.layers)) for src in self.sources(k)}
        for layer in self.layers[:-1]:
            if layer.name not in used:
                raise IRError(
                    layer.name,
                    "inputs",
                    "its output is used by no layer (only the last layer's output leaves the net)",
                )
        n = self.test_inputs.shape[0] if isinstance(self.test_inputs, np.ndarray) else -1
        _check_array(
            "<net>",
            "test_inputs",
            self.test_inputs,
            (n, *self.input_shape),
            self.input_format.min,
            self.input_format.max,
        )
        if isinstance(self.test_labels, np.ndarray) and self.test_labels.dtype.kind == "f":
            # Regression: real-valued targets, one per output.
            if tuple(self.test_labels.shape) != (n, *out_shape):
                raise IRError(
                    "<net>",
                    "test_labels",
                    f"shape {tuple(self.test_labels.shape)} disagrees with expected"
                    f" {(n, *out_shape)} (float targets, one per output)",
                )
            if not np.all(np.isfinite(self.test_labels)):
                raise IRError("<net>", "test_labels", "holds NaN or infinite values")
        else:
            _check_array("<net>", "test_labels", self.test_labels, (n,), 0, np.iinfo(np.int64).max)
        _check_array(
            "<net>",
            "test_outputs",
            self.test_outputs,
            (n, *out_shape),
            self.output_format.min,
            self.output_format.max,
        )

    def sources(self, index: int) -> tuple[str, ...]:
        """The tensors layer ``index`` reads: its ``inputs``, or when it names none, the
        previous layer's output (:data:`NET_INPUT` for the first layer)."""
        layer = self.layers[index]
        if layer.inputs:
            return tuple(layer.inputs)
        return (self.layers[index - 1].name if index else NET_INPUT,)

    @property
    def is_chain(self) -> bool:
        """Whether every layer reads only the layer before it (the net is a plain stack)."""
        previous = NET_INPUT
        for k, layer in enumerate(self.layers):
            if self.sources(k) != (previous,):
                return False
            previous = layer.name
        return True

    def consumers(self, tensor: str) -> list[int]:
        """Indices of the layers that read ``tensor`` (a layer name or :data:`NET_INPUT`)."""
        return [k for k in range(len(self.layers)) if tensor in self.sources(k)]

    def _tensors(self) -> tuple[dict[str, tuple[int, ...]], dict[str, FixedFormat]]:
        """Shape and format of every tensor, checking the graph on the way: inputs that exist
        and come earlier, the input count of each kind, shapes and formats that agree."""
        shapes: dict[str, tuple[int, ...]] = {NET_INPUT: self.input_shape}
        formats: dict[str, FixedFormat] = {NET_INPUT: self.input_format}
        names = {layer.name for layer in self.layers}
        for k, layer in enumerate(self.layers):
            srcs = self.sources(k)
            if not isinstance(layer.inputs, tuple) or not all(
                isinstance(x, str) for x in layer.inputs
            ):
                raise IRError(layer.name, "inputs", f"must be layer names, got {layer.inputs!r}")
            for src in srcs:
                if src == layer.name:
                    raise IRError(layer.name, "inputs", "a layer cannot read its own output")
                if src not in shapes:
                    why = (
                        "comes later in the net (a cycle, or layers out of order)"
                        if src in names
                        else "is not a layer of the net (a dangling input)"
                    )
                    raise IRError(layer.name, "inputs", f"{src!r} {why}")
            if not isinstance(layer, JOIN_KINDS) and len(srcs) != 1:
                raise IRError(
                    layer.name, "inputs", f"a {layer.kind} layer takes 1 input, got {len(srcs)}"
                )
            in_shapes = [shapes[src] for src in srcs]
            in_formats = [formats[src] for src in srcs]
            if isinstance(layer, Add):
                if in_shapes[0] != in_shapes[1]:
                    raise IRError(
                        layer.name,
                        "inputs",
                        f"shapes {in_shapes[0]} and {in_shapes[1]} of {srcs[0]!r} and"
                        f" {srcs[1]!r} differ",
                    )
                align = abs(in_formats[0].frac - in_formats[1].frac)
                if align > ADD_MAX_ALIGN:
                    raise IRError(
                        layer.name,
                        "inputs",
                        f"fraction lengths {in_formats[0].frac} and {in_formats[1].frac} lie"
                        f" {align} apart (at most {ADD_MAX_ALIGN})",
                    )
                shape, fmt = in_shapes[0], layer.format
            elif isinstance(layer, Concat):
                rest = {s[1:] for s in in_shapes}
                if len(rest) != 1 or len({len(s) for s in in_shapes}) != 1:
                    raise IRError(
                        layer.name,
                        "inputs",
                        f"shapes {', '.join(map(str, in_shapes))} differ beyond the first axis",
                    )
                if len(set(in_formats)) != 1:
                    raise IRError(
                        layer.name,
                        "inputs",
                        f"formats {', '.join(map(str, in_formats))} differ (a concat keeps its"
                        " inputs' one format)",
                    )
                shape = (sum(s[0] for s in in_shapes), *in_shapes[0][1:])
                fmt = in_formats[0]
            else:
                shape = layer.output_shape(in_shapes[0])
                fmt = in_formats[0]
                if isinstance(layer, COMPUTE_KINDS):
                    if layer.input_format != fmt:
                        raise IRError(
                            layer.name,
                            "input_format",
                            f"{layer.input_format} disagrees with its input's {fmt}",
                        )
                    fmt = layer.output_format
                elif isinstance(layer, AvgPool2d) and layer.format != fmt:
                    raise IRError(
                        layer.name, "format", f"{layer.format} disagrees with its input's {fmt}"
                    )
            shapes[layer.name] = shape
            formats[layer.name] = fmt
        return shapes, formats

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every tensor by name: :data:`NET_INPUT` and each layer's output."""
        return dict(self._shapes)

    def tensor_formats(self) -> dict[str, FixedFormat]:
        """Format of every tensor by name: :data:`NET_INPUT` and each layer's output."""
        return dict(self._formats)

    def shapes(self) -> list[tuple[int, ...]]:
        """Output shape of every layer."""
        return [self._shapes[layer.name] for layer in self.layers]

    def input_shapes(self) -> list[tuple[int, ...]]:
        """Shape of every layer's (first) input."""
        return [self._shapes[self.sources(k)[0]] for k in range(len(self.layers))]

    @property
    def output_format(self) -> FixedFormat:
        return self._formats[self.layers[-1].name]

    def compute_layers(self) -> Iterator[tuple[Layer, tuple[int, ...]]]:
        for layer, shape in zip(self.layers, self.input_shapes(), strict=True):
            if isinstance(layer, COMPUTE_KINDS):
                yield layer, shape

    def replace(self, **changes: Any) -> Net:
        return replace(self, **changes)

    # The dataclass repr prints every weight array: thousands of characters for a small net.
    _REPR_LAYERS = 8

    def __repr__(self) -> str:
        names = [f"{layer.name}:{layer.kind}" for layer in self.layers]
        if len(names) > self._REPR_LAYERS:
            names = [
                *names[: self._REPR_LAYERS - 1],
                f"... {len(names) - self._REPR_LAYERS + 1} more",
            ]
        shape = "x".join(map(str, self.input_shape))
        return (
            f"Net({self.name!r}, input {shape} {format_summary(self.input_format)},"
            f" output {format_summary(self.output_format)}, layers [{', '.join(names)}],"
            f" {self.test_inputs.shape[0]} test vectors)"
        )


# ---------------------------------------------------------------------------------------------
# The file


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _zip_entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    # A fixed timestamp keeps the same net byte-identical across runs.
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data, compresslevel=6)


def _array_dtype(layer: Any, name: str) -> np.dtype:
    if name == "bias":
        return layer.bias_dtype()
    if name == "weight":
        return layer.stored_dtype()
    if name == "z":
        return np.dtype(np.uint8)
    return np.dtype(np.int32)  # ptr


def net_to_bytes(net: Net) -> bytes:
    """Serialize a net to the bytes of a ``.sfnet`` file (deterministic)."""
    arrays: dict[str, np.ndarray] = {}
    layer_entries = []
    for layer in net.layers:
        entry = layer.to_manifest()
        if layer.inputs:
            entry["inputs"] = list(layer.inputs)
        if layer.arrays:
            entry["arrays"] = {}
        for aname in layer.arrays:
            arr = np.asarray(getattr(layer, aname)).astype(_array_dtype(layer, aname))
            fname = f"arrays/{layer.name}.{aname}.npy"
            arrays[fname] = arr
            entry["arrays"][aname] = {
                "file": fname,
                "shape": list(arr.shape),
                "dtype": arr.dtype.name,
            }
        layer_entries.append(entry)
    tests = {}
    in_dtype = _storage_dtype(net.input_format.min, net.input_format.max)
    out_dtype = _storage_dtype(net.output_format.min, net.output_format.max)
    for aname, arr in (
        ("test_inputs", net.test_inputs.astype(in_dtype)),
        (
            "test_labels",
            net.test_labels.astype(
                np.float64 if task_of(net.test_labels) == "regression" else np.int64
            ),
        ),
        ("test_outputs", net.test_outputs.astype(out_dtype)),
    ):
        fname = f"arrays/{aname}.npy"
        arrays[fname] = arr
        tests[aname] = {"file": fname, "shape": list(arr.shape), "dtype": arr.dtype.name}
    manifest = {
        "format": FORMAT_NAME,
        "version": CHAIN_VERSION if net.is_chain else FORMAT_VERSION,
        "name": net.name,
        "input": {"shape": list(net.input_shape), "format": net.input_format.to_dict()},
        "layers": layer_entries,
        "test_vectors": tests,
        "metadata": net.metadata,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _zip_entry(zf, "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
        for fname in sorted(arrays):
            _zip_entry(zf, fname, _npy_bytes(arrays[fname]))
    return buf.getvalue()


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> Path:
    """Fail early, with one line, if ``path`` cannot be written: before any long step runs.

    ``path`` is a file to be (re)placed, or with ``folder=True`` a folder to be created or
    written into. The nearest existing folder is probed by creating and removing a file in it:
    permission bits alone say nothing when running as root or on a read-only mount.
    """
    path = Path(path)
    if str(path) == "":
        raise UserError("an empty output path was given")
    if path.exists():
        if folder and not path.is_dir():
            raise UserError(f"{path} exists and is not a folder")
        if not folder and path.is_dir():
            raise UserError(f"{path} is a folder; give a file name")
    probe_dir = path if folder and path.is_dir() else path.parent
    for parent in [probe_dir, *probe_dir.parents]:
        if parent.exists() or parent.is_symlink():
            break
    else:  # pragma: no cover - the root always exists
        parent = Path("/")
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".squeezeforge-probe.", dir=parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {parent}: {_os_reason(exc)}") from None
    os.close(fd)
    os.unlink(probe)
    return path


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries a killed write of ``path`` left (``.NAME.xxxxxxxx.tmp``)."""
    if not path.parent.is_dir():
        return
    escaped = "".join(f"[{c}]" if c in "*?[]" else c for c in path.name)
    for stale in path.parent.glob(f".{escaped}.*.tmp"):
        if stale.is_file() and not stale.is_symlink():
            stale.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file through a temporary in the same folder and a rename.

    The file gets the mode a plain ``open`` would (0666 less the umask), not mkstemp's 0600. An
    error of the file system becomes a one-line :class:`UserError`.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    _remove_stale_temporaries(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {_os_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {_os_reason(exc)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_net(net: Net, path: str | os.PathLike) -> Path:
    """Write ``net`` to ``path`` atomically."""
    atomic_write_bytes(path, net_to_bytes(net))
    return Path(path)


def _read_array(zf: zipfile.ZipFile, layer: str, name: str, spec: Any) -> np.ndarray:
    if not isinstance(spec, dict) or not {"file", "shape", "dtype"} <= spec.keys():
        raise IRError(layer, name, "array entry needs 'file', 'shape' and 'dtype'")
    if not isinstance(spec["file"], str):
        raise IRError(layer, name, f"array file name must be a string, got {spec['file']!r}")
    try:
        raw = zf.read(spec["file"])
    except KeyError:
        raise IRError(layer, name, f"array file {spec['file']!r} is missing") from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise IRError(layer, name, f"array file {spec['file']!r} is corrupt: {exc}") from None
    try:
        arr = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise IRError(layer, name, f"array file {spec['file']!r} is unreadable: {exc}") from None
    if arr.dtype.name != spec["dtype"]:
        raise IRError(
            layer, name, f"dtype {arr.dtype.name} disagrees with manifest {spec['dtype']}"
        )
    if list(arr.shape) != list(spec["shape"]):
        raise IRError(
            layer, name, f"shape {list(arr.shape)} disagrees with manifest {spec['shape']}"
        )
    if name == "test_labels" and arr.dtype == np.float64:
        return arr  # regression targets (Net checks them)
    if arr.dtype.kind not in "iu":
        raise IRError(layer, name, f"dtype {arr.dtype} is not an integer type")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        # astype would wrap 2**64 - 1 to -1 and the net would load with a wrong value.
        raise IRError(layer, name, f"value {int(arr.max())} does not fit a signed 64-bit integer")
    return arr.astype(np.int64)


def _layer_from_manifest(
    zf: zipfile.ZipFile, entry: Any, index: int, version: int = FORMAT_VERSION
) -> Layer:
    if not isinstance(entry, dict):
        raise IRError(f"#{index}", "layer", "each layer must be an object")
    name = entry.get("name", f"#{index}")
    if not isinstance(name, str) or not name:
        raise IRError(f"#{index}", "name", f"must be a non-empty string, got {name!r}")
    kind = entry.get("kind")
    if kind == "sparse_dense" and version == 1:
        entry = _v1_sparse_dense(zf, entry, name)
    cls = LAYER_KINDS.get(kind)
    if cls is None:
        raise IRError(name, "kind", f"unknown layer kind {kind!r} ({', '.join(LAYER_KINDS)})")
    kw: dict[str, Any] = {}
    arrays = entry.get("arrays", {})
    if not isinstance(arrays, dict):
        raise IRError(name, "arrays", f"must be an object, got {arrays!r}")
    try:
        for f in fields(cls):
            if f.name in cls.arrays:
                if f.name not in arrays:
                    raise IRError(name, f.name, "array is missing from the manifest")
                spec = arrays[f.name]
                # A version-1 reader hands over arrays it already decoded.
                kw[f.name] = (
                    spec if isinstance(spec, np.ndarray) else _read_array(zf, name, f.name, spec)
                )
            elif f.name in ("input_format", "output_format", "format"):
                kw[f.name] = FixedFormat.from_dict(_require(entry, name, f.name))
            elif f.name == "weight_format":
                kw[f.name] = weight_format_from_dict(_require(entry, name, f.name))
            elif f.name in entry:
                kw[f.name] = entry[f.name]
            elif f.default is f.default_factory:  # MISSING on both: a required field
                raise IRError(name, f.name, "is missing")
    except FormatError as exc:
        raise IRError(name, f.name, str(exc)) from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise IRError(name, f.name, f"malformed: {exc}") from None
    if "inputs" in kw:
        inputs = kw["inputs"]
        if not isinstance(inputs, list) or not all(isinstance(x, str) and x for x in inputs):
            raise IRError(name, "inputs", f"must be a list of layer names, got {inputs!r}")
        if version < 3:
            raise IRError(name, "inputs", f"appears in a version {version} file (from version 3)")
        kw["inputs"] = tuple(inputs)
    if "kernel" in kw and cls in (Conv2d, AvgPool2d):
        kernel = kw["kernel"]
        if not isinstance(kernel, list) or not all(_is_int(k) for k in kernel):
            raise IRError(name, "kernel", f"must be a list of two integers, got {kernel!r}")
        kw["kernel"] = tuple(kernel)
    for key in ("relu",):
        if key in kw and not isinstance(kw[key], bool):
            raise IRError(name, key, f"must be true or false, got {kw[key]!r}")
    for key in (
        "in_channels",
        "out_channels",
        "stride",
        "padding",
        "in_features",
        "out_features",
        "groups",
    ):
        if key in kw and not _is_int(kw[key]):
            raise IRError(name, key, f"must be an integer, got {kw[key]!r}")
    if cls is MaxPool2d:
        for key in ("kernel", "stride"):
            if key in kw and not _is_int(kw[key]):
                raise IRError(name, key, f"must be an integer, got {kw[key]!r}")
    return cls(**kw)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _v1_sparse_dense(zf: zipfile.ZipFile, entry: dict, name: str) -> dict:
    """A version-1 sparse_dense entry (CSC arrays v, z, ptr for n_pe PEs) as a version-2 one.

    The decoded matrix goes into the entry as an in-memory array under ``"weight"``.
    """
    arrays = entry.get("arrays", {})
    csc = {}
    for key in ("n_pe", "index_bits", "in_features", "out_features"):
        value = _require(entry, name, key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise IRError(name, key, f"must be an integer, got {value!r}")
        csc[key] = value
    for key in ("v", "z", "ptr"):
        if key not in arrays:
            raise IRError(name, key, "array is missing from the manifest")
        csc[key] = _read_array(zf, name, key, arrays[key])
    matrix = CscMatrix(name, **csc)
    rest = {k: v for k, v in entry.items() if k not in ("n_pe", "index_bits", "arrays")}
    rest["arrays"] = {"weight": matrix.stored_dense(), "bias": arrays.get("bias")}
    return rest


def _require(entry: dict, layer: str, key: str) -> Any:
    if key not in entry:
        raise IRError(layer, key, "is missing")
    return entry[key]


def load_net(path: str | os.PathLike) -> Net:
    """Read and validate a ``.sfnet`` file."""
    path = Path(path)
    if path.is_dir():
        raise IRError("<file>", "path", f"{path} is a folder, not a net file")
    if not path.is_file():
        raise IRError("<file>", "path", f"{path} does not exist")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        if path.stat().st_size == 0:
            raise IRError("<file>", "path", f"{path} is empty") from None
        reason = "not a zip archive" if isinstance(exc, zipfile.BadZipFile) else str(exc)
        raise IRError(
            "<file>", "path", f"{path} is not a squeezeforge net file ({reason})"
        ) from None
    with zf:
        return _net_from_zip(zf, path.stem)


def net_from_bytes(blob: bytes, name: str = "net") -> Net:
    """Read and validate the bytes of a ``.sfnet`` file (:func:`net_to_bytes`' inverse);
    ``name`` stands in for a file's stem when the net names itself not."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except zipfile.BadZipFile:
        raise IRError("<bytes>", "data", "not a squeezeforge net (not a zip archive)") from None
    with zf:
        return _net_from_zip(zf, name)


def _net_from_zip(zf: zipfile.ZipFile, default_name: str) -> Net:
    """The net in an open ``.sfnet`` archive, validated."""
    try:
        manifest = json.loads(zf.read("manifest.json"))
    except KeyError:
        raise IRError("<file>", "manifest.json", "is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IRError("<file>", "manifest.json", f"is not valid JSON: {exc}") from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise IRError("<file>", "manifest.json", f"is corrupt: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IRError("<file>", "format", f"is not {FORMAT_NAME!r}")
    version = manifest.get("version")
    if version not in READ_VERSIONS:
        raise IRError(
            "<file>",
            "version",
            f"file has version {version!r}, this squeezeforge reads"
            f" {', '.join(map(str, READ_VERSIONS))}",
        )
    inp = _require(manifest, "<net>", "input")
    try:
        input_format = FixedFormat.from_dict(inp["format"])
        shape = inp["shape"]
        if not isinstance(shape, list) or not shape or not all(_is_int(s) for s in shape):
            raise TypeError(f"shape must be a list of integers, got {shape!r}")
        if min(shape) < 1:
            raise ValueError(f"shape {shape} has a size below 1")
        input_shape = tuple(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise IRError("<net>", "input", f"malformed: {exc}") from None
    entries = _require(manifest, "<net>", "layers")
    if not isinstance(entries, list):
        raise IRError("<net>", "layers", "must be a list")
    layers = tuple(_layer_from_manifest(zf, e, i, version) for i, e in enumerate(entries))
    tv = _require(manifest, "<net>", "test_vectors")
    if not isinstance(tv, dict):
        raise IRError("<net>", "test_vectors", f"must be an object, got {tv!r}")
    tests = {}
    for key in ("test_inputs", "test_labels", "test_outputs"):
        tests[key] = _read_array(zf, "<net>", key, _require(tv, "<net>", key))
    name = manifest.get("name", default_name)
    if not isinstance(name, str):
        raise IRError("<net>", "name", f"must be a string, got {name!r}")
    metadata = manifest.get("metadata", {})
    if not isinstance(metadata, dict):
        raise IRError("<net>", "metadata", f"must be an object, got {metadata!r}")
    return Net(
        name=name,
        input_shape=input_shape,
        input_format=input_format,
        layers=layers,
        metadata=dict(metadata),
        **tests,
    )
