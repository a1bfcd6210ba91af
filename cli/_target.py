"""The Target flags shared by ``compress`` and ``generate``."""

from __future__ import annotations

import argparse

from ..sim.target import Target, resolve_target, shipped_targets

__all__ = ["add_target_arguments", "target_from_args"]


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "target (the hardware the net runs on; flags override the file or preset)"
    )
    g.add_argument(
        "--target",
        metavar="NAME|FILE",
        help=f"a preset ({', '.join(shipped_targets())}) or a TOML file (docs/target.md);"
        " default: conv 4x4, 8 FC PEs, FIFO 8, 4-bit index",
    )
    g.add_argument(
        "--conv-array", metavar="RxC", help="conv engine PE array, rows x cols (e.g. 8x8)"
    )
    g.add_argument("--fc-pes", type=int, metavar="N", help="FC unit PEs (a power of two, 1..64)")
    g.add_argument("--fifo-depth", type=int, metavar="N", help="activation FIFO depth per FC PE")
    g.add_argument(
        "--index-bits", type=int, metavar="N", help="relative row index width of a CSC entry"
    )
    g.add_argument(
        "--pipeline",
        action="store_const",
        const=True,
        help="two pipeline stages (conv layers, then FC layers): the next image enters while"
        " the last is in the FC layers (docs/pipeline.md)",
    )
    g.add_argument(
        "--double-buffer",
        action="store_const",
        const=True,
        help="two input banks in the conv engine: a conv layer takes the previous conv layer's"
        " outputs as they leave, not after (docs/pipeline.md)",
    )


def target_from_args(args: argparse.Namespace, base: Target | None = None) -> Target:
    """The Target the flags describe; without ``--target``, the flags override ``base`` (the
    net's recorded Target, for generate) or the default."""
    return resolve_target(
        args.target if args.target is not None else base,
        conv_array=args.conv_array,
        fc_pes=args.fc_pes,
        fifo_depth=args.fifo_depth,
        index_bits=args.index_bits,
        pipeline=getattr(args, "pipeline", None),
        double_buffer=getattr(args, "double_buffer", None),
    )
