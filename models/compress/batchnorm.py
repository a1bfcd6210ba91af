"""Fold each BatchNorm into the conv or linear layer before it (done before any quantization).

In eval mode BatchNorm is the per-channel affine map ``y = gamma * (x - mean) / sqrt(var + eps)
+ beta``; after a conv or linear layer it folds exactly into that layer's weights and bias, so the
IR never sees it and quantization sees the weights the hardware will use.

Hardsigmoid is ``relu6(y + 3) / 6 = min(relu(y / 6 + 1/2), 1)``: its affine part folds the same
way, and what is left is a ReLU with a clamp at 1 (the IR's ``clamp_max``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..quant import QuantClamp, graph_leaves, net_graph

__all__ = ["fold_batchnorm", "fold_hardsigmoid"]


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
    :class:`~squeezeforge.sim.errors.UserError` naming it, from
    :func:`~squeezeforge.models.quant.net_graph`.
    """
    # net_graph validates every BatchNorm's position before anything changes.
    for name, layer, bn in _folds(model, nn.BatchNorm1d | nn.BatchNorm2d):
        _fold_into(layer, bn)
        _set_module(model, name, nn.Identity())
    return model


def fold_hardsigmoid(model: nn.Module) -> nn.Module:
    """Fold the affine part of every Hardsigmoid of ``model`` in place into the layer before it
    (weights / 6, bias / 6 + 1/2) and put a ReLU clamped at 1 in its place; return ``model``."""
    for name, layer, _ in _folds(model, nn.Hardsigmoid):
        with torch.no_grad():
            layer.weight.div_(6.0)
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0]))
            layer.bias.div_(6.0).add_(0.5)
        _set_module(model, name, QuantClamp(1.0))
    return model


def _folds(model: nn.Module, kind: type | object) -> list[tuple[str, nn.Module, nn.Module]]:
    """``(name, layer, module)`` of each leaf of ``kind`` and the conv or linear layer it folds
    into (the wrapped layer of a CompressedLayer)."""
    folds = net_graph(model).folds
    leaves = {name: m for name, m, _ in graph_leaves(model)}
    out = []
    for name, target in folds.items():
        m, layer = leaves[name], leaves[target]
        if isinstance(m, kind):  # type: ignore[arg-type]
            out.append((name, getattr(layer, "layer", layer), m))
    return out


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
