"""``squeezeforge resources``: LUT, FF, DSP and BRAM of a build, per engine and in total."""

from __future__ import annotations

import argparse

from ..codegen.build import BuildError
from ..codegen.report_resources import build_resources
from ..codegen.resources import TARGETS, SynthesisError
from ._output import emit_json, markdown_table
from .errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "resources",
        help="synthesize a build with Yosys: LUT, FF, DSP, BRAM per engine and total",
        description="Synthesize each engine of a build and the whole top with Yosys (YoWASP)"
        " for an FPGA family and count LUTs, flip-flops, DSP blocks and block RAMs. With"
        " --fmax, also place and route the top with nextpnr (ice40, ecp5) for its Fmax and"
        " the blocks its critical path runs through.",
    )
    p.add_argument("build", help="a build folder made by `squeezeforge generate`")
    p.add_argument(
        "--target",
        help=f"FPGA family, one of: {', '.join(TARGETS)} (default: the family of the Target the"
        " build was generated for; with a budget, utilization is reported too)",
    )
    p.add_argument("--fmax", action="store_true", help="also place and route for Fmax")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.target is not None and args.target not in TARGETS:
        raise UserError(f"unknown target {args.target!r}; valid targets: {', '.join(TARGETS)}")
    try:
        report = build_resources(args.build, args.target, with_fmax=args.fmax)
    except (BuildError, SynthesisError) as exc:
        raise UserError(str(exc)) from None
    if args.json:
        emit_json(report)
        return 0
    rows = [
        [name, r["lut"], r["ff"], r["dsp"], r["bram"]]
        for name, r in [*report["engines"].items(), ("total", report["total"])]
    ]
    if "utilization" in report:
        u = report["utilization"]
        rows.append(
            [f"share of {report['part']}"]
            + [f"{100 * u[k]:.1f}%" for k in ("lut", "ff", "dsp", "bram")]
        )
    print(markdown_table(["block", "LUT", "FF", "DSP", "BRAM"], rows))
    if report["total"].get("fmax_mhz"):
        print(f"\nFmax: {report['total']['fmax_mhz']:.1f} MHz")
        path = report["total"].get("critical_path")
        if path:
            print(f"critical path: {path['summary']}")
    return 0
