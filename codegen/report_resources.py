"""Resources of a build: each engine and the whole top, through Yosys (and nextpnr)."""

from __future__ import annotations

import os
from pathlib import Path

from .build import read_manifest
from .resources import TARGETS, synthesize

__all__ = ["build_resources"]


def build_resources(build_dir: str | os.PathLike, target: str, *, with_fmax: bool = False) -> dict:
    """LUT, FF, DSP and BRAM per engine and for the whole accelerator on ``target``."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid targets are {', '.join(TARGETS)}")
    build = Path(build_dir)
    manifest = read_manifest(build)
    engines = {}
    for name in manifest["engines"]:
        path = build / "engines" / f"{name}.v"
        engines[name] = synthesize(path.read_text(), name, target).to_dict()
    total = synthesize(
        (build / "top.v").read_text(), manifest["top"], target, with_fmax=with_fmax
    ).to_dict()
    return {"build": str(build), "target": target, "engines": engines, "total": total}
