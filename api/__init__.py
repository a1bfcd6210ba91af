"""squeezeforge: compress a trained network and turn it into a verified FPGA accelerator.

The Python API, for notebooks and scripts::

    import squeezeforge as sf

    net = sf.compress(model, "fixed8", data=(x_train, y_train, x_test, y_test))
    net.predict(x).outputs          # the bit-accurate reference on float inputs
    acc = sf.generate(net)          # Verilog in a temporary build folder
    acc.simulate(x[:4])             # the same inputs on Verilator, bit for bit
    acc.resources()                 # Yosys (and nextpnr) figures

Names are imported on first use: ``import squeezeforge`` loads neither PyTorch nor Amaranth,
and changes no global state (no matplotlib backend, no logging set-up) but one: MKL's
reproducibility mode (below).
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("squeezeforge")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

# Training gives the same weights on every x86 processor, and through the API the same as
# through the console script: MKL picks its kernels by processor unless its conditional
# numerical reproducibility mode is set, and reads the mode before its first call, so it is set
# here, before anything of this package imports torch. A user's own setting wins.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

# Public name -> the module that defines it (relative to this package).
_LAZY = {
    "compress": "._flow",
    "generate": "._flow",
    "import_qonnx": "._flow",
    "load_net": "._net",
    "CompressedNet": "._net",
    "Prediction": "._net",
    "Accelerator": "._accelerator",
    "SimulationResult": "._accelerator",
    "Target": ".sim.target",
    "load_model": ".models.user_model",
    "load_dataset": ".models.data",
    "SqueezeforgeError": ".sim.errors",
    "UserError": ".sim.errors",
}

# Spelled out, not derived from _LAZY, so linters and readers see the public names.
__all__ = [
    "Accelerator",
    "CompressedNet",
    "Prediction",
    "SimulationResult",
    "SqueezeforgeError",
    "Target",
    "UserError",
    "__version__",
    "compress",
    "generate",
    "import_qonnx",
    "load_dataset",
    "load_model",
    "load_net",
]

if TYPE_CHECKING:
    from ._accelerator import Accelerator, SimulationResult
    from ._flow import compress, generate
    from ._net import CompressedNet, Prediction, load_net
    from .models.data import load_dataset
    from .models.user_model import load_model
    from .sim.errors import SqueezeforgeError, UserError
    from .sim.target import Target


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next lookup does not come back here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
