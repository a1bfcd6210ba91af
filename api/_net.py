"""The compressed net as a notebook uses it: predict on floats, save, a short repr."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from squeezeforge.sim import ir
from squeezeforge.sim.reference import net_inputs, run_net
from squeezeforge.sim.target import Target

__all__ = ["CompressedNet", "Prediction", "load_net"]


def _short_array(a: np.ndarray) -> str:
    return f"array{tuple(a.shape)}"


@dataclass(frozen=True, repr=False)
class Prediction:
    """What :meth:`CompressedNet.predict` returns.

    Attributes
    ----------
    outputs
        The outputs as real values (``ints * 2**-frac`` of the net's output format), float64.
    ints
        The integer outputs of the bit-accurate reference, int64, shape (N, *output_shape).
    frac
        The output format's fraction length.
    """

    outputs: np.ndarray
    ints: np.ndarray
    frac: int

    @property
    def classes(self) -> np.ndarray:
        """The predicted class of each input: the first maximum of its outputs."""
        return np.argmax(self.ints.reshape(len(self.ints), -1), axis=1)

    def __repr__(self) -> str:
        return f"Prediction({len(self.ints)} inputs, outputs {_short_array(self.outputs)})"


class CompressedNet:
    """A compressed net: the IR (:attr:`ir`), the compression report and the reference model.

    Made by :func:`squeezeforge.compress` or :func:`squeezeforge.load_net`.

    Attributes
    ----------
    ir
        The :class:`squeezeforge.sim.ir.Net` the hardware is generated from.
    report
        The compression report (accuracy, per-layer costs, compression ratio), or None for a
        net loaded from a file (the file holds the net, not the report).
    target
        The :class:`Target` the net was compressed for (None: the default), used by
        :func:`squeezeforge.generate` when it is given none.
    """

    def __init__(
        self, net: ir.Net, report: dict[str, Any] | None = None, target: Target | None = None
    ) -> None:
        self.ir = net
        self.report = report
        self.target = target

    @property
    def name(self) -> str:
        return self.ir.name

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.ir.input_shape

    def quantize(self, x: Any) -> np.ndarray:
        """Float inputs as the integers the net takes (integers are checked and passed)."""
        return net_inputs(self.ir, x)

    def predict(self, x: Any) -> Prediction:
        """Run the bit-accurate reference on ``x`` (N, *input_shape), or one input.

        Floats are quantized to the net's input format (round half up, saturate); integers are
        taken as already in it and must be in its range.
        """
        ints = run_net(self.ir, self.quantize(x))
        frac = self.ir.output_format.frac
        return Prediction(outputs=ints * 2.0**-frac, ints=ints, frac=frac)

    def save(self, path: str | os.PathLike) -> None:
        """Write the net as a ``.sfnet`` file (atomically; the same net gives the same bytes)."""
        ir.save_net(self.ir, path)

    def __repr__(self) -> str:
        parts = [repr(self.name), f"{len(self.ir.layers)} layers"]
        parts.append("input " + "x".join(map(str, self.input_shape)))
        parts.append(f"{ir.format_summary(self.ir.input_format)}")
        if self.report:
            parts.append(f"Cr {self.report['compression_ratio']:.1f}x")
            if self.report.get("accuracy"):
                parts.append(f"accuracy {100 * self.report['accuracy']['reference']:.1f}%")
            elif self.report.get("error"):
                parts.append(f"MSE {self.report['error']['reference']['mse']:.3g}")
        return f"CompressedNet({', '.join(parts)})"


def load_net(path: str | os.PathLike) -> CompressedNet:
    """A ``.sfnet`` file as a :class:`CompressedNet` (its ``report`` is None)."""
    return CompressedNet(ir.load_net(path))
