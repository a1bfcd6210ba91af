"""``squeezeforge sweep``: a design-space sweep on Dask (what ``make sweep`` runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..codegen.sweep import PROBE_SECONDS, connect, load_spec, run_sweep
from ..sim.ir import check_writable
from ._output import emit_json
from .errors import UserError

DESCRIPTION = f"""\
Sweep compression recipes and hardware sizes and report the Pareto front of the spec's
objectives (e.g. accuracy, images/s, LUTs) for a part.

SPEC is a sweep spec TOML file or a shipped spec's name (digits-cnn). It names the model and
data, the axes (recipe = [...], recipe parameters as "<pass>.<key>" such as "inq.bits",
Target knobs target, conv_array, fc_pes, fifo_depth, index_bits), the sampling (grid,
random, nsga2) and the objectives; see docs/sweep.md.

Stages, each a Dask task keyed by its content: train (once), compress (once per recipe
variant, shared by its hardware points), estimate (every point: reference accuracy, Cr,
cycle-model cycles, resource-model LUT/FF/DSP/BRAM, fit against the part, images/s at the
Target's clock goal: estimated figures), verify (a few points of the front: Verilator
bit-exact on N images with measured cycles, Yosys resources, nextpnr Fmax).

Writes into OUT: results.csv (every point, one row), report.md, pareto.png, pareto_cr.png,
points/*.json (each written as it arrives), nets/, builds/ (verified points). Running the
same spec into the same OUT again resumes: finished points are not recomputed. A point that
does not fit or whose tool fails is a row with its reason.

Without --scheduler the sweep starts a local cluster, one worker process per core. With
--scheduler tcp://HOST:8786 it runs on an existing cluster (`dask scheduler`, then
`dask worker tcp://HOST:8786` on each machine, squeezeforge installed there); a scheduler
that does not answer within {PROBE_SECONDS:.0f} s is an error.

example:
  squeezeforge sweep digits-cnn -o runs/sweep
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="sweep recipes and hardware sizes on Dask; report the Pareto front",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", metavar="SPEC", help="sweep spec TOML file or shipped name")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of an existing Dask scheduler (tcp://host:8786); default: a local cluster",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes of the local cluster (default: one per core)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--json", action="store_true", help="print the rows and files as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.scheduler is not None:
        raise UserError("--workers is for the local cluster; an existing one has its own")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: give at least one worker")
    # Everything the sweep needs is checked before the cluster starts.
    spec = load_spec(args.spec)
    check_writable(args.output, folder=True)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    with connect(args.scheduler, args.workers) as client:
        result = run_sweep(spec, args.output, client, quiet=args.quiet, log=log)
    if args.json:
        emit_json(result.to_dict())
    else:
        print(Path(result.files["report"]).read_text())
        print(f"outputs: {', '.join(result.files.values())}")
    return 0
