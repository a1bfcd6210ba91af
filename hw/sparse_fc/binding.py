"""The EIE-style sparse FC unit behind the engine contract
(:class:`~squeezeforge.hw.engine.EngineBinding`); dense layers run on it at full density."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np

from ...sim.ir import Dense, SparseDense, busiest_pe_entries
from ...sim.numerics import CodebookWeights
from ...sim.target import Target
from ..engine import EngineBinding, EngineStep, Images, memory_depth
from .cycles import sparse_fc_cycles
from .driver import (
    place_layers,
    sparse_fc_config,
    sparse_fc_init,
    sparse_fc_layer,
    sparse_fc_memory_images,
)
from .engine import WEIGHT_KINDS, SparseFC, SparseFCInit, SparseFCParams

__all__ = ["SparseFCBinding"]

_DEFAULT = Target()


def _weight_bits(weight_kind: str, fmt: Any) -> int:
    """Width of the unit's stored weight code for one layer's format."""
    if weight_kind == "codebook":
        return fmt.index_bits
    if weight_kind == "pow2":
        return fmt.bits
    return fmt.value_bits


@dataclass(frozen=True)
class SparseFCBinding(EngineBinding):
    """The sparse FC unit: ``n_pe`` PEs, one weight decoder (codebook, pow2 or fixed)."""

    FAMILY: ClassVar[str] = "sparse_fc"
    LAYER_KINDS: ClassVar[tuple[str, ...]] = (Dense.kind, SparseDense.kind)
    WEIGHT_KINDS: ClassVar[tuple[str, ...]] = WEIGHT_KINDS
    WHY_NOT: ClassVar[str] = "fully connected layers run codebook, power-of-two or fixed weights"

    weight_kind: str
    # Defaults are the default Target's; the compiler passes the build's (for_layer).
    n_pe: int = _DEFAULT.fc_pes
    index_bits: int = _DEFAULT.index_bits
    fifo_depth: int = _DEFAULT.fifo_depth

    @classmethod
    def target_sizes(cls, target: Target) -> dict[str, int]:
        return {
            "n_pe": target.fc_pes,
            "index_bits": target.index_bits,
            "fifo_depth": target.fifo_depth,
        }

    @property
    def name(self) -> str:
        return f"fc_{self.weight_kind}"

    def size(self, steps: Sequence[EngineStep], act_bits: int) -> SparseFCParams:
        layers = [s.layer for s in steps]
        n = self.n_pe
        formats = [lay.weight_format for lay in layers]
        codebooks = [f for f in formats if isinstance(f, CodebookWeights)]
        params = SparseFCParams(
            n_pe=n,
            weight_kind=self.weight_kind,
            act_bits=act_bits,
            weight_bits=max(_weight_bits(self.weight_kind, f) for f in formats),
            codebook_value_bits=max((f.value_bits for f in codebooks), default=8),
            index_bits=self.index_bits,
            acc_bits=62,
            bias_bits=max(lay.bias_bits for lay in layers),
            fifo_depth=self.fifo_depth,
            ptr_depth=memory_depth(sum(lay.in_features + 1 for lay in layers)),
            # Layers follow one another in every PE: each takes its busiest PE's entries.
            entry_depth=memory_depth(
                sum(busiest_pe_entries(lay, n, self.index_bits) for lay in layers)
            ),
            acc_depth=memory_depth(max(-(-lay.out_features // n) for lay in layers)),
            bias_depth=memory_depth(sum(-(-lay.out_features // n) for lay in layers)),
            codebook_depth=(
                memory_depth(sum(len(f.table) for f in codebooks)) if codebooks else None
            ),
        )
        # The accumulators hold at least one of the unit's widest products, and any bias.
        acc = max(params.product_bits, params.bias_bits, *(lay.acc_bits for lay in layers))
        return replace(params, acc_bits=acc)

    def fits(self, step: EngineStep, params: SparseFCParams) -> str | None:
        try:
            sparse_fc_layer(step.layer, params)
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None

    def place(
        self, steps: Sequence[EngineStep], params: SparseFCParams
    ) -> tuple[list[dict[str, int]], Images]:
        layers = [s.layer for s in steps]
        placements = place_layers(layers, params)
        pairs = list(zip(layers, placements, strict=True))
        cfgs = [sparse_fc_config(lay, params, at) for lay, at in pairs]
        init = sparse_fc_init(
            params, [sparse_fc_memory_images(lay, params, at) for lay, at in pairs]
        )
        return cfgs, {f.name: getattr(init, f.name) for f in fields(init)}

    def cycles(
        self, step: EngineStep, params: SparseFCParams, x: np.ndarray, input_delay: int = 0
    ) -> tuple[float, float]:
        # Zero activations are skipped: the cycles depend on each input's zero pattern.
        runs = [
            sparse_fc_cycles(
                step.layer,
                row,
                n_pe=params.n_pe,
                fifo_depth=params.fifo_depth,
                index_bits=params.index_bits,
            )
            for row in x.reshape(len(x), -1)
        ]
        # The unit's broadcast starts with the first word: a late first word delays it all.
        return (
            float(np.mean([r.cycles for r in runs])) + input_delay,
            float(np.mean([r.ideal_cycles for r in runs])),
        )

    def storage_bytes(self, params: SparseFCParams) -> int:
        per_pe = (
            params.ptr_depth * params.ptr_value_shape.width
            + params.entry_depth * params.entry_bits
            + params.bias_memory_depth * params.bias_bits
            + params.codebook_memory_depth * params.codebook_value_bits
        )
        return -(-(per_pe * params.n_pe) // 8)

    def build(self, params: SparseFCParams, images: Images | None = None) -> SparseFC:
        if images is not None:
            params = replace(params, init=SparseFCInit(**images))
        return SparseFC(params)

    def params_dict(self, params: SparseFCParams) -> dict[str, Any]:
        return {f.name: getattr(params, f.name) for f in fields(params) if f.name != "init"}
