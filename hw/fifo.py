"""A synchronous FIFO with stream interfaces, for queues whose timing a cycle model relies on."""

from __future__ import annotations

from amaranth.hdl import Module, Shape, ShapeCastable
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

    Parameters
    ----------
    payload_shape : ShapeLike
        Shape of one payload (e.g. a ``data.StructLayout``).
    depth : int
        Number of payloads held, at least 1.

    Members
    -------
    w : ``In(stream.Signature(payload_shape))``
        Write side.
    r : ``Out(stream.Signature(payload_shape))``
        Read side; ``r.payload`` is valid while ``r.valid``.
    level : ``Out(range(depth + 1))``
        Payloads held.
    """

    def __init__(self, payload_shape: ShapeCastable | Shape, depth: int) -> None:
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            # A rejected component is never elaborated; keep Amaranth from warning about it.
            self._MustUse__silence = True
            raise ValueError(f"FIFO depth must be an integer >= 1, not {depth!r}")
        self._payload_shape = payload_shape
        self._depth = depth
        super().__init__(
            {
                "w": In(stream.Signature(payload_shape)),
                "r": Out(stream.Signature(payload_shape)),
                "level": Out(range(depth + 1)),
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
            self.r.payload.eq(queue.r_data),
            self.r.valid.eq(queue.r_rdy),
            queue.r_en.eq(self.r.ready),
            self.level.eq(queue.level),
        ]
        return m
