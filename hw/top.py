"""The whole-net accelerator: engines, two activation buffers and a sequencer.

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

Each engine takes its whole input before it emits its first output, so one step never reads
and writes the same buffer. Steps come in *phases* (one per hardware layer); the two buffers
swap roles every phase. The steps of one phase (the groups of a grouped conv) read the same
buffer, each from its ``in_offset``, and write the other, each at its ``out_offset``; in phase 0
they take the next words of ``i_pixel`` in turn, in the last phase they stream to ``o_score``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from amaranth.hdl import Module, Shape, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .engine import EngineBinding, Images
from .interface import discard

__all__ = ["Top", "TopEngine", "TopParams", "TopStep", "port_list"]


@dataclass(frozen=True)
class TopStep:
    """One step the sequencer runs: which engine, how many words in and out, its ``cfg``, its
    phase and where in the buffers its input and output lie."""

    engine: str
    in_count: int
    out_count: int
    cfg: Mapping[str, int]
    phase: int = 0
    in_offset: int = 0
    out_offset: int = 0


@dataclass(frozen=True, eq=False)
class TopEngine:
    """One engine instance: its binding, elaboration parameters and memory images."""

    name: str
    binding: EngineBinding
    params: Any
    images: Images


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
            before = self.steps[k - 1].phase if k else 0
            if s.phase not in (before, before + 1) or (k == 0 and s.phase):
                raise ValueError(f"TopParams.steps[{k}]: phase {s.phase} after phase {before}")

    @property
    def last_phase(self) -> int:
        return self.steps[-1].phase

    @property
    def buffer_depth(self) -> int:
        """Words of each activation buffer: the furthest word a step writes between phases."""
        return max(
            [s.out_offset + s.out_count for s in self.steps if s.phase != self.last_phase] + [1]
        )


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
    #: A step fed from an activation buffer waits one more cycle for the first word out of the
    #: synchronous read port.
    PREFETCH_CYCLES = 1

    def __init__(self, params: TopParams) -> None:
        if not isinstance(params, TopParams):
            discard(self)
            raise TypeError(f"params must be TopParams, not {type(params).__name__}")
        self.params = params
        self.act_bits = params.act_bits
        self.n_steps = len(params.steps)
        self.buffer_depth = params.buffer_depth
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

        bufs = []
        for k in range(2):
            mem = Memory(shape=signed(self.act_bits), depth=self.buffer_depth, init=[])
            m.submodules[f"buffer{k}"] = mem
            bufs.append((mem.read_port(), mem.write_port()))

        step = Signal(range(max(self.n_steps, 2)))
        # A step of phase k writes buffer k % 2 and (for k > 0) reads the one phase k - 1 wrote.
        dst = Signal()
        src = Signal()
        m.d.comb += src.eq(~dst)
        rd_addr = Signal(range(self.buffer_depth + 1))
        wr_addr = Signal(range(self.buffer_depth + 1))
        in_end = Signal(range(self.buffer_depth + 1))
        in_offset = Signal(range(self.buffer_depth + 1))
        out_offset = Signal(range(self.buffer_depth + 1))
        first = Signal()  # a step of phase 0: reads i_pixel
        have = Signal()  # the read port's data is a word not yet taken by the engine
        cycles = Signal(32)
        launch = Signal()
        m.d.comb += [self.step.eq(step), self.cycles.eq(cycles)]

        # Per-step constants: which engine, which words in, its cfg.
        cur_i_valid = Signal()
        cur_i_data = Signal(signed(self.act_bits))
        cur_i_ready = Signal()
        cur_o_valid = Signal()
        cur_o_data = Signal(signed(self.act_bits))
        cur_o_ready = Signal()
        cur_done = Signal()
        last = Signal()  # a step of the last phase: writes o_score
        final = Signal()  # the last step
        with m.Switch(step):
            for index, s in enumerate(p.steps):
                eng = engines[s.engine]
                with m.Case(index):
                    m.d.comb += [
                        dst.eq(s.phase % 2),
                        first.eq(s.phase == 0),
                        in_offset.eq(s.in_offset if s.phase else 0),
                        in_end.eq(s.in_offset + s.in_count if s.phase else 0),
                        out_offset.eq(s.out_offset if s.phase != p.last_phase else 0),
                        last.eq(s.phase == p.last_phase),
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
        # Each engine sees the cfg of whichever of its steps runs now (held for the whole step).
        for name, eng in engines.items():
            with m.Switch(step):
                for index, s in enumerate(p.steps):
                    if s.engine == name:
                        with m.Case(index):
                            m.d.comb += eng.cfg.eq(eng.cfg.shape().const(dict(s.cfg)))

        # Source of the step's input: the pixel stream for step 0, a buffer after that.
        for rd, _ in bufs:
            m.d.comb += rd.addr.eq(rd_addr)
        rd_data = Signal(signed(self.act_bits))
        with m.If(src):
            m.d.comb += rd_data.eq(bufs[1][0].data)
        with m.Else():
            m.d.comb += rd_data.eq(bufs[0][0].data)

        running = Signal()
        with m.If(running & first):
            m.d.comb += [
                cur_i_valid.eq(self.i_pixel.valid),
                cur_i_data.eq(self.i_pixel.payload),
                self.i_pixel.ready.eq(cur_i_ready),
            ]
        with m.Elif(running):
            # A one-word prefetch over the synchronous read port: read the next word whenever
            # the current one is taken (or there is none), so the engine sees one per cycle.
            advance = ~have | cur_i_ready
            m.d.comb += [cur_i_valid.eq(have), cur_i_data.eq(rd_data)]
            for k, (rd, _) in enumerate(bufs):
                m.d.comb += rd.en.eq(advance & (src == k))
            with m.If(advance):
                m.d.sync += have.eq(rd_addr < in_end)
                with m.If(rd_addr < in_end):
                    m.d.sync += rd_addr.eq(rd_addr + 1)

        # Sink of the step's output: the other buffer, or the score stream for the last step.
        with m.If(running & last):
            m.d.comb += [
                self.o_score.valid.eq(cur_o_valid),
                self.o_score.payload.eq(cur_o_data),
                cur_o_ready.eq(self.o_score.ready),
            ]
        with m.Elif(running):
            m.d.comb += cur_o_ready.eq(1)
            for k, (_, wr) in enumerate(bufs):
                m.d.comb += [
                    wr.addr.eq(wr_addr),
                    wr.data.eq(cur_o_data),
                    wr.en.eq(cur_o_valid & (dst == k)),
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
                    rd_addr.eq(in_offset),
                    wr_addr.eq(out_offset),
                    have.eq(0),
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
