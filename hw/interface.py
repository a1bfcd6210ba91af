"""What every engine shares: the ports the whole-net sequencer drives, and a constructor helper.

An engine is configured per layer through ``cfg`` (sampled at ``start``), takes the layer's input
on the ``i_act`` stream in canonical order, gives its output on ``o_act``, and pulses ``done``
after the last output was taken; ``load`` writes its memories when a test or a host (rather
than the initial contents) provides the weights.
"""

from __future__ import annotations

from collections.abc import Mapping

from amaranth.hdl import ShapeLike, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.errors import SqueezeforgeError
from ..sim.numerics import MAX_SHIFT

__all__ = ["SHIFT_BITS", "LayerFitError", "check_int", "discard", "engine_members", "pack_cfg"]

#: Width of every engine's cfg requantization shift: it holds the contract's largest shift.
SHIFT_BITS = MAX_SHIFT.bit_length()


class LayerFitError(SqueezeforgeError, ValueError):
    """A layer the engine's parameters cannot run; the message names the layer and the field."""

    def __init__(self, layer: str, field_name: str, message: str) -> None:
        self.layer = layer
        self.field = field_name
        super().__init__(f"layer {layer!r}, field {field_name!r}: {message}")


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


def pack_cfg(layout: data.StructLayout, values: Mapping[str, int]) -> int:
    """The ``cfg`` port as one integer (what a Verilog bench drives), from field values.

    Raises
    ------
    ValueError
        When a field's value does not fit its width: a bench must not drive a truncated cfg.
    """
    word = 0
    for name, field in layout:
        value = int(values[name])
        width = field.width
        if not 0 <= value < 1 << width:
            raise ValueError(f"cfg field {name!r} = {value} does not fit {width} bits")
        word |= value << field.offset
    return word
