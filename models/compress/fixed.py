"""Dynamic fixed point for weights, biases and activations (Ristretto), with QAT fine-tuning.

Each layer gets its own fraction lengths from the ranges it shows on the training data:
weights by Ristretto's rule ``il = ceil(log2(max|W|) + 1)``, activations by
:func:`~squeezeforge.models.quant.activation_frac`, biases at the accumulator's fraction length
(input frac + weight frac, as the numeric contract stores them). Fine-tuning then trains the
float weights through the rounding with a straight-through estimator while the formats stay put.

The pass also finishes any model for export: layers whose weights another pass already quantized
(INQ, weight sharing) keep their weight format and only get activation formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import NET_INPUT
from squeezeforge.sim.numerics import ADD_MAX_ALIGN, MIN_FRAC, FixedFormat, FixedWeights

from ..graph import ResidualAdd
from ..quant import (
    CompressedLayer,
    FixedQuantizer,
    NetGraph,
    QuantAdd,
    QuantAvgPool,
    QuantClamp,
    QuantConcat,
    activation_frac,
    graph_leaves,
    net_graph,
    weight_frac,
)
from .base import Context, Finetune, LayerSpec, select_layers

__all__ = ["FixedPoint", "bind_formats", "calibrate", "concat_groups"]


def calibrate(model: nn.Module, x: np.ndarray) -> tuple[float, dict[str, float]]:
    """Largest input magnitude and, per compute layer and add, the largest output it must hold.

    After a ReLU only positive values are stored, so the range is ``max(y)``, and a clamp caps
    it; for a layer without ReLU it is ``max|y|``.
    """
    graph = net_graph(model)
    maxima: dict[str, float] = {}
    hooks = []
    for node in graph.nodes:
        if not isinstance(node.module, nn.Conv2d | nn.Linear | CompressedLayer | ResidualAdd):
            continue

        def hook(_m: nn.Module, _inp: object, out: torch.Tensor, node=node) -> None:
            y = out.detach()
            peak = float(y.max() if node.relu else y.abs().max())
            maxima[node.name] = peak if node.clamp is None else min(peak, node.clamp)

        hooks.append(node.module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.as_tensor(x).float())
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return float(np.abs(x).max()), maxima


def concat_groups(graph: NetGraph) -> dict[str, str]:
    """The group of every IR tensor, named by one of its members: tensors a concat joins must
    have one format, and so must the compute layers, adds or net input that made them (through
    pools and flattens, which keep the format). Without concats each maker is its own group."""
    parent: dict[str, str] = {NET_INPUT: NET_INPUT}

    def find(t: str) -> str:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    origin = {NET_INPUT: NET_INPUT}
    for node in graph.nodes:
        if isinstance(node.module, CompressedLayer | QuantAdd):
            parent[node.name] = origin[node.name] = node.name
        elif isinstance(node.module, QuantConcat):
            roots = [find(origin[src]) for src in node.sources]
            for r in roots[1:]:
                parent[r] = roots[0]
            origin[node.name] = roots[0]
        else:
            origin[node.name] = origin[node.sources[0]]
    return {t: find(o) for t, o in origin.items()}


def bind_formats(model: nn.Module, formats: dict[str, FixedFormat]) -> None:
    """Set the formats of every layer of a prepared ``model`` from those of its IR tensors
    (``formats``, by tensor name; :data:`~squeezeforge.sim.ir.NET_INPUT` included)."""
    graph = net_graph(model)
    for node in graph.nodes:
        m = node.module
        ins = [formats[src] for src in node.sources]
        if isinstance(m, CompressedLayer):
            m.input_format, m.output_format = ins[0], formats[node.name]
        elif isinstance(m, QuantAdd):
            m.input_formats, m.format = (ins[0], ins[1]), formats[node.name]
        elif isinstance(m, QuantConcat | QuantAvgPool):
            m.format = ins[0]
    for name, m, _ in graph_leaves(model):
        if isinstance(m, QuantClamp):
            m.format = formats[graph.tensor_of[name]]


@dataclass(frozen=True)
class FixedPoint:
    """Dynamic fixed point: formats for every layer, then quantization-aware fine-tuning.

    ``weight_bits`` applies to the selected ``layers`` whose weights no other pass has quantized
    (INQ and weight sharing keep their formats). ``output_bits`` is the last layer's width: its
    logits are compared, not passed on, and a wide format keeps near-ties apart; its range gets
    ``output_headroom`` times the calibrated maximum.

    In a graph, the tensors a concat joins get one format: the one with the smaller fraction
    length, so that no member saturates (:func:`concat_groups`); an add's output is at most as
    fine as the finer of its inputs.
    """

    kind: ClassVar[str] = "fixed-point"

    weight_bits: int = 8
    activation_bits: int = 8
    input_bits: int | None = None
    output_bits: int = 16
    output_headroom: float = 2.0
    layers: LayerSpec = "all"
    finetune: Finetune = field(default_factory=Finetune)

    def apply(self, model: nn.Module, ctx: Context) -> nn.Module:
        graph = net_graph(model)
        for _, m, _ in graph_leaves(model):
            # Float layers while calibrating.
            if isinstance(m, CompressedLayer):
                m.input_format = m.output_format = None
            elif isinstance(m, QuantAdd):
                m.format, m.input_formats = None, None
            elif isinstance(m, QuantAvgPool | QuantClamp | QuantConcat):
                m.format = None
        selected = {name for name, _ in select_layers(model, self.layers, "fixed-point")}
        for node in graph.nodes:
            m = node.module
            if isinstance(m, CompressedLayer) and m.weight_quantizer is None:
                if node.name in selected:
                    max_abs = float(m.weight.detach().abs().max())
                    fmt = FixedWeights(self.weight_bits, weight_frac(self.weight_bits, max_abs))
                    m.weight_quantizer = FixedQuantizer(fmt)
                else:
                    raise UserError(
                        f"layer {node.name!r} has float weights; list it in the fixed-point"
                        " step's layers or quantize it with another pass"
                    )
        input_max, maxima = calibrate(model, ctx.data.x_train)
        bind_formats(model, self._formats(graph, input_max, maxima))
        ctx.finetune(model, self.finetune, "fixed-point fine-tune")
        return model

    def _formats(
        self, graph: NetGraph, input_max: float, maxima: dict[str, float]
    ) -> dict[str, FixedFormat]:
        """The format of every IR tensor. Each compute layer and add is given the format that
        holds its calibrated range; a concat's group shares the coarsest of its members'.
        Requantization only shifts right, so a layer's output cannot be finer than its
        accumulator: where it would be, its group's fraction length is capped and the formats
        are worked out again (in a stack this is the plain ``min`` of the two)."""
        group = concat_groups(graph)
        out_group = group[graph.output]
        in_bits = self.input_bits or self.activation_bits
        wanted: dict[str, tuple[int, float]] = {NET_INPUT: (in_bits, input_max)}
        for name, peak in maxima.items():
            last = group[name] == out_group
            bits = self.output_bits if last else self.activation_bits
            wanted[name] = (bits, peak * (self.output_headroom if last else 1.0))
        members: dict[str, list[str]] = {}
        for t in wanted:
            members.setdefault(group[t], []).append(t)
        cap: dict[str, int] = {}

        def group_format(g: str) -> FixedFormat:
            bits = max(wanted[t][0] for t in members[g])
            frac = min(activation_frac(bits, wanted[t][1]) for t in members[g])
            frac = min(frac, cap.get(g, frac))
            if frac < MIN_FRAC:
                raise UserError(
                    f"fixed-point: no fraction length fits {', '.join(sorted(members[g]))}"
                    f" (below {MIN_FRAC})"
                )
            return FixedFormat(bits, frac)

        while True:
            formats = {NET_INPUT: group_format(group[NET_INPUT])}
            for node in graph.nodes:
                m = node.module
                ins = [formats[src] for src in node.sources]
                if isinstance(m, CompressedLayer | QuantAdd):
                    if isinstance(m, QuantAdd):
                        fa, fb = ins
                        if abs(fa.frac - fb.frac) > ADD_MAX_ALIGN:
                            raise UserError(
                                f"fixed-point: add {node.name!r} reads {node.sources[0]!r} at"
                                f" fraction length {fa.frac} and {node.sources[1]!r} at"
                                f" {fb.frac}, more than {ADD_MAX_ALIGN} apart"
                            )
                        limit = max(fa.frac, fb.frac)  # the exact sum's
                    else:
                        wf = m.weight_format()
                        assert wf is not None
                        limit = ins[0].frac + wf.frac
                    fmt = group_format(group[node.name])
                    if fmt.frac > limit:
                        cap[group[node.name]] = limit
                        break  # work the formats out again with the cap
                    formats[node.name] = fmt
                else:  # pools, flatten, concat: the format passes (a concat's inputs share it)
                    formats[node.name] = ins[0]
            else:
                return formats
