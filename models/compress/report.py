"""The compression report: what each layer of an IR net costs, against float32 dense storage.

Bytes count everything the hardware must store for a layer:

* weights: ``params * stored_bits`` for dense layers; ``entries * stored_bits`` for sparse ones
  (entries include EIE's padding zeros);
* index: for sparse layers, one ``index_bits``-wide relative row index per entry plus the column
  pointers (``n_pe * (in + 1)`` of them; each PE holds its own entries, so a pointer is as wide
  as the largest PE's entry count needs);
* codebook: ``2**index_bits`` table values of ``value_bits`` each;
* bias: one :func:`~squeezeforge.sim.numerics.bias_bits`-wide integer per output.

The compression ratio Cr is float32 dense bytes (weights and biases at 4 bytes each) over those
bytes. Effective MACs skip zero weights (not zero activations).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from squeezeforge.sim.ir import Net, SparseDense, busiest_pe_entries
from squeezeforge.sim.numerics import CodebookWeights

__all__ = ["layer_costs", "net_costs", "report_markdown"]


def _bytes(bits: int) -> int:
    return math.ceil(bits / 8)


def layer_costs(layer: Any, in_shape: tuple[int, ...]) -> dict[str, Any]:
    """Parameters, density, storage and MACs of one compute layer of an IR net."""
    wf = layer.weight_format
    values = layer.weight_values()
    params = int(values.size)
    nonzeros = int(np.count_nonzero(values))
    outputs = int(layer.bias.shape[0])
    if isinstance(layer, SparseDense):
        entries = layer.entries
        weight_bits = entries * wf.stored_bits
        # Each PE keeps its own entries and pointers (EIE), so a pointer only spans its PE's part.
        per_pe = busiest_pe_entries(layer, layer.n_pe, layer.index_bits)
        pointer_bits = max(1, math.ceil(math.log2(per_pe + 1)))
        index_bits = entries * layer.index_bits + int(layer.ptr.size) * pointer_bits
        storage = "sparse"
    else:
        weight_bits = params * wf.stored_bits
        index_bits = 0
        storage = "dense"
    codebook_bits = len(wf.table) * wf.value_bits if isinstance(wf, CodebookWeights) else 0
    parts = {
        "weights": _bytes(weight_bits),
        "index": _bytes(index_bits),
        "codebook": _bytes(codebook_bits),
        "bias": _bytes(outputs * layer.bias_bits),
    }
    total = sum(parts.values())
    float_bytes = 4 * (params + outputs)
    macs_dense = int(layer.macs(in_shape))
    # Every weight of a conv is used once per output position, so zeros save the same share.
    macs_effective = macs_dense * nonzeros // params if params else 0
    return {
        "name": layer.name,
        "kind": layer.kind,
        "storage": storage,
        "weight_format": wf.kind,
        "weight_bits": int(wf.stored_bits),
        "params": params,
        "nonzeros": nonzeros,
        "density": nonzeros / params if params else 0.0,
        "bits_per_nonzero": (weight_bits + index_bits + codebook_bits) / nonzeros
        if nonzeros
        else 0.0,
        "bytes": {**parts, "total": total},
        "float_bytes": float_bytes,
        "compression_ratio": float_bytes / total if total else 0.0,
        "macs": {"dense": macs_dense, "effective": int(macs_effective)},
    }


def net_costs(net: Net) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-layer costs and their totals (with the net's compression ratio)."""
    layers = [layer_costs(layer, shape) for layer, shape in net.compute_layers()]
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


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: accuracies, then one row per layer and a total row."""
    acc = report["accuracy"]
    lines = [
        f"# Compression report: {report['recipe']} on {report['model']}",
        "",
        f"- net: `{report['net']}`",
        f"- accuracy: float {_pct(acc['float'])}, fake-quantized {_pct(acc['fake_quant'])},"
        f" reference (IR) {_pct(acc['reference'])}"
        f" (drop {100 * (acc['float'] - acc['reference']):.2f} points)",
        f"- fake-quantized and reference predictions agree on {_pct(acc['agreement'])}"
        f" of {report['test_images']} test images",
        f"- compression ratio Cr = {report['compression_ratio']:.1f}x"
        f" ({report['totals']['float_bytes']} B float32 -> {report['totals']['bytes']} B)",
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
        lines += ["", "| step | seconds | fake-quantized accuracy after |", "|---|---:|---:|"]
        for s in report["steps"]:
            lines.append(f"| {s['pass']} | {s['seconds']:.1f} | {_pct(s['accuracy'])} |")
    return "\n".join(lines) + "\n"
