"""A synchronous FIFO with stream interfaces, for queues whose timing a cycle model relies on."""

from __future__ import annotations

from amaranth.hdl import Module, Shape, ShapeCastable, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

__all__ = ["StreamFIFO"]


class StreamFIFO(wiring.Component):
    """First in, first out queue between two streams, ``depth`` payloads deep.

    Timing is that of :class:`amaranth.lib.fifo.SyncFIFO`, which cycle models depend on: a payload
    written in cycle ``t`` can be read from cycle ``t + 1``; ``w.ready`` is ``level != depth`` and
    does not see a read in the same cycle (no combinational path from the read side to the write
    side), so a full queue accepts again one cycle after a read.

    ::

        clk      __/‾‾\\__/‾‾\\__/‾‾\\__/‾‾\\__
        w.valid  ‾‾‾‾‾‾‾‾\\_______________
        r.valid  ________/‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾   (level 1 from the cycle after the write)

    With ``registered``, ``r.payload`` comes from a register (the timing of
    :class:`~amaranth.lib.fifo.SyncFIFOBuffered`): what
    reads it starts a clock period of its own instead of following the queue memory's read
    multiplexer, at the price of one more cycle from write to read. The queue memory holds
    ``depth`` payloads and the output register one more; ``w.ready`` is ``True`` while the queue
    memory has room, and a payload written in cycle ``t`` moves into the output register in
    ``t + 1`` at the earliest (when the register is empty or read in that cycle) and is readable
    from the cycle after that::

        clk      __/‾‾\\__/‾‾\\__/‾‾\\__/‾‾\\__
        w.valid  ‾‾‾‾‾‾‾‾\\_______________
        r.valid  ________________/‾‾‾‾‾‾‾‾   (registered: two cycles after the write)

    Parameters
    ----------
    payload_shape : ShapeLike
        Shape of one payload (e.g. a ``data.StructLayout``).
    depth : int
        Number of payloads held (in the queue memory when ``registered``), at least 1.
    registered : bool
        Read from an output register.

    Members
    -------
    w : ``In(stream.Signature(payload_shape))``
        Write side.
    r : ``Out(stream.Signature(payload_shape))``
        Read side; ``r.payload`` is valid while ``r.valid``.
    level : ``Out(range(depth + 2))`` (``range(depth + 1)`` unless registered)
        Payloads held, the output register's included.
    """

    def __init__(
        self, payload_shape: ShapeCastable | Shape, depth: int, *, registered: bool = False
    ) -> None:
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            # A rejected component is never elaborated; keep Amaranth from warning about it.
            self._MustUse__silence = True
            raise ValueError(f"FIFO depth must be an integer >= 1, not {depth!r}")
        self._payload_shape = payload_shape
        self._depth = depth
        self._registered = registered
        capacity = depth + 1 if registered else depth
        super().__init__(
            {
                "w": In(stream.Signature(payload_shape)),
                "r": Out(stream.Signature(payload_shape)),
                "level": Out(range(capacity + 1)),
            }
        )

    @property
    def depth(self) -> int:
        return self._depth

    def elaborate(self, platform) -> Module:
        m = Module()
        width = Shape.cast(self._payload_shape).width
        m.submodules.queue = queue = SyncFIFO(width=width, depth=self._depth)
        m.d.comb += [
            queue.w_data.eq(self.w.payload),
            queue.w_en.eq(self.w.valid),
            self.w.ready.eq(queue.w_rdy),
        ]
        if not self._registered:
            m.d.comb += [
                self.r.payload.eq(queue.r_data),
                self.r.valid.eq(queue.r_rdy),
                queue.r_en.eq(self.r.ready),
                self.level.eq(queue.level),
            ]
            return m
        # SyncFIFOBuffered has this timing, but its queue memory is read synchronously, which
        # Yosys maps to a block RAM on iCE40 (two per PE queue of the sparse FC unit); an
        # asynchronously read queue followed by the register stays in logic or LUT RAM.
        r_valid = Signal()
        r_data = Signal(width)
        take = Signal()
        m.d.comb += [
            take.eq(queue.r_rdy & (~r_valid | self.r.ready)),
            queue.r_en.eq(take),
            self.r.valid.eq(r_valid),
            self.r.payload.eq(r_data),
            self.level.eq(queue.level + r_valid),
        ]
        with m.If(take):
            m.d.sync += [r_data.eq(queue.r_data), r_valid.eq(1)]
        with m.Elif(self.r.ready):
            m.d.sync += r_valid.eq(0)
        return m
