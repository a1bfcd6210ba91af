"""EIE's load-balance study on the sparse FC unit's cycle model.

Layers shaped like EIE's benchmarks (Han et al., ISCA 2016, Table III) get random weights and
activations at the paper's densities; for N PEs (64 by default) and activation FIFO depths
1..32 the cycle model of :class:`squeezeforge.hw.sparse_fc.SparseFC` gives the compute cycles,
the ideal bound (non-zero work / N), the load-balance efficiency (1 - bubble / total) and the
speed-up over a dense matrix-vector product on the same N PEs.

Columns: ``cycles`` from start to the end of accumulation (the row read-out is not part of
EIE's figure); ``ideal`` = non-zero work / N; ``entry bound`` = entries a PE processes on
average, padding included (what EIE's "theoretical" time counts); ``efficiency`` =
1 - bubble / total = entry bound / cycles; ``cycles / entry bound`` sits beside EIE's actual /
theoretical time.

    python scripts/bench_eie.py                     # Markdown table, the three core layers
    python scripts/bench_eie.py --all --json        # all nine layers, as JSON
    python scripts/bench_eie.py --plot eie.png      # and a plot of efficiency vs FIFO depth
    python scripts/bench_eie.py --scale 16          # every dimension / 16 (quick check)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from dataclasses import dataclass

import numpy as np

from squeezeforge.hw.sparse_fc import sparse_fc_cycles_from_counts
from squeezeforge.sim.ir import csc_entry_counts


@dataclass(frozen=True)
class EIELayer:
    """A benchmark layer of EIE's Table III (times in µs at 800 MHz, 64 PEs)."""

    name: str
    in_features: int
    out_features: int
    weight_density: float
    act_density: float
    theoretical_us: float
    actual_us: float


EIE_LAYERS = {
    layer.name: layer
    for layer in (
        EIELayer("Alex-6", 9216, 4096, 0.09, 0.351, 28.1, 30.3),
        EIELayer("Alex-7", 4096, 4096, 0.09, 0.353, 11.7, 12.2),
        EIELayer("Alex-8", 4096, 1000, 0.25, 0.375, 8.9, 9.9),
        EIELayer("VGG-6", 25088, 4096, 0.04, 0.183, 28.1, 34.4),
        EIELayer("VGG-7", 4096, 4096, 0.04, 0.375, 7.9, 8.7),
        EIELayer("VGG-8", 4096, 1000, 0.23, 0.411, 7.3, 8.4),
        EIELayer("NT-We", 4096, 600, 0.10, 1.0, 5.2, 8.0),
        EIELayer("NT-Wd", 600, 8791, 0.11, 1.0, 13.0, 13.9),
        EIELayer("NT-LSTM", 1201, 2400, 0.10, 1.0, 6.5, 7.5),
    )
}
CORE_LAYERS = ("Alex-7", "VGG-7", "NT-We")
DEPTHS = (1, 2, 4, 8, 16, 32)


def study(
    layers: list[EIELayer],
    *,
    n_pe: int = 64,
    depths: tuple[int, ...] = DEPTHS,
    index_bits: int = 4,
    scale: int = 1,
    seed: int = 0,
) -> list[dict]:
    """One row per layer and FIFO depth."""
    rows = []
    for layer in layers:
        # Seeded by name: a layer gets the same draw whichever others run with it.
        rng = np.random.default_rng([seed, zlib.crc32(layer.name.encode())])
        fi = max(1, layer.in_features // scale)
        fo = max(1, layer.out_features // scale)
        weights = rng.random((fo, fi)) < layer.weight_density
        x_nonzero = rng.random(fi) < layer.act_density
        counts = csc_entry_counts(weights, n_pe, index_bits)
        work = int(weights[:, x_nonzero].sum())
        for depth in depths:
            r = sparse_fc_cycles_from_counts(
                counts, x_nonzero, out_features=fo, fifo_depth=depth, work=work
            )
            rows.append(
                {
                    "layer": layer.name,
                    "in_features": fi,
                    "out_features": fo,
                    "weight_density": layer.weight_density,
                    "act_density": layer.act_density,
                    "n_pe": n_pe,
                    "fifo_depth": depth,
                    "cycles": r.compute_cycles,
                    "cycles_with_readout": r.cycles,
                    "ideal_cycles": r.ideal_cycles,
                    "entry_bound": float(r.busy.mean()),
                    "efficiency": r.efficiency,
                    "over_entry_bound": r.compute_cycles / float(r.busy.mean()),
                    "over_ideal": r.over_ideal,
                    "padding_share": 1 - work / max(int(r.busy.sum()), 1),
                    "dense_cycles": r.dense_cycles,
                    "speedup_over_dense": r.speedup_over_dense,
                    "eie_actual_over_theoretical": layer.actual_us / layer.theoretical_us,
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| layer | in × out | FIFO depth | cycles | ideal | entry bound | efficiency"
        " | cycles / entry bound | EIE actual / theoretical | cycles / ideal"
        " | speed-up vs dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['in_features']} × {r['out_features']} | {r['fifo_depth']}"
            f" | {r['cycles']} | {r['ideal_cycles']:.0f} | {r['entry_bound']:.0f}"
            f" | {r['efficiency']:.1%} | {r['over_entry_bound']:.2f}"
            f" | {r['eie_actual_over_theoretical']:.2f} | {r['over_ideal']:.2f}"
            f" | {r['speedup_over_dense']:.1f}× |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["layer"] for r in rows):
        mine = [r for r in rows if r["layer"] == name]
        ax.plot(
            [r["fifo_depth"] for r in mine],
            [100 * r["efficiency"] for r in mine],
            marker="o",
            label=name,
        )
    n_pe = rows[0]["n_pe"] if rows else 0
    ax.set_xscale("log", base=2)
    ax.set_xlabel("activation FIFO depth")
    ax.set_ylabel("load-balance efficiency (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Sparse FC unit, {n_pe} PEs (cycle model)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-pe", type=int, default=64, help="processing elements (default 64)")
    parser.add_argument(
        "--depths",
        default=",".join(map(str, DEPTHS)),
        help="comma-separated FIFO depths (default 1,2,4,8,16,32)",
    )
    parser.add_argument("--all", action="store_true", help="all nine EIE layers")
    parser.add_argument("--layers", help=f"comma-separated names from {', '.join(EIE_LAYERS)}")
    parser.add_argument("--index-bits", type=int, default=4, help="relative index width")
    parser.add_argument("--scale", type=int, default=1, help="divide every dimension by this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of efficiency vs depth")
    args = parser.parse_args(argv)

    if args.layers:
        names = [n.strip() for n in args.layers.split(",") if n.strip()]
        unknown = [n for n in names if n not in EIE_LAYERS]
        if unknown:
            parser.error(f"unknown layer {unknown[0]!r}; known: {', '.join(EIE_LAYERS)}")
    else:
        names = list(EIE_LAYERS) if args.all else list(CORE_LAYERS)
    try:
        depths = tuple(int(d) for d in args.depths.split(","))
    except ValueError:
        parser.error(f"--depths must be integers separated by commas, got {args.depths!r}")
    if args.n_pe < 1 or args.n_pe & (args.n_pe - 1) or args.n_pe > 64:
        parser.error(f"--n-pe must be a power of two in 1..64, got {args.n_pe}")
    if args.scale < 1 or min(depths) < 1:
        parser.error("--scale and every depth must be >= 1")

    began = time.perf_counter()
    rows = study(
        [EIE_LAYERS[n] for n in names],
        n_pe=args.n_pe,
        depths=depths,
        index_bits=args.index_bits,
        scale=args.scale,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(markdown(rows))
        print(f"\n({time.perf_counter() - began:.1f} s)", file=sys.stderr)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
