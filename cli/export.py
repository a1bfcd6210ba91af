"""``squeezeforge export``: post-training fixed-point export of a checkpoint to an IR net."""

from __future__ import annotations

import argparse
import json

from squeezeforge.models.compress.report import quality_block
from squeezeforge.models.data import load_dataset
from squeezeforge.models.export import post_training_export, reference_quality
from squeezeforge.models.qonnx_import import is_qonnx, load_qonnx
from squeezeforge.models.train import score
from squeezeforge.sim.ir import COMPUTE_KINDS, check_writable, save_net
from squeezeforge.sim.metrics import describe

from ._model import MODEL_HELP, add_model_arguments, load_model_and_data
from .errors import UserError

__all__ = ["register", "run"]

EPILOG = """\
examples:
  squeezeforge export cnn.pt -o cnn.sfnet
  squeezeforge export mlp.pt --bits 6 -o mlp6.sfnet --json
  squeezeforge export model.onnx --data mydata.npz -o mine.sfnet
  squeezeforge export brevitas-qonnx.onnx --data digits -o finn.sfnet   # no requantization

Weights, biases and activations get per-layer fraction lengths by Ristretto's rules, calibrated
on the training data; there is no fine-tuning (see `squeezeforge compress` for that). The net
carries the whole digits test split as test vectors, with the reference model's outputs.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="quantize a checkpoint to dynamic fixed point and write the IR net",
        description="Post-training export: quantize a trained checkpoint to BITS-wide dynamic"
        " fixed point (weights, biases, activations) and write the compressed-net file the"
        " reference model and the hardware generators read.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "checkpoint", metavar="MODEL", help=MODEL_HELP + "; or a QONNX model (no quantization)"
    )
    p.add_argument("--bits", type=int, default=8, help="bit width 2..16 (default 8)")
    p.add_argument("-o", "--output", required=True, metavar="NET", help="net file (.sfnet)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 2 <= args.bits <= 16:
        raise UserError(f"--bits must be in 2..16, got {args.bits}")
    check_writable(args.output)
    if str(args.checkpoint).lower().endswith(".onnx") and is_qonnx(args.checkpoint):
        return _export_qonnx(args)
    ckpt, data = load_model_and_data(args)
    net = post_training_export(
        ckpt.model,
        bits=args.bits,
        data=data,
        name=f"{ckpt.model_name}-fixed{args.bits}",
        metadata={"model": ckpt.model_name, "export": f"post-training fixed point {args.bits}"},
    )
    save_net(net, args.output)
    float_q = score(ckpt.model, data.x_test, data.y_test)
    ref_q = reference_quality(net)
    layers = [
        {
            "name": layer.name,
            "kind": layer.kind,
            "input_format": layer.input_format.to_dict(),
            "weight_format": layer.weight_format.to_dict(),
            "output_format": layer.output_format.to_dict(),
        }
        for layer in net.layers
        if isinstance(layer, COMPUTE_KINDS)
    ]
    if args.json:
        result = {
            "net": str(args.output),
            "model": ckpt.model_name,
            "bits": args.bits,
            "task": data.task,
            **quality_block(data.task, float_q, float_q, reference=ref_q),
            "test_vectors": int(net.test_inputs.shape[0]),
            "layers": layers,
        }
        print(json.dumps(result, indent=2))
    else:
        print(
            f"exported {ckpt.model_name} at {args.bits} bits -> {args.output}:"
            f" reference {describe(ref_q)} (float {describe(float_q)})"
            f" on {net.test_inputs.shape[0]} test samples"
        )
    return 0


def _export_qonnx(args: argparse.Namespace) -> int:
    """A QONNX model maps onto the numeric contract as it is: no calibration, no rounding."""
    data = load_dataset(args.data or "digits", task=args.task)
    net = load_qonnx(args.checkpoint, test_inputs=data.x_test, test_labels=data.y_test)
    save_net(net, args.output)
    ref_q = reference_quality(net)
    if args.json:
        print(json.dumps({"net": str(args.output), "source": "qonnx", "reference": ref_q}))
    else:
        print(
            f"imported QONNX {args.checkpoint} -> {args.output}: reference {describe(ref_q)}"
            f" on {net.test_inputs.shape[0]} test samples"
        )
    return 0
