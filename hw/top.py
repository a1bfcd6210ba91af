"""The whole-net accelerator: engines, activation memory and sequencer, in one or two stages.

:class:`Top` is built from frozen :class:`TopParams` (steps, engine instances with their
parameters and memory images), not from the compiler's plan; ``codegen.plan.top_params`` fills
them in. The ports below are the members of its signature; :func:`port_list` derives the Verilog
port list from it, which the build manifest records and the cocotb bench reads.

Ports
-----
``start`` (in)
    pulse: run one inference (taken while ``ready``).
``ready`` (out)
    a ``start`` now begins an inference: nothing runs, or, with two stages, the first is idle.
``i_pixel`` (stream in, signed ``act_bits``)
    the input image in C, H, W order, already in the net's input format.
``o_score`` (stream out, signed ``act_bits``)
    the last layer's outputs in order.
``busy``, ``done`` (out)
    ``done`` pulses for one cycle after the last score of an image was accepted.
``cycles`` (out, 32 bits)
    cycles from ``start`` to ``done`` of the last inference when one image runs at a time (the
    counter restarts at a ``start`` taken while nothing runs, and counts while busy).
``step`` (out)
    the index of the step (hardware layer) now running (the first stage's, when both run); a
    bench reads per-layer cycles off it.
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

Each engine takes its whole input before it emits its first output. All activations of a stage
live in one memory (one read and one write port); the compiler lays the tensors out in it
(``codegen.plan.place_activations``). A step reads the words of its ``in_segments`` in order,
(address, count) each: one segment for a plain layer, one per input for an add, a slice for a
group of a grouped conv; it writes its outputs from ``out_address`` on. A step that reads the
net's input takes the next words of ``i_pixel`` instead, and one that makes the net's output
streams it to ``o_score``.

A ``chained`` step (the Target's ``double_buffer``; its engine has two input banks) reads exactly
what the step before it wrote on the same engine. The sequencer starts it during that step, as
soon as the engine takes a start (once the step before has its input), and sends the step
before's outputs both into the memory and into the engine's free bank as they leave; the
chained step then computes from the cycle the one before is done, and its launch state starts
nothing and reads nothing. With two stages as well, and a first stage that begins and ends on
that engine (``TopParams.prefetch``), the first stage shows ``ready`` during its last step: a
``start`` then starts the next image's first step on the engine at once, its pixels stream into
the free bank while the last step finishes, and the stage goes from its last step to the first
without idling.

Two stages (``TopParams.split``, the Target's ``pipeline``): the steps before ``split`` and
those from it on run on disjoint engines (the conv layers, then the fully connected ones), each
stage with a sequencer and an activation memory of its own. The first stage's last step streams
its output into a queue two images deep; the second stage's first step reads it from there as a
step reads ``i_pixel``. The first stage takes the next ``start`` as soon as it is idle, so
image ``n + 1`` runs in the conv layers while image ``n`` is in the fully connected ones; the
second stage begins an image the cycle after the first finished it, or after its own idle
cycle. The interval between images is the slower stage's cycles plus that idle cycle
(:data:`Top.IDLE_CYCLES`; ``docs/pipeline.md``)::

    start     ‾|_______________|‾|______________|‾|____
    stage A    | conv n        | | conv n+1     | | conv n+2
    queue                      n               n+1
    stage B                      | fc n          | fc n+1
    done                                         ‾|             ‾|
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .engine import EngineBinding, Images
from .fifo import StreamFIFO
from .interface import discard

__all__ = [
    "Top",
    "TopEngine",
    "TopParams",
    "TopStep",
    "activation_depth",
    "boundary_depth",
    "port_list",
    "split_problem",
    "stage_steps",
]


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
    #: Its input is the step before's output, streamed into its engine's free input bank as
    #: it leaves (the engine has two; the sequencer starts this step's run during the one
    #: before and neither reads nor launches it afterwards).
    chained: bool = False


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
    """Everything the top level is built from (the compiler fills it in from its plan).

    ``split``, when set, is the index of the first step of the second pipeline stage: steps
    before it and steps from it on run on disjoint engines, each stage with its own sequencer
    and activation memory, and the only tensor passing between them is the output of step
    ``split - 1``, which step ``split`` reads whole (see the module docstring).

    ``prefetch`` (two stages, the first stage beginning and ending on one engine that has two
    input banks): the first stage takes the next image's ``start`` during its last step and
    loads that image's pixels into the engine's free bank meanwhile.
    """

    act_bits: int
    steps: tuple[TopStep, ...]
    engines: tuple[TopEngine, ...]
    split: int | None = None
    prefetch: bool = False

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
        if self.split is not None:
            reason = split_problem(self.steps, self.split)
            if reason:
                raise ValueError(f"TopParams.split = {self.split}: {reason}")
        if self.prefetch and (
            self.split is None
            or not self.steps[0].from_pixels
            or self.steps[self.split - 1].engine != self.steps[0].engine
        ):
            raise ValueError(
                "TopParams.prefetch: needs two stages, the first beginning with the pixels and"
                " ending on the engine it begins on"
            )

    @property
    def memory_depth(self) -> int:
        """Words of the activation memory: the furthest word a step reads or writes."""
        return activation_depth(self.steps)

    @property
    def segments(self) -> list[tuple[int, int, bool]]:
        """Every step's input segments in one table: (address, end, last of its step)."""
        return _segments(self.steps)


def boundary_depth(steps: tuple[Any, ...], split: int) -> int:
    """Words of the queue between two pipeline stages: two images of the boundary tensor, so
    the first stage can finish an image while the second still reads the one before."""
    return 2 * steps[split - 1].out_count


def stage_steps(steps: tuple[Any, ...], split: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The steps of the two pipeline stages as each stage's sequencer runs them: the first
    stage's last step writes its output stream (the boundary queue), the second's first step
    reads its input stream (the same queue)."""
    first = (*steps[: split - 1], replace(steps[split - 1], to_scores=True))
    second = (replace(steps[split], from_pixels=True, in_segments=()), *steps[split + 1 :])
    return first, second


def split_problem(steps: tuple[Any, ...], split: int) -> str | None:
    """Why ``steps`` (:class:`TopStep` or the compiler's steps) cannot run as two pipeline
    stages from step ``split`` on, or None when they can."""
    if not 0 < split < len(steps):
        return f"must be in 1..{len(steps) - 1}"
    first, second = steps[:split], steps[split:]
    shared = {s.engine for s in first} & {s.engine for s in second}
    if shared:
        return f"engine {sorted(shared)[0]} runs in both stages"
    last, head = steps[split - 1], steps[split]
    if last.to_scores or any(s.from_pixels for s in second):
        return "the second stage must read only what the first writes, not the net's input"
    if head.in_segments != ((last.out_address, last.out_count),):
        return "the second stage's first step must read exactly the first stage's last output"
    # The second stage's memory holds only what its own steps wrote: every later word it
    # reads must have been written there first.
    written: set[int] = set()
    for s in second:
        if s is not head and any(
            w not in written for a, c in s.in_segments for w in range(a, a + c)
        ):
            return "a step of the second stage reads a tensor of the first other than its output"
        if not s.to_scores:
            written.update(range(s.out_address, s.out_address + s.out_count))
    return None


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
    #: Between two images a stage's sequencer spends one cycle idle (it takes ``start``, or
    #: an image the first stage finished, in its IDLE state).
    IDLE_CYCLES = 1
    #: A step fed from the activation memory waits two more cycles for its first word: the
    #: synchronous read, then the input queue (a word leaves it the cycle after it enters).
    PREFETCH_CYCLES = 2
    #: With ``prefetch``: cycles from the launch of a stage's last step (the done of the step
    #: before it) to the earliest cycle its engine takes the next image's first start: the
    #: step's LAUNCH state, its RUN state showing ``ready`` (a ``start`` is taken then), the
    #: armed start offered to the engine.
    WRAP_TAKE_CYCLES = 3
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
                "ready": Out(1),
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

        busy = Signal()
        cycles = Signal(32)
        if p.split is None:
            seq = self._stage(m, p.steps, 0, engines, self.start, self.i_pixel, self.o_score, "")
            stages = [seq]
            m.d.comb += [self.step.eq(seq.step), self.done.eq(seq.done), self.ready.eq(seq.idle)]
        else:
            # Two stages joined by a queue that holds two images' worth of the boundary tensor,
            # so stage A can finish the next image while stage B still reads the last one.
            k = p.split
            m.submodules.boundary = fifo = StreamFIFO(
                signed(self.act_bits), boundary_depth(p.steps, k), registered=True
            )
            a_steps, b_steps = stage_steps(p.steps, k)
            a = self._stage(
                m, a_steps, 0, engines, self.start, self.i_pixel, fifo.w, "_a", p.prefetch
            )
            # Images stage A has finished that stage B has not yet begun (at most three: one
            # read by B's first step, two in the queue).
            pending = Signal(range(4))
            go_b = Signal()
            m.d.comb += go_b.eq((pending != 0) | a.done)
            b = self._stage(m, b_steps, k, engines, go_b, fifo.r, self.o_score, "_b")
            b_take = Signal()
            m.d.comb += b_take.eq(b.idle & go_b)
            m.d.sync += pending.eq(pending + a.done - b_take)
            stages = [a, b]
            m.d.comb += [
                self.step.eq(Mux(a.busy, a.step, b.step)),
                self.done.eq(b.done),
                self.ready.eq(a.ready),
            ]
        m.d.comb += [
            busy.eq(Cat(*(st.busy for st in stages)).any()),
            self.busy.eq(busy),
            self.cycles.eq(cycles),
        ]
        # Cycles of one inference when one image runs at a time: from a start taken while
        # nothing runs, every cycle something does.
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)
        with m.Elif(self.start):
            m.d.sync += cycles.eq(0)
        # Taps: one stage writes at a time when one image runs at a time (the bench reads them
        # only then).
        tap = stages[0]
        for st in stages[1:]:
            with m.If(~tap.tap_valid):
                m.d.comb += [self.tap.valid.eq(st.tap_valid), self.tap.data.eq(st.tap_data)]
        with m.If(tap.tap_valid):
            m.d.comb += [self.tap.valid.eq(1), self.tap.data.eq(tap.tap_data)]
        return m

    def _stage(
        self,
        m: Module,
        steps: tuple[TopStep, ...],
        base: int,
        engines: Mapping[str, Any],
        go: Signal,
        source: Any,
        sink: Any,
        suffix: str,
        prefetch: bool = False,
    ) -> _Stage:
        """The sequencer of ``steps`` (global indices from ``base``) with an activation memory of
        its own: it reads the words of a ``from_pixels`` step from ``source`` and sends those of
        a ``to_scores`` step to ``sink`` (both streams); ``go`` starts it from idle, and with
        ``prefetch`` also during its last step (the next image's first step is then started
        on its engine at once, and fed ``source`` while the last step finishes)."""
        p = self.params
        n_steps = len(steps)
        table = _segments(steps)
        mem = Memory(shape=signed(self.act_bits), depth=activation_depth(steps), init=[])
        m.submodules["activations" + suffix] = mem
        rd, wr = mem.read_port(), mem.write_port()

        addr = range(mem.depth + 1)
        step = Signal(range(max(n_steps, 2)), name="step" + suffix)
        seg = Signal(range(max(len(table), 2)), name="seg" + suffix)  # index into table
        rd_addr = Signal(addr, name="rd_addr" + suffix)
        wr_addr = Signal(addr, name="wr_addr" + suffix)
        more = Signal(name="more" + suffix)  # words are left to read
        launch = Signal(name="launch" + suffix)

        # Per-step constants: which engine, where its words come from and go, its cfg.
        cur_i_valid = Signal()
        cur_i_data = Signal(signed(self.act_bits))
        cur_i_ready = Signal()
        cur_o_valid = Signal()
        cur_o_data = Signal(signed(self.act_bits))
        cur_o_ready = Signal()
        cur_done = Signal()
        pixels = Signal()  # the step reads the source stream
        scores = Signal()  # the step writes the sink stream
        final = Signal()  # the stage's last step
        chained = Signal()  # the step's input came with the step before's outputs
        chain_next = Signal()  # the next step is chained to this one
        cur_busy = Signal()
        cur_start = Signal()
        # The chained next step's start was taken (the engine is loading its input or has it).
        pre_taken = Signal(name="pre_taken" + suffix)
        pre_launch = Signal(name="pre_launch" + suffix)
        # The next image's start taken during the last step (prefetch), its first step's start
        # offered to the engine, and the launch state of a step whose start was taken before.
        wrap_armed = Signal(name="wrap_armed" + suffix)
        wrap_launch = Signal(name="wrap_launch" + suffix)
        wrap_open = Signal(name="wrap_open" + suffix)
        prelaunched = Signal(name="prelaunched" + suffix)
        taken_now = Signal()
        first_seg = Signal.like(seg)
        out_address = Signal(addr)
        seg_index = 0
        with m.Switch(step):
            for index, s in enumerate(steps):
                eng = engines[s.engine]
                with m.Case(index):
                    m.d.comb += [
                        pixels.eq(s.from_pixels),
                        scores.eq(s.to_scores),
                        first_seg.eq(seg_index if s.in_segments else 0),
                        out_address.eq(s.out_address if not s.to_scores else 0),
                        final.eq(index == n_steps - 1),
                        chained.eq(s.chained),
                        chain_next.eq(index + 1 < n_steps and steps[index + 1].chained),
                        cur_busy.eq(eng.busy),
                        eng.i_act.valid.eq(cur_i_valid),
                        eng.i_act.payload.eq(cur_i_data),
                        cur_i_ready.eq(eng.i_act.ready),
                        cur_o_valid.eq(eng.o_act.valid),
                        cur_o_data.eq(eng.o_act.payload),
                        eng.o_act.ready.eq(cur_o_ready),
                        cur_done.eq(eng.done),
                        eng.start.eq(cur_start),
                    ]
                seg_index += len(s.in_segments)
        # Each engine sees the cfg of whichever of its steps runs now (held for the whole step),
        # or of the chained step the sequencer starts during the one before (an engine samples
        # its cfg when it takes a start).
        cfg_step = Signal.like(step, name="cfg_step" + suffix)
        m.d.comb += cfg_step.eq(Mux(pre_launch, step + 1, Mux(wrap_launch, 0, step)))
        for name in {s.engine for s in steps}:
            eng = engines[name]
            with m.Switch(cfg_step):
                for index, s in enumerate(steps):
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

        running = Signal(name="running" + suffix)
        m.d.comb += [rd.addr.eq(rd_addr), more.eq(rd_addr < seg_end)]
        # Words read from the memory go through a queue to the engine. A read issues while the
        # queue has room for it and for the read in flight, so the memory's read enable and
        # address never depend on the engine's ready (nor on the word just read), and the
        # memory's output goes into the queue with no logic in between.
        in_queue = StreamFIFO(signed(self.act_bits), self.INPUT_QUEUE_DEPTH)
        m.submodules["in_queue" + suffix] = in_queue
        in_flight = Signal()
        read = Signal()
        m.d.comb += [
            read.eq(
                running
                & ~pixels
                & ~chained
                & more
                & (in_queue.level + in_flight < self.INPUT_QUEUE_DEPTH)
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
        # A chained next step: started as soon as the engine takes it (when this step's input is
        # in), then fed this step's outputs as they leave.
        m.d.comb += [
            pre_launch.eq(running & chain_next & ~pre_taken),
            wrap_launch.eq(running & final & wrap_armed & ~pre_taken),
            cur_start.eq((launch & ~chained & ~prelaunched) | pre_launch | wrap_launch),
            taken_now.eq((pre_launch | wrap_launch) & ~cur_busy),
        ]
        if prefetch:
            # Not in the done cycle, when the stage goes idle instead (and takes it from there).
            m.d.comb += wrap_open.eq(running & final & ~wrap_armed & ~cur_done)
            with m.If(wrap_open & go):
                m.d.sync += wrap_armed.eq(1)
        with m.If(taken_now):
            m.d.sync += pre_taken.eq(1)
        with m.If(launch):
            m.d.sync += pre_taken.eq(0)
        with m.If(running & pre_taken & chain_next):
            m.d.comb += [cur_i_valid.eq(cur_o_valid), cur_i_data.eq(cur_o_data)]
        with m.Elif(running & ((pixels & ~pre_taken) | (pre_taken & final))):
            # The step's own pixels, or (prefetch) the next image's once its start is taken.
            m.d.comb += [
                cur_i_valid.eq(source.valid),
                cur_i_data.eq(source.payload),
                source.ready.eq(cur_i_ready),
            ]
        with m.Elif(running):
            m.d.comb += [
                cur_i_valid.eq(in_queue.r.valid),
                cur_i_data.eq(in_queue.r.payload),
                in_queue.r.ready.eq(cur_i_ready),
            ]

        # Sink of the step's output: the memory, or the sink stream.
        with m.If(running & scores):
            m.d.comb += [
                sink.valid.eq(cur_o_valid),
                sink.payload.eq(cur_o_data),
                cur_o_ready.eq(sink.ready),
            ]
        with m.Elif(running):
            # Into the memory; also into the engine's free bank when the next step is chained,
            # at the pace its loader takes them.
            m.d.comb += [
                cur_o_ready.eq(Mux(chain_next, pre_taken & cur_i_ready, 1)),
                wr.addr.eq(wr_addr),
                wr.data.eq(cur_o_data),
                wr.en.eq(cur_o_valid & cur_o_ready),
            ]
            with m.If(cur_o_valid & cur_o_ready):
                m.d.sync += wr_addr.eq(wr_addr + 1)

        st = _Stage(
            ready=Signal(name="ready" + suffix),
            idle=Signal(name="idle" + suffix),
            busy=Signal(name="busy" + suffix),
            done=Signal(name="done" + suffix),
            step=Signal(range(max(len(p.steps), 2)), name="global_step" + suffix),
            tap_valid=Signal(name="tap_valid" + suffix),
            tap_data=Signal(signed(self.act_bits), name="tap_data" + suffix),
        )
        m.d.comb += [
            st.step.eq(step + base),
            st.tap_valid.eq(running & cur_o_valid & cur_o_ready),
            st.tap_data.eq(cur_o_data),
            st.ready.eq(st.idle | wrap_open),
        ]
        with m.FSM(name="seq" + suffix):
            with m.State("IDLE"):
                m.d.comb += st.idle.eq(1)
                with m.If(go):
                    m.d.sync += [step.eq(0), prelaunched.eq(0)]
                    m.next = "LAUNCH"
            with m.State("LAUNCH"):
                m.d.comb += [launch.eq(1), st.busy.eq(1)]
                m.d.sync += [
                    seg.eq(first_seg),
                    rd_addr.eq(launch_start),
                    wr_addr.eq(out_address),
                ]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [running.eq(1), st.busy.eq(1)]
                with m.If(cur_done):
                    # A step whose start the engine took during this one launches nothing.
                    m.d.sync += prelaunched.eq(pre_taken | taken_now)
                    with m.If(final):
                        m.d.comb += st.done.eq(1)
                        with m.If(wrap_armed):
                            m.d.sync += [step.eq(0), wrap_armed.eq(0)]
                            m.next = "LAUNCH"
                        with m.Else():
                            m.next = "IDLE"
                    with m.Else():
                        m.d.sync += step.eq(step + 1)
                        m.next = "LAUNCH"
        return st


@dataclass(frozen=True, eq=False)
class _Stage:
    """The signals a stage's sequencer gives the top level."""

    ready: Signal  # a ``go`` now is taken (idle, or, with prefetch, in its last step)
    idle: Signal  # a ``go`` now starts it
    busy: Signal
    done: Signal  # pulse: its last step finished
    step: Signal  # the global index of the step it runs
    tap_valid: Signal
    tap_data: Signal


def _segments(steps: Iterable[TopStep]) -> list[tuple[int, int, bool]]:
    """Every step's input segments in one table: (address, end, last of its step)."""
    table = []
    for s in steps:
        for j, (a, c) in enumerate(s.in_segments):
            table.append((a, a + c, j == len(s.in_segments) - 1))
    return table
