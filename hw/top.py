"""The whole-net accelerator: engines, two activation buffers and a sequencer.

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
and writes the same buffer; the two buffers swap roles every step.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .plan import Plan

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    """The generated top level of a net (see the module docstring for ports and timing)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.act_bits = plan.act_bits
        self.n_steps = len(plan.steps)
        self.buffer_depth = max(
            max(s.out_count for s in plan.steps[:-1]) if self.n_steps > 1 else 1, 1
        )
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
        plan = self.plan
        engines = {}
        for name, binding in plan.engines.items():
            engines[name] = binding.build(plan.params[name])
            m.submodules[name] = engines[name]

        bufs = []
        for k in range(2):
            mem = Memory(shape=signed(self.act_bits), depth=self.buffer_depth, init=[])
            m.submodules[f"buffer{k}"] = mem
            bufs.append((mem.read_port(), mem.write_port()))

        step = Signal(range(max(self.n_steps, 2)))
        # Step k writes buffer k % 2 and (for k > 0) reads the one step k - 1 wrote.
        dst = Signal()
        src = Signal()
        m.d.comb += [dst.eq(step[0]), src.eq(~step[0])]
        rd_addr = Signal(range(self.buffer_depth + 1))
        wr_addr = Signal(range(self.buffer_depth + 1))
        have = Signal()  # the read port's data is a word not yet taken by the engine
        cycles = Signal(32)
        launch = Signal()
        m.d.comb += [self.step.eq(step), self.cycles.eq(cycles)]

        # Per-step constants: which engine, how many input words, its cfg.
        in_count = Signal(range(max(s.in_count for s in plan.steps) + 1))
        cur_i_valid = Signal()
        cur_i_data = Signal(signed(self.act_bits))
        cur_i_ready = Signal()
        cur_o_valid = Signal()
        cur_o_data = Signal(signed(self.act_bits))
        cur_o_ready = Signal()
        cur_done = Signal()
        last = Signal()
        with m.Switch(step):
            for s in plan.steps:
                eng = engines[s.engine]
                with m.Case(s.index):
                    m.d.comb += [
                        in_count.eq(s.in_count),
                        last.eq(s.index == self.n_steps - 1),
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
            mine = [s for s in plan.steps if s.engine == name]
            with m.Switch(step):
                for s in mine:
                    with m.Case(s.index):
                        m.d.comb += eng.cfg.eq(eng.cfg.shape().const(s.cfg))

        # Source of the step's input: the pixel stream for step 0, a buffer after that.
        for rd, _ in bufs:
            m.d.comb += rd.addr.eq(rd_addr)
        rd_data = Signal(signed(self.act_bits))
        with m.If(src):
            m.d.comb += rd_data.eq(bufs[1][0].data)
        with m.Else():
            m.d.comb += rd_data.eq(bufs[0][0].data)

        running = Signal()
        with m.If(running & (step == 0)):
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
                m.d.sync += have.eq(rd_addr < in_count)
                with m.If(rd_addr < in_count):
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
                m.d.sync += [rd_addr.eq(0), wr_addr.eq(0), have.eq(0), cycles.eq(cycles + 1)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [running.eq(1), self.busy.eq(1)]
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(cur_done):
                    with m.If(last):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += step.eq(step + 1)
                        m.next = "LAUNCH"
        return m
