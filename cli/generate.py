"""``squeezeforge generate``: a compressed net to Verilog, memory images and a manifest."""

from __future__ import annotations

import argparse

from ..codegen.build import check_output_folder, generate, write_build
from ..codegen.folding import FOLD_PASSES
from ..codegen.plan import compile_net
from ..sim.target import target_of_net
from ._output import emit_json, markdown_table
from ._target import add_target_arguments, target_from_args
from .errors import UserError
from .reference import load_net_or_fail


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate the accelerator's Verilog for a compressed net",
        description="Compile a compressed net (.sfnet) into one accelerator: each conv runs on"
        " the MAC or shift-add conv engine (by weight format, 2x2 pooling fused), each fully"
        " connected layer on the EIE-style sparse unit. Writes OUT/top.v, OUT/engines/*.v,"
        " OUT/mem/*.hex, OUT/net.sfnet and OUT/manifest.json (configuration, per-layer mapping,"
        " ports, estimated cycles, file hashes). The engines are sized by the Target (--target, a"
        " preset or a TOML file, and the flags, which override it; `squeezeforge info --targets`"
        " lists the presets): the conv array, the FC unit's PEs, FIFO depth and index width, and"
        " with them the CSC layout of every FC layer. The folder is replaced atomically: an"
        " interrupted run leaves the previous build intact. OUT must be absent, empty or an"
        " earlier build; any other folder is refused unless --force, and a file never is"
        " replaced.",
    )
    p.add_argument("net", help="a .sfnet file")
    p.add_argument("-o", "--output", required=True, help="build folder, e.g. build/cnn-inq5")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace OUT even if it is a non-empty folder that is not a build (its content is"
        " deleted); a file is still never replaced",
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument(
        "--fold",
        choices=("off", "auto"),
        default="off",
        help="auto: choose the conv array and FC PEs from the Target's budget (the fastest that"
        " fits 80%% of each resource, by a resource model); the choice is in the manifest's"
        " passes (default off: the Target's sizes)",
    )
    add_target_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target_from_args(args)  # bad flags are refused before anything is read
    # The folder first: a refusal costs nothing, a net is read only for a folder we may write.
    check_output_folder(args.output, force=args.force)
    net = load_net_or_fail(args.net)
    # By default, the hardware the net was compressed for (its storage and Cr were counted
    # on it); the flags override it.
    target = target_from_args(args, target_of_net(net.metadata))
    try:
        if args.fold == "auto":
            plan = compile_net(net, target, FOLD_PASSES)
            manifest = write_build(plan, args.output, force=args.force)
        else:
            manifest = generate(net, args.output, target, force=args.force)
    except ValueError as exc:  # a fit error of the compiler (IRError, BuildError among them)
        raise UserError(str(exc)) from None
    if args.json:
        emit_json(manifest.to_dict())
        return 0
    rows = [
        [
            s.index,
            "+".join(s.layers),
            s.engine,
            "x".join(map(str, s.in_shape)),
            "x".join(map(str, s.out_shape)),
            s.cycles_estimated,
        ]
        for s in manifest.steps
    ]
    print(markdown_table(["step", "layers", "engine", "in", "out", "est. cycles"], rows))
    t = manifest.target or {}
    print(
        f"\ntarget {t['name']}: conv {t['conv_rows']}x{t['conv_cols']}, {t['fc_pes']} FC PEs,"
        f" FIFO {t['fifo_depth']}, {t['index_bits']}-bit index ({t['family']})"
        + (", conv input double-buffered" if t.get("double_buffer") else "")
    )
    print(f"estimated cycles per inference: {manifest.cycles_estimated}")
    if manifest.split is not None:
        interval = manifest.interval_estimated
        print(
            f"pipelined: steps 0-{manifest.split - 1} and {manifest.split}-"
            f"{len(manifest.steps) - 1} overlap; estimated interval {interval} cycles between"
            f" images ({manifest.cycles_estimated / interval:.2f}x the images/s of one at a time)"
        )
    for line in manifest.passes:
        if line.startswith(("fold_engines:", "pipeline_stages: no split")):
            print(line)
    print(f"wrote {args.output}/top.v and manifest.json")
    return 0
