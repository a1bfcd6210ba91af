"""squeezeforge.models: networks, data, training, compression passes and export to the IR.

The flow's entry points:

* :func:`train` a reference net (``"cnn"``, ``"mlp"``, ``"mobile"``, ``"fire"`` or
  ``"resnet"``) and
  :func:`save_checkpoint` it;
* :func:`load_checkpoint` it back;
* ``squeezeforge.models.compress.compress`` a checkpoint (or model) with a recipe name or file
  into an IR net file, returning the report (the subpackage ``compress`` holds the passes, so the
  function is not re-exported here under the same name); or :func:`post_training_export` for a
  plain fixed-point net.
"""

from .compress import load_recipe, shipped_recipes
from .data import Dataset, load_digits, load_mnist_idx
from .export import check_supported, post_training_export, to_net
from .graph import ChannelConcat, LayerGraph, ResidualAdd
from .nets import MODELS, DigitsCNN, DigitsFire, DigitsMLP, DigitsMobile, DigitsResNet, build_model
from .train import Checkpoint, evaluate, fit, load_checkpoint, predict, save_checkpoint, train

__all__ = [
    "MODELS",
    "Checkpoint",
    "Dataset",
    "ChannelConcat",
    "DigitsCNN",
    "DigitsFire",
    "DigitsMLP",
    "DigitsMobile",
    "DigitsResNet",
    "LayerGraph",
    "ResidualAdd",
    "build_model",
    "check_supported",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_digits",
    "load_mnist_idx",
    "load_recipe",
    "post_training_export",
    "predict",
    "save_checkpoint",
    "shipped_recipes",
    "to_net",
    "train",
]
