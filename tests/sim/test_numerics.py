"""The numeric contract: formats, widths, rounding, saturation."""

from __future__ import annotations

import numpy as np
import pytest

from squeezeforge.sim.numerics import (
    CodebookWeights,
    FixedFormat,
    FixedWeights,
    FormatError,
    Pow2Weights,
    accumulator_bits,
    bias_bits,
    pow2_decode,
    pow2_encode,
    quantize,
    requantize,
    round_shift,
    signed_bits_for,
)


def test_round_half_up_on_negative_and_positive_halves() -> None:
    acc = np.array([-6, -5, -3, -2, 2, 3, 5, 6])
    # x / 4 rounded half up: -1.5 -> -1, -1.25 -> -1, -0.75 -> -1, -0.5 -> 0, 0.5 -> 1, ...
    assert round_shift(acc, 2).tolist() == [-1, -1, -1, 0, 1, 1, 1, 2]
    assert round_shift(acc, 0).tolist() == acc.tolist()
    assert round_shift(np.array([3]), -2).tolist() == [12]


def test_requantize_saturates_then_relu() -> None:
    out = FixedFormat(4, 0)
    acc = np.array([-1000, -1, 0, 15, 16, 1000]) * 4
    assert requantize(acc, 2, out, apply_relu=False).tolist() == [-8, -1, 0, 7, 7, 7]
    assert requantize(acc, 2, out, apply_relu=True).tolist() == [0, 0, 0, 7, 7, 7]


def test_quantize_rounds_half_up_and_saturates() -> None:
    fmt = FixedFormat(8, 6)
    q = quantize(np.array([0.0, 1.0, 1 / 128, -1 / 128, 5.0, -5.0]), fmt)
    assert q.tolist() == [0, 64, 1, 0, 127, -128]


@pytest.mark.parametrize("bits", [1, 17, 2.5])
def test_out_of_range_bit_width_is_rejected(bits) -> None:
    with pytest.raises(FormatError, match="bit width"):
        FixedFormat(bits, 0)


def test_inq_set_matches_paper_example() -> None:
    # REFERENCES.md: b = 3, n1 = -1 gives n2 = -2.
    fmt = Pow2Weights.for_max(3, 0.6)  # floor(log2(0.8)) = -1
    assert (fmt.n1, fmt.n2) == (-1, -2)
    assert fmt.frac == 2 and fmt.max_shift == 1
    five = Pow2Weights.for_max(5, 1.0)  # n1 = floor(log2(4/3)) = 0, n2 = 0 + 1 - 8 = -7
    assert (five.n1, five.n2) == (0, -7)
    with pytest.raises(FormatError, match="exponents"):
        Pow2Weights(bits=5, n1=0, n2=-3)


def test_pow2_codes_round_trip_and_reject_non_powers() -> None:
    fmt = Pow2Weights(bits=4, n1=0, n2=-3)
    values = np.array([0, 1, -1, 2, -8, 8, 4])
    codes = pow2_encode(values, fmt)
    assert codes.tolist() == [0, 1, 9, 2, 12, 4, 3]
    assert pow2_decode(codes, fmt).tolist() == values.tolist()
    assert fmt.invalid(np.array([3, 16, -6, 0, 8])).tolist() == [True, True, True, False, False]


def test_codebook_requires_zero_at_index_zero() -> None:
    with pytest.raises(FormatError, match="exact zero"):
        CodebookWeights(index_bits=1, value_bits=8, frac=4, table=(1, 2))
    with pytest.raises(FormatError, match="entries"):
        CodebookWeights(index_bits=2, value_bits=8, frac=4, table=(0, 2))
    cb = CodebookWeights(index_bits=2, value_bits=4, frac=4, table=(0, -8, 7, 3))
    assert cb.decode(np.array([[1, 0], [2, 3]])).tolist() == [[-8, 0], [7, 3]]


@pytest.mark.parametrize("abits,wbits,fan_in", [(2, 2, 1), (8, 8, 576), (16, 16, 4096), (8, 3, 9)])
def test_accumulator_holds_every_extreme_sum(abits: int, wbits: int, fan_in: int) -> None:
    act, w = FixedFormat(abits, 0), FixedWeights(wbits, 0)
    n = accumulator_bits(act, w, fan_in)
    lo, hi = -(1 << (n - 1)), (1 << (n - 1)) - 1
    bmin, bmax = -(1 << (bias_bits(act, w) - 1)), (1 << (bias_bits(act, w) - 1)) - 1
    top = fan_in * act.min * w.value_range[0] + bmax
    bottom = fan_in * act.min * w.value_range[1] + bmin
    assert lo <= bottom and top <= hi
    # and it is the smallest such width
    assert not (-(1 << (n - 2)) <= bottom and top <= (1 << (n - 2)) - 1)


def test_signed_bits_for() -> None:
    assert signed_bits_for(-1, 0) == 1
    assert signed_bits_for(-128, 127) == 8
    assert signed_bits_for(0, 128) == 9
