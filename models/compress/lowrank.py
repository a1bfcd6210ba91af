"""Low-rank decomposition: one layer becomes a chain of smaller ones with no nonlinearity between.

* A linear layer ``W`` (out x in) is cut by a truncated SVD, ``W ~ (U_r S_r^1/2)(S_r^1/2 V_r^T)``:
  ``name_a`` (in -> r, zero bias) then ``name_b`` (r -> out, the original bias). MACs go from
  ``in * out`` to ``r * (in + out)``.
* A conv layer ``W`` (M x C x kh x kw) is cut by Tucker-2 (Kim et al., ICLR 2016, on the two
  channel modes, by higher-order SVD): ``name_a`` a 1x1 conv C -> R_in, ``name_b`` the kh x kw
  core R_in -> R_out with the original stride and padding, ``name_c`` a 1x1 conv R_out -> M with
  the original bias.

The rank comes from an energy threshold (keep the fewest singular values whose squares sum to
at least ``energy`` of the total) or is given per layer. The SVDs are :func:`torch.linalg.svd`;
the new layers then fine-tune like any pass (with distillation if the recipe asks). A ReLU that
followed the layer follows its last factor, so the IR fuses it there. In a graph the first
factor reads what the layer read and every reader of the layer reads the last factor, so a
layer feeding an add or a concat keeps its output channels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from squeezeforge.sim.errors import UserError

from ..graph import LayerGraph
from ..quant import CompressedLayer
from .base import Context, Finetune, LayerSpec, per_layer, select_layers

__all__ = ["LowRank", "energy_rank", "tucker2", "svd_factors"]


def energy_rank(singular: torch.Tensor, energy: float) -> int:
    """The fewest leading singular values holding ``energy`` of the squared total."""
    power = singular.double() ** 2
    cumulative = torch.cumsum(power, 0) / power.sum().clamp_min(1e-300)
    found = int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=cumulative.dtype))) + 1
    # Rounding can leave the total a hair under 1.0: never more than every value.
    return min(found, len(singular))


def svd_factors(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` with ``B @ A`` the best rank-``rank`` approximation of ``w`` (out x in):
    ``A`` is rank x in, ``B`` out x rank, the singular values split evenly between them."""
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).to(w.dtype), (u[:, :rank] * root).to(w.dtype)


def tucker2(
    w: torch.Tensor, rank_out: int, rank_in: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tucker-2 of a conv kernel (M, C, kh, kw) on its channel modes by higher-order SVD:
    ``(first, core, last)`` with shapes (R_in, C), (R_out, R_in, kh, kw), (M, R_out)."""
    m, c, kh, kw = w.shape
    wd = w.double()
    u_out = torch.linalg.svd(wd.reshape(m, -1), full_matrices=False)[0][:, :rank_out]
    u_in = torch.linalg.svd(wd.transpose(0, 1).reshape(c, -1), full_matrices=False)[0]
    u_in = u_in[:, :rank_in]
    core = torch.einsum("mckl,mr,cs->rskl", wd, u_out, u_in)
    return u_in.T.to(w.dtype), core.to(w.dtype), u_out.to(w.dtype)


def _ranks(w: torch.Tensor, energy: float) -> tuple[int, int]:
    m, c = w.shape[:2]
    s_out = torch.linalg.svdvals(w.double().reshape(m, -1))
    s_in = torch.linalg.svdvals(w.double().transpose(0, 1).reshape(c, -1))
    return energy_rank(s_out, energy), energy_rank(s_in, energy)


def _zero_bias(n: int, like: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(torch.zeros(n, dtype=like.dtype))


@dataclass(frozen=True)
class LowRank:
    """Decompose the selected layers (``energy`` or explicit ``rank`` per layer), then fine-tune.

    ``rank`` for a conv is the rank of both channel modes (capped by each mode's size).
    """

    kind: ClassVar[str] = "low-rank"
    energy: float | Mapping[str, float] | None = 0.9
    rank: int | Mapping[str, int] | None = None
    layers: LayerSpec = "all"
    finetune: Finetune = field(default_factory=Finetune)

    def apply(self, model: nn.Module, ctx: Context) -> nn.Module:
        if not isinstance(model, nn.Sequential):
            raise TypeError("run prepare() on the model before a compression pass")
        layers = select_layers(model, self.layers, "low-rank")
        energy = self._table(model, self.energy, layers, "low-rank: energy")
        rank = self._table(model, self.rank, layers, "low-rank: rank")
        replaced: dict[str, list[tuple[str, CompressedLayer]]] = {}
        for name, m in layers:
            if m.weight_quantizer is not None or not bool(m.mask.all()):
                raise UserError(
                    f"low-rank: layer {name!r} is already pruned or quantized; decompose first"
                )
            if name not in energy and name not in rank:
                continue
            replaced[name] = self._decompose(name, m, energy.get(name), rank.get(name))
        children = OrderedDict()
        for name, child in model._modules.items():
            for new_name, new in replaced.get(name, [(name, child)]):
                if new_name in children or (new_name != name and hasattr(model, new_name)):
                    raise UserError(f"low-rank: layer name {new_name!r} is taken")
                children[new_name] = new
        if isinstance(model, LayerGraph):
            # The first factor reads what the layer read; its readers read the last factor.
            last = {name: parts[-1][0] for name, parts in replaced.items()}
            inputs = {}
            for name, srcs in model.inputs.items():
                srcs = tuple(last.get(src, src) for src in srcs)
                inputs[replaced[name][0][0] if name in replaced else name] = srcs
            model.inputs = inputs
        for name in list(model._modules):
            del model._modules[name]
        for name, child in children.items():
            model.add_module(name, child)
        ctx.finetune(model, self.finetune, "low-rank fine-tune")
        return model

    @staticmethod
    def _table(model, value, layers, what) -> dict[str, float]:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return per_layer(model, value, layers, what)
        return {n: value for n, _ in layers}

    @staticmethod
    def _decompose(
        name: str, m: CompressedLayer, energy: float | None, rank: float | None
    ) -> list[tuple[str, CompressedLayer]]:
        w = m.layer.weight.detach()
        bias = m.layer.bias
        if not m.is_conv:
            out_f, in_f = w.shape
            limit = min(out_f, in_f)
            if rank is not None and not 1 <= int(rank) <= limit:
                raise UserError(
                    f"low-rank: layer {name!r}: rank {int(rank)} outside 1..{limit} for a"
                    f" {in_f} -> {out_f} layer"
                )
            r = int(rank) if rank is not None else energy_rank(torch.linalg.svdvals(w), energy)
            a, b = svd_factors(w, r)
            first = nn.Linear(in_f, r)
            first.weight = nn.Parameter(a.clone())
            first.bias = _zero_bias(r, w)
            second = nn.Linear(r, out_f, bias=bias is not None)
            second.weight = nn.Parameter(b.clone())
            if bias is not None:
                second.bias = nn.Parameter(bias.detach().clone())
            return [(f"{name}_a", CompressedLayer(first)), (f"{name}_b", CompressedLayer(second))]
        conv = m.layer
        if conv.groups != 1:
            raise UserError(
                f"low-rank: layer {name!r} is a grouped conv (groups={conv.groups}); its"
                " factors would not be grouped (select the other layers by name)"
            )
        mo, c = w.shape[:2]
        if rank is not None:
            if int(rank) < 1:
                raise UserError(f"low-rank: layer {name!r}: rank {int(rank)} must be >= 1")
            r_out, r_in = min(int(rank), mo), min(int(rank), c)
        else:
            r_out, r_in = _ranks(w, energy)
        first_w, core, last_w = tucker2(w, r_out, r_in)
        first = nn.Conv2d(c, r_in, 1)
        first.weight = nn.Parameter(first_w[:, :, None, None].clone())
        first.bias = _zero_bias(r_in, w)
        middle = nn.Conv2d(
            r_in, r_out, tuple(conv.kernel_size), stride=conv.stride, padding=conv.padding
        )
        middle.weight = nn.Parameter(core.clone())
        middle.bias = _zero_bias(r_out, w)
        last = nn.Conv2d(r_out, mo, 1, bias=bias is not None)
        last.weight = nn.Parameter(last_w[:, :, None, None].clone())
        if bias is not None:
            last.bias = nn.Parameter(bias.detach().clone())
        return [
            (f"{name}_a", CompressedLayer(first)),
            (f"{name}_b", CompressedLayer(middle)),
            (f"{name}_c", CompressedLayer(last)),
        ]
