"""squeezeforge.sim: the numeric contract, the net format, the golden model and the simulators.

``numerics`` defines the arithmetic once; ``ir`` the compressed-net file; ``reference`` the
bit-accurate model every RTL result must equal; ``manifest`` the build folder's typed manifest;
``target`` the hardware a net runs on and ``storage`` what a layer occupies there; ``rtl`` the
Verilator runner; ``netsim`` the whole-net simulation of a build. The engines' cycle models live
with the engines (``hw/conv/cycles.py``, ``hw/sparse_fc/cycles.py``).
"""

from .ir import (
    Conv2d,
    Dense,
    Flatten,
    IRError,
    MaxPool2d,
    Net,
    SparseDense,
    load_net,
    save_net,
)
from .numerics import CodebookWeights, FixedFormat, FixedWeights, Pow2Weights
from .reference import run_layer, run_net
from .target import Target, resolve_target

__all__ = [
    "CodebookWeights",
    "Conv2d",
    "Dense",
    "FixedFormat",
    "FixedWeights",
    "Flatten",
    "IRError",
    "MaxPool2d",
    "Net",
    "Pow2Weights",
    "SparseDense",
    "Target",
    "load_net",
    "resolve_target",
    "run_layer",
    "run_net",
    "save_net",
]
