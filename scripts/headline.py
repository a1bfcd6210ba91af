"""The README's headline table: the default flow with every FPGA family.

    python scripts/headline.py [--out runs/headline] [--images 100] [--json]

Runs (or resumes) ``squeezeforge flow`` on the digits CNN with the inq5 and deep-compression
recipes and the dense 8-bit baseline, synthesizing for ice40, ecp5 and xc7, and prints: Cr,
accuracy float / reference / RTL, bit-exact images, cycles per inference (RTL) beside the
estimate and the ideal bound, the speed-up Sr over the dense 8-bit net on the same engines, and
resources per target. Takes about 10-15 minutes on 2 cores the first time.
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
from squeezeforge.codegen.resources import TARGETS
from squeezeforge.codegen.summary import headline_rows


def tables(report: dict) -> str:
    rows = headline_rows(report)
    out = [
        "| recipe | Cr | acc. float | acc. reference | acc. RTL | bit-exact | cycles/inference"
        " (RTL) | estimated | ideal bound | dense 8-bit (RTL) | Sr |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['recipe']} | {r['compression_ratio']:.1f}x | {100 * r['accuracy_float']:.2f}%"
            f" | {100 * r['accuracy_reference']:.2f}% | {100 * r['accuracy_rtl']:.2f}%"
            f" | {r['bit_exact']} | {r['cycles_measured']:.0f} | {r['cycles_estimated']}"
            f" | {r['cycles_ideal']:.0f} | {r['dense8_cycles']:.0f} | {r['speedup']:.2f}x |"
        )
    out += [
        "",
        "| recipe | target | LUT | FF | DSP | BRAM | Fmax MHz |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, res in report["resources"].items():
        recipe, target = key.split("/")
        t = res["total"]
        fmax = t.get("fmax_mhz")
        out.append(
            f"| {recipe} | {target} | {t['lut']} | {t['ff']} | {t['dsp']} | {t['bram']}"
            f" | {'–' if fmax is None else f'{fmax:.1f}'} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="runs/headline")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: trainer's)")
    ap.add_argument("--no-fmax", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = FlowConfig(
        out_dir=args.out,
        images=args.images,
        targets=tuple(args.targets),
        epochs=args.epochs,
        fmax=not args.no_fmax,
    )
    report = run_flow(cfg, log=lambda m: print(m, file=sys.stderr), quiet=True)
    if args.json:
        print(
            json.dumps(
                {"headline": headline_rows(report), "resources": report["resources"]},
                indent=1,
                default=str,
            )
        )
    else:
        print(tables(report))
    return report


if __name__ == "__main__":
    main()
