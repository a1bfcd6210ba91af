"""The surveys' comparison on one data set: each compression family on the digits CNN, and
the compact nets beside it.

    python scripts/families.py [--out runs/families] [--images 100] [--json]

Runs (or resumes) the flow on the digits CNN with one shipped recipe per family and
combination (pruning; sharing and quantization; low-rank, alone and with INQ; distillation into
a narrower student), plus the dense 8-bit baseline, each simulated on Verilator. Prints, per
recipe: Cr, MACs and how many times fewer, accuracy float / reference / RTL, bit-exact images,
RTL cycles per inference beside the estimate, and the speed-up Sr over the dense 8-bit net on
the same Target (both measured). Then the compact-filter family: the built-in compact nets
(``mobile``, ``fire``, ``resnet``), trained from scratch, at 8 bits and with INQ, each against
the CNN (Cr over the CNN's float bytes, MACs and Sr over the CNN's dense 8-bit net). About
25 minutes on 2 cores the first time.
"""

from __future__ import annotations

import os

# The same trained weights on every x86 processor, as the console script gives (Makefile); set
# before torch is imported.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

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
# Compact nets -> what they stand for; each runs fixed8 (its baseline) and COMPACT_RECIPES.
COMPACT = {
    "mobile": "compact: depthwise-separable (MobileNet)",
    "fire": "compact: fire modules (SqueezeNet)",
    "resnet": "compact: residual blocks (ResNet)",
}
COMPACT_RECIPES = ("inq5",)


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
    return "\n".join(lines)


def compact_rows(cnn: dict, compact: dict[str, dict]) -> list[dict]:
    """Every recipe of every compact net's flow report, measured against the CNN's: Cr over
    the CNN's float bytes, MACs and Sr over its dense 8-bit net."""
    base = cnn["compress"][cnn["config"]["baseline_recipe"]]
    base_cycles = cnn["simulate"][cnn["config"]["baseline_recipe"]]["cycles_per_inference"]
    out = []
    for model, report in compact.items():
        for recipe, sim in report["simulate"].items():
            comp = report["compress"][recipe]
            out.append(
                {
                    "family": COMPACT.get(model, "?"),
                    "model": model,
                    "recipe": recipe,
                    "bytes": comp["totals"]["bytes"],
                    "compression_ratio": base["totals"]["float_bytes"] / comp["totals"]["bytes"],
                    "macs": comp["totals"]["macs"]["effective"],
                    "fewer": base["totals"]["macs"]["effective"]
                    / comp["totals"]["macs"]["effective"],
                    "accuracy_float": comp["accuracy"]["float"],
                    "accuracy_reference": comp["accuracy"]["reference"],
                    "accuracy_rtl": sim["accuracy"],
                    "bit_exact": f"{sim['bit_exact']}/{sim['images']}",
                    "cycles_measured": sim["cycles_per_inference"],
                    "cycles_estimated": report["generate"][recipe]["cycles_estimated"],
                    "speedup": base_cycles / sim["cycles_per_inference"],
                }
            )
    return out


def compact_table(cnn: dict, compact: dict[str, dict]) -> str:
    lines = [
        "| family | net / recipe | bytes | Cr (over the CNN's float) | MACs (non-zero weights)"
        " | fewer MACs than the CNN | acc. float | acc. reference | acc. RTL | bit-exact"
        " | cycles (RTL) | estimated | Sr (over the CNN's fixed8) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in compact_rows(cnn, compact):
        lines.append(
            f"| {r['family']} | {r['model']} / {r['recipe']} | {r['bytes']:,}"
            f" | {r['compression_ratio']:.1f}x | {r['macs']:,} | {r['fewer']:.2f}x"
            f" | {100 * r['accuracy_float']:.2f}% | {100 * r['accuracy_reference']:.2f}%"
            f" | {100 * r['accuracy_rtl']:.2f}% | {r['bit_exact']} | {r['cycles_measured']:.1f}"
            f" | {r['cycles_estimated']} | {r['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="runs/families")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--recipes", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: trainer's)")
    ap.add_argument(
        "--compact",
        nargs="*",
        default=list(COMPACT),
        choices=list(COMPACT),
        help="compact nets to run beside the CNN (none: only the CNN)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    cfg = FlowConfig(
        out_dir=args.out, images=args.images, recipes=tuple(args.recipes), epochs=args.epochs,
        targets=(),
    )  # fmt: skip
    report = run_flow(cfg, log=log, quiet=True)
    compact = {
        model: run_flow(
            FlowConfig(
                out_dir=f"{args.out}/{model}",
                model=model,
                images=args.images,
                recipes=COMPACT_RECIPES,
                epochs=args.epochs,
                targets=(),
            ),  # fmt: skip
            log=log,
            quiet=True,
        )
        for model in args.compact
    }
    if args.json:
        print(json.dumps(rows(report) + compact_rows(report, compact), indent=1, default=str))
    else:
        print(table(report))
        if compact:
            print()
            print(compact_table(report, compact))
    return report | {"compact": compact}


if __name__ == "__main__":
    main()
