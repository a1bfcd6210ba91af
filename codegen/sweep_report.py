"""A sweep's report: the Pareto plots (PNG) and report.md, from the rows of its table."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .plots import _figure, _save

if TYPE_CHECKING:
    from .sweep import Objective, SweepResult, SweepSpec

__all__ = ["plot_pareto", "projection", "report_markdown"]

_GREY = "#c8c8c8"

# The axes of the two figures: (x, y, log x) per panel.
_PANELS = (
    ("images_per_s", "accuracy", False),
    ("lut", "accuracy", False),
    ("lut", "images_per_s", False),
)
_LABELS = {
    "images_per_s": "images/s (estimated clock)",
    "accuracy": "reference accuracy",
    "lut": "LUT (estimated)",
    "compression_ratio": "Cr (float bytes / stored bytes)",
}


def _scatter(ax: Any, rows: Sequence[Mapping[str, Any]], x: str, y: str, colours: dict) -> None:
    have = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    grey = [r for r in have if not r.get("front")]
    ax.scatter(
        [r[x] for r in grey],
        [r[y] for r in grey],
        c=_GREY,
        s=18,
        marker=".",
        label="dominated or does not fit",
    )
    for recipe, colour in colours.items():
        mine = [r for r in have if r.get("front") and r["recipe"] == recipe]
        if mine:
            ax.scatter([r[x] for r in mine], [r[y] for r in mine], c=colour, s=36, label=recipe)
    verified = [r for r in have if r.get("verified")]
    if verified:
        ax.scatter(
            [r[x] for r in verified],
            [r[y] for r in verified],
            facecolors="none",
            edgecolors="black",
            s=110,
            label="verified (RTL, Yosys)",
        )
    ax.set_xlabel(_LABELS.get(x, x))
    ax.set_ylabel(_LABELS.get(y, y))
    ax.grid(alpha=0.3)


def plot_pareto(
    rows: Sequence[Mapping[str, Any]], objectives: Sequence[Objective], out: Path
) -> dict[str, str]:
    """Two PNGs: accuracy, images/s and LUTs pairwise (the front of the spec's objectives in
    colour), and accuracy against Cr (the front of those two); dominated points grey."""
    from .sweep import Objective, pareto_front

    recipes = sorted({str(r["recipe"]) for r in rows})
    palette = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    colours = {r: palette[i % len(palette)] for i, r in enumerate(recipes)}
    files = {}
    ok = [dict(r) for r in rows if r["status"] == "ok"]
    rest = [dict(r, front=False) for r in rows if r["status"] != "ok"]
    for r, f in zip(ok, pareto_front(ok, objectives), strict=True):
        r["front"] = f
    fig, axes = _figure(len(_PANELS), figsize=(5.0 * len(_PANELS), 4.2))
    for ax, (x, y, _) in zip(axes[0], _PANELS, strict=True):
        _scatter(ax, ok + rest, x, y, colours)
    names = ", ".join(f"{o.direction} {o.figure}" for o in objectives)
    fig.suptitle(f"Pareto front of {names}; grey: dominated or does not fit")
    fig.subplots_adjust(wspace=0.3)
    # One legend below the panels: inside one it would hide points.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, -0.08))
    files["pareto"] = _save(fig, out / "pareto.png")

    cr_objectives = [Objective("accuracy", "max"), Objective("compression_ratio", "max")]
    for r, f in zip(ok, pareto_front(ok, cr_objectives), strict=True):
        r["front"] = f
    fig, axes = _figure(1, figsize=(5.5, 4.2))
    _scatter(axes[0][0], ok + rest, "compression_ratio", "accuracy", colours)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("accuracy against Cr; grey: dominated")
    files["pareto_cr"] = _save(fig, out / "pareto_cr.png")
    return files


def projection(
    stage_seconds: Mapping[str, Sequence[float]], counts: Mapping[str, int], workers: int
) -> float:
    """Seconds a sweep of ``counts`` tasks per stage would take on ``workers`` workers, from the
    measured mean seconds per task: the stages run one after another (each needs the last),
    a stage's tasks ``workers`` at a time."""
    total = 0.0
    for stage, n in counts.items():
        seconds = stage_seconds.get(stage) or []
        if n and seconds:
            total += math.ceil(n / workers) * (sum(seconds) / len(seconds))
    return total


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def report_markdown(spec: SweepSpec, result: SweepResult, files: Mapping[str, str]) -> str:
    rows = result.rows
    status = Counter(r["status"] for r in rows)
    params = ["recipe", *spec.recipe_axes, *spec.hardware_axes]
    lines = [
        f"# Sweep {spec.name}",
        "",
        f"Model `{Path(spec.model).name}` on `{Path(spec.data).name}`; {len(rows)} points"
        f" ({spec.sampling}); {status.get('ok', 0)} ok, {status.get('does-not-fit', 0)} do not"
        f" fit their part, {status.get('failed', 0)} failed; {result.workers} Dask workers,"
        f" {result.seconds:.0f} s.",
        "",
        "Figures of every point are **estimated**: cycles from the engines' cycle models (exact"
        " against RTL in the test suite), LUT/FF/DSP/BRAM from the folding pass's resource model"
        " (fitted to Yosys), images/s at the Target's clock goal (`clock_mhz`), not at a measured"
        " Fmax. The accuracy is the bit-accurate reference's on the test split. Verified points"
        " add **measured** figures: RTL cycles on Verilator (bit-exact images), Yosys resources"
        " and nextpnr Fmax, and images/s at that Fmax.",
        "",
        "## Pareto front",
        "",
        "Objectives: " + ", ".join(f"{o.direction} {o.figure}" for o in spec.objectives) + ".",
        "",
    ]
    head = [*params, "accuracy", "Cr", "cycles (est.)", "LUT (est.)", "DSP", "BRAM",
            "images/s (est.)", "verified: bit-exact", "cycles (RTL)", "LUT (Yosys)",
            "Fmax MHz", "images/s (measured)"]  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    front = sorted(
        (r for r in rows if r.get("pareto")),
        key=lambda r: -(r.get(spec.objectives[0].figure) or 0),
    )
    for r in front:
        cells = [_fmt(r.get(p)) for p in params] + [
            _fmt(r["accuracy"], ".2%"),
            _fmt(r["compression_ratio"], ".1f"),
            _fmt(r["cycles"]),
            _fmt(r["lut"]),
            _fmt(r["dsp"]),
            _fmt(r["bram"]),
            _fmt(r["images_per_s"], ",.0f"),
            _fmt(r.get("bit_exact")),
            _fmt(r.get("cycles_rtl")),
            _fmt(r.get("lut_yosys")),
            _fmt(r.get("fmax_mhz"), ".1f"),
            _fmt(r.get("images_per_s_measured"), ",.0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [r for r in rows if r.get("verified") and r.get("verify_note")]
    if notes:
        lines += [""] + [f"- `{r['id']}` ({r['recipe']}): {r['verify_note']}" for r in notes]
    # A design verified for two parts has one build folder.
    builds = sorted({str(Path(r["build"]).relative_to(result.out)) for r in rows if r.get("build")})
    if builds:
        lines += ["", "Build folders of the verified designs: "
                  + ", ".join(f"`{b}`" for b in builds) + "."]  # fmt: skip
    lines += ["", f"![Pareto front]({Path(files['pareto']).name})", ""]
    lines += [f"![accuracy against Cr]({Path(files['pareto_cr']).name})", ""]

    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        # "does not fit: DSP 114% of ..." and "... 129% ..." are one reason.
        reasons = Counter(re.split(r" \d", str(r["reason"]))[0] for r in failed)
        lines += ["## Points without a place on the front", ""]
        lines += [f"- {n} × {reason}" for reason, n in reasons.most_common()]
        lines.append("")

    times = result.stage_seconds
    lines += [
        "## Where the time went",
        "",
        "| stage | tasks | mean s per task |",
        "|---|---:|---:|",
    ]
    for stage, seconds in times.items():
        mean = sum(seconds) / len(seconds) if seconds else None
        lines.append(f"| {stage} | {len(seconds)} | {_fmt(mean, '.2f')} |")
    lines += [
        "",
        "Tasks finished in an earlier run of the same spec count with the seconds they took then.",
        "",
    ]
    counts = {stage: len(seconds) for stage, seconds in times.items()}
    if any(counts.values()):
        lines += [
            "Projected wall time of these tasks on N workers (each stage's tasks N at a time,"
            " at the mean seconds above; cluster start-up and data transfer not counted):",
            "",
            "| workers | minutes | points per minute |",
            "|---:|---:|---:|",
        ]
        for n in (1, 2, 4, 8, 16, 64):
            seconds = projection(times, counts, n)
            rate = len(rows) / (seconds / 60) if seconds else None
            lines.append(f"| {n} | {seconds / 60:.1f} | {_fmt(rate, '.0f')} |")
    lines += [
        "",
        "The whole table is `results.csv` (one row per point, every parameter and figure).",
        "",
    ]
    return "\n".join(lines)
