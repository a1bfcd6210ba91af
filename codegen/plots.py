"""The flow's plots: cycles per layer, accuracy against compression, resources by engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["write_plots"]


def _figure(ncols: int = 1, *, figsize: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """A figure drawn by the Agg canvas alone: files only, and neither pyplot's global state
    nor the backend of a notebook that imports the flow is touched."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)


def _save(fig: Figure, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    return str(path)


def plot_cycles(sims: dict[str, dict], path: Path) -> str:
    fig, axes = _figure(len(sims), figsize=(5 * len(sims), 3.6))
    for ax, (recipe, sim) in zip(axes[0], sims.items(), strict=True):
        names = ["+".join(s["layers"]) for s in sim["steps"]]
        est = [s["cycles_estimated"] for s in sim["steps"]]
        got = [s["cycles_measured"] for s in sim["steps"]]
        x = np.arange(len(names))
        ax.bar(x - 0.2, est, 0.4, label="estimated")
        ax.bar(x + 0.2, got, 0.4, label="measured (RTL)")
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{recipe}: cycles per layer")
        ax.set_ylabel("cycles")
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_accuracy_vs_cr(points: list[dict], path: Path) -> str:
    """``points``: dicts with ``label``, ``cr``, ``accuracy`` (and optional ``rtl``)."""
    fig, axes = _figure(figsize=(5.5, 3.8))
    ax = axes[0, 0]
    for p in points:
        ax.scatter(p["cr"], 100 * p["accuracy"], s=40)
        ax.annotate(
            p["label"],
            (p["cr"], 100 * p["accuracy"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
        if p.get("rtl") is not None:
            ax.scatter(p["cr"], 100 * p["rtl"], marker="x", color="k", s=30)
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio Cr (float32 bytes / compressed bytes)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs compression (x: measured on RTL)")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_resources(resources: dict[str, dict], path: Path) -> str:
    """LUTs of each engine, per build and target."""
    labels = list(resources)
    engines = sorted({e for r in resources.values() for e in r["engines"]})
    fig, axes = _figure(figsize=(max(5, 1.3 * len(labels)), 3.8))
    ax = axes[0, 0]
    bottom = np.zeros(len(labels))
    for e in engines:
        vals = np.array([resources[k]["engines"].get(e, {}).get("lut", 0) for k in labels])
        ax.bar(labels, vals, bottom=bottom, label=e)
        bottom += vals
    ax.scatter(
        labels,
        [resources[k]["total"]["lut"] for k in labels],
        color="k",
        marker="_",
        s=400,
        label="whole top",
        zorder=3,
    )
    ax.set_ylabel("LUTs")
    ax.set_title("resources by engine")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_plots(report: dict, out: Path) -> dict[str, str]:
    plots = {}
    if report.get("simulate"):
        plots["cycles"] = plot_cycles(report["simulate"], out / "cycles_per_layer.png")
    points = []
    for recipe, c in report.get("compress", {}).items():
        rtl = report.get("simulate", {}).get(recipe, {}).get("accuracy")
        points.append(
            {
                "label": recipe,
                "cr": c["compression_ratio"],
                "accuracy": c["accuracy"]["reference"],
                "rtl": rtl,
            }
        )
    if points:
        plots["accuracy_vs_cr"] = plot_accuracy_vs_cr(points, out / "accuracy_vs_cr.png")
    if report.get("resources"):
        plots["resources"] = plot_resources(report["resources"], out / "resources.png")
    return plots
