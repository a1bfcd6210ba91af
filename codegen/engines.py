"""How the whole-net compiler uses each engine: sizing, placement, cycles, construction.

An :class:`EngineBinding` adapts one hardware block (the conv engine in its MAC or shift-add
flavour, the sparse FC unit with one weight decoder) to the compiler's passes. The blocks, their
drivers and their cycle models live in hw/ and sim/; this module only chooses parameters and
lays several layers out, one after another, in one engine's memories. How large each engine is
(array rows x cols, FC PEs, FIFO depth, index width) comes from the
:class:`~squeezeforge.sim.target.Target`, never from constants here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..hw.conv_driver import conv_layer_config, conv_memory_images, filter_blocks
from ..hw.conv_engine import ConvEngine, ConvEngineParams
from ..hw.sparse_fc import SparseFC, SparseFCParams
from ..hw.sparse_fc_driver import (
    place_layers,
    sparse_fc_config,
    sparse_fc_init,
    sparse_fc_memory_images,
)
from ..sim.conv_cycles import conv_cycles
from ..sim.numerics import CodebookWeights, Pow2Weights
from ..sim.sparse_fc_cycles import csc_entry_counts, sparse_fc_cycles
from ..sim.storage import LayerStorage, layer_storage
from ..sim.target import Target

if TYPE_CHECKING:
    from amaranth.lib import wiring

    from .plan import Step

__all__ = ["ENGINE_KINDS", "ConvBinding", "EngineBinding", "FCBinding"]


def _depth(words: int) -> int:
    # A memory of one word would have a zero-width address; the engines take two at least.
    return max(2, int(words))


@dataclass(frozen=True)
class ConvBinding:
    """The conv engine: the Target's ``conv_rows`` x ``conv_cols`` PEs, MAC (fixed) or
    shift-add (pow2) flavour."""

    kind: str
    weight_kind: str

    def size(self, steps: Sequence[Step], act_bits: int, target: Target) -> ConvEngineParams:
        layers = [s.layer for s in steps]
        wbits = [
            lw.bits if isinstance(lw, Pow2Weights) else lw.value_bits
            for lw in (lay.weight_format for lay in layers)
        ]
        probe = ConvEngineParams(
            rows=target.conv_rows,
            cols=target.conv_cols,
            weight_kind=self.weight_kind,
            weight_bits=max(wbits),
            act_bits=act_bits,
            acc_bits=64,
        )
        return replace(
            probe,
            # The engine's accumulators hold at least one of its widest products.
            acc_bits=max(probe.product_bits, *(lay.acc_bits for lay in layers)),
            act_depth=_depth(max(s.in_count for s in steps)),
            weight_depth=_depth(sum(filter_blocks(s.layer, probe) * s.layer.fan_in for s in steps)),
            bias_depth=_depth(sum(filter_blocks(s.layer, probe) for s in steps)),
            out_depth=max(
                s.layer.output_shape(s.in_shape)[1] * s.layer.output_shape(s.in_shape)[2]
                for s in steps
            ),
        )

    def place(self, steps: Sequence[Step], params: ConvEngineParams):
        cfgs, weights, biases = [], [], []
        for s in steps:
            images = conv_memory_images(s.layer, params)
            cfgs.append(
                conv_layer_config(s.layer, s.in_shape, s.pool, params, len(weights), len(biases))
            )
            weights += images["weight"]
            biases += images["bias"]
        return cfgs, {"weight": weights, "bias": biases}

    def with_images(self, params: ConvEngineParams, images: dict) -> ConvEngineParams:
        return replace(
            params, init_weights=tuple(images["weight"]), init_biases=tuple(images["bias"])
        )

    def cycles(
        self, step: Step, params: ConvEngineParams, x: np.ndarray, target: Target
    ) -> tuple[float, float]:
        # The array's shape is in params, sized from the same Target by size().
        c = conv_cycles(step.layer, step.in_shape, params, pool=step.pool)
        return float(c.cycles), float(c.ideal_cycles)

    def storage(self, step: Step, target: Target, act_bits: int) -> LayerStorage:
        return layer_storage(step.layer, target, act_bits)

    def build(self, params: ConvEngineParams) -> wiring.Component:
        return ConvEngine(params)


@dataclass(frozen=True)
class FCBinding:
    """The EIE-style sparse FC unit (the Target's ``fc_pes``, ``fifo_depth``, ``index_bits``);
    dense layers run on it at full density."""

    kind: str
    weight_kind: str

    def size(self, steps: Sequence[Step], act_bits: int, target: Target) -> SparseFCParams:
        layers = [s.layer for s in steps]
        n = target.fc_pes
        formats = [lay.weight_format for lay in layers]
        if self.weight_kind == "codebook":
            wbits = max(f.index_bits for f in formats)
        elif self.weight_kind == "pow2":
            wbits = max(f.bits for f in formats)
        else:
            wbits = max(f.value_bits for f in formats)
        entries = 0
        for lay in layers:
            # Layers follow one another in every PE: each takes its busiest PE's entries.
            counts = csc_entry_counts(np.asarray(lay.weight), n, target.index_bits)
            entries += int(counts.sum(axis=1).max())
        codebooks = [f for f in formats if isinstance(f, CodebookWeights)]
        params = SparseFCParams(
            n_pe=n,
            weight_kind=self.weight_kind,
            act_bits=act_bits,
            weight_bits=wbits,
            codebook_value_bits=max((f.value_bits for f in codebooks), default=8),
            index_bits=target.index_bits,
            acc_bits=62,
            bias_bits=max(lay.bias_bits for lay in layers),
            fifo_depth=target.fifo_depth,
            ptr_depth=_depth(sum(lay.in_features + 1 for lay in layers)),
            entry_depth=_depth(entries),
            acc_depth=_depth(max(-(-lay.out_features // n) for lay in layers)),
            bias_depth=_depth(sum(-(-lay.out_features // n) for lay in layers)),
            codebook_depth=_depth(sum(len(f.table) for f in codebooks)) if codebooks else None,
        )
        # The accumulators hold at least one of the unit's widest products, and any bias.
        acc = max(params.product_bits, params.bias_bits, *(lay.acc_bits for lay in layers))
        return replace(params, acc_bits=acc)

    def place(self, steps: Sequence[Step], params: SparseFCParams):
        layers = [s.layer for s in steps]
        placements = place_layers(layers, params)
        cfgs = [
            sparse_fc_config(lay, params, at) for lay, at in zip(layers, placements, strict=True)
        ]
        init = sparse_fc_init(
            params,
            [
                sparse_fc_memory_images(lay, params, at)
                for lay, at in zip(layers, placements, strict=True)
            ],
        )
        return cfgs, {name: getattr(init, name) for name in ("ptr", "entry", "bias", "codebook")}

    def with_images(self, params: SparseFCParams, images: dict) -> SparseFCParams:
        from ..hw.sparse_fc import SparseFCInit

        return replace(params, init=SparseFCInit(**images))

    def cycles(
        self, step: Step, params: SparseFCParams, x: np.ndarray, target: Target
    ) -> tuple[float, float]:
        runs = [
            sparse_fc_cycles(
                step.layer,
                row,
                n_pe=target.fc_pes,
                fifo_depth=target.fifo_depth,
                index_bits=target.index_bits,
            )
            for row in x.reshape(len(x), -1)
        ]
        return (
            float(np.mean([r.cycles for r in runs])),
            float(np.mean([r.ideal_cycles for r in runs])),
        )

    def storage(self, step: Step, target: Target, act_bits: int) -> LayerStorage:
        return layer_storage(step.layer, target, act_bits)

    def build(self, params: SparseFCParams) -> wiring.Component:
        return SparseFC(params)


EngineBinding = ConvBinding | FCBinding

ENGINE_KINDS: dict[str, Any] = {
    "conv_mac": ConvBinding("conv_mac", "fixed"),
    "conv_pow2": ConvBinding("conv_pow2", "pow2"),
    "fc_fixed": FCBinding("fc_fixed", "fixed"),
    "fc_pow2": FCBinding("fc_pow2", "pow2"),
    "fc_codebook": FCBinding("fc_codebook", "codebook"),
}
