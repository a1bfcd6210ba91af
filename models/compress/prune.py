"""Unstructured magnitude pruning (Han et al., "Learning both weights and connections").

The weights of smallest magnitude are removed by zeroing them in the layer's mask; the mask then
holds through every later step: :class:`~squeezeforge.models.quant.CompressedLayer` multiplies the
weight by it in the forward pass and re-zeroes the parameter after every optimizer step, INQ
freezes masked weights at zero and weight sharing gives them code 0.

Pruning is iterative: with ``iterations = n`` the target is reached in n equal steps, each
followed by retraining, which recovers more accuracy than pruning at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from squeezeforge.sim.errors import UserError

from ..quant import CodebookQuantizer, CompressedLayer, Pow2Quantizer
from .base import Context, Finetune, LayerSpec, per_layer, select_layers

__all__ = ["MagnitudePrune", "prune_to_sparsity", "prune_below"]


def prune_to_sparsity(layer: CompressedLayer, sparsity: float) -> None:
    """Zero the mask of the ``sparsity`` fraction of the layer's weights with smallest |w|.

    Weights already pruned count towards the target; ties at the threshold are broken by
    position (a stable sort), so the result is deterministic.
    """
    n = layer.mask.numel()
    target = int(math.floor(sparsity * n + 1e-9))
    if target <= 0:
        return
    magnitude = (layer.layer.weight.detach().abs() * layer.mask).flatten().double()
    # Already pruned weights sort first (magnitude -1), so they are the first to stay pruned.
    magnitude[layer.mask.flatten() == 0] = -1.0
    order = torch.sort(magnitude, stable=True).indices
    mask = layer.mask.flatten().clone()
    mask[order[:target]] = 0.0
    layer.mask.copy_(mask.reshape(layer.mask.shape))
    layer.enforce()


def prune_below(layer: CompressedLayer, threshold: float) -> None:
    """Zero the mask wherever ``|w| < threshold``."""
    keep = (layer.layer.weight.detach().abs() >= threshold).to(layer.mask.dtype)
    layer.mask.mul_(keep)
    layer.enforce()


@dataclass(frozen=True)
class MagnitudePrune:
    """Prune the selected layers by weight magnitude, then retrain; repeat ``iterations`` times.

    Exactly one target: ``sparsity`` (a fraction for every layer, or one per layer name),
    ``global_sparsity`` (one magnitude threshold across all selected layers, set so that this
    fraction of their weights goes) or ``threshold`` (an absolute magnitude).
    """

    kind: ClassVar[str] = "prune"

    sparsity: float | Mapping[str, float] | None = None
    global_sparsity: float | None = None
    threshold: float | None = None
    layers: LayerSpec = "all"
    iterations: int = 1
    finetune: Finetune = field(default_factory=Finetune)

    def __post_init__(self) -> None:
        given = [self.sparsity, self.global_sparsity, self.threshold]
        if sum(g is not None for g in given) != 1:
            raise UserError("prune: give exactly one of sparsity, global_sparsity, threshold")

    def apply(self, model: nn.Module, ctx: Context) -> nn.Module:
        layers = select_layers(model, self.layers, "prune")
        table = (
            per_layer(model, self.sparsity, layers, "prune: sparsity")
            if isinstance(self.sparsity, Mapping)
            else None
        )
        for name, m in layers:
            if isinstance(m.weight_quantizer, CodebookQuantizer | Pow2Quantizer):
                raise UserError(
                    f"prune: layer {name!r} is already INQ- or codebook-quantized;"
                    " prune before those passes"
                )
        for it in range(1, self.iterations + 1):
            frac = it / self.iterations
            if self.global_sparsity is not None:
                self._prune_global(layers, self.global_sparsity * frac)
            for name, m in layers:
                if self.threshold is not None:
                    prune_below(m, self.threshold * frac)
                elif self.sparsity is not None:
                    if table is not None:
                        target = table.get(name)
                        if target is None:
                            continue
                    else:
                        target = self.sparsity
                    prune_to_sparsity(m, target * frac)
            ctx.finetune(model, self.finetune, f"prune {it}/{self.iterations} fine-tune")
        return model

    @staticmethod
    def _prune_global(layers: list[tuple[str, CompressedLayer]], sparsity: float) -> None:
        magnitudes = torch.cat(
            [(m.layer.weight.detach().abs() * m.mask).flatten().double() for _, m in layers]
        )
        k = int(math.floor(sparsity * magnitudes.numel() + 1e-9))
        if k <= 0:
            return
        threshold = float(torch.sort(magnitudes).values[k - 1])
        for _, m in layers:
            keep = ((m.layer.weight.detach().abs() * m.mask).double() > threshold).float()
            m.mask.mul_(keep)
            m.enforce()
