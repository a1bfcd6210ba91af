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
from squeezeforge.sim.numerics import FixedFormat, FixedWeights

from ..quant import (
    CompressedLayer,
    FixedQuantizer,
    QuantAvgPool,
    activation_frac,
    compute_stages,
    leaf_modules,
    weight_frac,
)
from .base import Context, Finetune, LayerSpec, select_layers

__all__ = ["FixedPoint", "bind_pool_formats", "calibrate"]


def bind_pool_formats(model: nn.Module) -> None:
    """Give each average pool the format of the activations it pools (and keeps): the output
    format of the compute layer before it, or the first layer's input format."""
    leaves = [m for _, m in leaf_modules(model)]
    first = next(m for m in leaves if isinstance(m, CompressedLayer))
    fmt = first.input_format
    for m in leaves:
        if isinstance(m, CompressedLayer):
            fmt = m.output_format
        elif isinstance(m, QuantAvgPool):
            m.format = fmt


def calibrate(model: nn.Module, x: np.ndarray) -> tuple[float, dict[str, float]]:
    """Largest input magnitude and, per compute layer, the largest output it must hold.

    After a ReLU only positive values are stored, so the range is ``max(y)``; for a layer
    without ReLU it is ``max|y|``.
    """
    stages = compute_stages(model)
    maxima: dict[str, float] = {}
    hooks = []
    for st in stages:

        def hook(_m: nn.Module, _inp: object, out: torch.Tensor, st=st) -> None:
            y = out.detach()
            maxima[st.name] = float(y.max() if st.relu else y.abs().max())

        hooks.append(st.module.register_forward_hook(hook))
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


@dataclass(frozen=True)
class FixedPoint:
    """Dynamic fixed point: formats for every layer, then quantization-aware fine-tuning.

    ``weight_bits`` applies to the selected ``layers`` whose weights no other pass has quantized
    (INQ and weight sharing keep their formats). ``output_bits`` is the last layer's width: its
    logits are compared, not passed on, and a wide format keeps near-ties apart; its range gets
    ``output_headroom`` times the calibrated maximum.
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
        stages = compute_stages(model)
        pools = [m for _, m in leaf_modules(model) if isinstance(m, QuantAvgPool)]
        for pool in pools:
            pool.format = None  # float averages while calibrating
        selected = {name for name, _ in select_layers(model, self.layers, "fixed-point")}
        for st in stages:
            m = st.module
            assert isinstance(m, CompressedLayer)
            m.input_format = m.output_format = None
            if m.weight_quantizer is None and st.name in selected:
                max_abs = float(m.weight.detach().abs().max())
                fmt = FixedWeights(self.weight_bits, weight_frac(self.weight_bits, max_abs))
                m.weight_quantizer = FixedQuantizer(fmt)
        input_max, maxima = calibrate(model, ctx.data.x_train)
        in_bits = self.input_bits or self.activation_bits
        fmt = FixedFormat(in_bits, activation_frac(in_bits, input_max))
        for i, st in enumerate(stages):
            m = st.module
            assert isinstance(m, CompressedLayer)
            wf = m.weight_format()
            if wf is None:
                raise UserError(
                    f"layer {st.name!r} has float weights; list it in the fixed-point step's"
                    " layers or quantize it with another pass"
                )
            last = i == len(stages) - 1
            bits = self.output_bits if last else self.activation_bits
            peak = maxima[st.name] * (self.output_headroom if last else 1.0)
            # Requantization only shifts right: the output cannot be finer than the accumulator.
            out_frac = min(activation_frac(bits, peak), fmt.frac + wf.frac)
            m.input_format = fmt
            m.output_format = FixedFormat(bits, out_frac)
            fmt = m.output_format
        if pools:
            bind_pool_formats(model)
        ctx.finetune(model, self.finetune, "fixed-point fine-tune")
        return model
