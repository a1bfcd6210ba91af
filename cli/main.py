"""The ``squeezeforge`` console script: a thin layer over the package's functions.

Each subcommand lives in its own module ``squeezeforge.cli.<name>`` exposing ``register``
(adds its parser) and sets ``func``; the work itself is done by functions in models/, sim/,
hw/ and codegen/, all callable from Python.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import SqueezeforgeError

__all__ = ["build_parser", "main"]

# Order is the order of the pipeline, which is also the order `--help` lists them in.
SUBCOMMANDS = (
    "info",
    "train",
    "export",
    "compress",
    "reference",
    "generate",
    "simulate",
    "resources",
    "flow",
)

DESCRIPTION = """\
Compress a trained PyTorch network, generate Verilog for it, simulate its cycles and
resources, and prove the hardware's outputs equal the bit-accurate reference.

typical use:
  squeezeforge train --model cnn -o runs/cnn.pt
  squeezeforge compress runs/cnn.pt --recipe inq5 -o runs/cnn-inq5.sfnet
  squeezeforge reference runs/cnn-inq5.sfnet
  squeezeforge flow            # all of it on the embedded digits data set
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="squeezeforge",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            # A subcommand module that is not part of this installation is skipped; a missing
            # dependency inside one is a real error.
            if exc.name == f"{__package__}.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SqueezeforgeError as exc:
        # Every error the library raises on purpose carries a message meant for the user.
        print(f"squeezeforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"squeezeforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
