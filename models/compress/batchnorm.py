"""Fold each BatchNorm into the conv or linear layer before it (done before any quantization).

In eval mode BatchNorm is the per-channel affine map ``y = gamma * (x - mean) / sqrt(var + eps)
+ beta``; after a conv or linear layer it folds exactly into that layer's weights and bias, so the
IR never sees it and quantization sees the weights the hardware will use.
"""

from __future__ import annotations

import torch
from torch import nn

from ..quant import CompressedLayer, compute_stages, leaf_modules

__all__ = ["fold_batchnorm"]


def _set_module(root: nn.Module, qualified: str, new: nn.Module) -> None:
    *parents, last = qualified.split(".")
    parent = root
    for p in parents:
        parent = getattr(parent, p)
    setattr(parent, last, new)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm of ``model`` in place into the layer before it; return ``model``.

    The BatchNorm is replaced by :class:`torch.nn.Identity`. A BatchNorm that cannot be folded
    (not directly after a conv or linear layer, or without running statistics) raises a
    :class:`~squeezeforge.sim.errors.UserError` naming it, from :func:`compute_stages`.
    """
    compute_stages(model)  # validates every BatchNorm's position before anything changes
    prev: nn.Module | None = None
    for name, m in leaf_modules(model):
        if isinstance(m, nn.Conv2d | nn.Linear):
            prev = m
        elif isinstance(m, CompressedLayer):
            prev = m.layer
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and prev is not None:
            _fold_into(prev, m)
            _set_module(model, name, nn.Identity())
    return model


def _fold_into(layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> None:
    with torch.no_grad():
        # Fold in float64: the folded weights then carry only one float32 rounding.
        var = bn.running_var.double()
        mean = bn.running_mean.double()
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
        beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + bn.eps)
        w = layer.weight.double()
        shape = (-1,) + (1,) * (w.dim() - 1)
        layer.weight.copy_((w * scale.reshape(shape)).to(layer.weight.dtype))
        b = layer.bias.double() if layer.bias is not None else torch.zeros_like(mean)
        new_bias = ((b - mean) * scale + beta).to(layer.weight.dtype)
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias)
        else:
            layer.bias.copy_(new_bias)
