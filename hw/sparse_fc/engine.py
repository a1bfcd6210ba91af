"""EIE-style sparse fully-connected unit: sparse matrix times sparse vector on N PEs.

The unit computes the IR's :class:`~squeezeforge.sim.ir.SparseDense` layer (and
:class:`~squeezeforge.sim.ir.Dense`, encoded at full density) bit-exactly with the reference model,
after Han et al., "EIE: Efficient Inference Engine on Compressed Deep Neural Network" (ISCA 2016).
``docs/sparse_fc.md`` describes the micro-architecture; :mod:`squeezeforge.hw.sparse_fc.cycles`
models its cycles; :mod:`squeezeforge.hw.sparse_fc.driver` maps a layer to ``cfg`` and memory
images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ...sim.numerics import pow2_max_shift
from ..arith import SHIFT_BITS, Pow2Decoder, Requantizer, clamp_max_shape
from ..fifo import StreamFIFO
from ..interface import check_int, discard, engine_members

__all__ = [
    "WEIGHT_KINDS",
    "PointerBanks",
    "SparseFC",
    "SparseFCInit",
    "SparseFCMemory",
    "SparseFCParams",
    "SparsePE",
    "load_signature",
]

WEIGHT_KINDS: tuple[str, ...] = ("codebook", "pow2", "fixed")
# Output queue of the requantization stage: the reads in flight (SparseFC.OUTPUT_PIPELINE) plus
# two queued payloads keep one output per cycle going while o_act is ready.
_OUT_QUEUE_DEPTH = 6


class SparseFCMemory(enum.Enum, shape=2):
    """Memory written by the ``load`` port."""

    PTR = 0
    ENTRY = 1
    BIAS = 2
    CODEBOOK = 3


@dataclass(frozen=True, eq=False)
class SparseFCInit:
    """Initial contents of the unit's memories (per PE), e.g. several layers at their bases.

    Parameters
    ----------
    ptr : ndarray, shape (n_pe, ptr_depth)
        Column pointers, relative to the layer's entry base.
    entry : ndarray, shape (n_pe, entry_depth)
        Packed entries ``code | z << weight_bits``.
    bias : ndarray, shape (n_pe, bias_depth)
        Biases aligned to the accumulator.
    codebook : ndarray, shape (codebook_depth,)
        Codebook values (the same table in every PE); empty for other weight kinds.
    """

    ptr: np.ndarray
    entry: np.ndarray
    bias: np.ndarray
    codebook: np.ndarray

    @classmethod
    def zeros(cls, params: SparseFCParams) -> SparseFCInit:
        n = params.n_pe
        return cls(
            ptr=np.zeros((n, params.ptr_depth), dtype=np.int64),
            entry=np.zeros((n, params.entry_depth), dtype=np.int64),
            bias=np.zeros((n, params.bias_memory_depth), dtype=np.int64),
            codebook=np.zeros(params.codebook_memory_depth, dtype=np.int64),
        )


@dataclass(frozen=True)
class SparseFCParams:
    """Elaboration parameters of :class:`SparseFC`.

    Parameters
    ----------
    n_pe : int
        Processing elements, a power of two in 1..64; row ``i`` belongs to PE ``i % n_pe``.
    weight_kind : {"codebook", "pow2", "fixed"}
        Weight decoder: codebook lookup, power-of-two shifter (:func:`pow2_encode` codes), or
        multiplier on fixed-point values.
    act_bits : int
        Width of input and output activations (narrower layers are sign-extended / saturated).
    weight_bits : int
        Width of a stored weight code: codebook index (1..8), INQ bits (2..6) or fixed-point bits.
    codebook_value_bits : int
        Width of a codebook value (codebook kind only).
    index_bits : int
        Width of the relative row index ``z`` (1..8); longer gaps take padding entries.
    acc_bits : int
        Accumulator width; a layer fits when its :attr:`acc_bits` is not larger.
    bias_bits : int
        Width of a stored bias.
    fifo_depth : int
        Activation queue depth per PE (its memory; the queue's output register holds one more).
    ptr_depth : int
        Column-pointer words per PE (a layer takes ``in_features + 1`` of them).
    entry_depth : int
        Sparse-matrix entries per PE.
    acc_depth : int
        Accumulators per PE: ``ceil(out_features / n_pe)`` of a layer must fit.
    bias_depth : int or None
        Bias words per PE; ``acc_depth`` when None.
    codebook_depth : int or None
        Codebook words (per PE, replicated); ``2**weight_bits`` when None (codebook kind).
    init : SparseFCInit or None
        Initial memory contents (the whole-net flow); zeros when None.
    """

    n_pe: int = 4
    weight_kind: Literal["codebook", "pow2", "fixed"] = "codebook"
    act_bits: int = 8
    weight_bits: int = 4
    codebook_value_bits: int = 8
    index_bits: int = 4
    acc_bits: int = 32
    bias_bits: int = 16
    fifo_depth: int = 8
    ptr_depth: int = 256
    entry_depth: int = 1024
    acc_depth: int = 64
    bias_depth: int | None = None
    codebook_depth: int | None = None
    init: SparseFCInit | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_int(self.n_pe, "n_pe", 1, 64)
        if self.n_pe & (self.n_pe - 1):
            raise ValueError(f"n_pe must be a power of two, got {self.n_pe}")
        if self.weight_kind not in WEIGHT_KINDS:
            raise ValueError(
                f"weight_kind must be one of {', '.join(WEIGHT_KINDS)}, got {self.weight_kind!r}"
            )
        check_int(self.act_bits, "act_bits", 2, 16)
        wlimits = {"codebook": (1, 8), "pow2": (2, 6), "fixed": (2, 16)}[self.weight_kind]
        check_int(self.weight_bits, f"weight_bits of {self.weight_kind} weights", *wlimits)
        check_int(self.codebook_value_bits, "codebook_value_bits", 2, 16)
        check_int(self.index_bits, "index_bits", 1, 8)
        check_int(self.fifo_depth, "fifo_depth", 1, 1024)
        check_int(self.ptr_depth, "ptr_depth", 2)
        check_int(self.entry_depth, "entry_depth", 2)
        check_int(self.acc_depth, "acc_depth", 2)
        if self.bias_depth is not None:
            check_int(self.bias_depth, "bias_depth", 2)
        if self.codebook_depth is not None:
            check_int(self.codebook_depth, "codebook_depth", 2)
        check_int(self.bias_bits, "bias_bits", 2, 62)
        check_int(self.acc_bits, "acc_bits", 2, 62)
        if self.acc_bits < max(self.product_bits, self.bias_bits):
            raise ValueError(
                f"acc_bits {self.acc_bits} is narrower than a product ({self.product_bits} bits)"
                f" or a bias ({self.bias_bits} bits)"
            )
        if self.init is not None:
            if not isinstance(self.init, SparseFCInit):
                raise TypeError(f"init must be a SparseFCInit or None, not {self.init!r}")
            shapes = {
                "ptr": (self.n_pe, self.ptr_depth),
                "entry": (self.n_pe, self.entry_depth),
                "bias": (self.n_pe, self.bias_memory_depth),
                "codebook": (self.codebook_memory_depth,),
            }
            for name, shape in shapes.items():
                got = np.shape(getattr(self.init, name))
                if got != shape:
                    raise ValueError(f"init.{name} has shape {got}, the memories need {shape}")

    # Derived widths and depths ---------------------------------------------------------------

    @property
    def bias_memory_depth(self) -> int:
        """Bias words per PE."""
        return self.acc_depth if self.bias_depth is None else self.bias_depth

    @property
    def codebook_memory_depth(self) -> int:
        """Codebook words per PE (0 unless the weights are a codebook)."""
        if self.weight_kind != "codebook":
            return 0
        return 1 << self.weight_bits if self.codebook_depth is None else self.codebook_depth

    @property
    def pow2_max_shift(self) -> int:
        """Largest shift of a power-of-two code of the unit's width."""
        return pow2_max_shift(self.weight_bits)

    @property
    def weight_value_bits(self) -> int:
        """Width of a decoded weight value."""
        if self.weight_kind == "codebook":
            return self.codebook_value_bits
        if self.weight_kind == "pow2":
            return self.pow2_max_shift + 2
        return self.weight_bits

    @property
    def product_bits(self) -> int:
        return self.act_bits + self.weight_value_bits

    @property
    def entry_bits(self) -> int:
        return self.weight_bits + self.index_bits

    @property
    def max_in_features(self) -> int:
        return self.ptr_depth - 1

    @property
    def max_out_features(self) -> int:
        return self.n_pe * self.acc_depth

    @property
    def max_gap(self) -> int:
        return (1 << self.index_bits) - 1

    @property
    def ptr_value_shape(self) -> unsigned:
        return unsigned(max(1, self.entry_depth.bit_length()))

    @property
    def load_addr_bits(self) -> int:
        depths = (
            self.ptr_depth,
            self.entry_depth,
            self.bias_memory_depth,
            self.codebook_memory_depth,
            2,
        )
        return max((d - 1).bit_length() for d in depths)

    @property
    def load_data_bits(self) -> int:
        widths = [self.ptr_value_shape.width, self.entry_bits, self.bias_bits]
        if self.weight_kind == "codebook":
            widths.append(self.codebook_value_bits)
        return max(widths)

    def cfg_layout(self) -> data.StructLayout:
        """Run-time configuration of one layer (the ``cfg`` port), sampled at ``start``."""
        return data.StructLayout(
            {
                "in_features": range(self.ptr_depth),
                "out_features": range(self.max_out_features + 1),
                "ptr_base": range(self.ptr_depth),
                "entry_base": range(self.entry_depth + 1),
                "bias_base": range(self.bias_memory_depth),
                "codebook_base": range(max(self.codebook_memory_depth, 2)),
                "shift": unsigned(SHIFT_BITS),
                "out_bits": range(self.act_bits + 1),
                "relu": unsigned(1),
                "clamp": unsigned(1),
                "clamp_max": clamp_max_shape(self.act_bits),
            }
        )

    def column_layout(self) -> data.StructLayout:
        """One broadcast: a non-zero activation and the address of its column's pointers, split
        over the pointer banks (:meth:`PointerBanks.address_layout`)."""
        return data.StructLayout(
            {"act": signed(self.act_bits), "ptr": PointerBanks.address_layout(self.ptr_depth)}
        )


def load_signature(params: SparseFCParams) -> wiring.Signature:
    """Signature of the memory write port, from the writer's side.

    ``pe`` selects the PE (ignored for the codebook, which every PE holds a copy of); pointer
    addresses are word addresses, split over the even/odd banks inside.
    """
    return wiring.Signature(
        {
            "en": Out(1),
            "memory": Out(SparseFCMemory),
            "pe": Out(range(max(params.n_pe, 2))),
            "addr": Out(params.load_addr_bits),
            "data": Out(params.load_data_bits),
        }
    )


def _init_row(init: SparseFCInit | None, name: str, pe: int | None) -> list[int]:
    if init is None:
        return []
    arr = getattr(init, name)
    row = arr if pe is None else arr[pe]
    return [int(v) for v in np.asarray(row)]


class PointerBanks(wiring.Component):
    """Column pointers ``p[a]`` in an even and an odd bank, so ``p[a]`` and ``p[a + 1]`` come out
    together in one cycle (EIE's pointer read).

    Word ``a`` lives in bank ``a % 2`` at row ``a // 2``. Reading ``(p[a], p[a + 1])`` takes row
    ``(a + 1) // 2`` of the even bank and row ``a // 2`` of the odd bank; the parity of ``a``, kept
    for one cycle, says which is the start. The address comes already split
    (:meth:`address_layout`, :meth:`split`): whoever sends it computes the rows a clock period
    earlier, so no adder sits between the sender's register and the banks' address.

    ::

        clk    __/‾‾\\__/‾‾\\__
        addr   =X a  X======
        start  ====X p[a]  X     (one cycle after the address)
        end    ====X p[a+1]X

    Parameters
    ----------
    depth : int
        Pointer words.
    value_shape : ShapeLike
        Shape of a pointer.
    init : sequence of int
        Initial words.

    Members
    -------
    addr : ``In(PointerBanks.address_layout(depth))``
        Word address ``a`` to read, as :meth:`split` gives it.
    en : ``In(1, init=1)``
        Read enable: while low, ``start`` and ``end`` keep the last read's words.
    start, end : ``Out(value_shape)``
        ``p[a]`` and ``p[a + 1]`` of the address presented in the previous cycle.
    w_addr, w_data, w_en : ``In``
        Write of one word.
    """

    def __init__(self, depth: int, value_shape, init=()) -> None:
        self._init = [int(v) for v in init]
        try:
            check_int(depth, "pointer depth", 2)
            if len(self._init) > depth:
                raise ValueError(f"{len(self._init)} initial pointers exceed the depth {depth}")
        except (TypeError, ValueError):
            discard(self)
            raise
        self._depth = depth
        self._value_shape = value_shape
        super().__init__(
            {
                "addr": In(self.address_layout(depth)),
                "start": Out(value_shape),
                "end": Out(value_shape),
                "en": In(1, init=1),
                "w_addr": In(range(depth)),
                "w_data": In(value_shape),
                "w_en": In(1),
            }
        )

    @staticmethod
    def address_layout(depth: int) -> data.StructLayout:
        """Word address ``a`` as the banks read it: the even bank's row ``(a + 1) // 2``, the odd
        bank's row ``a // 2`` and the parity ``a % 2``."""
        return data.StructLayout(
            {
                "even": range(max((depth + 1) // 2, 2)),
                "odd": range(max(depth // 2, 2)),
                "parity": unsigned(1),
            }
        )

    @staticmethod
    def split(a) -> dict:
        """The fields of :meth:`address_layout` for word address ``a`` (a value or an int)."""
        if isinstance(a, int):
            return {"even": (a + 1) >> 1, "odd": a >> 1, "parity": a & 1}
        return {"even": (a + 1) >> 1, "odd": a >> 1, "parity": a[0]}

    def elaborate(self, platform) -> Module:
        m = Module()
        even_depth = (self._depth + 1) // 2
        odd_depth = max(self._depth // 2, 1)
        m.submodules.even = even = Memory(
            shape=self._value_shape, depth=even_depth, init=self._init[0::2]
        )
        m.submodules.odd = odd = Memory(
            shape=self._value_shape, depth=odd_depth, init=self._init[1::2]
        )
        even_rd, odd_rd = even.read_port(), odd.read_port()
        even_wr, odd_wr = even.write_port(), odd.write_port()
        parity = Signal()
        m.d.comb += [
            even_rd.addr.eq(self.addr.even),
            odd_rd.addr.eq(self.addr.odd),
            even_rd.en.eq(self.en),
            odd_rd.en.eq(self.en),
            even_wr.addr.eq(self.w_addr >> 1),
            odd_wr.addr.eq(self.w_addr >> 1),
            even_wr.data.eq(self.w_data),
            odd_wr.data.eq(self.w_data),
            even_wr.en.eq(self.w_en & ~self.w_addr[0]),
            odd_wr.en.eq(self.w_en & self.w_addr[0]),
        ]
        with m.If(self.en):
            m.d.sync += parity.eq(self.addr.parity)
        with m.If(parity):
            m.d.comb += [self.start.eq(odd_rd.data), self.end.eq(even_rd.data)]
        with m.Else():
            m.d.comb += [self.start.eq(even_rd.data), self.end.eq(odd_rd.data)]
        return m


class SparsePE(wiring.Component):
    """One processing element: activation queue, pointer read, sparse-matrix read, weight decode,
    multiply-accumulate into its local rows, and a read-out port for the output phase.

    Pipeline (one entry per cycle, columns back to back)::

        pop queue, read     -> column stage: -> E0 read entry -> register -> E1 row index,  ->
        p[j], p[j+1]           move in (a)      (a+1 ... a+n)                codebook read
        (pointer stage)

        -> E2 weight decode, product,  -> E3 b[x] += w*a, bypass of the previous write
              accumulator read

    A column popped at ``t`` has its pointers in ``t + 1`` and moves into the column stage at
    ``a >= t + 1`` (when that stage is free); its ``n`` entries issue at ``a+1 .. a+n``. The next
    column moves in at ``a + max(n, 1)``, and may be popped while this one moves, so non-empty
    columns follow each other without a bubble and a column with no entry in this PE costs one
    cycle.

    Parameters
    ----------
    params : SparseFCParams
    index : int
        Which PE (selects its part of ``params.init``).

    Members
    -------
    col : ``In(stream.Signature(params.column_layout()))``
        Broadcast non-zero activations, into the activation FIFO.
    entry_base, codebook_base : ``In``
        Layer base addresses (held for the whole layer).
    idle : ``Out(1)``
        Queue empty and pipeline drained.
    drain : ``In(1)``
        Output phase: the accumulator port belongs to ``out_row``/``out_clear``.
    out_row : ``In(range(acc_depth))``
        Local row to read (data in ``acc`` one cycle later).
    out_clear : ``In(1)``
        Write zero to ``out_row`` in the same cycle (the read still returns the old value), so
        every accumulator is zero when the next layer starts.
    acc : ``Out(signed(acc_bits))``
        Accumulator read data.
    bias_addr : ``In(range(bias_depth))``, bias : ``Out(signed(bias_bits))``
        Bias read (data one cycle later).
    load : ``In(load_signature(params))``
        Memory writes (``en`` already qualified by the PE select).
    """

    def __init__(self, params: SparseFCParams, index: int = 0) -> None:
        if not isinstance(params, SparseFCParams):
            discard(self)
            raise TypeError(f"params must be a SparseFCParams, not {params!r}")
        self.params = params
        self.index = index
        p = params
        super().__init__(
            {
                "col": In(stream.Signature(p.column_layout())),
                "entry_base": In(range(p.entry_depth + 1)),
                "codebook_base": In(range(max(p.codebook_memory_depth, 2))),
                "idle": Out(1),
                "drain": In(1),
                "out_row": In(range(p.acc_depth)),
                "out_clear": In(1),
                "acc": Out(signed(p.acc_bits)),
                "bias_addr": In(range(p.bias_memory_depth)),
                "bias": Out(signed(p.bias_bits)),
                "load": In(load_signature(p)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        k = self.index
        ptr_shape = p.ptr_value_shape

        # Memories --------------------------------------------------------------------------
        # The queue's output is a register: the pointer banks' address comes straight from it,
        # not through the queue memory's read multiplexer (SparseFC.COLUMN_LATENCY).
        m.submodules.fifo = fifo = StreamFIFO(p.column_layout(), p.fifo_depth, registered=True)
        wiring.connect(m, wiring.flipped(self.col), fifo.w)
        m.submodules.ptrs = ptrs = PointerBanks(p.ptr_depth, ptr_shape, _init_row(p.init, "ptr", k))
        m.submodules.entries = entries = Memory(
            shape=unsigned(p.entry_bits), depth=p.entry_depth, init=_init_row(p.init, "entry", k)
        )
        m.submodules.accs = accs = Memory(shape=signed(p.acc_bits), depth=p.acc_depth, init=[])
        m.submodules.biases = biases = Memory(
            shape=signed(p.bias_bits), depth=p.bias_memory_depth, init=_init_row(p.init, "bias", k)
        )
        entry_rd, entry_wr = entries.read_port(), entries.write_port()
        # Non-transparent: a read in the cycle of a write returns the old value, which is what
        # the output phase relies on to read and clear a row at once; back-to-back hits during
        # accumulation go through the bypass register instead.
        acc_rd, acc_wr = accs.read_port(), accs.write_port()
        bias_rd, bias_wr = biases.read_port(), biases.write_port()

        ld = self.load
        m.d.comb += [
            ptrs.w_addr.eq(ld.addr),
            ptrs.w_data.eq(ld.data),
            ptrs.w_en.eq(ld.en & (ld.memory == SparseFCMemory.PTR)),
            entry_wr.addr.eq(ld.addr),
            entry_wr.data.eq(ld.data),
            entry_wr.en.eq(ld.en & (ld.memory == SparseFCMemory.ENTRY)),
            bias_wr.addr.eq(ld.addr),
            bias_wr.data.eq(ld.data),
            bias_wr.en.eq(ld.en & (ld.memory == SparseFCMemory.BIAS)),
            bias_rd.addr.eq(self.bias_addr),
            self.bias.eq(bias_rd.data),
        ]
        if p.weight_kind == "codebook":
            m.submodules.codebook = codebook = Memory(
                shape=signed(p.codebook_value_bits),
                depth=p.codebook_memory_depth,
                init=_init_row(p.init, "codebook", None),
            )
            cb_rd, cb_wr = codebook.read_port(), codebook.write_port()
            m.d.comb += [
                cb_wr.addr.eq(ld.addr),
                cb_wr.data.eq(ld.data),
                cb_wr.en.eq(ld.en & (ld.memory == SparseFCMemory.CODEBOOK)),
            ]

        # Pointer stage: pop a column, read its pointers -------------------------------------
        # The pointer banks read at the pop and hold their outputs while the column waits here
        # for the column stage. The pop, the move on and the issue below decide from registers
        # alone (the queue's output register, flags computed a cycle ahead): no memory output
        # and no compare sits in front of the queue's read enable.
        ptr_valid = Signal()
        ptr_act = Signal(signed(p.act_bits))
        advance = Signal()  # the column in the pointer stage moves to the column stage
        pop = Signal()
        m.d.comb += [
            fifo.r.ready.eq(~ptr_valid | advance),
            pop.eq(fifo.r.valid & fifo.r.ready),
            ptrs.addr.eq(fifo.r.payload.ptr),
            ptrs.en.eq(pop),
        ]
        with m.If(pop):
            m.d.sync += [ptr_valid.eq(1), ptr_act.eq(fifo.r.payload.act)]
        with m.Elif(advance):
            m.d.sync += ptr_valid.eq(0)

        # Column stage and E0: issue the column's entries, one a cycle ------------------------
        # cur/end are one bit wider than a pointer so that cur + 2 never wraps. more: an entry
        # is left to issue; last: cur is the column's last entry; first: cur is its first.
        col_valid = Signal()
        cur = Signal(ptr_shape.width + 1)
        end = Signal(ptr_shape.width + 1)
        more = Signal()
        last = Signal()
        first = Signal()
        act_col = Signal(signed(p.act_bits))
        issue = Signal()
        # The next column moves in during the cycle of the last issue (or of an empty column),
        # so non-empty columns follow each other without a bubble.
        col_free = ~col_valid | ~more | last
        m.d.comb += [
            issue.eq(col_valid & more),
            advance.eq(ptr_valid & col_free),
            entry_rd.addr.eq(self.entry_base + cur),
        ]
        with m.If(advance):
            m.d.sync += [
                col_valid.eq(1),
                cur.eq(ptrs.start),
                end.eq(ptrs.end),
                more.eq(ptrs.start != ptrs.end),
                last.eq(ptrs.start + 1 == ptrs.end),
                first.eq(1),
                act_col.eq(ptr_act),
            ]
        with m.Else():
            with m.If(col_free):
                m.d.sync += col_valid.eq(0)
            with m.If(issue):
                m.d.sync += [
                    cur.eq(cur + 1),
                    more.eq(~last),
                    last.eq(cur + 2 == end),
                    first.eq(0),
                ]

        # E0 register: the entry as it leaves the memory (a block RAM's output is slow;
        # nothing else may follow it) ---------------------------------------------------------
        e0_valid = Signal()
        e0_first = Signal()
        e0_act = Signal(signed(p.act_bits))
        m.d.sync += [e0_valid.eq(issue), e0_first.eq(first), e0_act.eq(act_col)]
        e1_valid = Signal()
        e1_first = Signal()
        e1_act = Signal(signed(p.act_bits))
        code = Signal(p.weight_bits)
        rel = Signal(p.index_bits)
        m.d.sync += [
            e1_valid.eq(e0_valid),
            e1_first.eq(e0_first),
            e1_act.eq(e0_act),
            code.eq(entry_rd.data[: p.weight_bits]),
            rel.eq(entry_rd.data[p.weight_bits :]),
        ]

        # E1: relative index to row, codebook read -------------------------------------------
        row = Signal(range(p.acc_depth))
        row_prev = Signal(range(p.acc_depth))
        m.d.comb += row.eq(Mux(e1_first, rel, row_prev + rel + 1))
        with m.If(e1_valid):
            m.d.sync += row_prev.eq(row)
        if p.weight_kind == "codebook":
            m.d.comb += cb_rd.addr.eq(self.codebook_base + code)

        e2_valid = Signal()
        e2_row = Signal(range(p.acc_depth))
        e2_act = Signal(signed(p.act_bits))
        e2_code = Signal(p.weight_bits)
        m.d.sync += [
            e2_valid.eq(e1_valid),
            e2_row.eq(row),
            e2_act.eq(e1_act),
            e2_code.eq(code),
        ]

        # E2: weight decode, product, accumulator read ---------------------------------------
        product = Signal(signed(p.product_bits))
        if p.weight_kind == "codebook":
            m.d.comb += product.eq(cb_rd.data * e2_act)
        elif p.weight_kind == "fixed":
            m.d.comb += product.eq(e2_code.as_signed() * e2_act)
        else:
            m.submodules.pow2 = decoder = Pow2Decoder(p.weight_bits)
            term = decoder.o.payload
            shifted = Signal(signed(p.product_bits))
            m.d.comb += [
                decoder.i.payload.eq(e2_code),
                decoder.i.valid.eq(e2_valid),
                decoder.o.ready.eq(1),
                shifted.eq(e2_act << term.shift),
                product.eq(Mux(term.zero, 0, Mux(term.negative, -shifted, shifted))),
            ]

        # E3: accumulate. The product register keeps the multiplier and the adder in
        # different cycles (a DSP block's pipeline register).
        e3_valid = Signal()
        e3_row = Signal(range(p.acc_depth))
        e3_product = Signal(signed(p.product_bits))
        m.d.sync += [e3_valid.eq(e2_valid), e3_row.eq(e2_row), e3_product.eq(product)]
        bypass_valid = Signal()
        bypass_row = Signal(range(p.acc_depth))
        bypass_sum = Signal(signed(p.acc_bits))
        old = Signal(signed(p.acc_bits))
        new = Signal(signed(p.acc_bits))
        # The read of this entry was issued in the cycle the previous entry wrote: a
        # non-transparent port missed that write, so take it from the bypass register.
        m.d.comb += [
            old.eq(Mux(bypass_valid & (bypass_row == e3_row), bypass_sum, acc_rd.data)),
            new.eq(old + e3_product),
        ]
        m.d.sync += [
            bypass_valid.eq(e3_valid & ~self.drain),
            bypass_row.eq(e3_row),
            bypass_sum.eq(new),
        ]
        with m.If(self.drain):
            m.d.comb += [
                acc_rd.addr.eq(self.out_row),
                acc_wr.addr.eq(self.out_row),
                acc_wr.data.eq(0),
                acc_wr.en.eq(self.out_clear),
            ]
        with m.Else():
            m.d.comb += [
                acc_rd.addr.eq(e2_row),
                acc_wr.addr.eq(e3_row),
                acc_wr.data.eq(new),
                acc_wr.en.eq(e3_valid),
            ]
        m.d.comb += [
            self.acc.eq(acc_rd.data),
            self.idle.eq(
                (fifo.level == 0)
                & ~ptr_valid
                & ~col_valid
                & ~e0_valid
                & ~e1_valid
                & ~e2_valid
                & ~e3_valid
            ),
        ]
        return m


class SparseFC(wiring.Component):
    """EIE-style sparse fully-connected unit (sparse matrix times sparse vector, N PEs).

    One layer per ``start``: the input vector streams in on ``i_act``; zero activations are
    accepted and dropped at one per cycle, each non-zero one is broadcast with its column to every
    PE's activation FIFO (the stream stalls while any FIFO is full). When all inputs are in and
    every PE is idle, the rows are read out in row order: accumulator plus bias, round-half-up
    shift by ``cfg.shift``, saturation to ``cfg.out_bits``, optional ReLU and clamp to
    ``cfg.clamp_max``, on ``o_act``; the read clears the accumulator for the next layer.

    ::

        clk     __/‾\\_/‾\\_/‾\\_/‾\\_/‾\\_   ...   _/‾\\_/‾\\_/‾\\_
        start   _/‾‾‾\\___________________________________
        cfg     =X c X====================================   (sampled with start)
        busy    _____/‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾\\____
        i_act   _____X x0X x1X x2X ...                        (from the cycle after start)
        o_act   ..........................X y0X y1X...X yN X
        done    _______________________________________/‾\\__  (cycle after the last o_act)

    ``busy`` is high from the cycle after ``start`` until ``done``; ``start`` is taken whenever
    ``busy`` is low, the ``done`` cycle included, so layers can run back to back. Memories are
    written through ``load`` while not busy.

    Parameters
    ----------
    params : SparseFCParams

    Members
    -------
    cfg : ``In(params.cfg_layout())``
        Layer configuration: ``in_features``, ``out_features``, the bases of the layer in the
        pointer, entry, bias and codebook memories, ``shift``, ``out_bits``, ``relu``,
        ``clamp`` and ``clamp_max``.
    start : ``In(1)``
        Starts one layer.
    busy : ``Out(1)``
    done : ``Out(1)``
        One-cycle pulse after the last output was accepted.
    i_act : ``In(stream.Signature(signed(act_bits)))``
        Input activations in feature order. ``ready`` depends on the payload: a zero is taken
        at once, a non-zero value only while every PE's FIFO has room.
    o_act : ``Out(stream.Signature(signed(act_bits)))``
        Output activations in row order.
    load : ``In(load_signature(params))``
        Memory writes.
    """

    # Pipeline latencies the cycle model (:mod:`squeezeforge.hw.sparse_fc.cycles`) reads.
    #: An accepted input waits a cycle in the input register before it is dropped or broadcast.
    INPUT_LATENCY = 1
    #: A broadcast column can be popped by a PE this many cycles later at the earliest: its
    #: queue memory, then the queue's output register. A PE's queue has room while its memory
    #: holds fewer than ``fifo_depth`` columns; a column leaves the memory for the output register
    #: one cycle after its broadcast at the earliest, or in the cycle the previous one is popped.
    COLUMN_LATENCY = 2
    #: The requantizer is pipelined (two stages after the selected accumulator's register).
    REQUANT_PIPELINED = True
    #: Last entry issued to the PE reporting idle: entry read, its register, row/codebook
    #: read, product/accumulator read, accumulate.
    DRAIN_AFTER_ISSUE = 5
    #: An empty last column's move into the column stage to the PE reporting idle.
    DRAIN_AFTER_EMPTY_COLUMN = 2
    #: A popped column's pointers are read in the cycle after the pop; it moves into the
    #: column stage then at the earliest, and its entries issue from the cycle after the move.
    POINTER_LATENCY = 1
    #: Cycles from a row's read to its value entering the output queue: the accumulator read,
    #: the selected word's register, the requantizer.
    OUTPUT_PIPELINE = 1 + 1 + Requantizer.latency_of(REQUANT_PIPELINED)
    #: Last row read to ``done``: the output pipeline, the output queue (a payload leaves it
    #: the cycle after it enters), ``done`` after the last transfer.
    OUTPUT_TAIL = OUTPUT_PIPELINE + 1 + 1

    def __init__(self, params: SparseFCParams) -> None:
        if not isinstance(params, SparseFCParams):
            discard(self)
            raise TypeError(f"params must be a SparseFCParams, not {params!r}")
        self.params = params
        super().__init__(
            engine_members(params.cfg_layout(), params.act_bits, load_signature(params))
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        n = p.n_pe
        pes = [SparsePE(p, k) for k in range(n)]
        for k, pe in enumerate(pes):
            m.submodules[f"pe{k}"] = pe

        cfg = Signal(p.cfg_layout())
        idle, run, out = 0, 1, 2
        phase = Signal(2)

        # Memory writes ---------------------------------------------------------------------
        for k, pe in enumerate(pes):
            selected = (self.load.pe == k) | (self.load.memory == SparseFCMemory.CODEBOOK)
            m.d.comb += [
                pe.load.en.eq(self.load.en & selected),
                pe.load.memory.eq(self.load.memory),
                pe.load.addr.eq(self.load.addr),
                pe.load.data.eq(self.load.data),
                pe.entry_base.eq(cfg.entry_base),
                pe.codebook_base.eq(cfg.codebook_base),
            ]

        # Broadcast: zero skipping on the input stream ---------------------------------------
        # An input register (INPUT_LATENCY) takes each word with its non-zero flag, so that
        # i_act.ready does not depend on the payload: the zero test and the broadcast see a
        # register, and the writer sees ready from the register's state and the PEs' FIFOs.
        column = Signal(range(p.ptr_depth))  # inputs consumed so far = column of the held one
        received = Signal(range(p.ptr_depth))  # inputs accepted so far
        held = Signal(signed(p.act_bits))
        held_valid = Signal()
        held_nonzero = Signal()
        in_done = Signal()
        all_ready = Signal()
        all_idle = Signal()
        consume = Signal()
        push = Signal()
        m.d.comb += [
            in_done.eq(column == cfg.in_features),
            all_ready.eq(Cat(pe.col.ready for pe in pes).all()),
            all_idle.eq(Cat(pe.idle for pe in pes).all()),
            consume.eq(held_valid & (~held_nonzero | all_ready)),
            push.eq(held_valid & held_nonzero & all_ready),
            self.i_act.ready.eq(
                (phase == run) & (received != cfg.in_features) & (~held_valid | consume)
            ),
        ]
        # The column's pointer address, split over the banks here where the operands are
        # registers, so the PEs' banks read it from their queues' output registers directly.
        ptr_addr = Signal(range(p.ptr_depth))
        m.d.comb += ptr_addr.eq(cfg.ptr_base + column)
        ptr_fields = PointerBanks.split(ptr_addr)
        for pe in pes:
            m.d.comb += [
                pe.col.valid.eq(push),
                pe.col.payload.act.eq(held),
                *(pe.col.payload.ptr[k].eq(v) for k, v in ptr_fields.items()),
            ]
        with m.If(consume):
            m.d.sync += [column.eq(column + 1), held_valid.eq(0)]
        with m.If(self.i_act.valid & self.i_act.ready):
            m.d.sync += [
                received.eq(received + 1),
                held.eq(self.i_act.payload),
                held_valid.eq(1),
                held_nonzero.eq(self.i_act.payload != 0),
            ]

        # Output phase: row i is local row i // n of PE i % n ----------------------------------
        m.submodules.out_queue = out_queue = StreamFIFO(signed(p.act_bits), _OUT_QUEUE_DEPTH)
        wiring.connect(m, out_queue.r, wiring.flipped(self.o_act))
        out_row = Signal(range(p.acc_depth))
        out_pe = Signal(range(max(n, 2)))
        issued = Signal(range(p.max_out_features + 1))
        accepted = Signal(range(p.max_out_features + 1))
        # Reads on their way to the queue: the memory read, the selected word's register and
        # the requantizer's stages. A read issues only when the queue has room for it and for
        # every read before it, so no stage ever waits.
        in_flight = Signal(range(_OUT_QUEUE_DEPTH + 1))
        sel = Signal(range(max(n, 2)))
        read = Signal()
        m.d.comb += read.eq(
            (phase == out)
            & (issued != cfg.out_features)
            & (out_queue.level + in_flight < _OUT_QUEUE_DEPTH)
        )
        for k, pe in enumerate(pes):
            m.d.comb += [
                pe.drain.eq(phase == out),
                pe.out_row.eq(out_row),
                pe.out_clear.eq(read & (out_pe == k)),
                pe.bias_addr.eq(cfg.bias_base + out_row),
            ]
        with m.If(read):
            m.d.sync += issued.eq(issued + 1)
            if n == 1:
                m.d.sync += out_row.eq(out_row + 1)
            else:
                with m.If(out_pe == n - 1):
                    m.d.sync += [out_pe.eq(0), out_row.eq(out_row + 1)]
                with m.Else():
                    m.d.sync += out_pe.eq(out_pe + 1)
        read_valid = Signal()
        m.d.sync += [
            in_flight.eq(in_flight + read - out_queue.w.valid),
            read_valid.eq(read),
            sel.eq(out_pe),
        ]

        # The selected PE's accumulator and bias are registered before the requantizer.
        acc = Signal(signed(p.acc_bits))
        bias = Signal(signed(p.bias_bits))
        selected_valid = Signal()
        m.d.sync += selected_valid.eq(read_valid)
        if n == 1:
            m.d.sync += [acc.eq(pes[0].acc), bias.eq(pes[0].bias)]
        else:
            m.d.sync += [
                acc.eq(Array(pe.acc for pe in pes)[sel]),
                bias.eq(Array(pe.bias for pe in pes)[sel]),
            ]
        m.submodules.requant = requant = Requantizer(
            p.acc_bits, p.bias_bits, p.act_bits, pipelined=self.REQUANT_PIPELINED
        )
        m.d.comb += [
            requant.cfg.shift.eq(cfg.shift),
            requant.cfg.out_bits.eq(cfg.out_bits),
            requant.cfg.relu.eq(cfg.relu),
            requant.cfg.clamp.eq(cfg.clamp),
            requant.cfg.clamp_max.eq(cfg.clamp_max),
            requant.i.valid.eq(selected_valid),
            requant.i.payload.acc.eq(acc),
            requant.i.payload.bias.eq(bias),
            out_queue.w.valid.eq(requant.o.valid),
            out_queue.w.payload.eq(requant.o.payload.value),
            requant.o.ready.eq(out_queue.w.ready),
        ]
        with m.If(self.o_act.valid & self.o_act.ready):
            m.d.sync += accepted.eq(accepted + 1)

        # Sequencing ------------------------------------------------------------------------
        launch = [
            cfg.eq(self.cfg),
            column.eq(0),
            received.eq(0),
            held_valid.eq(0),
            issued.eq(0),
            accepted.eq(0),
            out_row.eq(0),
            out_pe.eq(0),
            phase.eq(run),
        ]
        m.d.comb += [
            self.done.eq((phase == out) & (accepted == cfg.out_features)),
            self.busy.eq((phase != idle) & ~self.done),
        ]
        with m.Switch(phase):
            with m.Case(idle):
                with m.If(self.start):
                    m.d.sync += launch
            with m.Case(run):
                with m.If(in_done & all_idle):
                    m.d.sync += phase.eq(out)
            with m.Case(out):
                # A start in the done cycle begins the next layer at once.
                with m.If(self.done):
                    with m.If(self.start):
                        m.d.sync += launch
                    with m.Else():
                        m.d.sync += phase.eq(idle)
        return m
