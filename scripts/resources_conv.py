"""Yosys resource table of the conv engine: MAC array against shift-add array.

Synthesizes 4x4 and 8x8 arrays of both flavours (8-bit activations; 8-bit fixed-point weights
or 5-bit power-of-two codes) for ice40 (``synth_ice40 -dsp``), ecp5 and xc7 with DSP inference
on (and the MAC array once more with it off), and prints LUT, FF, DSP and BRAM as a Markdown
table (or JSON with ``--json``). Memory depths are modest so that each run takes seconds to a
minute; the whole table about ten minutes on two cores.

    .venv/bin/python scripts/resources_conv.py [--json] [--arrays 4 8] [--targets ice40 ecp5 xc7]
        [--flavours mac mac-no-dsp shift-add]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from squeezeforge.codegen.resources import TARGETS, synthesize
from squeezeforge.hw.conv import ConvEngine, ConvEngineParams
from squeezeforge.sim.rtl import amaranth_to_verilog

# name: (label, engine parameters, DSP inference): the MAC array also without DSP blocks, to
# show what its multipliers cost in logic against the shift-add array.
FLAVOURS = {
    "mac": ("MAC, fixed 8-bit", dict(weight_kind="fixed", weight_bits=8), True),
    "mac-no-dsp": ("MAC, fixed 8-bit, no DSP", dict(weight_kind="fixed", weight_bits=8), False),
    "shift-add": ("shift-add, pow2 5-bit", dict(weight_kind="pow2", weight_bits=5), True),
}
TOP = "conv_engine"


def engine_params(side: int, flavour: dict) -> ConvEngineParams:
    """An engine for layers up to 16x16x4 inputs and 16*side filters (accumulator 24 bits)."""
    return ConvEngineParams(
        rows=side,
        cols=side,
        act_bits=8,
        acc_bits=24,
        act_depth=1024,
        weight_depth=512,
        bias_depth=16,
        out_depth=256,
        **flavour,
    )


def table(arrays: list[int], targets: list[str], flavours: list[str]) -> list[dict]:
    out = []
    for side in arrays:
        for name, flavour, dsp in (FLAVOURS[f] for f in flavours):
            verilog = amaranth_to_verilog(ConvEngine(engine_params(side, flavour)), TOP)
            for target in targets:
                t0 = time.monotonic()
                report = synthesize(verilog, TOP, target, dsp=dsp)
                out.append(
                    {
                        "array": f"{side}x{side}",
                        "flavour": name,
                        "target": target,
                        "lut": report.lut,
                        "ff": report.ff,
                        "dsp": report.dsp,
                        "bram": report.bram,
                        "seconds": round(time.monotonic() - t0, 1),
                    }
                )
                print(f"  {side}x{side} {name} {target}: done", file=sys.stderr)
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "| array | PE flavour | target | LUT | FF | DSP | BRAM |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['array']} | {r['flavour']} | {r['target']} | {r['lut']:,} | {r['ff']:,}"
            f" | {r['dsp']} | {r['bram']:g} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--arrays", type=int, nargs="+", default=[4, 8], metavar="SIDE")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument(
        "--flavours", nargs="+", default=list(FLAVOURS), choices=list(FLAVOURS), metavar="NAME",
        help=f"PE flavours ({', '.join(FLAVOURS)}; default all)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    rows = table(args.arrays, args.targets, args.flavours)
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
