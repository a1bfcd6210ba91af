"""Structured filter pruning (Li et al., "Pruning filters for efficient ConvNets").

A conv layer loses the filters with the smallest L1 norm, and the next compute layer loses the
matching input channels (for a linear layer behind a flatten: the features of those channels).
Unlike masking, the layers are rebuilt smaller, so the exported net and its hardware shrink.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from squeezeforge.sim.errors import UserError

from ..quant import CompressedLayer, leaf_modules
from .base import Context, Finetune, LayerSpec, per_layer, select_layers

__all__ = ["FilterPrune", "remove_filters"]


def _flatten_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, torch.Size]:
    """Shape entering each Flatten (C, H, W), from one dummy forward pass."""
    shapes: dict[str, torch.Size] = {}
    hooks = []
    for name, m in leaf_modules(model):
        if isinstance(m, nn.Flatten):

            def hook(_m: nn.Module, inp: tuple[torch.Tensor], name: str = name) -> None:
                shapes[name] = inp[0].shape[1:]

            hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def remove_filters(
    model: nn.Module, name: str, keep: torch.Tensor, input_shape: tuple[int, ...]
) -> None:
    """Keep only filters ``keep`` (sorted indices) of conv layer ``name``; shrink the next layer."""
    leaves = leaf_modules(model)
    flat_shapes = _flatten_shapes(model, input_shape)
    pos = next(i for i, (n, _) in enumerate(leaves) if n == name)
    conv = leaves[pos][1]
    assert isinstance(conv, CompressedLayer) and conv.is_conv
    features_per_channel = 1
    nxt: tuple[str, CompressedLayer] | None = None
    for n, m in leaves[pos + 1 :]:
        if isinstance(m, nn.Flatten):
            shape = flat_shapes[n]
            features_per_channel = int(shape[1] * shape[2]) if len(shape) == 3 else 1
        if isinstance(m, CompressedLayer):
            nxt = (n, m)
            break
    if nxt is None:
        raise UserError(f"filter-prune: {name!r} is the last layer; its filters are the outputs")
    for n, m in ((name, conv), nxt):
        if isinstance(m.layer, nn.Conv2d) and m.layer.groups != 1:
            # Removing a filter would remove a whole group's channel from both layers.
            raise UserError(
                f"filter-prune: layer {n!r} is a grouped conv (groups={m.layer.groups}); prune the"
                " filters of ungrouped convs (select layers by name)"
            )
        if m.weight_quantizer is not None:
            raise UserError(f"filter-prune: layer {n!r} is already quantized; prune filters first")

    old = conv.layer
    assert isinstance(old, nn.Conv2d)
    new = nn.Conv2d(
        old.in_channels,
        len(keep),
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=old.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(old.weight[keep])
        if old.bias is not None:
            new.bias.copy_(old.bias[keep])
    conv.layer = new
    conv.mask = conv.mask[keep].clone()

    next_name, follower = nxt
    prev = follower.layer
    with torch.no_grad():
        if isinstance(prev, nn.Conv2d):
            cols = keep
            rebuilt: nn.Module = nn.Conv2d(
                len(keep),
                prev.out_channels,
                prev.kernel_size,
                stride=prev.stride,
                padding=prev.padding,
                bias=prev.bias is not None,
            )
        else:
            # Flatten orders features channel by channel: channel c owns a block of H*W.
            block = torch.arange(features_per_channel)
            cols = (keep[:, None] * features_per_channel + block[None, :]).flatten()
            rebuilt = nn.Linear(len(cols), prev.out_features, bias=prev.bias is not None)
        rebuilt.weight.copy_(prev.weight[:, cols])
        if prev.bias is not None:
            rebuilt.bias.copy_(prev.bias)
    follower.layer = rebuilt
    follower.mask = follower.mask[:, cols].clone()


@dataclass(frozen=True)
class FilterPrune:
    """Remove the ``ratio`` fraction of filters with smallest L1 norm from the selected conv
    layers (one ratio, or one per layer name), then fine-tune."""

    kind: ClassVar[str] = "filter-prune"

    ratio: float | Mapping[str, float] = 0.25
    layers: LayerSpec = "conv"
    finetune: Finetune = field(default_factory=Finetune)

    def apply(self, model: nn.Module, ctx: Context) -> nn.Module:
        layers = select_layers(model, self.layers, "filter-prune")
        for name, m in layers:
            if not m.is_conv:
                raise UserError(f"filter-prune: layer {name!r} is not a convolution")
        table = (
            per_layer(model, self.ratio, layers, "filter-prune: ratio")
            if isinstance(self.ratio, Mapping)
            else None
        )
        for name, m in layers:
            if table is not None:
                if name not in table:
                    continue
                ratio = table[name]
            else:
                ratio = self.ratio
            filters = m.layer.weight.shape[0]
            n_remove = min(int(math.floor(ratio * filters + 1e-9)), filters - 1)
            if n_remove <= 0:
                continue
            l1 = (m.layer.weight.detach() * m.mask).abs().flatten(1).sum(1).double()
            order = torch.sort(l1, stable=True).indices
            keep = torch.sort(order[n_remove:]).values
            remove_filters(model, name, keep, ctx.data.input_shape)
        ctx.finetune(model, self.finetune, "filter-prune fine-tune")
        return model
