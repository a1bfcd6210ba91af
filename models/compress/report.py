"""The compression report: what each layer of an IR net costs on a Target, against float32.

Bytes are those of the generated memories on the Target the net will run on
(:func:`squeezeforge.sim.storage.layer_storage`, the one definition the compiler's engines use
too): fully connected layers, sparse or dense, are held by the sparse FC unit in EIE's CSC form
over the Target's ``fc_pes`` PEs (weight codes and ``index_bits``-wide relative indices per
entry, padding included, each PE's bank as deep as the busiest PE's; column pointers; a codebook
copy per PE; biases); conv layers by the conv engine (weights in lanes of ``conv_cols`` filters,
biases at the accumulator's width). The same net costs a different number of bytes on another
Target.

The compression ratio Cr is float32 dense bytes (weights and biases at 4 bytes each) over those
bytes. Effective MACs skip zero weights (not zero activations).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from squeezeforge.sim.ir import Net, SparseDense
from squeezeforge.sim.storage import layer_storage, net_act_bits
from squeezeforge.sim.target import Target

__all__ = ["layer_costs", "net_costs", "quality_block", "report_markdown"]


def layer_costs(
    layer: Any,
    in_shape: tuple[int, ...],
    target: Target | None = None,
    act_bits: int | None = None,
) -> dict[str, Any]:
    """Parameters, density, storage on ``target`` (the default Target when None) and MACs of
    one compute layer of an IR net."""
    target = target or Target()
    wf = layer.weight_format
    values = layer.weight_values()
    params = int(values.size)
    nonzeros = int(np.count_nonzero(values))
    outputs = int(layer.bias.shape[0])
    held = layer_storage(layer, target, act_bits)
    parts = held.bytes()
    float_bytes = 4 * (params + outputs)
    macs_dense = int(layer.macs(in_shape))
    # Every weight of a conv is used once per output position, so zeros save the same share.
    macs_effective = macs_dense * nonzeros // params if params else 0
    return {
        "name": layer.name,
        "kind": layer.kind,
        "engine": held.engine,
        "storage": "sparse" if isinstance(layer, SparseDense) else "dense",
        "weight_format": wf.kind,
        "weight_bits": int(wf.stored_bits),
        "params": params,
        "nonzeros": nonzeros,
        "density": nonzeros / params if params else 0.0,
        "entries": held.entries,
        "bits_per_nonzero": (held.total - held.bias) / nonzeros if nonzeros else 0.0,
        "bytes": parts,
        "float_bytes": float_bytes,
        "compression_ratio": float_bytes / parts["total"] if parts["total"] else 0.0,
        "macs": {"dense": macs_dense, "effective": int(macs_effective)},
    }


def net_costs(
    net: Net, target: Target | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-layer costs on ``target`` (the default Target when None) and their totals (with the
    net's compression ratio)."""
    target = target or Target()
    act_bits = net_act_bits(net.layers, target)
    layers = [layer_costs(layer, shape, target, act_bits) for layer, shape in net.compute_layers()]
    params = sum(e["params"] for e in layers)
    nonzeros = sum(e["nonzeros"] for e in layers)
    total_bytes = sum(e["bytes"]["total"] for e in layers)
    float_bytes = sum(e["float_bytes"] for e in layers)
    totals = {
        "params": params,
        "nonzeros": nonzeros,
        "density": nonzeros / params if params else 0.0,
        "bytes": total_bytes,
        "float_bytes": float_bytes,
        "compression_ratio": float_bytes / total_bytes if total_bytes else 0.0,
        "macs": {
            "dense": sum(e["macs"]["dense"] for e in layers),
            "effective": sum(e["macs"]["effective"] for e in layers),
        },
    }
    return layers, totals


def _target_label(report: dict[str, Any]) -> str:
    t = report.get("target") or Target().to_dict()
    return (
        f"`{t['name']}`: conv {t['conv_rows']}x{t['conv_cols']}, {t['fc_pes']} FC PEs,"
        f" {t['index_bits']}-bit index"
    )


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def quality_block(
    task: str,
    float_q: dict[str, float],
    fake_q: dict[str, float],
    *,
    reference: dict[str, float] | None = None,
    agreement: float | None = None,
    reference_vs_float: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The report's quality entries: ``accuracy`` (fractions) for classification; for
    regression ``accuracy`` None and ``error`` (MSE and max abs error against the targets)."""
    stages = {"float": float_q, "fake_quant": fake_q}
    if reference is not None:
        stages["reference"] = reference
    if task == "classification":
        block: dict[str, Any] = {k: q["accuracy"] for k, q in stages.items()}
        if agreement is not None:
            block["agreement"] = agreement
        return {"accuracy": block}
    err: dict[str, Any] = dict(stages)
    if agreement is not None:
        err["agreement"] = agreement
    if reference_vs_float is not None:
        err["reference_vs_float"] = reference_vs_float
    return {"accuracy": None, "error": err}


def _quality_lines(report: dict[str, Any]) -> list[str]:
    acc = report["accuracy"]
    n = report["test_images"]
    if acc is not None:
        return [
            f"- accuracy: float {_pct(acc['float'])}, fake-quantized {_pct(acc['fake_quant'])},"
            f" reference (IR) {_pct(acc['reference'])}"
            f" (drop {100 * (acc['float'] - acc['reference']):.2f} points)",
            f"- fake-quantized and reference predictions agree on {_pct(acc['agreement'])}"
            f" of {n} test images",
        ]
    err = report["error"]
    return [
        *(
            f"- {label} against the targets: MSE {err[key]['mse']:.4g},"
            f" max abs error {err[key]['max_abs_error']:.4g}"
            for key, label in (
                ("float", "float"),
                ("fake_quant", "fake-quantized"),
                ("reference", "reference (IR)"),
            )
        ),
        f"- fake-quantized and reference outputs are identical on {_pct(err['agreement'])}"
        f" of {n} test samples",
        *(
            f"- reference against the float model's outputs: MSE {v['mse']:.4g},"
            f" max abs error {v['max_abs_error']:.4g}"
            for v in [err.get("reference_vs_float")]
            if v
        ),
    ]


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: accuracies, then one row per layer and a total row."""
    lines = [
        f"# Compression report: {report['recipe']} on {report['model']}",
        "",
        f"- net: `{report['net']}`",
        *_quality_lines(report),
        *(f"- note: {n}" for n in report.get("notes", ())),
        f"- compression ratio Cr = {report['compression_ratio']:.1f}x"
        f" ({report['totals']['float_bytes']} B of float32 before compression ->"
        f" {report['totals']['bytes']} B"
        f" on target {_target_label(report)})",
        "",
        "| layer | storage | format | params | non-zeros | density | bits/weight"
        " | bits/non-zero | weights B | index B | codebook B | bias B | total B | Cr"
        " | MACs dense | MACs effective |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in report["layers"]:
        b = e["bytes"]
        lines.append(
            f"| {e['name']} | {e['storage']} | {e['weight_format']} | {e['params']}"
            f" | {e['nonzeros']} | {_pct(e['density'])} | {e['weight_bits']}"
            f" | {e['bits_per_nonzero']:.2f} | {b['weights']} | {b['index']} | {b['codebook']}"
            f" | {b['bias']} | {b['total']} | {e['compression_ratio']:.1f}x"
            f" | {e['macs']['dense']} | {e['macs']['effective']} |"
        )
    t = report["totals"]
    lines.append(
        f"| **total** | | | {t['params']} | {t['nonzeros']} | {_pct(t['density'])} | | | | | |"
        f" | {t['bytes']} | {t['compression_ratio']:.1f}x | {t['macs']['dense']}"
        f" | {t['macs']['effective']} |"
    )
    if report.get("steps"):
        after = "accuracy" if report["accuracy"] is not None else "MSE"
        lines += ["", f"| step | seconds | fake-quantized {after} after |", "|---|---:|---:|"]
        for s in report["steps"]:
            figure = _pct(s["accuracy"]) if "accuracy" in s else f"{s['mse']:.4g}"
            lines.append(f"| {s['pass']} | {s['seconds']:.1f} | {figure} |")
    return "\n".join(lines) + "\n"
