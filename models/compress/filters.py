"""Structured filter pruning (Li et al., "Pruning filters for efficient ConvNets").

A conv layer loses the filters with the smallest L1 norm, and the compute layers that read its
channels (through pools and flattens; in a graph there may be several) lose the matching input
channels (for a linear layer behind a flatten: the features of those channels). A conv whose
channels reach an add or a concat is refused: its channels must line up with the other input's.
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

from ..graph import ChannelConcat, ResidualAdd
from ..quant import CompressedLayer, leaf_modules, net_graph
from .base import Context, Finetune, LayerSpec, per_layer, select_layers

__all__ = ["FilterPrune", "channel_readers", "remove_filters"]


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


def channel_readers(model: nn.Module, name: str) -> list[tuple[str, CompressedLayer, str | None]]:
    """The compute layers that read conv ``name``'s channels (through pools and flattens), each
    with the flatten on the way (None if there is none). Raises a one-line
    :class:`~squeezeforge.sim.errors.UserError` when the channels are the net's outputs or reach
    an add or a concat, whose other inputs fix them."""
    graph = net_graph(model)
    found: list[tuple[str, CompressedLayer, str | None]] = []
    todo: list[tuple[str, str | None]] = [(name, None)]
    while todo:
        tensor, flatten = todo.pop()
        if tensor == graph.output:
            raise UserError(
                f"filter-prune: {name!r} is the last layer; its filters are the outputs"
            )
        for node in graph.readers(tensor):
            m = node.module
            if isinstance(m, CompressedLayer):
                found.append((node.name, m, flatten))
            elif isinstance(m, ResidualAdd | ChannelConcat):
                kind = "an add" if isinstance(m, ResidualAdd) else "a concat"
                raise UserError(
                    f"filter-prune: layer {name!r} feeds {kind} ({node.name!r}), whose channels"
                    " must stay as they are; prune the filters of other layers (select them by"
                    " name)"
                )
            elif isinstance(m, nn.Flatten):
                todo.append((node.name, node.name))
            else:  # max and average pools keep the channels
                todo.append((node.name, flatten))
    return found


def remove_filters(
    model: nn.Module, name: str, keep: torch.Tensor, input_shape: tuple[int, ...]
) -> None:
    """Keep only filters ``keep`` (sorted indices) of conv layer ``name``; shrink the layers
    that read its channels. Refused for a conv whose channels reach an add or a concat."""
    conv = dict(leaf_modules(model))[name]
    assert isinstance(conv, CompressedLayer) and conv.is_conv
    followers = channel_readers(model, name)
    flat_shapes = _flatten_shapes(model, input_shape)  # before any layer changes
    for n, m in ((name, conv), *((f, m) for f, m, _ in followers)):
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

    for _, follower, flatten in followers:
        shape = flat_shapes[flatten] if flatten is not None else ()
        _shrink_inputs(follower, keep, int(shape[1] * shape[2]) if len(shape) == 3 else 1)


def _shrink_inputs(follower: CompressedLayer, keep: torch.Tensor, features_per_channel: int):
    """Keep the input channels ``keep`` of ``follower`` (their features behind a flatten)."""
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

    def ratios(self, model: nn.Module) -> dict[str, float]:
        """The ratio of each selected layer that loses filters; refuses, in one line, a layer
        that is not a conv or whose channels cannot shrink (:func:`channel_readers`). Cheap:
        the pipeline calls it before any training."""
        layers = select_layers(model, self.layers, "filter-prune")
        for name, m in layers:
            if not m.is_conv:
                raise UserError(f"filter-prune: layer {name!r} is not a convolution")
        if isinstance(self.ratio, Mapping):
            table = per_layer(model, self.ratio, layers, "filter-prune: ratio")
        else:
            table = {name: self.ratio for name, _ in layers}
        out = {}
        for name, m in layers:
            filters = m.layer.weight.shape[0]
            if name in table and min(math.floor(table[name] * filters + 1e-9), filters - 1) > 0:
                channel_readers(model, name)
                out[name] = table[name]
        return out

    def check(self, model: nn.Module) -> None:
        self.ratios(model)

    def apply(self, model: nn.Module, ctx: Context) -> nn.Module:
        for name, ratio in self.ratios(model).items():
            m = dict(select_layers(model, [name], "filter-prune"))[name]
            filters = m.layer.weight.shape[0]
            n_remove = min(int(math.floor(ratio * filters + 1e-9)), filters - 1)
            l1 = (m.layer.weight.detach() * m.mask).abs().flatten(1).sum(1).double()
            order = torch.sort(l1, stable=True).indices
            keep = torch.sort(order[n_remove:]).values
            remove_filters(model, name, keep, ctx.data.input_shape)
        ctx.finetune(model, self.finetune, "filter-prune fine-tune")
        return model
