"""``squeezeforge compress``: run a compression recipe on a checkpoint and write the IR net."""

from __future__ import annotations

import argparse
import json

from squeezeforge.codegen.engines import check_supported
from squeezeforge.models.compress import compress, report_markdown, shipped_recipes
from squeezeforge.sim.ir import atomic_write_bytes, check_writable

from ._model import MODEL_HELP, add_model_arguments, load_model_and_data
from ._target import add_target_arguments, target_from_args

__all__ = ["register", "run"]


def _epilog() -> str:
    return f"""\
shipped recipes: {", ".join(shipped_recipes())}

examples:
  squeezeforge compress cnn.pt --recipe fixed8 -o cnn-fixed8.sfnet
  squeezeforge compress mlp.pt --recipe deep-compression -o mlp-dc.sfnet --report mlp-dc.md
  squeezeforge compress cnn.pt --recipe my-recipe.toml -o cnn-mine.sfnet --json
  squeezeforge compress mlp.pt --recipe deep-compression -o mlp-dc.sfnet --target ecp5-85f
  squeezeforge compress lenet.pt --model lenet.py:LeNet5 --data digits28 --recipe inq5 -o l.sfnet
  squeezeforge compress model.onnx --data mydata.npz --recipe fixed8 -o mine.sfnet

A recipe is a TOML file listing passes (prune, filter-prune, fixed-point, inq, share, finetune)
in order; docs/recipes.md describes every key. The report gives per-layer parameters, non-zeros,
bits, bytes (index and codebook included) as the generated memories of the Target hold them
(--target and the flags below; `squeezeforge info --targets` lists the presets), the
compression ratio against float32, MACs, and the accuracy of the float model, the
fake-quantized model and the bit-accurate reference on the net.
The same seed writes a byte-identical net file; the file is replaced atomically.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compress",
        help="prune, quantize and share weights by a recipe; write the IR net and a report",
        description="Compress a trained model (your own: a state_dict with its class, a pickled"
        " module or an ONNX file; or a checkpoint) with a recipe (a shipped name or a TOML"
        " file), export the compressed net for the reference model and the hardware"
        " generators, and report what each layer costs and how accuracy changed.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument(
        "--recipe", required=True, metavar="RECIPE", help="shipped recipe name or TOML file"
    )
    p.add_argument("-o", "--output", required=True, metavar="NET", help="net file (.sfnet)")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    p.add_argument("--report", metavar="FILE", help="also write the Markdown report to FILE")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    add_model_arguments(p)
    add_target_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Both outputs are checked before the minutes of fine-tuning, not after them.
    check_writable(args.output)
    if args.report:
        check_writable(args.report)
    target = target_from_args(args)
    ckpt, data = load_model_and_data(args)
    report = compress(
        ckpt,
        args.recipe,
        args.output,
        data=data,
        seed=args.seed,
        quiet=args.quiet or args.json,
        # A layer no engine runs is refused before training, not at generate.
        check_layer=check_supported,
        target=target,
    )
    markdown = report_markdown(report)
    if args.report:
        atomic_write_bytes(args.report, markdown.encode())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(markdown, end="")
    return 0
