"""Processing elements of the convolution engine's output-stationary array.

Two flavours share one port list, so the array is built the same way for both:

:class:`MacPE`
    multiplies a fixed-point weight and an activation (maps onto a DSP block);
:class:`ShiftAddPE`
    adds or subtracts the activation shifted left by a power-of-two weight's exponent. It holds
    the weight as the hardware code of :func:`squeezeforge.sim.numerics.pow2_encode` (sign bit on
    top, then ``e - n2 + 1``, or 0 for a zero weight) and contains no multiplier.

Each PE passes its activation (and the step flags travelling with it) to the right and its
weight downwards through registers, keeps a running sum, and on the last step of a fold copies
the finished sum to ``result``, where it stays until the next fold finishes. The accumulator
restarts on the first step of a fold, so folds follow each other without a bubble. A register
between the product and the accumulate (a DSP block's pipeline stage) keeps the multiplier's
delay and the adder's carry chain in different cycles.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sim.numerics import pow2_max_shift
from .arith import Pow2Decoder
from .interface import check_int, discard

__all__ = ["MacPE", "ShiftAddPE", "pe_for"]

MAX_ACC_BITS = 64


class _PE(wiring.Component):
    """Ports and data movement common to both PE flavours (see the subclasses)."""

    #: Cycles from a fold's last step on ``a_in`` to its sum on ``result``: the product
    #: register, then the accumulator.
    RESULT_LATENCY = 2

    def __init__(self, act_bits: int, weight_shape: Shape, acc_bits: int) -> None:
        self.act_bits = act_bits
        self.acc_bits = acc_bits
        super().__init__(
            {
                "a_in": In(signed(act_bits)),
                "w_in": In(weight_shape),
                "valid_in": In(1),
                "first_in": In(1),
                "last_in": In(1),
                "a_out": Out(signed(act_bits)),
                "w_out": Out(weight_shape),
                "valid_out": Out(1),
                "first_out": Out(1),
                "last_out": Out(1),
                "result": Out(signed(acc_bits)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.w_out.eq(self.w_in),
            self.valid_out.eq(self.valid_in),
            self.first_out.eq(self.first_in),
            self.last_out.eq(self.last_in),
        ]
        # The product stage (multiplier or shifter) and the accumulator's adder are a register
        # apart, as a DSP block's pipeline register would split them: neither the multiplier's
        # delay nor the adder's carry chain sees the other (PRODUCT_LATENCY).
        term, negative = self.product(m)
        p_term = Signal(term.shape())
        p_negative = Signal()
        p_valid = Signal()
        p_first = Signal()
        p_last = Signal()
        m.d.sync += [
            p_term.eq(term),
            p_negative.eq(negative),
            p_valid.eq(self.valid_in),
            p_first.eq(self.first_in),
            p_last.eq(self.last_in),
        ]
        acc = Signal(signed(self.acc_bits))
        # The first step of a fold overwrites the sum of the previous fold instead of adding.
        augend = Signal(signed(self.acc_bits))
        addend = Signal(signed(self.acc_bits))
        m.d.comb += [augend.eq(Mux(p_first, 0, acc)), addend.eq(p_term)]
        # One adder for both signs (two adders and a multiplexer cost about twice the LUTs):
        # base - x == base + ~x + 1 with ``term`` already ~x, and the + 1 enters through an extra
        # low bit, since (2*base + 1) + (2*~x + 1) == 2*(base - x) while (2*base + 1) + 2*x ==
        # 2*(base + x) + 1.
        wide = Cat(Const(1, 1), augend) + Cat(p_negative, addend)
        total = Signal(signed(self.acc_bits))
        m.d.comb += total.eq(wide[1:].as_signed())
        with m.If(p_valid):
            m.d.sync += acc.eq(total)
            with m.If(p_last):
                m.d.sync += self.result.eq(total)
        return m

    def product(self, m: Module):  # pragma: no cover - overridden
        """The step's term before the accumulate: ``(value, negative)``; the sum adds
        ``value + negative`` (``value`` is ``~x`` when ``negative``, to subtract ``x``)."""
        raise NotImplementedError


class MacPE(_PE):
    """Multiply-accumulate PE for fixed-point weights.

    Parameters
    ----------
    act_bits
        Width of the signed activations (2..16).
    weight_bits
        Width of the signed weights (2..16).
    acc_bits
        Width of the accumulator; the sum wraps beyond it (the engine sizes it so that no layer
        it accepts can overflow).

    Members
    -------
    a_in, a_out : signed(act_bits)
        Activation from the left neighbour, and to the right one a cycle later.
    w_in, w_out : signed(weight_bits)
        Weight from the PE above, and to the one below a cycle later.
    valid_in, first_in, last_in : 1
        The step is real, the first of a fold, the last of a fold; passed on with the activation.
    result : signed(acc_bits)
        The sum of the last finished fold, from ``RESULT_LATENCY`` cycles after its last step.
    """

    def __init__(self, act_bits: int, weight_bits: int, acc_bits: int) -> None:
        try:
            check_int(act_bits, "act_bits", 2, 16)
            check_int(weight_bits, "weight_bits", 2, 16)
            check_int(acc_bits, "acc_bits", act_bits + weight_bits, MAX_ACC_BITS)
        except (TypeError, ValueError):
            discard(self)
            raise
        self.weight_bits = weight_bits
        super().__init__(act_bits, signed(weight_bits), acc_bits)

    def product(self, m: Module):
        return self.a_in * self.w_in, Const(0, 1)


class ShiftAddPE(_PE):
    """Shift-add PE for power-of-two weights: ``acc ± (a << shift)``, no multiplier.

    Parameters
    ----------
    act_bits
        Width of the signed activations (2..16).
    code_bits
        Width of a power-of-two weight code (2..6, INQ's bit width): sign bit on top, then
        ``shift + 1`` in the other bits, 0 meaning a zero weight. Shifts reach
        ``2**(code_bits - 2) - 1``.
    acc_bits
        Width of the accumulator.

    Members
    -------
    a_in, a_out, valid_in, first_in, last_in, result
        As for :class:`MacPE`.
    w_in, w_out : unsigned(code_bits)
        Weight codes.
    """

    def __init__(self, act_bits: int, code_bits: int, acc_bits: int) -> None:
        try:
            check_int(act_bits, "act_bits", 2, 16)
            check_int(code_bits, "code_bits", 2, 6)
            max_shift = pow2_max_shift(code_bits)
            check_int(acc_bits, "acc_bits", act_bits + max_shift + 1, MAX_ACC_BITS)
        except (TypeError, ValueError):
            discard(self)
            raise
        self.code_bits = code_bits
        self.max_shift = max_shift
        super().__init__(act_bits, unsigned(code_bits), acc_bits)

    def product(self, m: Module):
        m.submodules.decoder = decoder = Pow2Decoder(self.code_bits)
        term = decoder.o.payload
        m.d.comb += [decoder.i.payload.eq(self.w_in), decoder.i.valid.eq(1), decoder.o.ready.eq(1)]
        shifted = Signal(signed(self.act_bits + self.max_shift))
        m.d.comb += shifted.eq(Mux(term.zero, 0, self.a_in << term.shift))
        return Mux(term.negative, ~shifted, shifted), term.negative


def pe_for(weight_kind: str, act_bits: int, weight_bits: int, acc_bits: int) -> _PE:
    """The PE flavour for a weight kind (``"fixed"`` or ``"pow2"``)."""
    if weight_kind == "fixed":
        return MacPE(act_bits, weight_bits, acc_bits)
    if weight_kind == "pow2":
        return ShiftAddPE(act_bits, weight_bits, acc_bits)
    raise ValueError(f"weight kind must be 'fixed' or 'pow2', not {weight_kind!r}")
