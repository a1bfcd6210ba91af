"""The conv engine behind the engine contract (:class:`~squeezeforge.hw.engine.EngineBinding`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np

from ...sim.ir import Conv2d
from ...sim.numerics import Pow2Weights
from ...sim.target import Target
from ..engine import EngineBinding, EngineStep, Images, memory_depth
from ..interface import LayerFitError
from .cycles import ConvRun, conv_cycles, conv_run
from .driver import check_conv_fits, conv_layer_config, conv_memory_images, filter_blocks
from .engine import ConvEngine, ConvEngineParams

__all__ = ["ConvBinding"]

_DEFAULT = Target()

# Each flavour's instance name in a build.
_NAMES = {"fixed": "conv_mac", "pow2": "conv_pow2"}


@dataclass(frozen=True)
class ConvBinding(EngineBinding):
    """The conv engine: ``rows`` x ``cols`` PEs, MAC (fixed) or shift-add (pow2) flavour."""

    FAMILY: ClassVar[str] = "conv"
    LAYER_KINDS: ClassVar[tuple[str, ...]] = (Conv2d.kind,)
    WEIGHT_KINDS: ClassVar[tuple[str, ...]] = tuple(_NAMES)
    WHY_NOT: ClassVar[str] = "conv layers run fixed-point or power-of-two weights"
    CHAINS: ClassVar[bool] = True

    weight_kind: str
    # Defaults are the default Target's; the compiler passes the build's (for_layer).
    rows: int = _DEFAULT.conv_rows
    cols: int = _DEFAULT.conv_cols

    @classmethod
    def target_sizes(cls, target: Target) -> dict[str, int]:
        return {"rows": target.conv_rows, "cols": target.conv_cols}

    @property
    def name(self) -> str:
        return _NAMES[self.weight_kind]

    def size(self, steps: Sequence[EngineStep], act_bits: int) -> ConvEngineParams:
        layers = [s.layer for s in steps]
        wbits = [
            lw.bits if isinstance(lw, Pow2Weights) else lw.value_bits
            for lw in (lay.weight_format for lay in layers)
        ]
        probe = ConvEngineParams(
            rows=self.rows,
            cols=self.cols,
            weight_kind=self.weight_kind,
            weight_bits=max(wbits),
            act_bits=act_bits,
            acc_bits=64,
        )
        out_pixels = []
        for s in steps:
            _, oh, ow = s.layer.output_shape(s.in_shape)
            out_pixels.append(oh * ow)
        return replace(
            probe,
            # The engine's accumulators hold at least one of its widest products.
            acc_bits=max(probe.product_bits, *(lay.acc_bits for lay in layers)),
            # The cfg's size fields are as wide as an address into the activations; a kernel,
            # stride or padding larger than a tiny input must still fit them.
            act_depth=memory_depth(
                max(
                    max(math.prod(s.in_shape), *s.layer.kernel, s.layer.stride, s.layer.padding)
                    for s in steps
                )
            ),
            weight_depth=memory_depth(
                sum(filter_blocks(s.layer, probe) * s.layer.fan_in for s in steps)
            ),
            bias_depth=memory_depth(sum(filter_blocks(s.layer, probe) for s in steps)),
            out_depth=max(out_pixels),
            # A chained step loads while the step before computes, a prefetched one while the
            # pipeline stage finishes the image before: a second input bank.
            input_banks=2
            if any(getattr(s, "chained", False) or getattr(s, "prefetched", False) for s in steps)
            else 1,
        )

    def fits(self, step: EngineStep, params: ConvEngineParams) -> str | None:
        try:
            check_conv_fits(step.layer, step.in_shape, params, pool=step.pool)
        except LayerFitError as exc:
            return str(exc)
        return None

    def place(
        self, steps: Sequence[EngineStep], params: ConvEngineParams
    ) -> tuple[list[dict[str, int]], Images]:
        cfgs: list[dict[str, int]] = []
        weights: list[int] = []
        biases: list[int] = []
        for s in steps:
            images = conv_memory_images(s.layer, params)
            cfgs.append(
                conv_layer_config(s.layer, s.in_shape, s.pool, params, len(weights), len(biases))
            )
            weights += images["weight"]
            biases += images["bias"]
        return cfgs, {"weight": weights, "bias": biases}

    def cycles(
        self, step: EngineStep, params: ConvEngineParams, x: np.ndarray, input_delay: int = 0
    ) -> tuple[float, float]:
        # The engine's schedule does not depend on the activations' values.
        c = conv_cycles(step.layer, step.in_shape, params, pool=step.pool, input_delay=input_delay)
        return float(c.cycles), float(c.ideal_cycles)

    def chain_run(
        self,
        step: EngineStep,
        params: ConvEngineParams,
        *,
        began: int,
        last_word: int,
        before: ConvRun | None,
    ) -> ConvRun:
        return conv_run(
            step.layer,
            step.in_shape,
            params,
            step.pool,
            began=began,
            last_word=last_word,
            before=before,
        )

    def storage_bytes(self, params: ConvEngineParams) -> int:
        bits = (
            params.weight_depth * params.weight_word_bits
            + params.bias_depth * params.bias_word_bits
        )
        return -(-bits // 8)

    def build(self, params: ConvEngineParams, images: Images | None = None) -> ConvEngine:
        if images is not None:
            params = replace(
                params,
                init_weights=tuple(int(w) for w in images["weight"]),
                init_biases=tuple(int(b) for b in images["bias"]),
            )
        return ConvEngine(params)

    def params_dict(self, params: ConvEngineParams) -> dict[str, Any]:
        return {
            f.name: getattr(params, f.name)
            for f in fields(params)
            if f.name not in ("init_weights", "init_biases")
        }
