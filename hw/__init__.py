"""squeezeforge.hw: Amaranth components of the accelerators and their drivers.

The conv engine (MAC and shift-add PEs in an output-stationary systolic array, ``hw/conv/``) and
the EIE-style sparse fully connected unit (``hw/sparse_fc/``): one package per engine, each
behind the engine contract of :mod:`.engine`; the whole-net top level (:mod:`.top`) runs them.
"""

from .conv import ConvBinding, ConvEngine, ConvEngineParams, conv_layer_config, conv_memory_images
from .engine import EngineBinding
from .fifo import StreamFIFO
from .interface import LayerFitError, pack_cfg
from .pe import MacPE, ShiftAddPE
from .sparse_fc import (
    SparseFC,
    SparseFCBinding,
    SparseFCInit,
    SparseFCParams,
    SparseFCPlacement,
    place_layers,
    sparse_fc_config,
    sparse_fc_init,
    sparse_fc_memory_images,
)
from .top import Top, TopEngine, TopParams, TopStep

__all__ = [
    "ConvBinding",
    "ConvEngine",
    "ConvEngineParams",
    "EngineBinding",
    "LayerFitError",
    "MacPE",
    "ShiftAddPE",
    "SparseFC",
    "SparseFCBinding",
    "SparseFCInit",
    "SparseFCParams",
    "SparseFCPlacement",
    "StreamFIFO",
    "Top",
    "TopEngine",
    "TopParams",
    "TopStep",
    "conv_layer_config",
    "conv_memory_images",
    "pack_cfg",
    "place_layers",
    "sparse_fc_config",
    "sparse_fc_init",
    "sparse_fc_memory_images",
]
