"""Yosys resource reports of the EIE-style sparse FC unit for several PE counts.

Each configuration is emitted to Verilog and synthesized for ice40, ecp5 and xc7 through
:func:`squeezeforge.codegen.resources.synthesize`; the script prints a Markdown table (LUT, FF,
DSP, BRAM, carry, LUT RAM) or JSON.

    python scripts/resources_eie.py                        # N = 4, 8, 16; all targets
    python scripts/resources_eie.py --n-pe 4 --targets ice40 --json

Defaults follow EIE's PE: 16-bit activations, 4-bit codebook indices into 16-bit values, 4-bit
relative indices, FIFO depth 8; memory depths are modest (256 pointers, 1024 entries and 32
accumulators per PE) so that the numbers show the logic of the unit rather than a chosen
on-chip capacity.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from squeezeforge.codegen.resources import TARGETS, synthesize
from squeezeforge.hw.sparse_fc import WEIGHT_KINDS, SparseFC, SparseFCParams
from squeezeforge.sim.rtl import amaranth_to_verilog

TOP = "sparse_fc"


def eie_params(n_pe: int, kind: str = "codebook", act_bits: int = 16) -> SparseFCParams:
    weight_bits = {"codebook": 4, "pow2": 5, "fixed": 8}[kind]
    probe = SparseFCParams(
        n_pe=n_pe,
        weight_kind=kind,
        act_bits=act_bits,
        weight_bits=weight_bits,
        codebook_value_bits=16,
    )
    # Room for 256 inputs of full-scale products plus the bias.
    acc_bits = probe.product_bits + 9
    return SparseFCParams(
        n_pe=n_pe,
        weight_kind=kind,
        act_bits=act_bits,
        weight_bits=weight_bits,
        codebook_value_bits=16,
        index_bits=4,
        acc_bits=acc_bits,
        bias_bits=probe.product_bits,
        fifo_depth=8,
        ptr_depth=256,
        entry_depth=1024,
        acc_depth=32,
    )


def report(n_pes: list[int], targets: list[str], kind: str, act_bits: int) -> list[dict]:
    rows = []
    for n_pe in n_pes:
        params = eie_params(n_pe, kind, act_bits)
        verilog = amaranth_to_verilog(SparseFC(params), TOP)
        for target in targets:
            began = time.perf_counter()
            r = synthesize(verilog, TOP, target)
            rows.append(
                {
                    "n_pe": n_pe,
                    "weight_kind": kind,
                    "act_bits": act_bits,
                    "target": target,
                    "lut": r.lut,
                    "ff": r.ff,
                    "dsp": r.dsp,
                    "bram": r.bram,
                    "carry": r.carry,
                    "lutram": r.lutram,
                    "seconds": round(time.perf_counter() - began, 1),
                }
            )
            print(f"N={n_pe} {target}: done in {rows[-1]['seconds']} s", file=sys.stderr)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| N | target | LUT | FF | DSP | BRAM | carry | LUT RAM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_pe']} | {r['target']} | {r['lut']} | {r['ff']} | {r['dsp']}"
            f" | {r['bram']:g} | {r['carry']} | {r['lutram']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-pe", default="4,8,16", help="comma-separated PE counts")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
    parser.add_argument("--kind", default="codebook", choices=WEIGHT_KINDS)
    parser.add_argument("--act-bits", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    try:
        n_pes = [int(n) for n in args.n_pe.split(",")]
    except ValueError:
        parser.error(f"--n-pe must be integers separated by commas, got {args.n_pe!r}")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}; known: {', '.join(TARGETS)}")
    try:
        rows = report(n_pes, targets, args.kind, args.act_bits)
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
