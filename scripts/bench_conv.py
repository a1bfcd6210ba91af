"""Cycles and utilization of the conv engine from its cycle model (tied to RTL by the tests).

Prints a Markdown table (or JSON with ``--json``) for the default digits CNN's conv layers
(each with its 2x2 max pool fused) and for a 3x3, 64->64, 32x32 layer (padding 1) on 8x8 and
16x16 arrays: cycles from start to done, the ideal bound MACs / PEs, utilization with the input
load and without it (compute phase only), and, on an engine with two input banks running
images back to back (the next image's input loading while this one computes), the interval
between dones and the utilization over it.

    .venv/bin/python scripts/bench_conv.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from types import SimpleNamespace

import numpy as np

from squeezeforge.hw.conv import conv_cycles, conv_stream_dones
from squeezeforge.sim.ir import Conv2d
from squeezeforge.sim.numerics import FixedFormat, FixedWeights

# (name, in_channels, out_channels, input H = W, pool fused, arrays)
LAYERS = [
    ("digits conv1", 1, 6, 8, True, (4, 8)),
    ("digits conv2", 6, 16, 4, True, (4, 8)),
    ("3x3 64->64 32x32", 64, 64, 32, False, (8, 16)),
]


def _layer(name: str, cin: int, cout: int) -> Conv2d:
    """A 3x3, padding 1 layer of that shape (cycles do not depend on the values)."""
    fmt = FixedFormat(8, 4)
    return Conv2d(
        name=name,
        in_channels=cin,
        out_channels=cout,
        kernel=(3, 3),
        stride=1,
        padding=1,
        input_format=fmt,
        weight_format=FixedWeights(8, 6),
        output_format=fmt,
        relu=True,
        weight=np.zeros((cout, cin, 3, 3), dtype=np.int64),
        bias=np.zeros(cout, dtype=np.int64),
    )


def rows() -> list[dict]:
    out = []
    for name, cin, cout, size, pool, arrays in LAYERS:
        layer = _layer(name, cin, cout)
        for side in arrays:
            array = SimpleNamespace(rows=side, cols=side)
            c = conv_cycles(layer, (cin, size, size), array, pool)
            # The steady state: the third image on, every load lies inside the run before.
            dones = conv_stream_dones([(layer, (cin, size, size), pool)] * 4, array)
            interval = dones[3] - dones[2]
            out.append(
                {
                    "layer": name,
                    "pool": pool,
                    "array": f"{side}x{side}",
                    "macs": c.macs,
                    "folds": c.folds,
                    "load_cycles": c.load_cycles,
                    "cycles": c.cycles,
                    "ideal_cycles": c.ideal_cycles,
                    "utilization": round(c.utilization, 4),
                    "utilization_compute": round(c.utilization_compute, 4),
                    "interval_two_banks": interval,
                    "utilization_two_banks": round(c.macs / (interval * side * side), 4),
                }
            )
    return out


def markdown(table: list[dict]) -> str:
    lines = [
        "| layer | array | MACs | folds | cycles | ideal MACs/PEs | utilization"
        " | utilization w/o load | interval, two banks | utilization, two banks |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        name = r["layer"] + (" + pool" if r["pool"] else "")
        lines.append(
            f"| {name} | {r['array']} | {r['macs']:,} | {r['folds']} | {r['cycles']:,}"
            f" | {r['ideal_cycles']:,.0f} | {100 * r['utilization']:.1f}%"
            f" | {100 * r['utilization_compute']:.1f}%"
            f" | {r['interval_two_banks']:,} | {100 * r['utilization_two_banks']:.2f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    table = rows()
    print(json.dumps(table, indent=1) if args.json else markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
