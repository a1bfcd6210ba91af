"""squeezeforge.codegen: a compressed net to one accelerator, its Verilog and its reports."""

from .build import generate, read_manifest, write_build
from .plan import PASSES, Plan, compile_net
from .report_resources import build_resources
from .resources import TARGETS, synthesize, synthesize_hierarchy

__all__ = [
    "PASSES",
    "TARGETS",
    "Plan",
    "build_resources",
    "compile_net",
    "generate",
    "read_manifest",
    "synthesize",
    "synthesize_hierarchy",
    "write_build",
]
