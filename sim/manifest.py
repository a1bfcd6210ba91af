"""The build folder's manifest: what generate writes and simulate and resources read.

It lives below ``codegen`` so the simulators can read a build without importing the compiler.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import SqueezeforgeError

__all__ = [
    "BUILD_FORMAT",
    "BUILD_VERSION",
    "BuildError",
    "is_build",
    "manifest_checksum",
    "read_manifest",
]

BUILD_FORMAT = "squeezeforge-build"
# 2: the manifest records the SHA-256 of every file and a checksum of itself.
BUILD_VERSION = 2


class BuildError(SqueezeforgeError, ValueError):
    """A build folder that is missing, incomplete or from another version."""


def manifest_checksum(manifest: dict) -> str:
    """SHA-256 of the manifest's canonical JSON without its own ``checksum`` field."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def is_build(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a squeezeforge build manifest (of any version)."""
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == BUILD_FORMAT


def read_manifest(build_dir: str | os.PathLike) -> dict:
    """The manifest of a finished build, checked for format, version and integrity.

    Every file the manifest lists must be present with the SHA-256 it records, and the manifest
    must match its own checksum: a hand-edited manifest, a truncated ``top.v`` or a
    ``net.sfnet`` copied from another build is refused here, before any tool runs.
    """
    build = Path(build_dir)
    path = build / "manifest.json"
    if build.exists() and not build.is_dir():
        raise BuildError(f"{build}: is a file, not a build folder")
    if not build.is_dir():
        raise BuildError(f"{build}: no such build folder (run `squeezeforge generate` first)")
    if not path.is_file():
        raise BuildError(f"{build}: not a finished build (manifest.json is missing)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path}: not valid JSON: {exc}") from None
    except OSError as exc:
        raise BuildError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUILD_FORMAT:
        raise BuildError(f"{path}: not a squeezeforge build manifest")
    if manifest.get("version") != BUILD_VERSION:
        raise BuildError(
            f"{path}: build version {manifest.get('version')!r}, this squeezeforge reads"
            f" {BUILD_VERSION}; generate it again"
        )
    if manifest.get("checksum") != manifest_checksum(manifest):
        raise BuildError(f"{path}: edited after generate (checksum differs); generate it again")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BuildError(f"{path}: lists no file hashes; generate it again")
    for name in ("top.v", "net.sfnet"):
        if name not in files:
            raise BuildError(f"{path}: lists no {name}; generate it again")
    for name, digest in sorted(files.items()):
        part = build / name
        if not part.is_file():
            raise BuildError(f"{build}: {name} is missing; generate the build again")
        if hashlib.sha256(part.read_bytes()).hexdigest() != digest:
            raise BuildError(
                f"{build}: {name} is not the file this build was generated with"
                " (changed or copied from another build); generate it again"
            )
    return manifest
