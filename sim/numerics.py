"""The numeric contract: the one definition of squeezeforge's arithmetic.

The reference model, the RTL generators and the cycle models all read this module; nothing
re-derives a width, a rounding or a saturation rule elsewhere.

Values
------
Every tensor is signed two's-complement fixed point. A :class:`FixedFormat` ``(bits, frac)``
stores the integer ``q`` in ``[-2**(bits-1), 2**(bits-1) - 1]`` and means ``q * 2**-frac``
(dynamic fixed point: each layer has its own fraction length ``frac``, which may be negative).
Bit widths of activations and weights are 2..16.

Weights come in three formats, each holding *integer weight values* ``w`` with a fraction
length, so that every format multiplies the same way:

``FixedWeights(bits, frac)``
    ``w`` is a ``bits``-wide signed integer.
``Pow2Weights(bits, n1, n2)`` (INQ)
    the real weight is 0 or ``±2**e`` with ``n2 <= e <= n1``. It is stored as
    ``w = ±2**(e - n2)`` with fraction length ``frac = -n2``: the scale ``2**n2`` is folded into
    the fraction length, so every exponent ``e - n2`` is in ``[0, n1 - n2]`` and a product is an
    exact *left* shift ``a << (e - n2)`` (negated for a negative weight). No bit is lost, no
    multiplier is needed (INQ widths 2..6). ``bits`` counts INQ's bits: one for zero,
    ``bits - 1`` for the powers, so ``n1 - n2 + 1 == 2**(bits - 2)`` exponents. In hardware a
    weight is the code :func:`pow2_encode` gives: sign bit on top, then ``bits - 1`` bits
    holding ``e - n2 + 1``, or 0 for a zero weight.
``CodebookWeights(index_bits, value_bits, frac, table)`` (weight sharing)
    a layer stores ``index_bits``-wide indices into ``table``, a tuple of ``2**index_bits``
    signed ``value_bits``-wide integers; index 0 is exact zero (``table[0] == 0``). The
    weight value is ``table[index]``.

Arithmetic of one layer
-----------------------
1. Products ``a * w`` of an activation (``act.bits`` wide) and a weight value
   (:attr:`WeightFormat.value_bits` wide) are exact, fraction length ``act.frac + w.frac``.
2. They are summed exactly with the bias in an accumulator :func:`accumulator_bits` wide: the
   smallest width that holds ``fan_in`` extreme products plus the extreme bias, so it can never
   overflow. The bias is stored already aligned to the accumulator (fraction length
   ``act.frac + w.frac``) as a signed :func:`bias_bits`-wide integer.
3. One requantization per layer (:func:`requantize`): arithmetic right shift by
   ``shift = act.frac + w.frac - out.frac`` with round-half-up (add ``2**(shift-1)`` first), or a
   left shift when ``shift < 0``; then saturation to ``out.bits``.
4. ReLU (optional) after saturation: ``max(y, 0)``; then, where the layer has one, a clamp to
   the integer ``clamp_max`` (ReLU6 is ``clamp_max = floor(6 * 2**out.frac)``, or ``out.max``
   when 6 is beyond the format): ``min(y, clamp_max)``.
5. 2x2 max pool (stride 2, odd edges dropped) on the integers; formats pass through unchanged.
6. Average pooling over a window of ``n`` values keeps the format too: the exact sum ``S``, times
   a fixed-point reciprocal ``r / 2**s`` of ``n`` (:func:`avg_pool_multiplier`), rounded half up
   and saturated: ``y = sat((S * r + 2**(s-1)) >> s)``. Where ``n`` is a power of two, ``r = 1``
   and the division is exact but for that rounding. As ``S * r`` is the sum of the products
   ``x * r``, this is exactly a depthwise convolution with every weight ``r`` (fraction length
   ``s``), no bias and the same output format: how the reference and the hardware compute it.
7. A residual add of ``a`` (fraction length ``fa``) and ``b`` (``fb``) aligns both exactly to
   ``m = max(fa, fb)`` by left shifts, sums them, and requantizes the sum (fraction length
   ``m``) to its output format as in 3 and 4: ``y = sat(round((a << (m-fa)) + (b << (m-fb))))``
   (:func:`add_aligned`). ``|fa - fb|`` is at most :data:`ADD_MAX_ALIGN`. A channel concat
   moves values without changing them; its inputs share one format.

Float inputs enter through :func:`quantize` (round half up, saturate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import SqueezeforgeError

MIN_BITS = 2
MAX_BITS = 16
#: Fraction lengths of activation formats.
MIN_FRAC = -32
MAX_FRAC = 32
#: Widest accumulator: a requantization adds ``2**(shift-1)`` to it in int64 without overflow.
MAX_ACC_BITS = 62
#: Largest requantization shift. The engines hold it in a 6-bit cfg field, and the reference's
#: rounding constant ``2**(shift-1)`` must fit an int64 beside a ``MAX_ACC_BITS`` accumulator.
MAX_SHIFT = 63

__all__ = [
    "ADD_MAX_ALIGN",
    "AVG_MULTIPLIER_BITS",
    "add_aligned",
    "avg_pool_multiplier",
    "MAX_ACC_BITS",
    "MAX_BITS",
    "MAX_FRAC",
    "MAX_SHIFT",
    "MIN_BITS",
    "MIN_FRAC",
    "CodebookWeights",
    "FixedFormat",
    "FixedWeights",
    "FormatError",
    "Pow2Weights",
    "WeightFormat",
    "accumulator_bits",
    "bias_bits",
    "int_range",
    "pow2_decode",
    "pow2_encode",
    "pow2_max_shift",
    "quantize",
    "relu",
    "requantize",
    "round_shift",
    "saturate",
    "signed_bits_for",
    "weight_format_from_dict",
]


class FormatError(SqueezeforgeError, ValueError):
    """A number format or a value outside its format."""


def _check_bits(bits: object, what: str) -> None:
    if not isinstance(bits, int | np.integer) or isinstance(bits, bool):
        raise FormatError(f"{what}: bit width must be an integer, not {bits!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise FormatError(f"{what}: bit width {bits} is outside {MIN_BITS}..{MAX_BITS}")


def int_range(bits: int) -> tuple[int, int]:
    """Inclusive range of a signed ``bits``-wide integer."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def signed_bits_for(lo: int, hi: int) -> int:
    """Smallest signed width holding every integer in ``[lo, hi]``."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


@dataclass(frozen=True)
class FixedFormat:
    """Signed fixed point: ``bits`` wide, ``frac`` fraction bits (value = q * 2**-frac)."""

    bits: int
    frac: int

    def __post_init__(self) -> None:
        _check_bits(self.bits, "fixed-point format")
        if (
            not isinstance(self.frac, int | np.integer)
            or isinstance(self.frac, bool)
            or not MIN_FRAC <= self.frac <= MAX_FRAC
        ):
            raise FormatError(
                f"fixed-point format: fraction length {self.frac!r} out of {MIN_FRAC}..{MAX_FRAC}"
            )

    @property
    def min(self) -> int:
        return int_range(self.bits)[0]

    @property
    def max(self) -> int:
        return int_range(self.bits)[1]

    @property
    def scale(self) -> float:
        return 2.0**-self.frac

    def to_dict(self) -> dict:
        return {"bits": int(self.bits), "frac": int(self.frac)}

    @classmethod
    def from_dict(cls, d: dict) -> FixedFormat:
        if not isinstance(d, dict):
            raise FormatError(f"fixed-point format must be an object, got {d!r}")
        return cls(bits=_int_field(d, "bits"), frac=_int_field(d, "frac"))


@dataclass(frozen=True)
class FixedWeights:
    """Fixed-point weights: integer values ``bits`` wide, fraction length ``frac``."""

    bits: int
    frac: int
    kind: Literal["fixed"] = "fixed"

    def __post_init__(self) -> None:
        _check_bits(self.bits, "fixed weights")

    @property
    def value_bits(self) -> int:
        return self.bits

    @property
    def value_range(self) -> tuple[int, int]:
        return int_range(self.bits)

    @property
    def stored_bits(self) -> int:
        """Bits one weight takes in memory."""
        return self.bits

    def decode(self, stored: np.ndarray) -> np.ndarray:
        return np.asarray(stored, dtype=np.int64)

    def invalid(self, stored: np.ndarray) -> np.ndarray:
        """Mask of stored entries outside the format."""
        lo, hi = self.value_range
        return (stored < lo) | (stored > hi)

    def to_dict(self) -> dict:
        return {"kind": "fixed", "bits": int(self.bits), "frac": int(self.frac)}


@dataclass(frozen=True)
class Pow2Weights:
    """INQ power-of-two weights: 0 or ``±2**e``, ``n2 <= e <= n1``, stored as ``±2**(e-n2)``."""

    bits: int
    n1: int
    n2: int
    kind: Literal["pow2"] = "pow2"

    def __post_init__(self) -> None:
        # Beyond 6 bits the exponent span (2**(bits-2) values) outgrows any useful shifter.
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 6:
            raise FormatError(f"power-of-two weights: bit width {self.bits!r} outside 2..6")
        if self.n1 - self.n2 != pow2_max_shift(self.bits):
            raise FormatError(
                f"power-of-two weights: n1={self.n1}, n2={self.n2} give {self.n1 - self.n2 + 1}"
                f" exponents, {self.bits} bits give {pow2_max_shift(self.bits) + 1}"
            )

    @classmethod
    def for_max(cls, bits: int, max_abs: float) -> Pow2Weights:
        """INQ's set for a layer whose largest ``|w|`` is ``max_abs``."""
        n1 = math.floor(math.log2(4.0 * max_abs / 3.0))
        n2 = n1 + 1 - (1 << (bits - 1)) // 2
        return cls(bits=bits, n1=n1, n2=n2)

    @property
    def frac(self) -> int:
        return -self.n2

    @property
    def max_shift(self) -> int:
        return pow2_max_shift(self.bits)

    @property
    def value_bits(self) -> int:
        # ±2**max_shift as a signed integer.
        return self.max_shift + 2

    @property
    def value_range(self) -> tuple[int, int]:
        return -(1 << self.max_shift), 1 << self.max_shift

    @property
    def stored_bits(self) -> int:
        return self.bits

    def decode(self, stored: np.ndarray) -> np.ndarray:
        return np.asarray(stored, dtype=np.int64)

    def invalid(self, stored: np.ndarray) -> np.ndarray:
        a = np.abs(np.asarray(stored, dtype=np.int64))
        power = (a & (a - 1)) == 0
        return ~((a == 0) | (power & (a <= (1 << self.max_shift))))

    def to_dict(self) -> dict:
        return {"kind": "pow2", "bits": int(self.bits), "n1": int(self.n1), "n2": int(self.n2)}


@dataclass(frozen=True)
class CodebookWeights:
    """Shared weights: ``index_bits``-wide indices into ``table``; ``table[0] == 0``."""

    index_bits: int
    value_bits: int
    frac: int
    table: tuple[int, ...]
    kind: Literal["codebook"] = "codebook"

    def __post_init__(self) -> None:
        if not isinstance(self.index_bits, int) or not 1 <= self.index_bits <= 8:
            raise FormatError(f"codebook weights: index width {self.index_bits!r} outside 1..8")
        _check_bits(self.value_bits, "codebook weights")
        object.__setattr__(self, "table", tuple(int(t) for t in self.table))
        if len(self.table) != 1 << self.index_bits:
            raise FormatError(
                f"codebook weights: table has {len(self.table)} entries,"
                f" index width {self.index_bits} needs {1 << self.index_bits}"
            )
        if self.table[0] != 0:
            raise FormatError("codebook weights: table[0] must be exact zero")
        lo, hi = int_range(self.value_bits)
        bad = [t for t in self.table if not lo <= t <= hi]
        if bad:
            raise FormatError(
                f"codebook weights: table value {bad[0]} outside {self.value_bits} bits"
            )

    @property
    def value_range(self) -> tuple[int, int]:
        return int_range(self.value_bits)

    @property
    def stored_bits(self) -> int:
        return self.index_bits

    def decode(self, stored: np.ndarray) -> np.ndarray:
        return np.asarray(self.table, dtype=np.int64)[np.asarray(stored, dtype=np.int64)]

    def invalid(self, stored: np.ndarray) -> np.ndarray:
        return (stored < 0) | (stored >= len(self.table))

    def to_dict(self) -> dict:
        return {
            "kind": "codebook",
            "index_bits": int(self.index_bits),
            "value_bits": int(self.value_bits),
            "frac": int(self.frac),
            "table": [int(t) for t in self.table],
        }


WeightFormat = FixedWeights | Pow2Weights | CodebookWeights


def _int_field(d: dict, key: str) -> int:
    """An integer field of a format read from a file: present, an integer, not a bool."""
    if key not in d:
        raise FormatError(f"format field {key!r} is missing")
    value = d[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise FormatError(f"format field {key!r} must be an integer, got {value!r}")
    return value


def weight_format_from_dict(d: dict) -> WeightFormat:
    if not isinstance(d, dict):
        raise FormatError(f"weight format must be an object, got {d!r}")
    kind = d.get("kind")
    if kind == "fixed":
        return FixedWeights(bits=_int_field(d, "bits"), frac=_int_field(d, "frac"))
    if kind == "pow2":
        return Pow2Weights(
            bits=_int_field(d, "bits"), n1=_int_field(d, "n1"), n2=_int_field(d, "n2")
        )
    if kind == "codebook":
        table = d.get("table")
        if not isinstance(table, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in table
        ):
            raise FormatError(f"codebook table must be a list of integers, got {table!r}")
        return CodebookWeights(
            index_bits=_int_field(d, "index_bits"),
            value_bits=_int_field(d, "value_bits"),
            frac=_int_field(d, "frac"),
            table=tuple(table),
        )
    raise FormatError(f"unknown weight format kind {kind!r} (fixed, pow2, codebook)")


def pow2_max_shift(bits: int) -> int:
    """Largest exponent offset ``e - n2`` of ``bits``-bit power-of-two weights.

    One bit is the sign and one code (0) is zero, so ``bits`` bits hold ``2**(bits - 2)``
    exponents. Every shifter width and code check derives from this one rule.
    """
    return (1 << (bits - 2)) - 1


def _code_bits(fmt: Pow2Weights | int) -> int:
    # An engine's codes are as wide as its shifter, which may be wider than a layer's format.
    return fmt if isinstance(fmt, int) else fmt.bits


def pow2_encode(values: np.ndarray, fmt: Pow2Weights | int) -> np.ndarray:
    """Hardware codes of stored power-of-two values: sign on top, ``e - n2 + 1`` below, 0 = zero.

    ``fmt`` is the layer's format or the code width of an engine (an int).
    """
    v = np.asarray(values, dtype=np.int64)
    a = np.abs(v)
    # log2 of an exact power of two; zero maps to code 0 below.
    shift = np.where(a > 0, np.log2(np.maximum(a, 1)).round().astype(np.int64), -1)
    mag = np.where(a > 0, shift + 1, 0)
    sign = (v < 0).astype(np.int64) << (_code_bits(fmt) - 1)
    return sign | mag


def pow2_decode(codes: np.ndarray, fmt: Pow2Weights | int) -> np.ndarray:
    bits = _code_bits(fmt)
    c = np.asarray(codes, dtype=np.int64)
    mag = c & ((1 << (bits - 1)) - 1)
    neg = (c >> (bits - 1)) & 1
    val = np.where(mag > 0, np.left_shift(1, np.maximum(mag - 1, 0)), 0)
    return np.where(neg == 1, -val, val)


#: Width of the fixed-point reciprocal an average pool multiplies its sum by (a weight of the
#: conv engine that runs it: 8 bits fit the engines' usual weight width).
AVG_MULTIPLIER_BITS = 8


def avg_pool_multiplier(window: int, bits: int = AVG_MULTIPLIER_BITS) -> tuple[int, int]:
    """The reciprocal ``r / 2**s`` of an average pool over ``window`` values: ``(r, s)``.

    ``r = 1, s = log2(window)`` for a power of two; otherwise the largest ``s`` whose
    ``r = round(2**s / window)`` still fits ``bits`` signed bits, which makes the relative error
    of the reciprocal at most ``2**-(bits-2)``.
    """
    if not isinstance(window, int) or window < 1:
        raise FormatError(f"average pool window {window!r} must be a positive integer")
    if window & (window - 1) == 0:
        return 1, window.bit_length() - 1
    limit = (1 << (bits - 1)) - 1
    s = 0
    while (((1 << (s + 1)) + window // 2) // window) <= limit:
        s += 1
    return ((1 << s) + window // 2) // window, s


#: Largest difference of the fraction lengths an add aligns: the hardware scales the input with
#: the smaller one by ``2**d`` (a weight of a 1x1 conv), which must fit a 16-bit weight.
ADD_MAX_ALIGN = MAX_BITS - 2


def add_aligned(
    a: np.ndarray, a_frac: int, b: np.ndarray, b_frac: int, out: FixedFormat, *, apply_relu: bool
) -> np.ndarray:
    """Item 7 of the contract: ``a + b`` aligned exactly, then requantized to ``out``."""
    if abs(a_frac - b_frac) > ADD_MAX_ALIGN:
        raise FormatError(
            f"fraction lengths {a_frac} and {b_frac} lie more than {ADD_MAX_ALIGN} apart"
        )
    m = max(a_frac, b_frac)
    acc = (np.asarray(a, dtype=np.int64) << (m - a_frac)) + (
        np.asarray(b, dtype=np.int64) << (m - b_frac)
    )
    return requantize(acc, m, out, apply_relu=apply_relu)


def bias_bits(act: FixedFormat, weights: WeightFormat) -> int:
    """Width of a bias aligned to the accumulator: that of one product."""
    wlo, whi = weights.value_range
    plo = min(act.min * whi, act.max * wlo)
    phi = max(act.min * wlo, act.max * whi)
    return signed_bits_for(plo, phi)


def accumulator_bits(act: FixedFormat, weights: WeightFormat, fan_in: int) -> int:
    """Smallest width that holds any sum of ``fan_in`` products and a bias: never overflows."""
    wlo, whi = weights.value_range
    plo = min(act.min * whi, act.max * wlo)
    phi = max(act.min * wlo, act.max * whi)
    blo, bhi = int_range(bias_bits(act, weights))
    return signed_bits_for(fan_in * plo + blo, fan_in * phi + bhi)


def round_shift(acc: np.ndarray, shift: int) -> np.ndarray:
    """Arithmetic shift right by ``shift`` with round half up; a left shift if negative."""
    if abs(shift) > MAX_SHIFT:
        # 2**(shift-1) would not fit the int64 the sums live in.
        raise FormatError(f"requantization shift {shift} is outside -{MAX_SHIFT}..{MAX_SHIFT}")
    acc = np.asarray(acc, dtype=np.int64)
    if shift > 0:
        return (acc + (1 << (shift - 1))) >> shift
    if shift < 0:
        return acc << (-shift)
    return acc


def saturate(x: np.ndarray, fmt: FixedFormat) -> np.ndarray:
    return np.clip(x, fmt.min, fmt.max)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def requantize(
    acc: np.ndarray,
    acc_frac: int,
    out: FixedFormat,
    *,
    apply_relu: bool,
    clamp_max: int | None = None,
) -> np.ndarray:
    """The one requantization step of a layer: round-shift, saturate, optional ReLU, optional
    clamp to ``clamp_max``."""
    y = saturate(round_shift(acc, acc_frac - out.frac), out)
    y = relu(y) if apply_relu else y
    return np.minimum(y, clamp_max) if clamp_max is not None else y


def quantize(x: np.ndarray, fmt: FixedFormat) -> np.ndarray:
    """Float to fixed point: round half up, saturate. NaN has no fixed-point value."""
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        raise FormatError("cannot quantize NaN to fixed point")
    q = np.floor(x * 2.0**fmt.frac + 0.5)
    return saturate(q, fmt).astype(np.int64)
