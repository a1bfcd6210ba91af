"""The conv engine: conv2d as folded GEMM on an output-stationary PE array.

One package owns the engine: the component (:mod:`.engine`), its driver from an IR layer to
run-time config and memory images (:mod:`.driver`), its cycle model (:mod:`.cycles`) and its
binding to the compiler (:mod:`.binding`, the engine contract of :mod:`squeezeforge.hw.engine`).
"""

from .binding import ConvBinding
from .cycles import ConvCycles, conv_cycles, conv_stream_dones
from .driver import (
    check_conv_fits,
    conv_layer_config,
    conv_load_writes,
    conv_memory_images,
    conv_output_shape,
    filter_blocks,
    weight_words,
)
from .engine import ConvEngine, ConvEngineParams, FoldSequencer, conv_cfg_layout

__all__ = [
    "ConvBinding",
    "ConvCycles",
    "ConvEngine",
    "ConvEngineParams",
    "FoldSequencer",
    "check_conv_fits",
    "conv_cfg_layout",
    "conv_cycles",
    "conv_stream_dones",
    "conv_layer_config",
    "conv_load_writes",
    "conv_memory_images",
    "conv_output_shape",
    "filter_blocks",
    "weight_words",
]
