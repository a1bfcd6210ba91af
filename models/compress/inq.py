"""Incremental Network Quantization (Zhou et al., ICLR 2017) to power-of-two weights.

Each layer's weights go to the set P = {0, ±2**n2, ..., ±2**n1} with ``n1 = floor(log2(4s/3))``
(s the layer's largest |w|) and ``n2 = n1 + 1 - 2**(b-1)/2``, which is
:meth:`~squeezeforge.sim.numerics.Pow2Weights.for_max`. In steps of growing accumulated portions
(default 0.5, 0.75, 0.875, 1) the largest remaining weights are rounded into P and frozen (a
gradient mask) while the others retrain to make up for the error. Pruned weights are frozen at
zero from the start, so INQ composes with pruning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from squeezeforge.sim.errors import UserError
from squeezeforge.sim.numerics import Pow2Weights

from ..quant import CodebookQuantizer, CompressedLayer, Pow2Quantizer
from .base import Context, Finetune, LayerSpec, select_layers

__all__ = ["DEFAULT_PORTIONS", "INQ", "inq_round"]

DEFAULT_PORTIONS = (0.5, 0.75, 0.875, 1.0)


def inq_round(w: torch.Tensor, fmt: Pow2Weights) -> torch.Tensor:
    """INQ's rounding into P: ``beta * sgn(w)`` if ``(alpha + beta) / 2 <= |w| < 3 * beta / 2``
    (alpha, beta adjacent in P, alpha = 0 below the smallest power), else 0.

    One departure: a weight that retraining pushed to ``|w| >= 3 * 2**n1 / 2`` (the formula would
    give 0) takes the largest power ``2**n1``. With ``n1`` from the layer's initial maximum
    (``s < 3 * 2**n1 / 2``) no weight starts there.
    """
    a = w.detach().abs().double()
    out = torch.zeros_like(a)
    for e in range(fmt.n2, fmt.n1 + 1):
        beta = 2.0**e
        alpha = 2.0 ** (e - 1) if e > fmt.n2 else 0.0
        out = torch.where(((alpha + beta) / 2 <= a) & (a < 1.5 * beta), beta, out)
    out = torch.where(a >= 1.5 * 2.0**fmt.n1, 2.0**fmt.n1, out)
    return (out * torch.sign(w.detach().double())).to(w.dtype)


def freeze_portion(layer: CompressedLayer, portion: float) -> None:
    """Quantize and freeze the largest weights until ``portion`` of the unpruned ones are frozen."""
    q = layer.weight_quantizer
    assert isinstance(q, Pow2Quantizer)
    alive = layer.mask.flatten() != 0
    target = int(math.ceil(portion * int(alive.sum()) - 1e-9))
    frozen = q.frozen.flatten() & alive
    need = target - int(frozen.sum())
    if need <= 0:
        return
    w = layer.layer.weight.detach().flatten()
    magnitude = w.abs().double()
    # Candidates: alive and not yet frozen; the largest go first (stable: ties by position).
    magnitude[~alive | frozen] = -1.0
    chosen = torch.sort(magnitude, descending=True, stable=True).indices[:need]
    new_frozen = q.frozen.flatten().clone()
    new_values = q.values.flatten().clone()
    new_frozen[chosen] = True
    new_values[chosen] = inq_round(w[chosen], q.fmt).to(new_values.dtype)
    q.frozen.copy_(new_frozen.reshape(q.frozen.shape))
    q.values.copy_(new_values.reshape(q.values.shape))


@dataclass(frozen=True)
class INQ:
    """INQ with ``bits``-wide power-of-two weights (2..6) on the selected layers.

    ``finetune`` runs after every step but the last (the last step freezes what is left).
    """

    kind: ClassVar[str] = "inq"

    bits: int = 5
    portions: Sequence[float] = DEFAULT_PORTIONS
    layers: LayerSpec = "all"
    finetune: Finetune = field(default_factory=Finetune)

    def __post_init__(self) -> None:
        p = tuple(self.portions)
        if not p or p[-1] != 1.0 or any(b <= a for a, b in zip(p, p[1:], strict=False)):
            raise UserError(f"inq: portions must increase and end at 1.0, got {list(p)}")

    def apply(self, model: nn.Module, ctx: Context) -> nn.Module:
        layers = select_layers(model, self.layers, "inq")
        for name, m in layers:
            if m.weight_quantizer is not None:
                kind = "codebook" if isinstance(m.weight_quantizer, CodebookQuantizer) else "a"
                raise UserError(f"inq: layer {name!r} already has {kind} weight format")
            max_abs = float(m.weight.detach().abs().max())
            if not max_abs > 0:
                raise UserError(f"inq: layer {name!r} has only zero weights")
            fmt = Pow2Weights.for_max(self.bits, max_abs)
            q = Pow2Quantizer(fmt, m.layer.weight.shape)
            # Pruned weights are already "quantized": frozen at exact zero.
            q.frozen.copy_(m.mask == 0)
            m.weight_quantizer = q
        for i, portion in enumerate(self.portions):
            for _, m in layers:
                freeze_portion(m, portion)
            if i < len(self.portions) - 1:
                ctx.finetune(model, self.finetune, f"inq {portion:g} fine-tune")
        for _, m in layers:
            # Every weight is frozen: the float copy no longer affects anything.
            m.layer.weight.requires_grad_(False)
        return model
