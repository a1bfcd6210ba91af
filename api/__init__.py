"""squeezeforge: compress a trained network and turn it into a verified FPGA accelerator."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("squeezeforge")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"
