"""``squeezeforge simulate``: run a build on Verilator, bit for bit against the reference."""

from __future__ import annotations

import argparse

import numpy as np

from ..codegen.build import BuildError, read_manifest
from ..sim.ir import check_writable, load_net
from ..sim.metrics import describe
from ..sim.netsim import SimulationError, layer_cycles, simulate
from ._inputs import INPUTS_HELP, load_inputs, save_outputs
from ._output import emit_json, markdown_table
from .errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a build on Verilator and compare with the reference, bit for bit",
        description="Build the generated top.v with Verilator (cached in BUILD/sim_build) and"
        " push the net's first N test images, or your own --inputs, through it with a cocotb"
        " bench. Every output is compared with the bit-accurate reference model; any difference"
        " exits with status 1 and names the first mismatching image, output and layer. Reports"
        " measured cycles per inference and per layer beside the estimates, and the RTL"
        " accuracy (test images only: your own inputs carry no labels).",
    )
    p.add_argument("build", help="a build folder made by `squeezeforge generate`")
    p.add_argument("--images", type=int, default=10, help="test images to run (default 10)")
    p.add_argument(
        "--inputs",
        metavar="FILE.npy",
        help=INPUTS_HELP + "; run these instead of the stored test images, against the"
        " reference model's outputs",
    )
    p.add_argument(
        "--outputs",
        metavar="OUT.npy",
        help="write the RTL's integer outputs (N, outputs) to OUT.npy (value times 2**frac of"
        " the net's output format)",
    )
    p.add_argument(
        "--waves",
        action="store_true",
        help="record a waveform: FST where Verilator finds the lz4 headers"
        " (apt-get install liblz4-dev), VCD otherwise",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Verilator's build and the bench's case files go into the build folder.
    read_manifest(args.build)
    check_writable(args.build, folder=True)
    if args.outputs:
        check_writable(args.outputs)
    inputs = None
    if args.inputs:
        # The net inside the build says what the inputs must be; read_manifest checked it.
        inputs = load_inputs(args.inputs, load_net(f"{args.build}/net.sfnet"))
    try:
        report = simulate(args.build, args.images, waves=args.waves, inputs=inputs)
    except (BuildError, SimulationError) as exc:
        raise UserError(str(exc)) from None
    if args.outputs:
        counts = {len(o) for o in report["outputs"]}
        if len(counts) != 1:
            raise UserError(f"the design gave differing numbers of outputs per input: {counts}")
        save_outputs(args.outputs, np.asarray(report["outputs"], dtype=np.int64))
    if args.json:
        emit_json(report)
    else:
        print_report(report)
    # golden_consistent is None for the user's own inputs: no stored outputs to agree with.
    ok = (
        report["bit_exact"] == report["images"]
        and report["golden_consistent"] is not False
        and report.get("streamed_bit_exact", report["images"]) == report["images"]
    )
    return 0 if ok else 1


def print_report(report: dict) -> None:
    rows = [
        [s["label"], s["engine"], f"{s['cycles_measured']:.1f}", s["cycles_estimated"]]
        for s in layer_cycles(report["steps"])
    ]
    t = report.get("target")
    if t:
        print(
            f"target {t['name']}: conv {t['conv_rows']}x{t['conv_cols']}, {t['fc_pes']} FC PEs,"
            f" FIFO {t['fifo_depth']}, {t['index_bits']}-bit index"
            + (", conv input double-buffered" if t.get("double_buffer") else "")
            + "\n"
        )
    print(markdown_table(["layers", "engine", "cycles measured", "cycles estimated"], rows))
    print(
        f"\nbit-exact {'inputs' if report.get('inputs') == 'own' else 'images'}:"
        f" {report['bit_exact']}/{report['images']}"
        f"\ncycles per inference: {report['cycles_per_inference']:.1f}"
        f" (estimated {report['cycles_estimated']})"
    )
    if report.get("pipelined"):
        print(
            f"images back to back: {report['streamed_bit_exact']}/{report['images']} bit-exact,"
            f" interval {report['interval']:.1f} cycles (estimated"
            f" {report['interval_estimated']})"
            if report["interval"] is not None
            else f"images back to back: {report['streamed_bit_exact']}/1 bit-exact"
        )
    if report["accuracy"] is not None:
        print(f"RTL accuracy: {100 * report['accuracy']:.2f}%")
    if report.get("error"):
        print(f"RTL {describe(report['error'])}")
    if report["golden_consistent"] is False:
        print("GOLDEN MISMATCH: the net's stored outputs differ from the reference model")
    if report["first_mismatch"]:
        print(f"FIRST MISMATCH: {report['first_mismatch']}")
    if report.get("waves"):
        print(f"waves: {report['waves']}")
