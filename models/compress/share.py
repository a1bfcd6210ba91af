"""Weight sharing (Deep Compression, Han et al. ICLR 2016): k-means codebooks per layer.

The surviving (unpruned) weights of a layer are clustered by 1-D k-means into ``2**bits - 1``
shared values; code 0 is reserved for exact zero, so pruned weights cost no codebook entry and
the sparse format can tell padding from weights. Centroids start spread linearly between the
smallest and the largest weight, which Deep Compression found keeps the rare large weights
represented better than random or density-based starts. The table values are then fixed point of
``value_bits`` (Ristretto's rule), and fine-tuning moves the shared values: each centroid gets
the summed gradient of the weights that use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from squeezeforge.sim.errors import UserError
from squeezeforge.sim.numerics import FixedFormat

from ..quant import CodebookQuantizer, weight_frac
from .base import Context, Finetune, LayerSpec, select_layers

__all__ = ["WeightShare", "kmeans_1d"]


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on scalars with linear initialization; returns (centroids, labels).

    Deterministic. A cluster that empties keeps its previous centroid.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return np.linspace(-1.0, 1.0, k), np.zeros(0, dtype=np.int64)
    centroids = np.linspace(v.min(), v.max(), k)
    labels = np.zeros(v.size, dtype=np.int64)
    for _ in range(iterations):
        labels = np.argmin(np.abs(v[:, None] - centroids[None, :]), axis=1)
        sums = np.bincount(labels, weights=v, minlength=k)
        counts = np.bincount(labels, minlength=k)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.array_equal(updated, centroids):
            break
        centroids = updated
    labels = np.argmin(np.abs(v[:, None] - centroids[None, :]), axis=1)
    return centroids, labels


@dataclass(frozen=True)
class WeightShare:
    """Share the weights of the selected layers through ``2**bits``-entry codebooks.

    ``finetune`` is the centroid fine-tuning (other layers' free parameters train as well).
    """

    kind: ClassVar[str] = "share"

    bits: int = 4
    value_bits: int = 8
    layers: LayerSpec = "fc"
    finetune: Finetune = field(default_factory=Finetune)

    def apply(self, model: nn.Module, ctx: Context) -> nn.Module:
        layers = select_layers(model, self.layers, "share")
        k = (1 << self.bits) - 1
        for name, m in layers:
            if m.weight_quantizer is not None:
                raise UserError(f"share: layer {name!r} already has a weight format")
            w = m.layer.weight.detach().double()
            alive = m.mask != 0
            centroids, labels = kmeans_1d(w[alive].numpy(), k)
            index = torch.zeros(w.shape, dtype=torch.long)
            index[alive] = torch.as_tensor(labels + 1)
            max_abs = float(np.abs(centroids).max()) if centroids.size else 0.0
            value_format = FixedFormat(self.value_bits, weight_frac(self.value_bits, max_abs))
            m.weight_quantizer = CodebookQuantizer(
                index, torch.as_tensor(centroids), self.bits, value_format
            )
            # The codebook now defines the weights; the float copy only carries the mask.
            m.layer.weight.requires_grad_(False)
        ctx.finetune(model, self.finetune, "share fine-tune")
        return model
