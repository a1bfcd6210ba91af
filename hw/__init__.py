"""squeezeforge.hw: Amaranth components of the accelerators and their drivers.

The conv engine (MAC and shift-add PEs in an output-stationary systolic array) and the EIE-style
sparse fully connected unit; each has a driver that maps an IR layer to run-time configuration
and memory images.
"""

from .conv_driver import conv_layer_config, conv_memory_images
from .conv_engine import ConvEngine, ConvEngineParams
from .fifo import StreamFIFO
from .pe import MacPE, ShiftAddPE
from .sparse_fc import SparseFC, SparseFCInit, SparseFCParams
from .sparse_fc_driver import (
    SparseFCPlacement,
    place_layers,
    sparse_fc_config,
    sparse_fc_init,
    sparse_fc_memory_images,
)

__all__ = [
    "ConvEngine",
    "ConvEngineParams",
    "MacPE",
    "ShiftAddPE",
    "SparseFC",
    "SparseFCInit",
    "SparseFCParams",
    "SparseFCPlacement",
    "StreamFIFO",
    "conv_layer_config",
    "conv_memory_images",
    "place_layers",
    "sparse_fc_config",
    "sparse_fc_init",
    "sparse_fc_memory_images",
]
