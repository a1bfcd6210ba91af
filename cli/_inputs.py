"""A user's own inputs from a .npy file, for ``reference`` and ``simulate``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..sim.ir import Net, atomic_write_bytes
from ..sim.reference import net_inputs
from .errors import UserError

__all__ = ["INPUTS_HELP", "load_inputs", "save_outputs"]

INPUTS_HELP = (
    "a .npy file of inputs (N, *input_shape): floats are quantized to the net's input format,"
    " integers are taken as already in it (and must be in its range)"
)


def load_inputs(path: str, net: Net) -> np.ndarray:
    """The inputs in ``path`` as the integers the net takes; every problem is one line."""
    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read a .npy array: {exc}") from None
    if not isinstance(raw, np.ndarray):
        # np.load gives an NpzFile for an .npz archive.
        raise UserError(f"{path}: expected one .npy array, not an .npz archive")
    return net_inputs(net, raw, what=str(path))


def save_outputs(path: str, outputs: np.ndarray) -> None:
    """Write ``outputs`` as .npy, replacing ``path`` atomically."""
    buf = io.BytesIO()
    np.save(buf, outputs, allow_pickle=False)
    atomic_write_bytes(Path(path), buf.getvalue())
