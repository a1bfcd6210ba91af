"""The EIE-style sparse fully connected unit: sparse matrix times sparse vector on N PEs.

One package owns the unit: the component (:mod:`.engine`), its driver from an IR layer to
run-time config and memory images (:mod:`.driver`), its cycle model (:mod:`.cycles`) and its
binding to the compiler (:mod:`.binding`, the engine contract of :mod:`squeezeforge.hw.engine`).
"""

from .binding import SparseFCBinding
from .cycles import SparseFCCycles, as_csc, sparse_fc_cycles, sparse_fc_cycles_from_counts
from .driver import (
    MemoryImage,
    SparseFCPlacement,
    load_writes,
    place_layers,
    sparse_fc_config,
    sparse_fc_init,
    sparse_fc_layer,
    sparse_fc_memory_images,
)
from .engine import (
    WEIGHT_KINDS,
    PointerBanks,
    SparseFC,
    SparseFCInit,
    SparseFCMemory,
    SparseFCParams,
    SparsePE,
    load_signature,
)

__all__ = [
    "WEIGHT_KINDS",
    "MemoryImage",
    "PointerBanks",
    "SparseFC",
    "SparseFCBinding",
    "SparseFCCycles",
    "as_csc",
    "SparseFCInit",
    "SparseFCMemory",
    "SparseFCParams",
    "SparseFCPlacement",
    "SparsePE",
    "load_signature",
    "load_writes",
    "place_layers",
    "sparse_fc_config",
    "sparse_fc_cycles",
    "sparse_fc_cycles_from_counts",
    "sparse_fc_init",
    "sparse_fc_layer",
    "sparse_fc_memory_images",
]
