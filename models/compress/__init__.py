"""Compression passes over a prepared model, recipes that chain them, and the report.

Each pass is a small frozen dataclass with ``apply(model, ctx) -> model``; they compose as a
plain list, which is what a recipe is. :func:`compress` runs a recipe end to end.
"""

from .base import Context, Finetune, select_layers
from .batchnorm import fold_batchnorm
from .filters import FilterPrune, remove_filters
from .fixed import FixedPoint, calibrate
from .inq import INQ, inq_round
from .lowrank import LowRank
from .pipeline import LayerCheck, compress, compress_model, compress_net, planned_layer_kinds
from .prune import MagnitudePrune, prune_below, prune_to_sparsity
from .recipe import ExportOptions, FinetuneOnly, Recipe, load_recipe, parse_recipe, shipped_recipes
from .report import layer_costs, net_costs, report_markdown
from .share import WeightShare, kmeans_1d

__all__ = [
    "INQ",
    "Context",
    "LowRank",
    "ExportOptions",
    "FilterPrune",
    "Finetune",
    "FinetuneOnly",
    "FixedPoint",
    "LayerCheck",
    "MagnitudePrune",
    "Recipe",
    "WeightShare",
    "calibrate",
    "compress",
    "compress_model",
    "compress_net",
    "fold_batchnorm",
    "inq_round",
    "kmeans_1d",
    "layer_costs",
    "load_recipe",
    "net_costs",
    "parse_recipe",
    "planned_layer_kinds",
    "prune_below",
    "prune_to_sparsity",
    "remove_filters",
    "report_markdown",
    "select_layers",
    "shipped_recipes",
]
