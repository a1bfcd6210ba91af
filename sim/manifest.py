"""The build folder's manifest: what generate writes and simulate and resources read.

It lives below ``codegen`` so the simulators can read a build without importing the compiler.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import SqueezeforgeError

__all__ = ["BUILD_FORMAT", "BUILD_VERSION", "BuildError", "read_manifest"]

BUILD_FORMAT = "squeezeforge-build"
BUILD_VERSION = 1


class BuildError(SqueezeforgeError, ValueError):
    """A build folder that is missing, incomplete or from another version."""


def read_manifest(build_dir: str | os.PathLike) -> dict:
    """The manifest of a finished build, checked for format and version."""
    build = Path(build_dir)
    path = build / "manifest.json"
    if not build.is_dir():
        raise BuildError(f"{build}: no such build folder (run `squeezeforge generate` first)")
    if not path.is_file():
        raise BuildError(f"{build}: not a finished build (manifest.json is missing)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BuildError(f"{path}: not valid JSON: {exc}") from None
    if manifest.get("format") != BUILD_FORMAT:
        raise BuildError(f"{path}: not a squeezeforge build manifest")
    if manifest.get("version") != BUILD_VERSION:
        raise BuildError(
            f"{path}: build version {manifest.get('version')!r}, this squeezeforge reads"
            f" {BUILD_VERSION}; generate it again"
        )
    for name in ("top.v", "net.sfnet"):
        if not (build / name).is_file():
            raise BuildError(f"{build}: {name} is missing; generate the build again")
    return manifest
