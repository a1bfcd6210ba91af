"""``squeezeforge reference``: run a net file through the bit-accurate reference model."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..sim.ir import IRError, Net, check_writable, load_net
from ..sim.metrics import describe, quality, task_of
from ..sim.reference import predictions, run_net
from ._inputs import INPUTS_HELP, load_inputs, save_outputs
from ._output import emit_json, markdown_table
from .errors import UserError


def load_net_or_fail(path: str | Path) -> Net:
    try:
        return load_net(path)
    except IRError as exc:
        raise UserError(f"{path}: {exc}") from None


def reference_report(net: Net, inputs: np.ndarray | None = None, limit: int | None = None) -> dict:
    """Run the reference on ``inputs`` (default: the net's test vectors) and summarize."""
    own = inputs is None
    x = net.test_inputs if own else inputs
    if limit is not None:
        x = x[:limit]
    try:
        taps = run_net(net, x, taps=True)
    except (ValueError, OverflowError) as exc:
        raise UserError(str(exc)) from None
    out = taps[-1]
    report: dict = {
        "net": net.name,
        "images": int(x.shape[0]),
        "layers": [
            {"name": layer.name, "kind": layer.kind, "shape": list(t.shape[1:])}
            for layer, t in zip(net.layers, taps, strict=True)
        ],
        "outputs": out.tolist(),
    }
    regression = task_of(net.test_labels) == "regression"
    if not regression:
        report["predictions"] = predictions(out).tolist()
    if own:
        expected = net.test_outputs[: x.shape[0]]
        report["matches_stored_outputs"] = int(
            np.sum(np.all(out.reshape(len(out), -1) == expected.reshape(len(out), -1), axis=1))
        )
        labels = net.test_labels[: x.shape[0]]
        q = quality(out * 2.0**-net.output_format.frac, labels) if len(labels) else None
        report["accuracy"] = q["accuracy"] if q and not regression else None
        if regression:
            report["error"] = q
    return report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reference",
        help="run a net on the bit-accurate reference model",
        description="Run a compressed net (.sfnet) through the integer reference model, the"
        " golden model that the hardware must equal bit for bit. Without --inputs it runs the"
        " test vectors stored in the net and checks them against the stored expected outputs"
        " (exit status 1 on any difference).",
    )
    p.add_argument("net", help="a .sfnet file")
    p.add_argument("--inputs", metavar="FILE.npy", help=INPUTS_HELP)
    p.add_argument(
        "--outputs",
        metavar="OUT.npy",
        help="write the integer outputs (N, *output_shape) to OUT.npy; each is the value times"
        " 2**frac of the net's output format",
    )
    p.add_argument("--limit", type=int, help="only the first N inputs")
    p.add_argument("--json", action="store_true", help="print a JSON object with every output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    net = load_net_or_fail(args.net)
    if args.outputs:
        check_writable(args.outputs)
    inputs = load_inputs(args.inputs, net) if args.inputs else None
    report = reference_report(net, inputs, args.limit)
    if args.outputs:
        save_outputs(args.outputs, np.asarray(report["outputs"], dtype=np.int64))
    if args.json:
        emit_json(report)
    else:
        rows = [
            [lay["name"], lay["kind"], "x".join(map(str, lay["shape"]))] for lay in report["layers"]
        ]
        print(markdown_table(["layer", "kind", "output shape"], rows))
        if "predictions" in report:
            print(
                f"\n{report['images']} inputs; predictions: {report['predictions'][:20]}"
                + (" ..." if report["images"] > 20 else "")
            )
        else:
            print(f"\n{report['images']} inputs")
        if "accuracy" in report:
            print(f"stored outputs matched: {report['matches_stored_outputs']}/{report['images']}")
            if report["accuracy"] is not None:
                print(f"accuracy: {100 * report['accuracy']:.2f}%")
            if report.get("error"):
                print(describe(report["error"]))
    if inputs is None and report["matches_stored_outputs"] != report["images"]:
        return 1
    return 0
