"""The whole-net accelerator: engines, one activation memory and a sequencer.

:class:`Top` is built from frozen :class:`TopParams` (steps, engine instances with their
parameters and memory images), not from the compiler's plan; ``codegen.plan.top_params`` fills
them in. The ports below are the members of its signature; :func:`port_list` derives the Verilog
port list from it, which the build manifest records and the cocotb bench reads.

Ports
-----
``start`` (in)
    pulse: run one inference.
``i_pixel`` (stream in, signed ``act_bits``)
    the input image in C, H, W order, already in the net's input format.
``o_score`` (stream out, signed ``act_bits``)
    the last layer's outputs in order.
``busy``, ``done`` (out)
    ``done`` pulses for one cycle after the last score was accepted.
``cycles`` (out, 32 bits)
    cycles from ``start`` to ``done`` of the last inference (the counter runs while busy).
``step`` (out)
    the index of the step (hardware layer) now running; a bench reads per-layer cycles off it.
``tap`` (out: ``valid``, ``data``)
    every activation a step writes into a buffer, so a bench can locate the first layer that
    departs from the reference.

Timing (one step, ``k`` = 0 reads ``i_pixel``, later steps the buffer the previous step wrote)::

    clk        _/‾\\_/‾\\_/‾\\_/‾\\_/‾\\ ... _/‾\\_/‾\\_/‾\\_
    state      LOAD |RUN ..................... |LOAD (k+1)
    eng.start  ‾‾‾‾‾|____
    eng.i_act  ------<a0><a1><a2> ... (whole input, one word per cycle when ready)
    eng.o_act                    ... <y0><y1> ... (into the other buffer, or o_score)
    eng.done                                  ‾‾|

Each engine takes its whole input before it emits its first output. All activations live in
one memory (one read and one write port); the compiler lays the tensors out in it
(``codegen.plan.place_activations``). A step reads the words of its ``in_segments`` in order,
(address, count) each: one segment for a plain layer, one per input for an add, a slice for a
group of a grouped conv; it writes its outputs from ``out_address`` on. A step that reads the
net's input takes the next words of ``i_pixel`` instead, and one that makes the net's output
streams it to ``o_score``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from amaranth.hdl import Module, Shape, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .engine import EngineBinding, Images
from .fifo import StreamFIFO
from .interface import discard

__all__ = ["Top", "TopEngine", "TopParams", "TopStep", "activation_depth", "port_list"]


@dataclass(frozen=True)
class TopStep:
    """One step the sequencer runs: which engine, how many words in and out, its ``cfg``, and
    where its input and output lie (see the module docstring)."""

    engine: str
    in_count: int
    out_count: int
    cfg: Mapping[str, int]
    in_segments: tuple[tuple[int, int], ...] = ()
    out_address: int = 0
    from_pixels: bool = False
    to_scores: bool = False


@dataclass(frozen=True, eq=False)
class TopEngine:
    """One engine instance: its binding, elaboration parameters and memory images."""

    name: str
    binding: EngineBinding
    params: Any
    images: Images


def activation_depth(steps: Iterable[Any]) -> int:
    """Words of the activation memory that ``steps`` need (anything with ``in_segments``,
    ``out_address``, ``out_count`` and ``to_scores``: a :class:`TopStep` or the compiler's
    step): the furthest word a step reads or writes."""
    steps = list(steps)
    ends = [a + c for s in steps for a, c in s.in_segments]
    ends += [s.out_address + s.out_count for s in steps if not s.to_scores]
    return max([*ends, 1])


@dataclass(frozen=True, eq=False)
class TopParams:
    """Everything the top level is built from (the compiler fills it in from its plan)."""

    act_bits: int
    steps: tuple[TopStep, ...]
    engines: tuple[TopEngine, ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("TopParams.steps: a net needs at least one step")
        names = {e.name for e in self.engines}
        for k, s in enumerate(self.steps):
            if s.engine not in names:
                raise ValueError(f"TopParams.steps[{k}] runs on {s.engine!r}, not an engine")
            if s.from_pixels != (not s.in_segments):
                raise ValueError(f"TopParams.steps[{k}]: reads segments or pixels, not both")
            if not s.from_pixels and (
                sum(c for _, c in s.in_segments) != s.in_count
                or min(c for _, c in s.in_segments) < 1
            ):
                raise ValueError(f"TopParams.steps[{k}]: segments do not make {s.in_count} words")

    @property
    def memory_depth(self) -> int:
        """Words of the activation memory: the furthest word a step reads or writes."""
        return activation_depth(self.steps)

    @property
    def segments(self) -> list[tuple[int, int, bool]]:
        """Every step's input segments in one table: (address, end, last of its step)."""
        table = []
        for s in self.steps:
            for j, (a, c) in enumerate(s.in_segments):
                table.append((a, a + c, j == len(s.in_segments) - 1))
        return table


def port_list(component: wiring.Component) -> list[tuple[str, str, str, int]]:
    """The Verilog ports of ``component`` from its signature: ``(name, path, direction,
    width)``, e.g. ``("i_pixel__valid", "i_pixel.valid", "in", 1)``.

    Names are the signature paths joined with ``__``, as Amaranth names a top level's ports;
    the clock and reset (``clk``, ``rst``) come first.
    """
    ports = [("clk", "clk", "in", 1), ("rst", "rst", "in", 1)]
    for path, member, _ in component.signature.flatten(component):
        names = [str(p) for p in path]
        direction = "in" if member.flow == In else "out"
        width = Shape.cast(member.shape).width
        ports.append(("__".join(names), ".".join(names), direction, width))
    return ports


class Top(wiring.Component):
    """The generated top level of a net (see the module docstring for ports and timing)."""

    #: The sequencer spends one cycle starting each step (its LAUNCH state).
    LAUNCH_CYCLES = 1
    #: A step fed from the activation memory waits two more cycles for its first word: the
    #: synchronous read, then the input queue (a word leaves it the cycle after it enters).
    PREFETCH_CYCLES = 2
    #: Words of the queue between the activation memory and the running engine: the read in
    #: flight and the queue's own one-cycle latency, with room to spare, keep one word per
    #: cycle going.
    INPUT_QUEUE_DEPTH = 4

    def __init__(self, params: TopParams) -> None:
        if not isinstance(params, TopParams):
            discard(self)
            raise TypeError(f"params must be TopParams, not {type(params).__name__}")
        self.params = params
        self.act_bits = params.act_bits
        self.n_steps = len(params.steps)
        self.memory_depth = params.memory_depth
        act = signed(self.act_bits)
        super().__init__(
            {
                "start": In(1),
                "busy": Out(1),
                "done": Out(1),
                "i_pixel": In(stream.Signature(act)),
                "o_score": Out(stream.Signature(act)),
                "cycles": Out(32),
                "step": Out(range(max(self.n_steps, 2))),
                "tap": Out(wiring.Signature({"valid": Out(1), "data": Out(act)})),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.params
        engines = {}
        for e in p.engines:
            engines[e.name] = e.binding.build(e.params, e.images)
            m.submodules[e.name] = engines[e.name]

        mem = Memory(shape=signed(self.act_bits), depth=self.memory_depth, init=[])
        m.submodules.activations = mem
        rd, wr = mem.read_port(), mem.write_port()

        addr = range(self.memory_depth + 1)
        table = p.segments
        step = Signal(range(max(self.n_steps, 2)))
        seg = Signal(range(max(len(table), 2)))  # the segment now read, an index into table
        rd_addr = Signal(addr)
        wr_addr = Signal(addr)
        more = Signal()  # words are left to read
        cycles = Signal(32)
        launch = Signal()
        m.d.comb += [self.step.eq(step), self.cycles.eq(cycles)]

        # Per-step constants: which engine, where its words come from and go, its cfg.
        cur_i_valid = Signal()
        cur_i_data = Signal(signed(self.act_bits))
        cur_i_ready = Signal()
        cur_o_valid = Signal()
        cur_o_data = Signal(signed(self.act_bits))
        cur_o_ready = Signal()
        cur_done = Signal()
        pixels = Signal()  # the step reads i_pixel
        scores = Signal()  # the step writes o_score
        final = Signal()  # the last step
        first_seg = Signal.like(seg)
        out_address = Signal(addr)
        seg_index = 0
        with m.Switch(step):
            for index, s in enumerate(p.steps):
                eng = engines[s.engine]
                with m.Case(index):
                    m.d.comb += [
                        pixels.eq(s.from_pixels),
                        scores.eq(s.to_scores),
                        first_seg.eq(seg_index if s.in_segments else 0),
                        out_address.eq(s.out_address if not s.to_scores else 0),
                        final.eq(index == self.n_steps - 1),
                        eng.i_act.valid.eq(cur_i_valid),
                        eng.i_act.payload.eq(cur_i_data),
                        cur_i_ready.eq(eng.i_act.ready),
                        cur_o_valid.eq(eng.o_act.valid),
                        cur_o_data.eq(eng.o_act.payload),
                        eng.o_act.ready.eq(cur_o_ready),
                        cur_done.eq(eng.done),
                        eng.start.eq(launch),
                    ]
                seg_index += len(s.in_segments)
        # Each engine sees the cfg of whichever of its steps runs now (held for the whole step).
        for name, eng in engines.items():
            with m.Switch(step):
                for index, s in enumerate(p.steps):
                    if s.engine == name:
                        with m.Case(index):
                            m.d.comb += eng.cfg.eq(eng.cfg.shape().const(dict(s.cfg)))

        # The segment table: where segment ``seg`` ends, whether it is its step's last, and
        # where the next one starts (read at the launch of a step, and on a segment's last word).
        seg_end = Signal(addr)
        seg_last = Signal()
        next_start = Signal(addr)
        launch_start = Signal(addr)
        with m.Switch(seg):
            for j, (_, end, last) in enumerate(table):
                with m.Case(j):
                    m.d.comb += [seg_end.eq(end), seg_last.eq(last)]
                    if j + 1 < len(table):
                        m.d.comb += next_start.eq(table[j + 1][0])
        with m.Switch(first_seg):
            for j, (start, _, _) in enumerate(table):
                with m.Case(j):
                    m.d.comb += launch_start.eq(start)

        running = Signal()
        m.d.comb += [rd.addr.eq(rd_addr), more.eq(rd_addr < seg_end)]
        # Words read from the memory go through a queue to the engine. A read issues while the
        # queue has room for it and for the read in flight, so the memory's read enable and
        # address never depend on the engine's ready (nor on the word just read), and the
        # memory's output goes into the queue with no logic in between.
        m.submodules.in_queue = in_queue = StreamFIFO(signed(self.act_bits), self.INPUT_QUEUE_DEPTH)
        in_flight = Signal()
        read = Signal()
        m.d.comb += [
            read.eq(
                running & ~pixels & more & (in_queue.level + in_flight < self.INPUT_QUEUE_DEPTH)
            ),
            rd.en.eq(read),
            in_queue.w.valid.eq(in_flight),
            in_queue.w.payload.eq(rd.data),
        ]
        m.d.sync += in_flight.eq(read)
        with m.If(read):
            # The last word of a segment moves the address to the next segment at once, so
            # segments follow each other without a gap.
            with m.If((rd_addr + 1 == seg_end) & ~seg_last):
                m.d.sync += [seg.eq(seg + 1), rd_addr.eq(next_start)]
            with m.Else():
                m.d.sync += rd_addr.eq(rd_addr + 1)
        with m.If(running & pixels):
            m.d.comb += [
                cur_i_valid.eq(self.i_pixel.valid),
                cur_i_data.eq(self.i_pixel.payload),
                self.i_pixel.ready.eq(cur_i_ready),
            ]
        with m.Elif(running):
            m.d.comb += [
                cur_i_valid.eq(in_queue.r.valid),
                cur_i_data.eq(in_queue.r.payload),
                in_queue.r.ready.eq(cur_i_ready),
            ]

        # Sink of the step's output: the memory, or the score stream.
        with m.If(running & scores):
            m.d.comb += [
                self.o_score.valid.eq(cur_o_valid),
                self.o_score.payload.eq(cur_o_data),
                cur_o_ready.eq(self.o_score.ready),
            ]
        with m.Elif(running):
            m.d.comb += [
                cur_o_ready.eq(1),
                wr.addr.eq(wr_addr),
                wr.data.eq(cur_o_data),
                wr.en.eq(cur_o_valid),
            ]
            with m.If(cur_o_valid):
                m.d.sync += wr_addr.eq(wr_addr + 1)
        m.d.comb += [
            self.tap.valid.eq(running & cur_o_valid & cur_o_ready),
            self.tap.data.eq(cur_o_data),
        ]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [step.eq(0), cycles.eq(0)]
                    m.next = "LAUNCH"
            with m.State("LAUNCH"):
                m.d.comb += [launch.eq(1), self.busy.eq(1)]
                m.d.sync += [
                    seg.eq(first_seg),
                    rd_addr.eq(launch_start),
                    wr_addr.eq(out_address),
                    cycles.eq(cycles + 1),
                ]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [running.eq(1), self.busy.eq(1)]
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(cur_done):
                    with m.If(final):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += step.eq(step + 1)
                        m.next = "LAUNCH"
        return m
