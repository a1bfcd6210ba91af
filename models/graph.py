"""Models that are graphs: layers in a topological order, each reading named tensors.

A plain stack (:class:`torch.nn.Sequential`) feeds each layer the previous layer's output. A
:class:`LayerGraph` is a stack whose layers may read other tensors: ``inputs`` maps a layer's
name to the names of the tensors it reads (earlier layers, or :data:`NET_INPUT`); a layer it does
not list reads the previous layer's output, as in a stack. It is how the IR lists a net's layers
(:class:`~squeezeforge.sim.ir.Net`), so every pass and the export walk it in the same order.

Two layers take several tensors: :class:`ResidualAdd` (``a + b``, a residual connection) and
:class:`ChannelConcat` (joined along the channels, or the features of flat tensors).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from squeezeforge.sim.ir import NET_INPUT

__all__ = ["NET_INPUT", "ChannelConcat", "LayerGraph", "ResidualAdd"]


class ResidualAdd(nn.Module):
    """``a + b`` of two tensors of one shape."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class ChannelConcat(nn.Module):
    """Tensors joined along the first axis after the batch: channels of (N, C, H, W) tensors,
    features of (N, F) ones."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class LayerGraph(nn.Sequential):
    """Leaf layers in a topological order; ``inputs`` names what the layers that do not read
    the previous layer's output read. The last layer's output is the model's.

    >>> LayerGraph({"a": nn.Conv2d(1, 2, 1), "b": nn.Conv2d(2, 2, 1), "sum": ResidualAdd()},
    ...            inputs={"sum": ("a", "b")})  # doctest: +SKIP
    """

    def __init__(
        self,
        layers: Mapping[str, nn.Module] | None = None,
        inputs: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__(OrderedDict(layers or {}))
        self.inputs: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in (inputs or {}).items()}

    def sources(self) -> list[tuple[str, nn.Module, tuple[str, ...]]]:
        """Each layer with the tensors it reads, in order."""
        out = []
        previous = NET_INPUT
        for name, layer in self._modules.items():
            assert layer is not None
            out.append((name, layer, self.inputs.get(name, (previous,))))
            previous = name
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {NET_INPUT: x}
        last = NET_INPUT
        for name, layer, srcs in self.sources():
            values[name] = layer(*(values[s] for s in srcs))
            last = name
        return values[last]

    def extra_repr(self) -> str:
        return ", ".join(f"{k} <- {'+'.join(v)}" for k, v in self.inputs.items())
