"""What every engine shares: the ports the whole-net sequencer drives, and a constructor helper.

An engine is configured per layer through ``cfg`` (sampled at ``start``), takes the layer's input
on the ``i_act`` stream in canonical order, gives its output on ``o_act``, and pulses ``done``
after the last output was taken; ``load`` writes its memories when a test or a host (rather
than the initial contents) provides the weights.
"""

from __future__ import annotations

from amaranth.hdl import ShapeLike, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["check_int", "discard", "engine_members"]


def engine_members(cfg: ShapeLike, act_bits: int, load: wiring.Signature) -> dict:
    """The signature members of an engine with run-time configuration ``cfg``."""
    return {
        "cfg": In(cfg),
        "start": In(1),
        "busy": Out(1),
        "done": Out(1),
        "i_act": In(stream.Signature(signed(act_bits))),
        "o_act": Out(stream.Signature(signed(act_bits))),
        "load": In(load),
    }


def discard(elaboratable: object) -> None:
    """Mark a block whose ``__init__`` rejected its parameters as intentionally unused.

    Amaranth warns about every elaboratable that is created and never elaborated, and the object
    exists before ``__init__`` checks anything; a rejected one must not add that warning to the
    error the user sees.
    """
    elaboratable._MustUse__silence = True  # the flag amaranth's MustUse.__del__ reads


def check_int(value: object, what: str, lo: int, hi: int | None = None) -> int:
    """``value`` if it is an integer in ``lo..hi`` (no upper bound when ``hi`` is None).

    Raises
    ------
    TypeError
        When ``value`` is not an integer (a bool is not one either).
    ValueError
        When it lies outside the range; the message names ``what``, the range and the value.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{what} must be {span}, not {value}")
    return value
