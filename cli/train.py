"""``squeezeforge train``: train a reference network on the embedded digits set."""

from __future__ import annotations

import argparse
import json
import time

from squeezeforge.models.nets import MODELS
from squeezeforge.models.train import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    default_epochs,
    save_checkpoint,
    train,
)

from ..sim.ir import check_writable
from .errors import UserError

# Built-in models that train for more than the default epochs, for --help.
_LONGER = {
    name: default_epochs(name) for name in sorted(MODELS) if default_epochs(name) != DEFAULT_EPOCHS
}

__all__ = ["register", "run"]

EPILOG = """\
examples:
  squeezeforge train --model cnn -o cnn.pt
  squeezeforge train --model mlp --epochs 20 --seed 1 -o mlp.pt --json

Training is deterministic: the same seed gives the same weights. The data is scikit-learn's
digits set (8x8 images, 1,437 train / 360 test, fixed split); nothing is downloaded.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a digits CNN, MLP or compact CNN and save a checkpoint",
        description="Train a reference network (LeNet-5 style CNN, LeNet-300-100 style MLP, or"
        " the compact nets: `mobile` with depthwise-separable convs, `fire` with SqueezeNet's"
        " fire modules, `resnet` with residual blocks) on the embedded"
        " digits data set, deterministically on CPU, and save a checkpoint for"
        " `squeezeforge export` or `squeezeforge compress`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", choices=sorted(MODELS), default="cnn", help="network (default cnn)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs (default: the model's; {DEFAULT_EPOCHS}, the compact nets train longer:"
        f" {', '.join(f'{n} {e}' for n, e in _LONGER.items())})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--lr", type=float, default=DEFAULT_LR, help=f"Adam learning rate ({DEFAULT_LR})"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"mini-batch size (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument("-o", "--output", required=True, metavar="CKPT", help="checkpoint to write")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.epochs is None:
        args.epochs = default_epochs(args.model)
    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.lr > 0:
        raise UserError(f"--lr must be > 0, got {args.lr}")
    check_writable(args.output)  # before the training, not after it
    start = time.monotonic()
    model, history = train(
        args.model,
        args.epochs,
        args.seed,
        lr=args.lr,
        batch_size=args.batch_size,
        quiet=args.quiet or args.json,
    )
    seconds = time.monotonic() - start
    last = history[-1]
    config = {
        "epochs": args.epochs,
        "seed": args.seed,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "data": "digits",
    }
    metrics = {
        "train_accuracy": last["train_accuracy"],
        "test_accuracy": last["test_accuracy"],
        "loss": last["loss"],
    }
    save_checkpoint(args.output, args.model, model, config=config, metrics=metrics)
    if args.json:
        result = {
            "model": args.model,
            "checkpoint": str(args.output),
            "config": config,
            "accuracy": {"train": last["train_accuracy"], "test": last["test_accuracy"]},
            "loss": last["loss"],
            "seconds": round(seconds, 2),
        }
        print(json.dumps(result, indent=2))
    else:
        print(
            f"trained {args.model} for {args.epochs} epochs (seed {args.seed}) in {seconds:.1f} s:"
            f" test accuracy {100 * last['test_accuracy']:.2f}%,"
            f" train {100 * last['train_accuracy']:.2f}% -> {args.output}"
        )
    return 0
