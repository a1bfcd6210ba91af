"""The flow's report: Markdown for people, JSON for scripts, both written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from ..sim.ir import atomic_write_bytes
from ..sim.netsim import layer_cycles

__all__ = ["headline_rows", "write_report"]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def headline_rows(report: dict) -> list[dict]:
    """One row per compressed net: Cr, accuracies, cycles, speed-up over the dense baseline."""
    rows = []
    base_recipe = report["config"]["baseline_recipe"]
    base_cycles = report["simulate"][base_recipe]["cycles_per_inference"]
    for recipe, sim in report["simulate"].items():
        if recipe == base_recipe:
            continue
        comp = report["compress"][recipe]
        est = report["generate"][recipe]["cycles_estimated"]
        rows.append(
            {
                "recipe": recipe,
                "compression_ratio": comp["compression_ratio"],
                "accuracy_float": comp["accuracy"]["float"],
                "accuracy_reference": comp["accuracy"]["reference"],
                "accuracy_rtl": sim["accuracy"],
                "bit_exact": f"{sim['bit_exact']}/{sim['images']}",
                "cycles_measured": sim["cycles_per_inference"],
                "cycles_estimated": est,
                "cycles_ideal": sum(s["cycles_ideal"] for s in report["generate"][recipe]["steps"]),
                "dense8_cycles": base_cycles,
                # Sr: the same net with dense 8-bit weights on the same engines, both measured.
                "speedup": base_cycles / sim["cycles_per_inference"],
            }
        )
    return rows


def _markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [
        "# squeezeforge flow report",
        "",
        f"Model `{cfg['model']}` on the digits data set; float test accuracy"
        f" {_pct(report['train']['float_accuracy'])}.",
        "",
        "## Headline",
        "",
        "| recipe | Cr | acc. float | acc. reference | acc. RTL | bit-exact | cycles/inference"
        " (RTL) | estimated | ideal bound | dense 8-bit (RTL) | Sr |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in headline_rows(report):
        lines.append(
            f"| {r['recipe']} | {r['compression_ratio']:.1f}x | {_pct(r['accuracy_float'])}"
            f" | {_pct(r['accuracy_reference'])} | {_pct(r['accuracy_rtl'])} | {r['bit_exact']}"
            f" | {r['cycles_measured']:.0f} | {r['cycles_estimated']} | {r['cycles_ideal']:.0f}"
            f" | {r['dense8_cycles']:.0f} | {r['speedup']:.2f}x |"
        )
    lines += ["", "## Cycles per layer", ""]
    for recipe, sim in report["simulate"].items():
        lines += [
            f"**{recipe}**",
            "",
            "| layers | engine | measured | estimated |",
            "|---|---|---:|---:|",
        ]
        for s in layer_cycles(sim["steps"]):
            lines.append(
                f"| {s['label']} | {s['engine']} | {s['cycles_measured']:.1f}"
                f" | {s['cycles_estimated']} |"
            )
        lines.append("")
    lines += [
        "## Resources",
        "",
        "| build | target | block | LUT | FF | DSP | BRAM | Fmax MHz |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, res in report["resources"].items():
        recipe, target = key.split("/")
        for block, r in [*res["engines"].items(), ("**total**", res["total"])]:
            fmax = r.get("fmax_mhz")
            lines.append(
                f"| {recipe} | {target} | {block} | {r['lut']} | {r['ff']} | {r['dsp']}"
                f" | {r['bram']} | {'' if fmax is None else f'{fmax:.1f}'} |"
            )
    lines += ["", "## Time per step", "", "| step | seconds |", "|---|---:|"]
    for name, secs in report["seconds"].items():
        lines.append(f"| {name} | {secs:.1f} |")
    if report.get("plots"):
        lines += ["", "## Plots", ""]
        lines += [f"![{k}]({Path(v).name})" for k, v in report["plots"].items()]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    md, js = out / "report.md", out / "report.json"
    atomic_write_bytes(js, json.dumps(report, indent=1, sort_keys=True, default=str).encode())
    atomic_write_bytes(md, _markdown(report).encode())
    return md, js
