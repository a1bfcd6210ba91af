"""Arithmetic blocks both engines share: the requantizer and the power-of-two decoder.

Each is written once here, after the numeric contract in :mod:`squeezeforge.sim.numerics`, so the
conv engine and the sparse FC unit cannot disagree on rounding, saturation or the meaning of a
weight code. Both are stream components (valid/ready, :mod:`amaranth.lib.stream`) with
``data.StructLayout`` payloads; their latency is a class constant that the cycle models read.

:class:`Requantizer`
    bias add, round-half-up arithmetic right shift, saturation to a run-time output width, ReLU,
    clamp to an upper bound (:func:`squeezeforge.sim.numerics.requantize`); pipelined (two
    register stages) or combinational.
:class:`Pow2Decoder`
    a power-of-two weight code (:func:`squeezeforge.sim.numerics.pow2_encode`) to the shift,
    sign and zero flag a shift-add datapath applies.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, ShapeLike, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .interface import SHIFT_BITS, check_int, discard

__all__ = [
    "OUT_BITS_BITS",
    "SHIFT_BITS",
    "Pow2Decoder",
    "Requantizer",
    "clamp_max_shape",
    "pow2_term_layout",
    "requant_cfg_layout",
    "requant_input_layout",
    "requant_output_layout",
]

#: Width of a run-time output width (2..16).
OUT_BITS_BITS = 5


def clamp_max_shape(act_bits: int) -> ShapeLike:
    """Shape of a clamp bound: ``0..2**(act_bits - 1) - 1``, the non-negative activations."""
    return unsigned(act_bits - 1)


def requant_cfg_layout(act_bits: int) -> data.StructLayout:
    """Per-layer settings of a :class:`Requantizer` with ``act_bits``-bit outputs: shift, output
    width, ReLU, and the clamp (``clamp`` enables it, ``clamp_max`` is the bound)."""
    return data.StructLayout(
        {
            "shift": unsigned(SHIFT_BITS),
            "out_bits": unsigned(OUT_BITS_BITS),
            "relu": unsigned(1),
            "clamp": unsigned(1),
            "clamp_max": clamp_max_shape(act_bits),
        }
    )


def requant_input_layout(acc_bits: int, bias_bits: int, tag: ShapeLike) -> data.StructLayout:
    """One sum to requantize: accumulator, aligned bias, and a tag that travels alongside."""
    return data.StructLayout({"acc": signed(acc_bits), "bias": signed(bias_bits), "tag": tag})


def requant_output_layout(act_bits: int, tag: ShapeLike) -> data.StructLayout:
    """One requantized activation and the tag of its sum."""
    return data.StructLayout({"value": signed(act_bits), "tag": tag})


class Requantizer(wiring.Component):
    """``clamp(relu(saturate(round_shift(acc + bias, shift), out_bits)))`` on a stream.

    Round half up as the numeric contract defines it, ``(s + 2**(shift-1)) >> shift``, computed
    as ``((2*s >> shift) + 1) >> 1``: the same value for every ``shift >= 1``, ``s`` itself for
    ``shift == 0``, and zero or -1 rounded to zero once the shift passes the sum's width, so no
    rounding constant and no special case are needed. Saturation is to ``cfg.out_bits`` (2..
    ``act_bits``; any other value saturates to ``act_bits``), ReLU after saturation, then, when
    ``cfg.clamp`` is set, ``min(y, cfg.clamp_max)``. The bound must not exceed the saturation
    maximum of ``cfg.out_bits`` (the IR's ``0 <= clamp_max <= out.max``); a larger one gives an
    unspecified value.

    Pipelined, stage 1 registers the sum, stage 2 the shifted value; saturation, ReLU and clamp
    are combinational behind it. The whole pipeline moves when the output is empty or taken, so a
    stalled output holds it (``i.ready`` follows ``o.ready``)::

        clk      __/‾\\_/‾\\_/‾\\_/‾\\_
        i.valid  __/‾‾‾\\___________      acc, bias, tag in cycle t
        o.valid  __________/‾‾‾\\___      value, tag in cycle t + LATENCY (o.ready high)

    Combinational, ``o`` follows ``i`` in the same cycle (latency 0).

    Parameters
    ----------
    acc_bits : int
        Width of the accumulator (2..64).
    bias_bits : int
        Width of the bias, already aligned to the accumulator (2..64).
    act_bits : int
        Width of the output activation (2..16).
    pipelined : bool
        Two register stages (:attr:`PIPELINED_LATENCY`) or none (:attr:`COMBINATIONAL_LATENCY`).
    tag_shape : ShapeLike
        Shape of a tag carried from input to output with its sum (e.g. where the result goes);
        zero bits by default.

    Members
    -------
    cfg : ``In(requant_cfg_layout(act_bits))``
        ``shift``, ``out_bits``, ``relu``, ``clamp``, ``clamp_max``; held from the cycle a sum
        enters until it leaves.
    i : ``In(stream.Signature(requant_input_layout(acc_bits, bias_bits, tag_shape)))``
    o : ``Out(stream.Signature(requant_output_layout(act_bits, tag_shape)))``
    """

    PIPELINED_LATENCY = 2
    COMBINATIONAL_LATENCY = 0

    @classmethod
    def latency_of(cls, pipelined: bool) -> int:
        """Cycles from a sum on ``i`` to its value on ``o``."""
        return cls.PIPELINED_LATENCY if pipelined else cls.COMBINATIONAL_LATENCY

    def __init__(
        self,
        acc_bits: int,
        bias_bits: int,
        act_bits: int,
        *,
        pipelined: bool = True,
        tag_shape: ShapeLike = 0,
    ) -> None:
        try:
            check_int(acc_bits, "Requantizer acc_bits", 2, 64)
            check_int(bias_bits, "Requantizer bias_bits", 2, 64)
            check_int(act_bits, "Requantizer act_bits", 2, 16)
            if not isinstance(pipelined, bool):
                raise TypeError(f"Requantizer pipelined must be True or False, not {pipelined!r}")
            Shape.cast(tag_shape)
        except (TypeError, ValueError):
            discard(self)
            raise
        self.acc_bits = acc_bits
        self.bias_bits = bias_bits
        self.act_bits = act_bits
        self.pipelined = pipelined
        self.tag_shape = tag_shape
        super().__init__(
            {
                "cfg": In(requant_cfg_layout(act_bits)),
                "i": In(stream.Signature(requant_input_layout(acc_bits, bias_bits, tag_shape))),
                "o": Out(stream.Signature(requant_output_layout(act_bits, tag_shape))),
            }
        )

    @property
    def latency(self) -> int:
        return self.latency_of(self.pipelined)

    def elaborate(self, platform) -> Module:
        m = Module()
        act = self.act_bits
        sum_bits = max(self.acc_bits, self.bias_bits) + 1
        total = Signal(signed(sum_bits))
        m.d.comb += total.eq(self.i.payload.acc + self.i.payload.bias)

        def round_shift(value) -> Signal:
            twice = Signal(signed(sum_bits + 1))
            halved = Signal(signed(sum_bits + 1))
            rounded = Signal(signed(sum_bits + 1))
            m.d.comb += [
                twice.eq(value << 1),
                halved.eq(twice >> self.cfg.shift),
                rounded.eq((halved + 1) >> 1),
            ]
            return rounded

        shifted = Signal(signed(sum_bits + 1))
        shifted_tag = Signal(self.tag_shape)
        out_valid = Signal()
        if self.pipelined:
            s1_sum = Signal(signed(sum_bits))
            s1_valid = Signal()
            s1_tag = Signal(self.tag_shape)
            s1_rounded = round_shift(s1_sum)
            advance = ~out_valid | self.o.ready
            m.d.comb += self.i.ready.eq(advance)
            with m.If(advance):
                m.d.sync += [
                    s1_valid.eq(self.i.valid),
                    s1_sum.eq(total),
                    s1_tag.eq(self.i.payload.tag),
                    out_valid.eq(s1_valid),
                    shifted.eq(s1_rounded),
                    shifted_tag.eq(s1_tag),
                ]
        else:
            m.d.comb += [
                self.i.ready.eq(self.o.ready),
                out_valid.eq(self.i.valid),
                shifted.eq(round_shift(total)),
                shifted_tag.eq(self.i.payload.tag),
            ]

        # Bounds per output width from constants: a case per width, no variable shifter.
        sat_hi = Signal(signed(act))
        sat_lo = Signal(signed(act))
        with m.Switch(self.cfg.out_bits):
            for b in range(2, act):
                with m.Case(b):
                    m.d.comb += [sat_hi.eq((1 << (b - 1)) - 1), sat_lo.eq(-(1 << (b - 1)))]
            with m.Default():
                m.d.comb += [sat_hi.eq((1 << (act - 1)) - 1), sat_lo.eq(-(1 << (act - 1)))]
        # ReLU and clamp fold into the saturation bounds: with lo < 0 <= clamp_max <= hi,
        # min(max(sat(x, lo, hi), 0), clamp_max) is sat(x, 0, clamp_max) (without the ReLU,
        # sat(x, lo, clamp_max)). The bounds depend only on the cfg, held for a whole layer, so
        # the data path is one pair of compares and muxes whether or not a layer clamps: shorter
        # than a ReLU mux and a clamp compare-and-mux behind the saturation. An enable bit rather
        # than a bound that is always applied, so that a cfg whose clamp fields are left zero
        # means no clamp, not a clamp to zero.
        hi = Signal(signed(act))
        lo = Signal(signed(act))
        bounds = [
            hi.eq(Mux(self.cfg.clamp, self.cfg.clamp_max, sat_hi)),
            lo.eq(Mux(self.cfg.relu, 0, sat_lo)),
        ]
        if self.pipelined:
            # Registered: the compares behind the last stage then start at a register, not at
            # the decode of the output width. cfg is held from the cycle a sum enters, so the
            # bounds are in place LATENCY - 1 cycles before it reaches them.
            m.d.sync += bounds
        else:
            m.d.comb += bounds
        m.d.comb += [
            self.o.valid.eq(out_valid),
            self.o.payload.value.eq(Mux(shifted > hi, hi, Mux(shifted < lo, lo, shifted))),
            self.o.payload.tag.eq(shifted_tag),
        ]
        return m


def pow2_term_layout(code_bits: int) -> data.StructLayout:
    """A decoded power-of-two weight: 0 if ``zero``, else ``(-1 if negative else 1) << shift``."""
    return data.StructLayout(
        {
            "shift": unsigned(Pow2Decoder.shift_bits_for(code_bits)),
            "negative": unsigned(1),
            "zero": unsigned(1),
        }
    )


class Pow2Decoder(wiring.Component):
    """Decodes a power-of-two weight code into the shift, sign and zero flag it stands for.

    The code is :func:`squeezeforge.sim.numerics.pow2_encode`'s: sign bit on top, below it
    ``e - n2 + 1`` (``shift + 1``), 0 for a zero weight; :func:`~squeezeforge.sim.numerics.
    pow2_decode` is its reference. Combinational (latency 0): ``o`` follows ``i`` in the same
    cycle, and ``i.ready`` is ``o.ready``. Codes ``pow2_encode`` never gives (a magnitude past
    ``2**(code_bits - 2)``) decode to an unspecified shift.

    Parameters
    ----------
    code_bits : int
        Width of a code, INQ's bit width (2..6); shifts reach ``2**(code_bits - 2) - 1``.

    Members
    -------
    i : ``In(stream.Signature(unsigned(code_bits)))``
    o : ``Out(stream.Signature(pow2_term_layout(code_bits)))``
    """

    LATENCY = 0

    @staticmethod
    def max_shift_for(code_bits: int) -> int:
        return (1 << (code_bits - 2)) - 1

    @classmethod
    def shift_bits_for(cls, code_bits: int) -> int:
        return max(cls.max_shift_for(code_bits).bit_length(), 1)

    def __init__(self, code_bits: int) -> None:
        try:
            check_int(code_bits, "Pow2Decoder code_bits", 2, 6)
        except (TypeError, ValueError):
            discard(self)
            raise
        self.code_bits = code_bits
        self.max_shift = self.max_shift_for(code_bits)
        super().__init__(
            {
                "i": In(stream.Signature(unsigned(code_bits))),
                "o": Out(stream.Signature(pow2_term_layout(code_bits))),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        code = self.i.payload
        magnitude = code[: self.code_bits - 1]
        shift_bits = self.shift_bits_for(self.code_bits)
        m.d.comb += [
            self.o.valid.eq(self.i.valid),
            self.i.ready.eq(self.o.ready),
            # Valid codes never exceed max_shift + 1, so the low bits of (magnitude - 1) are
            # the shift and no comparator is needed.
            self.o.payload.shift.eq((magnitude - 1)[:shift_bits]),
            self.o.payload.negative.eq(code[self.code_bits - 1]),
            self.o.payload.zero.eq(magnitude == 0),
        ]
        return m
