"""A generated accelerator: simulate a user's own inputs on Verilator, report its resources."""

from __future__ import annotations

import shutil
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from squeezeforge.sim.manifest import Manifest
from squeezeforge.sim.netsim import SimulationError

from ._net import CompressedNet

__all__ = ["Accelerator", "SimulationResult"]


@dataclass(frozen=True, repr=False)
class SimulationResult:
    """What :meth:`Accelerator.simulate` returns.

    Attributes
    ----------
    outputs, ints
        The RTL's outputs as real values and as integers, (N, *output_shape).
    reference, reference_ints
        The bit-accurate reference's outputs for the same inputs.
    bit_exact
        True when every RTL output equals the reference's (``==`` on the integers).
    cycles_per_inference
        Measured on Verilator, the mean over the inputs run one at a time.
    interval
        For a pipelined build (a Target with ``pipeline``): the mean cycles between the
        outputs of consecutive inputs fed back to back (those outputs are compared too);
        None for a build that runs one input at a time.
    first_mismatch
        Where the first difference is (input, output, first layer that departed), or None.
    report
        The whole simulation report (per-step cycles beside the estimates, the log).
    """

    outputs: np.ndarray
    ints: np.ndarray
    reference: np.ndarray
    reference_ints: np.ndarray
    bit_exact: bool
    cycles_per_inference: float
    first_mismatch: dict | None
    report: dict
    interval: float | None = None

    def __repr__(self) -> str:
        verdict = "bit-exact" if self.bit_exact else f"MISMATCH at {self.first_mismatch}"
        interval = "" if self.interval is None else f", interval {self.interval:.1f}"
        return (
            f"SimulationResult({len(self.ints)} inputs, {verdict},"
            f" {self.cycles_per_inference:.1f} cycles per inference{interval})"
        )


class Accelerator:
    """A build folder made by :func:`squeezeforge.generate` for a net.

    When the build went to a temporary folder, this object owns it: the folder (and its cached
    Verilator build) lives as long as the object does.

    Attributes
    ----------
    net
        The :class:`CompressedNet` it runs.
    build_dir
        The build folder (Verilog, memories, manifest).
    manifest
        The build's :class:`squeezeforge.sim.manifest.Manifest`.
    """

    def __init__(
        self,
        net: CompressedNet,
        build_dir: Path,
        manifest: Manifest,
        owned: Path | None = None,
    ) -> None:
        self.net = net
        self.build_dir = build_dir
        self.manifest = manifest
        # A finalizer rather than a TemporaryDirectory: that one warns (ResourceWarning) when
        # left to the garbage collector, which is exactly how a notebook lets go of it.
        self._cleanup = (
            weakref.finalize(self, shutil.rmtree, owned, ignore_errors=True) if owned else None
        )

    def close(self) -> None:
        """Remove the temporary build folder now (nothing when the build went to ``out``)."""
        if self._cleanup is not None:
            self._cleanup()

    def simulate(self, x: Any, *, waves: bool = False) -> SimulationResult:
        """Push the inputs ``x`` (N, *input_shape), or one input, through the Verilog.

        Floats are quantized to the net's input format; integers are taken as already in it
        (checked in range). Every RTL output is compared with the reference model's.
        """
        from squeezeforge.sim.netsim import simulate

        ints_in = self.net.quantize(x)
        report = simulate(self.build_dir, inputs=ints_in, waves=waves)
        out_shape = self.net.ir.shapes()[-1]
        n = len(ints_in)
        counts = [len(o) for o in report["outputs"]]
        want = int(np.prod(out_shape))
        if any(c != want for c in counts):
            bad = next(i for i, c in enumerate(counts) if c != want)
            raise SimulationError(
                f"the design gave {counts[bad]} outputs for input {bad}, the net has {want}"
                f" (first mismatch: {report['first_mismatch']})"
            )
        rtl = np.asarray(report["outputs"], dtype=np.int64).reshape(n, *out_shape)
        ref = np.asarray(report["expected_outputs"], dtype=np.int64).reshape(n, *out_shape)
        scale = 2.0**-self.net.ir.output_format.frac
        return SimulationResult(
            outputs=rtl * scale,
            ints=rtl,
            reference=ref * scale,
            reference_ints=ref,
            bit_exact=report["bit_exact"] == n
            and bool(np.array_equal(rtl, ref))
            and report.get("streamed_bit_exact", n) == n,
            cycles_per_inference=report["cycles_per_inference"],
            first_mismatch=report["first_mismatch"],
            report=report,
            interval=report.get("interval"),
        )

    def resources(self, family: str | None = None, fmax: bool = False) -> dict:
        """LUT, FF, DSP and BRAM per engine and in total from Yosys, on ``family`` (the build's
        Target's when None); ``fmax`` also places and routes with nextpnr (ice40, ecp5)."""
        from squeezeforge.codegen.report_resources import build_resources

        return build_resources(self.build_dir, family, with_fmax=fmax)

    def __repr__(self) -> str:
        target = (self.manifest.target or {}).get("name", "?")
        engines = "+".join(e.name for e in self.manifest.engines)
        m = self.manifest
        interval = f" (interval {m.interval_estimated})" if m.interval_estimated else ""
        return (
            f"Accelerator({m.net!r}, target {target!r}, engines {engines},"
            f" {m.cycles_estimated} cycles estimated{interval}, build {str(self.build_dir)!r})"
        )
