"""``squeezeforge flow``: the embedded default end to end (what ``make flow`` runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..codegen.flow import FlowConfig, default_out_dir, run_flow
from ..codegen.resources import TARGETS
from ..models.nets import MODELS
from ..sim.ir import check_writable
from ._output import emit_json
from .errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flow",
        help="train, compress, generate, simulate and synthesize the digits CNN end to end",
        description="The whole job on the embedded digits data set: train the CNN (or reuse"
        " the checkpoint), compress it with each recipe, generate the accelerator, simulate"
        " test images on Verilator bit for bit against the reference, synthesize with Yosys,"
        " and write report.md, report.json and PNG plots. Every step saves its result; a flow"
        " that was interrupted resumes at the first unfinished step.",
    )
    p.add_argument("-o", "--output", default=default_out_dir(), help="output folder")
    p.add_argument(
        "--model",
        default="cnn",
        choices=sorted(MODELS),
        help="built-in network: cnn (LeNet-5 style), mlp, mobile (depthwise-separable convs and"
        " global average pooling); default cnn",
    )
    p.add_argument("--recipes", default="inq5,deep-compression", help="comma-separated")
    p.add_argument("--images", type=int, default=100, help="test images to simulate")
    p.add_argument(
        "--targets",
        default=",".join(FlowConfig.targets),
        help=f"comma-separated FPGA families among {', '.join(TARGETS)}"
        f" (default: {', '.join(FlowConfig.targets)})",
    )
    p.add_argument(
        "--fmax",
        action="store_true",
        help="also place and route (ice40, ecp5) for Fmax; adds minutes per build",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--json", action="store_true", help="print report.json's content")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    targets = tuple(t for t in args.targets.split(",") if t)
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        raise UserError(f"unknown target {bad[0]!r}; valid targets: {', '.join(TARGETS)}")
    check_writable(args.output, folder=True)
    if not 1 <= args.images <= 360:
        raise UserError(f"--images {args.images}: the digits test split holds 360 images")
    recipes = tuple(r for r in args.recipes.split(",") if r)
    from ..models.compress import shipped_recipes

    known = shipped_recipes()
    for r in recipes:
        if r not in known and not Path(r).is_file():
            raise UserError(f"unknown recipe {r!r}; shipped recipes: {', '.join(known)}")
    cfg = FlowConfig(
        out_dir=args.output,
        model=args.model,
        seed=args.seed,
        recipes=recipes,
        images=args.images,
        targets=targets,
        fmax=args.fmax,
    )
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    report = run_flow(cfg, log=log, quiet=args.quiet)
    if args.json:
        emit_json(report)
    else:
        out = Path(args.output)
        print((out / "report.md").read_text())
        print(f"outputs: {out / 'report.md'}, {out / 'report.json'}, plots in {out}/")
    exact = all(s["bit_exact"] == s["images"] for s in report["simulate"].values())
    return 0 if exact else 1
