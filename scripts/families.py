"""The surveys' comparison on one data set: each compression family on the digits CNN.

    python scripts/families.py [--out runs/families] [--images 100] [--json]

Runs (or resumes) the flow on the digits CNN with one shipped recipe per family and
combination (pruning; sharing and quantization; low-rank, alone and with INQ; distillation into
a narrower student), plus the dense 8-bit baseline, each simulated on Verilator. Prints, per
recipe: Cr, MACs and how many times fewer, accuracy float / reference / RTL, bit-exact images,
RTL cycles per inference beside the estimate, and the speed-up Sr over the dense 8-bit net on
the same Target (both measured). About ten minutes on 2 cores the first time.
"""

from __future__ import annotations

import argparse
import json
import sys

from squeezeforge.codegen.flow import FlowConfig, run_flow
from squeezeforge.codegen.summary import headline_rows

# recipe -> the surveys' family it stands for.
FAMILIES = {
    "prune-fc": "pruning",
    "inq5": "quantization (power of two)",
    "deep-compression": "pruning + sharing",
    "low-rank": "low-rank",
    "low-rank-inq5": "low-rank + quantization",
    "student": "distillation (half-width student)",
}
# What the table cannot show yet, said in the table rather than left out.
MISSING = {
    "compact filters": "depthwise/grouped conv and global average pooling are not in the IR yet",
}


def rows(report: dict) -> list[dict]:
    base = report["compress"][report["config"]["baseline_recipe"]]
    base_macs = base["totals"]["macs"]["effective"]
    out = []
    for r in headline_rows(report):
        macs = report["compress"][r["recipe"]]["totals"]["macs"]["effective"]
        out.append(
            r | {"family": FAMILIES.get(r["recipe"], "?"), "macs": macs, "fewer": base_macs / macs}
        )
    return out


def table(report: dict) -> str:
    base = report["compress"][report["config"]["baseline_recipe"]]
    sim = report["simulate"][report["config"]["baseline_recipe"]]
    lines = [
        "| family | recipe | Cr | MACs (non-zero weights) | fewer MACs | acc. float"
        " | acc. reference | acc. RTL | bit-exact | cycles (RTL) | estimated | Sr |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| baseline (dense 8-bit) | fixed8 | {base['compression_ratio']:.1f}x"
        f" | {base['totals']['macs']['effective']:,} | 1.00x"
        f" | {100 * base['accuracy']['float']:.2f}%"
        f" | {100 * base['accuracy']['reference']:.2f}% | {100 * sim['accuracy']:.2f}%"
        f" | {sim['bit_exact']}/{sim['images']} | {sim['cycles_per_inference']:.0f}"
        f" | {report['generate']['fixed8']['cycles_estimated']} | 1.00x |",
    ]
    for r in rows(report):
        lines.append(
            f"| {r['family']} | {r['recipe']} | {r['compression_ratio']:.1f}x | {r['macs']:,}"
            f" | {r['fewer']:.2f}x | {100 * r['accuracy_float']:.2f}%"
            f" | {100 * r['accuracy_reference']:.2f}% | {100 * r['accuracy_rtl']:.2f}%"
            f" | {r['bit_exact']} | {r['cycles_measured']:.0f} | {r['cycles_estimated']}"
            f" | {r['speedup']:.2f}x |"
        )
    for family, why in MISSING.items():
        lines.append(f"| {family} | – | not measured: {why} | | | | | | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="runs/families")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--recipes", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: trainer's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = FlowConfig(
        out_dir=args.out, images=args.images, recipes=tuple(args.recipes), epochs=args.epochs,
        targets=(),
    )  # fmt: skip
    report = run_flow(cfg, log=lambda m: print(m, file=sys.stderr), quiet=True)
    if args.json:
        print(json.dumps(rows(report), indent=1, default=str))
    else:
        print(table(report))
    return report


if __name__ == "__main__":
    main()
