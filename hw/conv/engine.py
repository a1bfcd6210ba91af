"""The convolution engine: conv2d as folded GEMM on an output-stationary PE array.

The layer is the GEMM ``out[e, m] = bias[m] + sum_k A[e, k] * W[k, m]`` with ``e`` an output
pixel (``E = out_h * out_w``), ``k = (ci, ky, kx)`` (``K = kh * kw * in_channels``) and ``m`` a
filter. A ``rows x cols`` array holds ``rows`` pixels by ``cols`` filters; each PE keeps its own
sum while ``K`` steps stream through (output-stationary), so a fold is ``K`` cycles and the folds
of a layer are ``ceil(M / cols)`` filter blocks of ``ceil(E / rows)`` pixel blocks each. Why this
dataflow, and the timing of the streams, are in ``docs/conv_engine.md``.

Components, joined in :class:`ConvEngine` as the block diagram of ``docs/conv_engine.md``:

:class:`FoldSequencer`
    derives the output size and the strides of the layer at run time (no multiplier, no divider),
    walks the output pixels a pixel block ahead of the array, and issues one GEMM step per cycle:
    the input feature-map address of each row (with its zero-padding mask) and the weight address.
:class:`SystolicArray`
    the skewed ``rows x cols`` PE array; each PE keeps the sum of its last finished fold.
:class:`FoldDrain`
    reads a finished fold out row after row, column ``c`` ``c`` cycles late, tagging each sum
    with its slot in the double-buffered transpose buffer.
:class:`~squeezeforge.hw.arith.Requantizer`
    one per column: bias, rounding shift, saturation, ReLU.
:class:`PoolWriter`
    one per column: writes the values into the transpose buffer, 2x2 max-pooled on request.
:class:`OutputEmitter`
    streams drained filter blocks in (C, H, W) order, one read per output, into a
    :class:`~squeezeforge.hw.fifo.StreamFIFO` in front of ``o_act`` while the next block computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from amaranth.hdl import Array, Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ...sim.numerics import pow2_max_shift
from ..arith import OUT_BITS_BITS, SHIFT_BITS, Requantizer, clamp_max_shape
from ..fifo import StreamFIFO
from ..interface import check_int, discard, engine_members
from ..pe import MAX_ACC_BITS, MacPE, pe_for

__all__ = [
    "LOAD_BIASES",
    "LOAD_WEIGHTS",
    "OUT_BITS_BITS",
    "ConvEngine",
    "ConvEngineParams",
    "FoldDrain",
    "FoldSequencer",
    "OutputEmitter",
    "PoolWriter",
    "SystolicArray",
    "array_result_layout",
    "array_step_layout",
    "col_field",
    "conv_cfg_layout",
    "conv_load_signature",
    "drain_output_layout",
    "drain_tag_layout",
    "fold_layout",
    "line_depth",
    "row_field",
]

#: Entries of the output queue in front of ``o_act``: room for the emitter's reads in flight
#: (``OutputEmitter.READ_LATENCY``, 3) and the payload leaving keeps one output a cycle going.
OUTPUT_QUEUE_DEPTH = 5
#: Load port memory selectors.
LOAD_WEIGHTS = 0
LOAD_BIASES = 1


def _bits(n: int) -> int:
    """Width of an unsigned field holding 0..n-1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def block_count_shape(params: ConvEngineParams) -> Shape:
    """A count of filter blocks over every run, modulo its width: the transpose buffer half of
    a block is its count's parity, whichever run it belongs to, and the counts compared never
    lie more than a run's blocks apart."""
    return unsigned(_bits(params.bias_depth + 2) + 1)


@dataclass(frozen=True)
class ConvEngineParams:
    """Elaboration parameters of :class:`ConvEngine`; one build serves every layer that fits.

    Parameters
    ----------
    rows, cols
        Array shape: ``rows`` output pixels by ``cols`` filters at a time.
    act_bits
        Width of activations on the streams (2..16); narrower layers are sign-extended.
    weight_kind
        ``"fixed"`` (multiply-accumulate PEs) or ``"pow2"`` (shift-add PEs, no multiplier).
    weight_bits
        Fixed-point weight width (2..16), or the power-of-two code width (INQ's bits, 2..6).
    acc_bits
        Accumulator width; a layer fits when its :attr:`Conv2d.acc_bits` is not larger.
    act_depth
        Words of the input feature-map memory (``in_channels * in_h * in_w`` of a layer).
    weight_depth
        Words of the weight memory; a word holds the ``cols`` weights of one GEMM step.
    bias_depth
        Words of the bias memories; a word holds ``cols`` biases (one filter block).
    out_depth
        Output pixels per channel (``out_h * out_w``, before pooling) the transpose buffer holds.
    init_weights, init_biases
        Optional initial memory contents (words as :func:`conv_memory_images` packs them).
    input_banks
        Banks of the input feature-map memory: 1, or 2 for double buffering, where the next
        layer's input loads into one bank while the current layer computes from the other
        (twice the memory; :class:`ConvEngine` describes the timing).
    """

    rows: int = 4
    cols: int = 4
    act_bits: int = 8
    weight_kind: Literal["fixed", "pow2"] = "fixed"
    weight_bits: int = 8
    acc_bits: int = 32
    act_depth: int = 1024
    weight_depth: int = 256
    bias_depth: int = 16
    out_depth: int = 256
    init_weights: tuple[int, ...] | None = None
    init_biases: tuple[int, ...] | None = None
    input_banks: int = 1

    def __post_init__(self) -> None:
        check_int(self.rows, "ConvEngineParams.rows", 1, 64)
        check_int(self.input_banks, "ConvEngineParams.input_banks", 1, 2)
        check_int(self.cols, "ConvEngineParams.cols", 1, 64)
        check_int(self.act_bits, "ConvEngineParams.act_bits", 2, 16)
        if self.weight_kind not in ("fixed", "pow2"):
            raise ValueError(
                f"ConvEngineParams.weight_kind must be 'fixed' or 'pow2', not {self.weight_kind!r}"
            )
        if self.weight_kind == "fixed":
            check_int(self.weight_bits, "ConvEngineParams.weight_bits", 2, 16)
        else:
            check_int(self.weight_bits, "ConvEngineParams.weight_bits", 2, 6)
        check_int(self.acc_bits, "ConvEngineParams.acc_bits", self.product_bits, MAX_ACC_BITS)
        check_int(self.act_depth, "ConvEngineParams.act_depth", 1, 1 << 24)
        check_int(self.weight_depth, "ConvEngineParams.weight_depth", 1, 1 << 24)
        check_int(self.bias_depth, "ConvEngineParams.bias_depth", 1, 1 << 16)
        check_int(self.out_depth, "ConvEngineParams.out_depth", 1, 1 << 24)
        for name, depth, width in (
            ("init_weights", self.weight_depth, self.weight_word_bits),
            ("init_biases", self.bias_depth, self.bias_word_bits),
        ):
            init = getattr(self, name)
            if init is None:
                continue
            init = tuple(init)
            object.__setattr__(self, name, init)
            if len(init) > depth:
                raise ValueError(
                    f"ConvEngineParams.{name} has {len(init)} words, the memory holds {depth}"
                )
            for i, word in enumerate(init):
                if not isinstance(word, int) or not 0 <= word < (1 << width):
                    raise ValueError(
                        f"ConvEngineParams.{name}[{i}] = {word!r} is not a {width}-bit word"
                    )

    @property
    def product_bits(self) -> int:
        """Width of one product (the smallest accumulator that makes sense)."""
        if self.weight_kind == "fixed":
            return self.act_bits + self.weight_bits
        return self.act_bits + self.max_shift + 1

    @property
    def max_shift(self) -> int:
        """Largest power-of-two exponent a shift-add PE applies (0 for fixed weights)."""
        return pow2_max_shift(self.weight_bits) if self.weight_kind == "pow2" else 0

    @property
    def lane_bits(self) -> int:
        """Bits of one weight (value or power-of-two code) in a weight word."""
        return self.weight_bits

    @property
    def weight_word_bits(self) -> int:
        return self.cols * self.lane_bits

    @property
    def bias_word_bits(self) -> int:
        return self.cols * self.acc_bits

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    @property
    def dim_bits(self) -> int:
        """Width of the cfg's size fields (channels, height, width, kernel, stride, padding)."""
        return self.act_depth.bit_length()

    @property
    def act_addr_bits(self) -> int:
        return _bits(self.act_depth)

    @property
    def act_mem_depth(self) -> int:
        """Words of the input memory: ``act_depth``, or two banks with the bank as the top
        address bit."""
        return self.act_depth if self.input_banks == 1 else 2 << self.act_addr_bits

    @property
    def weight_addr_bits(self) -> int:
        return _bits(self.weight_depth)

    @property
    def bias_addr_bits(self) -> int:
        return _bits(self.bias_depth)

    @property
    def out_channel_bits(self) -> int:
        return (self.bias_depth * self.cols).bit_length()

    @property
    def max_out_channels(self) -> int:
        return self.bias_depth * self.cols


def conv_cfg_layout(params: ConvEngineParams) -> data.StructLayout:
    """Layout of the run-time configuration port ``cfg`` (sampled at ``start``)."""
    dim = unsigned(params.dim_bits)
    return data.StructLayout(
        {
            "in_channels": dim,
            "in_h": dim,
            "in_w": dim,
            "out_channels": unsigned(params.out_channel_bits),
            "kh": dim,
            "kw": dim,
            "stride": dim,
            "padding": dim,
            "shift": unsigned(SHIFT_BITS),
            "out_bits": unsigned(OUT_BITS_BITS),
            "relu": unsigned(1),
            "clamp": unsigned(1),
            "clamp_max": clamp_max_shape(params.act_bits),
            "pool": unsigned(1),
            "weight_base": unsigned(params.weight_addr_bits),
            "bias_base": unsigned(params.bias_addr_bits),
        }
    )


def conv_load_signature(params: ConvEngineParams) -> wiring.Signature:
    """The memory load port: ``en`` writes ``data`` at ``addr`` of the memory ``sel`` names.

    ``sel`` is 0 for the weight memory (words of ``cols`` weight lanes) and 1 for the bias
    memories (words of ``cols`` biases, ``acc_bits`` each, lane ``c`` in bits
    ``[c * acc_bits, (c + 1) * acc_bits)``).
    """
    return wiring.Signature(
        {
            "en": Out(1),
            "sel": Out(1),
            "addr": Out(max(params.weight_addr_bits, params.bias_addr_bits)),
            "data": Out(max(params.weight_word_bits, params.bias_word_bits)),
        }
    )


class FoldSequencer(wiring.Component):
    """Issues the GEMM steps of a conv layer fold after fold, one step per cycle.

    On ``start`` it sets up the layer (a few cycles, overlapped with the input load by the
    engine): ``out_h``, ``out_w`` by repeated subtraction of the stride, and ``in_h * in_w``,
    ``stride * in_w``, ``padding * in_w`` by shift-and-add, so the address arithmetic needs no
    multiplier. A pixel cursor then writes the ``rows`` pixel positions of the *next* fold, one
    per cycle, while the current fold issues; folds therefore follow back to back when
    ``K >= rows + 1``.

    Parameters
    ----------
    params
        The engine's parameters.

    Members
    -------
    cfg : In(conv_cfg_layout(params))
        Layer configuration, stable from ``start`` to the end of the layer.
    start : In(1)
        Begin a layer.
    act_ready : In(1)
        The input feature map is in memory; no fold issues before.
    emitted_blocks : In(signed)
        Filter blocks whose outputs have left the transpose buffer, counted from this run's
        first block (negative while the run before is still being read). Block ``b`` issues
        only once the block two before it is out, this run's or the one before's, since both
        use the same half of the buffer.
    out_h, out_w : Out
        Output size, valid from the end of setup.
    step_valid, step_first, step_last : Out(1)
        A GEMM step issues this cycle; it is the first / last step ``k`` of its fold.
    step_addr : Out(ArrayLayout(unsigned(act_addr_bits), rows))
        Input feature-map address of each row's activation.
    step_inb : Out(rows)
        Row ``r`` reads a real activation (not zero padding, not a pixel past the end).
    step_w_addr : Out
        Weight word address of the step.
    fold_e0, fold_rows, fold_block, fold_block_last, fold_layer_last : Out
        Describe the fold of the current step (read them with ``step_last``): first output pixel
        of row 0, mask of rows holding real pixels, filter block, last pixel block of the filter
        block, last fold of the layer.
    finished : Out(1)
        The last step of the layer has issued.
    blocks : Out
        Filter blocks issued so far (their total once ``finished``).
    """

    def __init__(self, params: ConvEngineParams) -> None:
        if not isinstance(params, ConvEngineParams):
            discard(self)
            raise TypeError(f"params must be ConvEngineParams, not {type(params).__name__}")
        self.params = params
        p = params
        size = unsigned(p.dim_bits + 2)
        super().__init__(
            {
                "cfg": In(conv_cfg_layout(p)),
                "start": In(1),
                "act_ready": In(1),
                "emitted_blocks": In(signed(block_count_shape(p).width)),
                "out_h": Out(size),
                "out_w": Out(size),
                "step_valid": Out(1),
                "step_first": Out(1),
                "step_last": Out(1),
                "step_addr": Out(data.ArrayLayout(unsigned(p.act_addr_bits), p.rows)),
                "step_inb": Out(p.rows),
                "step_w_addr": Out(p.weight_addr_bits),
                "fold_e0": Out(range(p.out_depth + p.rows + 1)),
                "fold_rows": Out(p.rows),
                "fold_block": Out(range(p.bias_depth + 2)),
                "fold_block_last": Out(1),
                "fold_layer_last": Out(1),
                "finished": Out(1),
                "blocks": Out(range(p.bias_depth + 2)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        cfg = self.cfg
        rows, cols = p.rows, p.cols
        aw = p.act_addr_bits
        coord = signed(p.dim_bits + 4)
        size = unsigned(p.dim_bits + 2)
        pixel = unsigned((p.out_depth + rows + 1).bit_length())

        # Setup: products by shift-and-add over the multiplier's bits, quotients by subtraction.
        w_shifted = Signal(aw)
        mul_h = Signal(p.dim_bits)
        mul_s = Signal(p.dim_bits)
        mul_p = Signal(p.dim_bits)
        in_hw = Signal(aw)  # in_h * in_w: channel stride of the feature map
        s_w = Signal(aw)  # stride * in_w: address step between output rows
        p_w = Signal(aw)  # padding * in_w
        rem_h = Signal(size)
        rem_w = Signal(size)
        out_h = Signal(size)
        out_w = Signal(size)
        m.d.comb += [self.out_h.eq(out_h), self.out_w.eq(out_w)]

        # Pixel cursor, one pixel ahead per cycle, and the next fold's rows it fills.
        c_oh = Signal(size)
        c_ow = Signal(size)
        c_ih0 = Signal(coord)
        c_iw0 = Signal(coord)
        c_rowaddr = Signal(aw)  # (c_ih0 * in_w) modulo 2**aw: addresses wrap consistently
        c_e = Signal(pixel)
        c_end = Signal()
        # Whether c_ow is the row's last pixel and c_oh the last row: registers set with the
        # cursor, so that its advance starts at flip-flops, not at compares.
        c_row_end = Signal()
        c_last_row = Signal()
        c_fill = Signal(range(rows))
        next_ready = Signal()
        n_ih0 = [Signal(coord, name=f"n_ih0_{r}") for r in range(rows)]
        n_iw0 = [Signal(coord, name=f"n_iw0_{r}") for r in range(rows)]
        n_addr = [Signal(aw, name=f"n_addr_{r}") for r in range(rows)]
        n_valid = [Signal(name=f"n_valid_{r}") for r in range(rows)]
        n_e0 = Signal(pixel)
        n_last = Signal()

        # The fold being issued.
        active = Signal()
        finished = Signal()
        cur_ih0 = [Signal(coord, name=f"cur_ih0_{r}") for r in range(rows)]
        cur_iw0 = [Signal(coord, name=f"cur_iw0_{r}") for r in range(rows)]
        cur_addr = [Signal(aw, name=f"cur_addr_{r}") for r in range(rows)]
        cur_valid = [Signal(name=f"cur_valid_{r}") for r in range(rows)]
        cur_e0 = Signal(pixel)
        cur_last = Signal()
        ci = Signal(p.dim_bits)
        ky = Signal(p.dim_bits)
        kx = Signal(p.dim_bits)
        koff = Signal(aw)  # ci * in_hw + ky * in_w + kx
        row_start = Signal(aw)
        chan_start = Signal(aw)
        w_addr = Signal(p.weight_addr_bits)
        w_base = Signal(p.weight_addr_bits)
        block = Signal(range(p.bias_depth + 2))
        m0 = Signal(p.out_channel_bits + 1)

        # Whether kx, ky, ci are at their last value and m0 in the last filter block: registers
        # set with the counters, so that the issue decision starts at flip-flops, not compares.
        kx_last = Signal()
        ky_last = Signal()
        ci_last = Signal()
        m_last = Signal()
        last = kx_last & ky_last & ci_last
        layer_last = cur_last & m_last
        restart_kernel = [
            kx_last.eq(cfg.kw == 1),
            ky_last.eq(cfg.kh == 1),
            ci_last.eq(cfg.in_channels == 1),
        ]

        m.d.comb += [
            self.step_valid.eq(active),
            self.step_first.eq(active & (kx == 0) & (ky == 0) & (ci == 0)),
            self.step_last.eq(active & last),
            self.step_w_addr.eq(w_addr),
            self.fold_e0.eq(cur_e0),
            self.fold_block.eq(block),
            self.fold_block_last.eq(cur_last),
            self.fold_layer_last.eq(layer_last),
            self.finished.eq(finished),
            self.blocks.eq(block),
        ]
        for r in range(rows):
            ih = Signal(coord, name=f"ih_{r}")
            iw = Signal(coord, name=f"iw_{r}")
            m.d.comb += [
                ih.eq(cur_ih0[r] + ky),
                iw.eq(cur_iw0[r] + kx),
                self.step_addr[r].eq(cur_addr[r] + koff),
                self.step_inb[r].eq(
                    cur_valid[r] & (ih >= 0) & (ih < cfg.in_h) & (iw >= 0) & (iw < cfg.in_w)
                ),
                self.fold_rows[r].eq(cur_valid[r]),
            ]

        def reset_cursor():
            return [
                c_oh.eq(0),
                c_ow.eq(0),
                c_row_end.eq(out_w == 1),
                c_last_row.eq(out_h == 1),
                c_ih0.eq(-cfg.padding),
                c_iw0.eq(-cfg.padding),
                c_rowaddr.eq(-p_w),
                c_e.eq(0),
                c_end.eq(0),
            ]

        def begin_layer():
            return [
                w_shifted.eq(cfg.in_w),
                mul_h.eq(cfg.in_h),
                mul_s.eq(cfg.stride),
                mul_p.eq(cfg.padding),
                in_hw.eq(0),
                s_w.eq(0),
                p_w.eq(0),
                rem_h.eq(cfg.in_h + 2 * cfg.padding - cfg.kh),
                rem_w.eq(cfg.in_w + 2 * cfg.padding - cfg.kw),
                out_h.eq(1),
                out_w.eq(1),
                active.eq(0),
                finished.eq(0),
                next_ready.eq(0),
                c_fill.eq(0),
                ci.eq(0),
                ky.eq(0),
                kx.eq(0),
                koff.eq(0),
                row_start.eq(0),
                chan_start.eq(0),
                w_addr.eq(cfg.weight_base),
                w_base.eq(cfg.weight_base),
                block.eq(0),
                m0.eq(0),
                m_last.eq(cols >= cfg.out_channels),
                *restart_kernel,
            ]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += begin_layer()
                    m.next = "SETUP"
            with m.State("SETUP"):
                settled = (
                    (mul_h == 0)
                    & (mul_s == 0)
                    & (mul_p == 0)
                    & (rem_h < cfg.stride)
                    & (rem_w < cfg.stride)
                )
                with m.If(settled):
                    m.d.sync += reset_cursor()
                    m.next = "RUN"
                with m.Else():
                    m.d.sync += [
                        w_shifted.eq(w_shifted << 1),
                        mul_h.eq(mul_h >> 1),
                        mul_s.eq(mul_s >> 1),
                        mul_p.eq(mul_p >> 1),
                    ]
                    with m.If(mul_h[0]):
                        m.d.sync += in_hw.eq(in_hw + w_shifted)
                    with m.If(mul_s[0]):
                        m.d.sync += s_w.eq(s_w + w_shifted)
                    with m.If(mul_p[0]):
                        m.d.sync += p_w.eq(p_w + w_shifted)
                    with m.If(rem_h >= cfg.stride):
                        m.d.sync += [rem_h.eq(rem_h - cfg.stride), out_h.eq(out_h + 1)]
                    with m.If(rem_w >= cfg.stride):
                        m.d.sync += [rem_w.eq(rem_w - cfg.stride), out_w.eq(out_w + 1)]
            with m.State("RUN"):
                # The cursor fills the next fold's rows through a shift chain (row 0 ends first).
                with m.If(~next_ready):
                    for r in range(rows - 1):
                        m.d.sync += [
                            n_ih0[r].eq(n_ih0[r + 1]),
                            n_iw0[r].eq(n_iw0[r + 1]),
                            n_addr[r].eq(n_addr[r + 1]),
                            n_valid[r].eq(n_valid[r + 1]),
                        ]
                    m.d.sync += [
                        n_ih0[-1].eq(c_ih0),
                        n_iw0[-1].eq(c_iw0),
                        n_addr[-1].eq(c_rowaddr + c_iw0),
                        n_valid[-1].eq(~c_end),
                    ]
                    with m.If(c_fill == 0):
                        m.d.sync += n_e0.eq(c_e)
                    end_after = c_end | (c_row_end & c_last_row)
                    with m.If(~c_end):
                        m.d.sync += c_e.eq(c_e + 1)
                        with m.If(c_row_end):
                            m.d.sync += [
                                c_ow.eq(0),
                                c_row_end.eq(out_w == 1),
                                c_oh.eq(c_oh + 1),
                                c_last_row.eq(c_oh + 2 == out_h),
                                c_iw0.eq(-cfg.padding),
                                c_ih0.eq(c_ih0 + cfg.stride),
                                c_rowaddr.eq(c_rowaddr + s_w),
                                c_end.eq(c_last_row),
                            ]
                        with m.Else():
                            m.d.sync += [
                                c_ow.eq(c_ow + 1),
                                c_row_end.eq(c_ow + 2 == out_w),
                                c_iw0.eq(c_iw0 + cfg.stride),
                            ]
                    with m.If(c_fill == rows - 1):
                        m.d.sync += [c_fill.eq(0), next_ready.eq(1), n_last.eq(end_after)]
                        with m.If(end_after):
                            # The next filter block walks the pixels from the start again.
                            m.d.sync += reset_cursor()
                    with m.Else():
                        m.d.sync += c_fill.eq(c_fill + 1)

                # Issue: one step of the current fold per cycle.
                next_block = Mux(active & last & cur_last, block + 1, block)
                may_take = (
                    next_ready
                    & self.act_ready
                    & ~finished
                    & (self.emitted_blocks + 1 >= next_block)
                    & (~active | (last & ~layer_last))
                )
                with m.If(active):
                    with m.If(last):
                        m.d.sync += [
                            ci.eq(0),
                            ky.eq(0),
                            kx.eq(0),
                            koff.eq(0),
                            row_start.eq(0),
                            chan_start.eq(0),
                            active.eq(may_take),
                            *restart_kernel,
                        ]
                        with m.If(cur_last):
                            m.d.sync += [
                                block.eq(block + 1),
                                m0.eq(m0 + cols),
                                m_last.eq(m0 + 2 * cols >= cfg.out_channels),
                                w_addr.eq(w_addr + 1),
                                w_base.eq(w_addr + 1),
                            ]
                        with m.Else():
                            m.d.sync += w_addr.eq(w_base)
                        with m.If(layer_last):
                            m.d.sync += finished.eq(1)
                    with m.Else():
                        m.d.sync += w_addr.eq(w_addr + 1)
                        with m.If(kx_last & ky_last):
                            m.d.sync += [
                                kx.eq(0),
                                ky.eq(0),
                                ci.eq(ci + 1),
                                kx_last.eq(cfg.kw == 1),
                                ky_last.eq(cfg.kh == 1),
                                ci_last.eq(ci + 2 == cfg.in_channels),
                                chan_start.eq(chan_start + in_hw),
                                row_start.eq(chan_start + in_hw),
                                koff.eq(chan_start + in_hw),
                            ]
                        with m.Elif(kx_last):
                            m.d.sync += [
                                kx.eq(0),
                                ky.eq(ky + 1),
                                kx_last.eq(cfg.kw == 1),
                                ky_last.eq(ky + 2 == cfg.kh),
                                row_start.eq(row_start + cfg.in_w),
                                koff.eq(row_start + cfg.in_w),
                            ]
                        with m.Else():
                            m.d.sync += [
                                kx.eq(kx + 1),
                                koff.eq(koff + 1),
                                kx_last.eq(kx + 2 == cfg.kw),
                            ]
                with m.Elif(may_take):
                    m.d.sync += active.eq(1)
                with m.If(may_take):
                    for r in range(rows):
                        m.d.sync += [
                            cur_ih0[r].eq(n_ih0[r]),
                            cur_iw0[r].eq(n_iw0[r]),
                            cur_addr[r].eq(n_addr[r]),
                            cur_valid[r].eq(n_valid[r]),
                        ]
                    m.d.sync += [cur_e0.eq(n_e0), cur_last.eq(n_last), next_ready.eq(0)]

                with m.If(self.start):
                    m.d.sync += begin_layer()
                    m.next = "SETUP"
        return m


def row_field(r: int) -> str:
    """Field name of row ``r`` in the array's layouts."""
    return f"row{r}"


def col_field(c: int) -> str:
    """Field name of column ``c`` in the array's layouts."""
    return f"col{c}"


def _lanes(shape, count: int, field) -> data.StructLayout:
    """``count`` values of ``shape`` as named fields (``row0``, ``row1``, ...).

    Not an ``ArrayLayout``: Amaranth names the wires of array elements ``x[0]``, ``x[1]``, and
    Yosys's ABC9 pass names the bits of a wire ``x`` the same way when it maps the logic that
    drives them, which aborts synthesis on the duplicate name.
    """
    return data.StructLayout({field(i): shape for i in range(count)})


def array_step_layout(params: ConvEngineParams) -> data.StructLayout:
    """One GEMM step as the array takes it: an activation per row, a weight lane per column."""
    lane = signed(params.lane_bits) if params.weight_kind == "fixed" else unsigned(params.lane_bits)
    return data.StructLayout(
        {
            "a": _lanes(signed(params.act_bits), params.rows, row_field),
            "w": _lanes(lane, params.cols, col_field),
            "first": unsigned(1),
            "last": unsigned(1),
        }
    )


def array_result_layout(params: ConvEngineParams) -> data.StructLayout:
    """Finished sums of the array, ``[row_field(r)][col_field(c)]``."""
    sums = _lanes(signed(params.acc_bits), params.cols, col_field)
    return _lanes(sums, params.rows, row_field)


def fold_layout(params: ConvEngineParams) -> data.StructLayout:
    """A finished fold, as the drain needs it: where its pixels go and which filters it holds."""
    return data.StructLayout(
        {
            "e0": unsigned((params.out_depth + params.rows).bit_length()),
            "rows": unsigned(params.rows),
            "block": unsigned((params.bias_depth + 1).bit_length()),
            "block_last": unsigned(1),
        }
    )


def drain_tag_layout(params: ConvEngineParams) -> data.StructLayout:
    """What travels with a drained sum through the requantizer: its transpose buffer slot
    (the pixel's, or with pooling its window's) and where the pixel lies in its 2x2 window."""
    return data.StructLayout(
        {
            "write": unsigned(1),
            "addr": unsigned(_bits(2 * params.out_depth)),
            "x_odd": unsigned(1),
            "y_odd": unsigned(1),
            "line": unsigned(_bits(line_depth(params))),
            "block_end": unsigned(1),
        }
    )


def line_depth(params: ConvEngineParams) -> int:
    """Words of a :class:`PoolWriter`'s line buffer: one per window of an output row. A pooled
    layer has at least two output rows (``check_conv_fits``), so a row of windows is at most a
    quarter of the pixels."""
    return max(1, params.out_depth // 4)


def drain_output_layout(params: ConvEngineParams) -> data.StructLayout:
    """One sum leaving the array: the accumulator and its tag (the bias joins it outside)."""
    return data.StructLayout({"acc": signed(params.acc_bits), "tag": drain_tag_layout(params)})


def _check_params(component: wiring.Component, params: object) -> ConvEngineParams:
    if not isinstance(params, ConvEngineParams):
        discard(component)
        raise TypeError(f"params must be ConvEngineParams, not {type(params).__name__}")
    return params


class SystolicArray(wiring.Component):
    """The output-stationary ``rows x cols`` PE array with its input skew.

    Row ``r`` takes its activation ``r`` cycles late and column ``c`` its weight ``c`` cycles
    late, so step ``k`` of a fold meets in PE ``(r, c)`` at ``t_k + r + c`` (the wavefront); the
    step's flags travel with the activations. The array has no backpressure: a step is taken in
    the cycle it is valid.

    ::

        clk           __/‾\\_/‾\\_/‾\\_/‾\\_/‾\\_
        step (last)   __/‾‾‾\\_____________        in cycle t
        result[r][c]  ========X sum ========     from t + RESULT_LATENCY + r + c

    Parameters
    ----------
    params
        The engine's parameters (rows, cols, widths, weight kind).

    Members
    -------
    step : ``In(stream.Signature(array_step_layout(params), always_ready=True))``
        One GEMM step per valid cycle.
    result : ``Out(array_result_layout(params))``
        Each PE's sum of its last finished fold; held until its next fold finishes.
    """

    #: Cycles from a fold's last step on ``step`` to PE (0, 0)'s ``result`` (the PE's, both
    #: flavours alike).
    RESULT_LATENCY = MacPE.RESULT_LATENCY

    def __init__(self, params: ConvEngineParams) -> None:
        self.params = _check_params(self, params)
        super().__init__(
            {
                "step": In(stream.Signature(array_step_layout(params), always_ready=True)),
                "result": Out(array_result_layout(params)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        rows, cols = p.rows, p.cols
        step = self.step.payload
        ctl = [(self.step.valid, step.first, step.last)]
        for d in range(1, rows):
            prev = ctl[-1]
            now = tuple(Signal(name=f"ctl_{n}_d{d}") for n in ("valid", "first", "last"))
            m.d.sync += [now[i].eq(prev[i]) for i in range(3)]
            ctl.append(now)
        a_skew = []
        for r in range(rows):
            x = step.a[row_field(r)]
            for d in range(r):
                y = Signal(signed(p.act_bits), name=f"a_skew_{r}_{d}")
                m.d.sync += y.eq(x)
                x = y
            a_skew.append(x)
        w_skew = []
        for c in range(cols):
            x = step.w[col_field(c)]
            for d in range(c):
                y = Signal(x.shape(), name=f"w_skew_{c}_{d}")
                m.d.sync += y.eq(x)
                x = y
            w_skew.append(x)

        pes = []
        for r in range(rows):
            row = []
            for c in range(cols):
                pe = pe_for(p.weight_kind, p.act_bits, p.weight_bits, p.acc_bits)
                m.submodules[f"pe_{r}_{c}"] = pe
                if c == 0:
                    valid, first, last = ctl[r]
                    m.d.comb += [
                        pe.a_in.eq(a_skew[r]),
                        pe.valid_in.eq(valid),
                        pe.first_in.eq(first),
                        pe.last_in.eq(last),
                    ]
                else:
                    left = row[c - 1]
                    m.d.comb += [
                        pe.a_in.eq(left.a_out),
                        pe.valid_in.eq(left.valid_out),
                        pe.first_in.eq(left.first_out),
                        pe.last_in.eq(left.last_out),
                    ]
                if r == 0:
                    m.d.comb += pe.w_in.eq(w_skew[c])
                else:
                    m.d.comb += pe.w_in.eq(pes[r - 1][c].w_out)
                m.d.comb += self.result[row_field(r)][col_field(c)].eq(pe.result)
                row.append(pe)
            pes.append(row)
        return m


class FoldDrain(wiring.Component):
    """Reads a finished fold out of the array, row after row, each column ``c`` cycles late.

    The drain reads PE ``(r, c)`` ``LATENCY - 1 + r + c`` cycles after the fold event, so the
    fold's sums must be final there by then (the engine delays the event to make it so:
    :attr:`ConvEngine.FOLD_EVENT_DELAY`); column ``c`` gives row ``r``'s sum
    ``LATENCY + r + c`` cycles after the fold event, tagged with its transpose-buffer slot
    (half ``(block + half0) mod 2``, pixel ``e0 + r``; ``write`` is low for the rows past the
    last pixel).
    With ``pool`` the slot is the pixel's 2x2 window ``(y // 2) * (out_w // 2) + x // 2``
    instead, and the tag says where the pixel lies in it (``x_odd``, ``y_odd``, the window's
    column ``line``) for the :class:`PoolWriter`. The drain walks ``(x, y)`` along with the
    pixels: a fold's pixels follow the previous fold's, and a filter block starts at ``e0 = 0``.
    Each column's bias address leads its sum by one cycle (the bias memory's read latency), so
    the bias arrives with the sum. Fold events come at most once per ``rows`` cycles (a fold
    takes at least ``rows + 1`` steps).

    ::

        clk          __/‾\\_/‾\\_/‾\\_/‾\\_/‾\\_/‾\\_
        fold         __/‾‾‾\\____________________       cycle t
        col[0]       ______________X r0 X r1 X ..     from t + LATENCY
        col[1]       ___________________X r0 X ..     one cycle later per column

    Parameters
    ----------
    params
        The engine's parameters.

    Members
    -------
    bias_base : ``In(unsigned(bias_addr_bits))``
        Bias word of the layer's filter block 0.
    pool : ``In(1)``, out_w : ``In``
        The layer is pooled; its output width before pooling.
    half0 : ``In(1)``
        The transpose buffer half of the run's block 0 (the parity of the blocks before it).
    fold : ``In(stream.Signature(fold_layout(params), always_ready=True))``
        A fold's last step has issued (the sequencer's event, ``FOLD_EVENT_DELAY`` cycles late).
    result : ``In(array_result_layout(params))``
        The array's sums.
    bias_addr : ``Out``, a field ``col_field(c)`` of ``unsigned(bias_addr_bits)`` per column
        Bias word each column reads (data one cycle later).
    col : ``Out(stream.Signature(drain_output_layout(params), always_ready=True)).array(cols)``
        The sums of column ``c``, one per cycle, with their tags.
    """

    #: Cycles from the fold event to row 0 of column 0 on ``col[0]``.
    LATENCY = 3

    def __init__(self, params: ConvEngineParams) -> None:
        self.params = p = _check_params(self, params)
        super().__init__(
            {
                "bias_base": In(unsigned(p.bias_addr_bits)),
                "pool": In(1),
                "out_w": In(unsigned(p.dim_bits + 2)),
                "half0": In(1),
                "fold": In(stream.Signature(fold_layout(p), always_ready=True)),
                "result": In(array_result_layout(p)),
                "bias_addr": Out(_lanes(unsigned(p.bias_addr_bits), p.cols, col_field)),
                "col": Out(stream.Signature(drain_output_layout(p), always_ready=True)).array(
                    p.cols
                ),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        rows, cols = p.rows, p.cols
        fold = Signal(fold_layout(p))
        fold_valid = Signal()
        m.d.sync += [fold_valid.eq(self.fold.valid), fold.eq(self.fold.payload)]

        # Column 0's schedule; the other columns replay it one cycle later each.
        active = Signal()
        row = Signal(_bits(rows))
        pending_rows = Signal(rows)
        addr = Signal(_bits(2 * p.out_depth))
        bias_addr = Signal(p.bias_addr_bits)
        block_last = Signal()
        # The pixel's place for pooling: x, the row's parity, its window's slot and the slot of
        # its window row's first window (kept apart so no adder follows the registers).
        x = Signal(len(self.out_w))
        y_odd = Signal()
        window = Signal(_bits(2 * p.out_depth))
        window_row = Signal(_bits(2 * p.out_depth))
        half = Mux(fold.block[0] ^ self.half0, p.out_depth, 0)
        with m.If(fold_valid):
            m.d.sync += [
                active.eq(1),
                row.eq(0),
                pending_rows.eq(fold.rows),
                addr.eq(half + fold.e0),
                bias_addr.eq(self.bias_base + fold.block),
                block_last.eq(fold.block_last),
            ]
            with m.If(fold.e0 == 0):
                m.d.sync += [x.eq(0), y_odd.eq(0), window.eq(half), window_row.eq(half)]
        with m.Elif(active):
            m.d.sync += [row.eq(row + 1), pending_rows.eq(pending_rows >> 1), addr.eq(addr + 1)]
            with m.If(row == rows - 1):
                m.d.sync += active.eq(0)
            with m.If(x + 1 == self.out_w):
                m.d.sync += [x.eq(0), y_odd.eq(~y_odd)]
                with m.If(y_odd):
                    next_row = window_row + (self.out_w >> 1)
                    m.d.sync += [window_row.eq(next_row), window.eq(next_row)]
                with m.Else():
                    m.d.sync += window.eq(window_row)
            with m.Else():
                m.d.sync += [x.eq(x + 1), window.eq(window + x[0])]

        step = data.StructLayout(
            {
                "act": unsigned(1),
                "row": unsigned(_bits(rows)),
                "bias_addr": unsigned(p.bias_addr_bits),
                "tag": drain_tag_layout(p),
            }
        )
        ctrl = [Signal(step, name="drain_0")]
        m.d.comb += [
            ctrl[0].act.eq(active),
            ctrl[0].row.eq(row),
            ctrl[0].bias_addr.eq(bias_addr),
            ctrl[0].tag.write.eq(pending_rows[0]),
            ctrl[0].tag.addr.eq(Mux(self.pool, window, addr)),
            ctrl[0].tag.x_odd.eq(x[0]),
            ctrl[0].tag.y_odd.eq(y_odd),
            ctrl[0].tag.line.eq(x >> 1),
            ctrl[0].tag.block_end.eq(block_last & (row == rows - 1)),
        ]
        for c in range(1, cols):
            ctrl.append(Signal(step, name=f"drain_{c}"))
            m.d.sync += ctrl[c].eq(ctrl[c - 1])

        for c in range(cols):
            column = Array(self.result[row_field(r)][col_field(c)] for r in range(rows))
            out = self.col[c]
            valid = Signal(name=f"valid_{c}")
            m.d.sync += [
                valid.eq(ctrl[c].act),
                out.payload.acc.eq(column[ctrl[c].row]),
                out.payload.tag.eq(ctrl[c].tag),
            ]
            m.d.comb += [out.valid.eq(valid), self.bias_addr[col_field(c)].eq(ctrl[c].bias_addr)]
        return m


def pool_input_layout(params: ConvEngineParams) -> data.StructLayout:
    """A requantized value on its way to the transpose buffer, with its drain tag."""
    return data.StructLayout({"value": signed(params.act_bits), "tag": drain_tag_layout(params)})


def buffer_write_layout(params: ConvEngineParams) -> data.StructLayout:
    """One write of a transpose buffer bank."""
    return data.StructLayout(
        {
            "en": unsigned(1),
            "addr": unsigned(_bits(2 * params.out_depth)),
            "data": signed(params.act_bits),
        }
    )


class PoolWriter(wiring.Component):
    """Writes one column's requantized values into its transpose buffer bank, max-pooled 2x2
    on the way when ``pool`` is set, so the emitter reads each pooled output once.

    A column's values arrive in raster order (a fold's pixels, then the next fold's), so a
    window's pixels come as two pairs, one output row apart. The even pixel of a pair waits in
    a register for the odd one; the even row's pair maximum waits in a line buffer (a word per
    window of the row) for the odd row's, and the maximum of the two is written at the window's
    slot. Pixels of an odd last row or column have no partner and are never written, as the
    reference drops them. Without ``pool`` every value is written at its pixel's slot, with the
    same latency.

    ::

        clk        __/‾\\_/‾\\_/‾\\_/‾\\_
        i          ==X v  X==========       value with its tag
        write.en   ____________/‾‾‾\\___    LATENCY cycles later (registered)

    Parameters
    ----------
    params
        The engine's parameters.

    Members
    -------
    pool : ``In(1)``
        The layer is pooled.
    i : ``In(stream.Signature(pool_input_layout(params), always_ready=True))``
        Requantized values with their drain tags.
    write : ``Out(buffer_write_layout(params))``
        The bank's write port, driven from registers.
    block_end : ``Out(1)``
        The last value of a filter block was written (with its write, or in its place).
    """

    #: Cycles from a value on ``i`` to its write: a register on the input, the pair's compare,
    #: the window's.
    LATENCY = 3

    def __init__(self, params: ConvEngineParams) -> None:
        self.params = p = _check_params(self, params)
        super().__init__(
            {
                "pool": In(1),
                "i": In(stream.Signature(pool_input_layout(p), always_ready=True)),
                "write": Out(buffer_write_layout(p)),
                "block_end": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        value = self.i.payload.value
        tag = self.i.payload.tag
        pool = self.pool

        m.submodules.line = line = Memory(shape=signed(p.act_bits), depth=line_depth(p), init=[])
        line_wp = line.write_port()
        # An odd row's read of a window can meet the even row's write of it in one cycle (a
        # one-window-wide output); the read then returns the value being written.
        line_rp = line.read_port(transparent_for=(line_wp,))

        # Stage 1 registers the input: the requantizer's saturation is combinational behind its
        # last register, and nothing may follow it but a register.
        a_valid = Signal()
        a_tag = Signal(drain_tag_layout(p))
        a_value = Signal(signed(p.act_bits))
        m.d.sync += [a_valid.eq(self.i.valid), a_tag.eq(tag), a_value.eq(value)]

        # Stage 2: the even pixel of a pair waits; the odd one leaves with the pair's maximum.
        # An odd row's even pixel reads its window's word of the line buffer.
        even = Signal(signed(p.act_bits))
        with m.If(a_valid & ~a_tag.x_odd):
            m.d.sync += even.eq(a_value)
        m.d.comb += [
            line_rp.en.eq(a_valid & ~a_tag.x_odd & a_tag.y_odd),
            line_rp.addr.eq(a_tag.line),
        ]
        b_valid = Signal()
        b_tag = Signal(drain_tag_layout(p))
        b_value = Signal(signed(p.act_bits))
        pair = Mux(pool & a_tag.x_odd & (even > a_value), even, a_value)
        m.d.sync += [b_valid.eq(a_valid), b_tag.eq(a_tag), b_value.eq(pair)]

        # Stage 3: the even row's pair maximum goes into the line buffer; the odd row's meets
        # it and the window's maximum is written.
        m.d.comb += [
            line_wp.en.eq(b_valid & b_tag.write & pool & b_tag.x_odd & ~b_tag.y_odd),
            line_wp.addr.eq(b_tag.line),
            line_wp.data.eq(b_value),
        ]
        # The line buffer's word is registered as it leaves the memory (nothing may follow a
        # block RAM's output): it was read at the even pixel's stage 2, so it is there by the
        # odd pixel's stage 3, and the next read comes no earlier than that.
        above = Signal(signed(p.act_bits))
        m.d.sync += above.eq(line_rp.data)
        window = Mux(pool & (above > b_value), above, b_value)
        write = Signal(buffer_write_layout(p))
        block_end = Signal()
        m.d.sync += [
            write.en.eq(b_valid & b_tag.write & (~pool | (b_tag.x_odd & b_tag.y_odd))),
            write.addr.eq(b_tag.addr),
            write.data.eq(window),
            block_end.eq(b_valid & b_tag.block_end),
        ]
        m.d.comb += [self.write.eq(write), self.block_end.eq(block_end)]
        return m


class OutputEmitter(wiring.Component):
    """Streams drained filter blocks out of the transpose buffer in (C, H, W) order.

    Once a block is drained (``drained`` differs from ``emitted``) and the previous one is
    out, it reads the block channel after channel (lane after lane, raster order inside), all
    lanes' banks at one address (``rd_addr``, a register); the lane is chosen when the data
    returns. With ``cfg.pool`` the banks already hold the pooled outputs (:class:`PoolWriter`),
    so it reads ``out_h // 2`` rows of ``out_w // 2`` slots: one read per output either way.
    Reads are issued against credit: an output is only started while the queue behind ``o`` has
    room for it and every output already on its way, so ``o.valid`` never meets a full queue and
    the memory read latency needs no skid buffer.

    The emitter follows runs on its own: it samples ``cfg``, ``out_h`` and ``out_w`` when a
    run's first block begins (``latch``), so the engine may compute the next run while the
    emitter still reads this one. After a run's last block it waits until that run's outputs
    have all left the queue (``run_done``) before it begins the next run's first block.

    ::

        clk        __/‾\\_/‾\\_/‾\\_/‾\\_/‾\\_/‾\\_
        rd_addr    ==X a0 X a1 X a2 X============
        rd_data    =======X d0 X d1 X d2 X=======   one cycle later, registered as it arrives
        o.valid    _________________/‾‾‾‾‾‾‾‾‾‾‾‾   READ_LATENCY after a0: d0

    Parameters
    ----------
    params
        The engine's parameters.
    queue_depth
        Entries of the queue ``o`` feeds (the credit limit).

    Members
    -------
    cfg : ``In(conv_cfg_layout(params))``
        Reads ``out_channels`` and ``pool``, sampled with ``latch``.
    out_h, out_w : ``In``
        Output size before pooling, sampled with ``latch``.
    drained : ``In(block_count_shape(params))``
        Filter blocks put in the transpose buffer so far, over every run (modulo its width).
    emitted : ``Out(block_count_shape(params))``
        Filter blocks whose reads have all issued, counted the same way; a block's half of the
        buffer is its count's parity.
    latch : ``Out(1)``
        A run's first block begins: ``cfg``, ``out_h`` and ``out_w`` are sampled this cycle.
    run_done : ``Out(1)``
        One-cycle pulse: the last output of a run has left the queue.
    rd_addr : ``Out``, rd_data : ``In``, a field ``col_field(c)`` of ``signed(act_bits)`` per bank
        Transpose buffer read (every bank at ``rd_addr``, data one cycle later).
    queue_level : ``In(range(queue_depth + 1))``
        Payloads in the queue behind ``o``.
    o : ``Out(stream.Signature(signed(act_bits)))``
        Outputs; valid only when the queue has room (``o.ready`` is not waited for).
    """

    #: Cycles from a read address to its value on ``o``: the memory's read, a register on the
    #: read data (a block RAM's output is slow; nothing else may follow it), a register on the
    #: selected lane.
    READ_LATENCY = 3

    def __init__(self, params: ConvEngineParams, queue_depth: int) -> None:
        self.params = p = _check_params(self, params)
        try:
            check_int(queue_depth, "OutputEmitter queue_depth", 1, 1024)
        except (TypeError, ValueError):
            discard(self)
            raise
        self.queue_depth = queue_depth
        size = unsigned(p.dim_bits + 2)
        super().__init__(
            {
                "cfg": In(conv_cfg_layout(p)),
                "out_h": In(size),
                "out_w": In(size),
                "drained": In(block_count_shape(p)),
                "emitted": Out(block_count_shape(p)),
                "latch": Out(1),
                "run_done": Out(1),
                "rd_addr": Out(_bits(2 * p.out_depth) + 1),
                "rd_data": In(_lanes(signed(p.act_bits), p.cols, col_field)),
                "queue_level": In(range(queue_depth + 1)),
                "o": Out(stream.Signature(signed(p.act_bits))),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        cols = p.cols
        cfg = self.cfg
        active = Signal()
        # The run being read: its cfg and output size, sampled when its first block begins.
        fresh = Signal(init=1)  # the next block is a run's first
        finishing = Signal()  # the run's last block was read; its outputs are on their way
        channels = Signal.like(cfg.out_channels)
        pool = Signal()
        out_h = Signal.like(self.out_h)
        out_w = Signal.like(self.out_w)
        lane = Signal(range(cols))
        channel = Signal(p.out_channel_bits + 1)
        block_channel = Signal(p.out_channel_bits + 1)  # first channel of the next block
        x = Signal(len(self.out_w))
        y = Signal(len(self.out_w))
        # The read address is a register: the block's half, then one slot after another, back
        # to the half's start for each lane (no adder between it and the memories).
        rd_addr = Signal(len(self.rd_addr))
        half_base = Signal(len(self.rd_addr))
        pending = Signal(range(self.queue_depth + 1))  # outputs started, not yet in the queue
        n_x = Mux(pool, out_w >> 1, out_w)
        n_y = Mux(pool, out_h >> 1, out_h)
        credit = self.queue_level + pending < self.queue_depth
        issue = active & credit
        m.d.comb += self.rd_addr.eq(rd_addr)
        r_valid = Signal()
        r_lane = Signal(range(cols))
        m.d.sync += [r_valid.eq(issue), r_lane.eq(lane)]
        with m.If(issue):
            m.d.sync += rd_addr.eq(rd_addr + 1)
            with m.If(x + 1 == n_x):
                m.d.sync += x.eq(0)
                with m.If(y + 1 == n_y):
                    m.d.sync += [y.eq(0), rd_addr.eq(half_base)]
                    with m.If(channel + 1 >= channels):
                        # The run's last block.
                        m.d.sync += [
                            active.eq(0),
                            self.emitted.eq(self.emitted + 1),
                            block_channel.eq(0),
                            fresh.eq(1),
                            finishing.eq(1),
                        ]
                    with m.Elif(lane + 1 == cols):
                        m.d.sync += [
                            active.eq(0),
                            self.emitted.eq(self.emitted + 1),
                            block_channel.eq(block_channel + cols),
                        ]
                    with m.Else():
                        m.d.sync += [lane.eq(lane + 1), channel.eq(channel + 1)]
                with m.Else():
                    m.d.sync += y.eq(y + 1)
            with m.Else():
                m.d.sync += x.eq(x + 1)
        begin = ~active & ~finishing & (self.drained != self.emitted)
        with m.If(begin):
            base = Mux(self.emitted[0], p.out_depth, 0)
            m.d.sync += [
                active.eq(1),
                lane.eq(0),
                channel.eq(block_channel),
                half_base.eq(base),
                rd_addr.eq(base),
                x.eq(0),
                y.eq(0),
            ]
            with m.If(fresh):
                m.d.sync += [
                    fresh.eq(0),
                    channels.eq(cfg.out_channels),
                    pool.eq(cfg.pool),
                    out_h.eq(self.out_h),
                    out_w.eq(self.out_w),
                ]
        m.d.comb += self.latch.eq(begin & fresh)

        # Every bank's word is registered as it leaves the memory; the lane is chosen behind,
        # into a register that is the output.
        banks = Signal(_lanes(signed(p.act_bits), cols, col_field))
        d_valid = Signal()
        d_lane = Signal(range(cols))
        m.d.sync += [banks.eq(self.rd_data), d_valid.eq(r_valid), d_lane.eq(r_lane)]
        out = Signal(signed(p.act_bits))
        push = Signal()
        m.d.sync += [
            out.eq(Array(banks[col_field(c)] for c in range(cols))[d_lane]),
            push.eq(d_valid),
        ]
        run_done = finishing & ~active & (pending == 0) & (self.queue_level == 0)
        with m.If(run_done):
            m.d.sync += finishing.eq(0)
        m.d.comb += [
            self.o.valid.eq(push),
            self.o.payload.eq(out),
            self.run_done.eq(run_done),
        ]
        m.d.sync += pending.eq(pending + issue - push)
        return m


class ConvEngine(wiring.Component):
    """Convolution engine: output-stationary ``rows x cols`` array, one build for many layers.

    Computes a :class:`~squeezeforge.sim.ir.Conv2d` layer (bias, requantization by ``shift``
    with round-half-up, saturation to ``out_bits``, optional ReLU and clamp to ``clamp_max``)
    and, when ``cfg.pool`` is set, the 2x2 max pool that follows it, bit-exactly with
    :mod:`squeezeforge.sim.reference`.
    Weights are fixed-point values (multiply-accumulate PEs) or power-of-two codes (shift-add
    PEs, no multiplier), per ``params.weight_kind``.

    The engine is the block diagram of ``docs/conv_engine.md``: :class:`FoldSequencer` →
    operand fetch (memories) → :class:`SystolicArray` → :class:`FoldDrain` → a
    :class:`~squeezeforge.hw.arith.Requantizer` and a :class:`PoolWriter` per column →
    transpose buffer →
    :class:`OutputEmitter` → :class:`~squeezeforge.hw.fifo.StreamFIFO` → ``o_act``.

    Parameters
    ----------
    params
        Elaboration parameters (:class:`ConvEngineParams`).

    Members
    -------
    cfg : In(conv_cfg_layout(params))
        Layer configuration (see :func:`squeezeforge.hw.conv.driver.conv_layer_config`), sampled
        when ``start`` is accepted.
    start : In(1)
        Starts a layer when the engine is not busy.
    busy : Out(1)
        A ``start`` is not taken. One input bank: from the cycle after ``start`` until
        ``done``. Two banks: while a run's input is loading, or while a run waits for the one
        computing (see below).
    done : Out(1)
        One-cycle pulse the cycle after the last output of a run was accepted.
    i_act : In(stream.Signature(signed(act_bits)))
        The layer's input activations in (C, H, W) order, accepted one per cycle after
        ``start`` until all ``in_channels * in_h * in_w`` have arrived.
    o_act : Out(stream.Signature(signed(act_bits)))
        Outputs in (C, H, W) order (after pooling), saturated to ``out_bits``.
    load : In(conv_load_signature(params))
        Writes a word of the weight memory (``sel`` 0) or the bias memories (``sel`` 1).

    Timing::

        clk      _/~\\_/~\\_/~\\_/~\\_/~\\_/~\\_/~\\_/~\\_/~\\_/~\\_/~\\_/~\\_
        start    _/~~~\\_________________________________________
        busy     _____/~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\\_____
        i_act.v  ~~~~~~~~~~~~~~~~~~~~~~~~\\___________________________
        i_act.r  _____/~~~~~~~~~~~~~~~~~~\\___________________________
                      |<- C*H*W beats ->|   compute ...
        o_act.v  ____________________________/~~~~~~~~~~~~\\_________
        o_act.r  ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
        done     _________________________________________/~~~\\_____

    ``o_act`` starts once the first filter block is computed and overlaps the computation of
    the next ones; ``o_act.ready`` low stalls the engine only when the transpose buffer is full.

    With two input banks (``params.input_banks == 2``) the engine takes the next ``start`` as
    soon as the current run's input is in: the next run's input loads into the other bank
    while the current run computes, and the next run computes (with the cfg sampled at its
    ``start``) once the current one's last filter block is drained and the emitter has begun
    the current run, so the array works on the next run while the emitter reads this one's
    last block. The emitter keeps the cfg of the run it reads (:class:`OutputEmitter`), and
    begins a run only after the run before is ``done``: runs' outputs never interleave.
    :func:`~squeezeforge.hw.conv.cycles.conv_stream_dones` gives each ``done``.
    """

    # Pipeline latencies the cycle model (:mod:`squeezeforge.hw.conv.cycles`) schedules with;
    # the drain and emitter latencies live on those components.
    #: ``start`` -> latched cfg -> sequencer start -> first setup iteration.
    SETUP_LATENCY = 3
    #: The per-column requantizers are pipelined (two stages after the drain).
    REQUANT_PIPELINED = True
    #: Cycles from a GEMM step leaving the sequencer to the array: the memory read, then a
    #: register on the read data (a block RAM's output is slow; nothing else may follow it).
    FETCH_LATENCY = 2
    #: Cycles the sequencer's fold event waits before it reaches the drain, so that the drain
    #: reads each PE in the first cycle its sum is final (see :class:`FoldDrain`).
    FOLD_EVENT_DELAY = FETCH_LATENCY + SystolicArray.RESULT_LATENCY - 2

    def __init__(self, params: ConvEngineParams) -> None:
        self.params = _check_params(self, params)
        super().__init__(
            engine_members(conv_cfg_layout(params), params.act_bits, conv_load_signature(params))
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self.params
        rows, cols = p.rows, p.cols

        m.submodules.seq = seq = FoldSequencer(p)
        m.submodules.array = array = SystolicArray(p)
        m.submodules.drain = drain = FoldDrain(p)
        requants = []
        for c in range(cols):
            rq = Requantizer(
                p.acc_bits,
                p.acc_bits,
                p.act_bits,
                pipelined=self.REQUANT_PIPELINED,
                tag_shape=drain_tag_layout(p),
            )
            m.submodules[f"requant_{c}"] = rq
            requants.append(rq)
        writers = []
        for c in range(cols):
            m.submodules[f"pool_{c}"] = writer = PoolWriter(p)
            writers.append(writer)
        m.submodules.emitter = emitter = OutputEmitter(p, OUTPUT_QUEUE_DEPTH)
        m.submodules.out_queue = out_queue = StreamFIFO(signed(p.act_bits), OUTPUT_QUEUE_DEPTH)

        # Layer control: a run's cfg latched when its compute begins, the input load, done once
        # everything is out. With two input banks a run can be accepted while the one before it
        # computes: it loads into the other bank and waits ("queued") until that one's last
        # block is drained, and computes while the emitter still reads the one before.
        double = p.input_banks == 2
        cfg = Signal(conv_cfg_layout(p))
        computing = Signal()  # a run computes (until its last block is drained)
        running = Signal()  # one bank: a run is in (until done)
        unlatched = Signal()  # the emitter has not yet sampled the computing run's cfg
        loading = Signal()
        act_ready = Signal()  # the computing run's input is all in
        seq_start = Signal()
        count = block_count_shape(p)
        all_drained = Signal(count)  # every run's, modulo its width
        first_block = Signal(count)  # all_drained when the computing run began
        l_addr = Signal(p.act_addr_bits)
        l_c = Signal(p.dim_bits)
        l_h = Signal(p.dim_bits)
        l_w = Signal(p.dim_bits)
        # The loader counts against the sizes of the run it loads, which with two banks may
        # not be the run computing.
        # A queued run is the last one taken, so its cfg is the loader's.
        l_cfg = Signal(conv_cfg_layout(p)) if double else cfg
        queued = Signal()
        q_loaded = Signal()
        l_bank = Signal()
        c_bank = Signal()
        load_done = Signal()

        # The computing run's blocks drained so far (counts are modulo their width).
        blocks_drained = (all_drained - first_block)[: count.width]
        # The computing run's last block is drained (its sequencer's flags are stale in the
        # cycle it starts).
        computed = (
            computing & act_ready & ~seq_start & seq.finished & (blocks_drained == seq.blocks)
        )
        done = emitter.run_done
        if double:
            refuse = loading | queued
            # The compute side can take a run at this edge: the drain and the requantizers
            # are free, and the emitter knows the computing run's cfg (it keeps one run's).
            free = (~computing | computed) & ~unlatched
        else:
            refuse = running
            free = ~running
        accept_start = self.start & ~refuse
        dequeue = queued & free
        direct = accept_start & free
        compute_start = dequeue | direct
        m.d.comb += self.busy.eq(refuse)
        m.d.sync += seq_start.eq(compute_start)
        with m.If(computed):
            m.d.sync += computing.eq(0)
        with m.If(done):
            m.d.sync += running.eq(0)
        with m.If(emitter.latch):
            m.d.sync += unlatched.eq(0)
        with m.If(accept_start):
            m.d.sync += [
                loading.eq(1),
                l_addr.eq(0),
                l_c.eq(0),
                l_h.eq(0),
                l_w.eq(0),
            ]
            if double:
                m.d.sync += [l_cfg.eq(self.cfg), l_bank.eq(~l_bank)]
                with m.If(~free):
                    m.d.sync += [queued.eq(1), q_loaded.eq(0)]
        with m.If(compute_start):
            m.d.sync += [computing.eq(1), running.eq(1), unlatched.eq(1)]
        with m.If(direct):
            m.d.sync += [cfg.eq(self.cfg), act_ready.eq(0)]
            if double:
                m.d.sync += c_bank.eq(~l_bank)
        if double:
            with m.If(dequeue):
                m.d.sync += [
                    cfg.eq(l_cfg),
                    c_bank.eq(~c_bank),
                    act_ready.eq(q_loaded | load_done),
                    queued.eq(0),
                ]

        # Input feature map: written in arrival order, read by every row each cycle; with two
        # banks the bank is the top address bit.
        m.submodules.act_mem = act_mem = Memory(
            shape=signed(p.act_bits), depth=p.act_mem_depth, init=[]
        )
        act_wp = act_mem.write_port()
        act_rps = [act_mem.read_port() for _ in range(rows)]
        m.d.comb += self.i_act.ready.eq(loading)
        with m.If(self.i_act.valid & loading):
            m.d.comb += [
                act_wp.en.eq(1),
                act_wp.addr.eq(Cat(l_addr, l_bank) if double else l_addr),
                act_wp.data.eq(self.i_act.payload),
            ]
            m.d.sync += l_addr.eq(l_addr + 1)
            with m.If(l_w + 1 == l_cfg.in_w):
                m.d.sync += l_w.eq(0)
                with m.If(l_h + 1 == l_cfg.in_h):
                    m.d.sync += l_h.eq(0)
                    with m.If(l_c + 1 == l_cfg.in_channels):
                        m.d.comb += load_done.eq(1)
                        m.d.sync += loading.eq(0)
                        # The run it loaded computes (its input is ready) or waits for the
                        # one computing to finish.
                        with m.If(queued & ~dequeue):
                            m.d.sync += q_loaded.eq(1)
                        with m.Elif(~queued):
                            m.d.sync += act_ready.eq(1)
                    with m.Else():
                        m.d.sync += l_c.eq(l_c + 1)
                with m.Else():
                    m.d.sync += l_h.eq(l_h + 1)
            with m.Else():
                m.d.sync += l_w.eq(l_w + 1)

        # Weights: one word (a lane per column) per GEMM step.
        m.submodules.w_mem = w_mem = Memory(
            shape=unsigned(p.weight_word_bits),
            depth=p.weight_depth,
            init=list(p.init_weights or ()),
        )
        w_wp = w_mem.write_port()
        w_rp = w_mem.read_port()
        m.d.comb += [
            w_wp.en.eq(self.load.en & (self.load.sel == LOAD_WEIGHTS)),
            w_wp.addr.eq(self.load.addr),
            w_wp.data.eq(self.load.data),
        ]

        # Biases: one memory per column, since each column drains at its own cycle.
        acc_mask = (1 << p.acc_bits) - 1
        bias_rps = []
        for c in range(cols):
            init = [(word >> (c * p.acc_bits)) & acc_mask for word in (p.init_biases or ())]
            mem = Memory(shape=unsigned(p.acc_bits), depth=p.bias_depth, init=init)
            m.submodules[f"bias_mem_{c}"] = mem
            wp = mem.write_port()
            m.d.comb += [
                wp.en.eq(self.load.en & (self.load.sel == LOAD_BIASES)),
                wp.addr.eq(self.load.addr),
                wp.data.eq(self.load.data[c * p.acc_bits : (c + 1) * p.acc_bits]),
            ]
            bias_rps.append(mem.read_port())

        # Transpose buffer: a bank per column, two halves of a filter block each.
        out_rps = []
        out_wps = []
        for c in range(cols):
            mem = Memory(shape=signed(p.act_bits), depth=2 * p.out_depth, init=[])
            m.submodules[f"out_mem_{c}"] = mem
            out_wps.append(mem.write_port())
            out_rps.append(mem.read_port())

        # Sequencer: GEMM steps, fold events.
        m.d.comb += [
            seq.cfg.eq(cfg),
            seq.start.eq(seq_start),
            seq.act_ready.eq(act_ready),
            seq.emitted_blocks.eq((emitter.emitted - first_block)[: count.width].as_signed()),
        ]

        # Operand fetch (FETCH_LATENCY): the step's memory reads, then a register on the read
        # data, where padding becomes zero (a synchronous reset of that register, which block
        # RAMs with an output register can absorb).
        step_flags = data.StructLayout({"valid": 1, "first": 1, "last": 1, "inb": rows})
        fetched = Signal(step_flags)
        operands = Signal(step_flags)
        m.d.sync += [
            fetched.valid.eq(seq.step_valid),
            fetched.first.eq(seq.step_first),
            fetched.last.eq(seq.step_last),
            fetched.inb.eq(seq.step_inb),
            operands.eq(fetched),
        ]
        m.d.comb += w_rp.addr.eq(seq.step_w_addr)
        for r in range(rows):
            a = Signal(signed(p.act_bits), name=f"operand_a_{r}")
            addr = seq.step_addr[r]
            m.d.comb += act_rps[r].addr.eq(Cat(addr, c_bank) if double else addr)
            m.d.sync += a.eq(Mux(fetched.inb[r], act_rps[r].data, 0))
            m.d.comb += array.step.payload.a[row_field(r)].eq(a)
        w_word = Signal(p.weight_word_bits)
        m.d.sync += w_word.eq(w_rp.data)
        for c in range(cols):
            lane = w_word[c * p.lane_bits : (c + 1) * p.lane_bits]
            m.d.comb += array.step.payload.w[col_field(c)].eq(lane)
        m.d.comb += [
            array.step.valid.eq(operands.valid),
            array.step.payload.first.eq(operands.first),
            array.step.payload.last.eq(operands.last),
        ]

        # Drain: the sequencer's fold event (FOLD_EVENT_DELAY cycles late), the array's sums.
        fold_valid = Signal()
        fold = Signal(fold_layout(p))
        m.d.comb += [
            fold_valid.eq(seq.step_last),
            fold.e0.eq(seq.fold_e0),
            fold.rows.eq(seq.fold_rows),
            fold.block.eq(seq.fold_block),
            fold.block_last.eq(seq.fold_block_last),
        ]
        for d in range(self.FOLD_EVENT_DELAY):
            late_valid = Signal(name=f"fold_valid_d{d + 1}")
            late = Signal(fold_layout(p), name=f"fold_d{d + 1}")
            m.d.sync += [late_valid.eq(fold_valid), late.eq(fold)]
            fold_valid, fold = late_valid, late
        m.d.comb += [
            drain.bias_base.eq(cfg.bias_base),
            drain.pool.eq(cfg.pool),
            drain.out_w.eq(seq.out_w),
            drain.half0.eq(first_block[0]),
            drain.fold.valid.eq(fold_valid),
            drain.fold.payload.eq(fold),
            drain.result.eq(array.result),
        ]

        # Requantizers: a column's sum meets its bias (read a cycle ahead) and goes through the
        # column's pool writer into the transpose buffer; the last column's block end counts
        # the block as drained.
        for c, rq in enumerate(requants):
            m.d.comb += [
                bias_rps[c].addr.eq(drain.bias_addr[col_field(c)]),
                rq.cfg.shift.eq(cfg.shift),
                rq.cfg.out_bits.eq(cfg.out_bits),
                rq.cfg.relu.eq(cfg.relu),
                rq.cfg.clamp.eq(cfg.clamp),
                rq.cfg.clamp_max.eq(cfg.clamp_max),
                rq.i.valid.eq(drain.col[c].valid),
                rq.i.payload.acc.eq(drain.col[c].payload.acc),
                rq.i.payload.bias.eq(bias_rps[c].data.as_signed()),
                rq.i.payload.tag.eq(drain.col[c].payload.tag),
                rq.o.ready.eq(1),
                writers[c].pool.eq(cfg.pool),
                writers[c].i.valid.eq(rq.o.valid),
                writers[c].i.payload.value.eq(rq.o.payload.value),
                writers[c].i.payload.tag.eq(rq.o.payload.tag),
                out_wps[c].en.eq(writers[c].write.en),
                out_wps[c].addr.eq(writers[c].write.addr),
                out_wps[c].data.eq(writers[c].write.data),
            ]
        with m.If(writers[-1].block_end):
            m.d.sync += all_drained.eq(all_drained + 1)
        # The run before is all drained when a run's compute starts.
        with m.If(compute_start):
            m.d.sync += first_block.eq(all_drained)

        # Emitter and output queue.
        m.d.comb += [
            emitter.cfg.eq(cfg),
            emitter.out_h.eq(seq.out_h),
            emitter.out_w.eq(seq.out_w),
            emitter.drained.eq(all_drained),
            emitter.queue_level.eq(out_queue.level),
        ]
        for c in range(cols):
            m.d.comb += [
                out_rps[c].addr.eq(emitter.rd_addr),
                emitter.rd_data[col_field(c)].eq(out_rps[c].data),
            ]
        wiring.connect(m, emitter.o, out_queue.w)
        wiring.connect(m, out_queue.r, wiring.flipped(self.o_act))

        m.d.comb += self.done.eq(done)
        return m
