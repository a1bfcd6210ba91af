"""Compression results on the embedded digits set: the README table and a rate-distortion plot.

Trains the CNN and the MLP (seed 0, or loads given checkpoints), runs the shipped recipes
(``fixed8`` and ``inq5`` on the CNN, ``deep-compression`` on the MLP) twice each to check that the
same seed writes byte-identical nets, then sweeps the pruning level of ``deep-compression`` on the
MLP and the bit width of ``fixed8`` on the CNN. Prints a Markdown table (or ``--json``) and writes
accuracy against compression ratio as a PNG. A few minutes at most on two cores.

    python scripts/compression_results.py [--plot build/compression-rd.png] [--json]
"""

from __future__ import annotations

import os

# The same trained weights on every x86 processor, as the console script gives (Makefile); set
# before torch is imported.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from squeezeforge.models.compress import compress, load_recipe, parse_recipe
from squeezeforge.models.data import load_digits
from squeezeforge.models.train import Checkpoint, load_checkpoint, train

# (model, recipe, largest accuracy drop in points, smallest Cr) from issue 3.
TARGETS = [
    ("cnn", "fixed8", 0.5, None),
    ("cnn", "inq5", 0.5, None),
    ("mlp", "deep-compression", 1.0, 25.0),
]
DEFAULT_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97)
DEFAULT_BITS = (6, 5, 4)


def _row(kind: str, label: str, report: dict[str, Any], **extra: Any) -> dict[str, Any]:
    acc = report["accuracy"]
    return {
        "kind": kind,
        "label": label,
        "model": report["model"],
        "recipe": report["recipe"],
        "accuracy": acc,
        "drop_points": round(100 * (acc["float"] - acc["reference"]), 2),
        "compression_ratio": report["compression_ratio"],
        "density": report["totals"]["density"],
        **extra,
    }


def _sweep_recipe(base: str, name: str, edit: Any) -> Any:
    source = copy.deepcopy(load_recipe(base).source)
    edit(source)
    return parse_recipe(source, name)


def collect(
    checkpoints: dict[str, Checkpoint],
    *,
    sparsities: tuple[float, ...] = DEFAULT_SPARSITIES,
    bits: tuple[int, ...] = DEFAULT_BITS,
    quiet: bool = True,
) -> list[dict[str, Any]]:
    """Run the recipes and sweeps; one row per compressed net."""
    data = load_digits()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for model, recipe, max_drop, min_cr in TARGETS:
            first = compress(checkpoints[model], recipe, out / "a.sfnet", data=data, quiet=quiet)
            compress(checkpoints[model], recipe, out / "b.sfnet", data=data, quiet=quiet)
            identical = (out / "a.sfnet").read_bytes() == (out / "b.sfnet").read_bytes()
            drop = 100 * (first["accuracy"]["float"] - first["accuracy"]["reference"])
            met = drop <= max_drop + 1e-9 and (
                min_cr is None or first["compression_ratio"] >= min_cr
            )
            target = f"drop <= {max_drop} points" + (f", Cr >= {min_cr:g}x" if min_cr else "")
            rows.append(
                _row("recipe", recipe, first, target=target, met=met, byte_identical=identical)
            )
        for s in sparsities:

            def prune_all(src: dict, s: float = s) -> None:
                src["steps"][0]["sparsity"] = s

            recipe = _sweep_recipe("deep-compression", f"deep-compression@{s:g}", prune_all)
            report = compress(checkpoints["mlp"], recipe, out / "s.sfnet", data=data, quiet=quiet)
            rows.append(_row("sparsity sweep", f"prune {100 * s:g}% + share 4-bit", report))
        for b in bits:

            def narrow(src: dict, b: int = b) -> None:
                src["steps"][0]["weight_bits"] = b
                src["steps"][0]["activation_bits"] = b

            recipe = _sweep_recipe("fixed8", f"fixed{b}", narrow)
            report = compress(checkpoints["cnn"], recipe, out / "b.sfnet", data=data, quiet=quiet)
            rows.append(_row("bit-width sweep", f"fixed point {b}-bit", report))
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| net | compression | float acc. | reference acc. | drop (points) | Cr | target | met |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        acc = r["accuracy"]
        met = "" if "met" not in r else ("yes" if r["met"] else "**no**")
        if r.get("byte_identical") is False:
            met += " (nets differ between runs!)"
        lines.append(
            f"| {r['model']} | {r['label']} | {100 * acc['float']:.2f}% |"
            f" {100 * acc['reference']:.2f}% | {r['drop_points']:.2f} |"
            f" {r['compression_ratio']:.1f}x | {r.get('target', '')} | {met} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Reference accuracy against Cr (log scale): recipes as labelled points, sweeps as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for kind, marker in (("sparsity sweep", "o"), ("bit-width sweep", "s")):
        pts = sorted(
            (r["compression_ratio"], r["accuracy"]["reference"]) for r in rows if r["kind"] == kind
        )
        if pts:
            model = next(r["model"] for r in rows if r["kind"] == kind)
            xs, ys = zip(*pts, strict=True)
            ax.plot(
                xs,
                [100 * y for y in ys],
                marker=marker,
                ls="-",
                alpha=0.6,
                label=f"{model}: {kind}",
            )
    for r in rows:
        if r["kind"] == "recipe":
            x, y = r["compression_ratio"], 100 * r["accuracy"]["reference"]
            ax.plot([x], [y], marker="*", ms=14, ls="none", color="black")
            ax.annotate(
                f"{r['recipe']} ({r['model']})",
                (x, y),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
            )
    for model, ls in (("cnn", "--"), ("mlp", ":")):
        floats = [r["accuracy"]["float"] for r in rows if r["model"] == model]
        if floats:
            ax.axhline(100 * floats[0], ls=ls, color="grey", lw=1, label=f"{model} float32")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([2, 4, 8, 16, 32, 64])
    ax.set_xlabel("compression ratio Cr (float32 dense bytes / compressed bytes)")
    ax.set_ylabel("test accuracy of the bit-accurate reference (%)")
    ax.set_title("squeezeforge on digits: accuracy vs compression")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cnn", metavar="CKPT", help="CNN checkpoint (default: train, seed 0)")
    parser.add_argument("--mlp", metavar="CKPT", help="MLP checkpoint (default: train, seed 0)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 40)")
    parser.add_argument(
        "--sparsity",
        type=float,
        nargs="*",
        default=list(DEFAULT_SPARSITIES),
        help="pruning levels of the MLP sweep",
    )
    parser.add_argument(
        "--bits", type=int, nargs="*", default=list(DEFAULT_BITS), help="CNN bit-width sweep"
    )
    parser.add_argument("--plot", type=Path, default=Path("build/compression-rd.png"))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    args = parser.parse_args(argv)
    data = load_digits()
    checkpoints = {}
    for name in ("cnn", "mlp"):
        path = getattr(args, name)
        if path:
            checkpoints[name] = load_checkpoint(path)
        else:
            kw = {} if args.epochs is None else {"epochs": args.epochs}
            model, _ = train(name, seed=0, data=data, quiet=args.quiet, **kw)
            checkpoints[name] = Checkpoint(name, model)
    rows = collect(
        checkpoints, sparsities=tuple(args.sparsity), bits=tuple(args.bits), quiet=args.quiet
    )
    png = plot(rows, args.plot)
    if args.json:
        print(json.dumps({"rows": rows, "plot": str(png)}, indent=2))
    else:
        print(markdown_table(rows), end="")
        print(f"\nplot: {png}", file=sys.stderr)
    all_met = all(r.get("met", True) and r.get("byte_identical", True) for r in rows)
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
