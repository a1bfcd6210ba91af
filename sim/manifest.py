"""The build folder's manifest: what generate writes and simulate, resources and the reports read.

A versioned, typed record (:class:`Manifest`) with one JSON form. It lives below ``codegen`` so
the simulators can read a build without importing the compiler. It holds no memory contents:
those are in ``top.v`` (initial values) and ``mem/``. It records the SHA-256 of every other file
of the build and a checksum of itself, so a folder whose parts do not belong together (a
hand-edited manifest, a truncated ``top.v``, a ``net.sfnet`` from another build) is refused
before any tool runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import SqueezeforgeError

__all__ = [
    "BUILD_FORMAT",
    "BUILD_VERSION",
    "BuildError",
    "EngineEntry",
    "Manifest",
    "Port",
    "StepEntry",
    "is_build",
    "manifest_checksum",
    "read_manifest",
]

BUILD_FORMAT = "squeezeforge-build"
#: 2: typed; engine parameters without memory contents; ports from the top's signature; the
#: SHA-256 of every file and a checksum of the manifest itself.
BUILD_VERSION = 3


class BuildError(SqueezeforgeError, ValueError):
    """A build folder that is missing, incomplete or from another version."""


@dataclass(frozen=True)
class Port:
    """One Verilog port of the top level, as its signature gives it."""

    name: str  # in the Verilog: i_pixel__valid
    path: str  # in the signature: i_pixel.valid
    direction: str  # "in" or "out"
    width: int


@dataclass(frozen=True)
class EngineEntry:
    """One engine instance: its engine (package), parameters and on-chip weight storage."""

    name: str
    engine: str
    params: dict[str, Any]
    storage_bytes: int


@dataclass(frozen=True)
class StepEntry:
    """One step: the IR layers it computes, the engine it runs on, its cfg and cycles."""

    index: int
    layers: tuple[str, ...]
    engine: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    pool: bool
    cfg: dict[str, int]
    cycles_estimated: int
    cycles_ideal: float
    #: What the step's layer occupies in the engine's memories, by part
    #: (:func:`squeezeforge.sim.storage.layer_storage`).
    storage_bytes: dict[str, int] = field(default_factory=dict)
    #: The tensors the step reads (joined along the channels) and the slice of them it takes
    #: (a group of a grouped conv takes its channels); the slice of its output tensor
    #: (``layers[-1]``) it writes.
    sources: tuple[str, ...] = ()
    in_offset: int = 0
    out_offset: int = 0
    #: Where they lie in the activation memory: (address, count) segments read in order and
    #: the first address written; or the pixel stream and the score stream.
    in_segments: tuple[tuple[int, int], ...] = ()
    out_address: int = 0
    from_pixels: bool = False
    to_scores: bool = False


@dataclass(frozen=True)
class Manifest:
    """What a build holds, shared by generate, simulate, resources and the reports."""

    net: str
    top: str
    #: The Target the build was made for (:meth:`squeezeforge.sim.target.Target.to_dict`).
    target: dict[str, Any] | None
    act_bits: int
    memory_depth: int
    input_shape: tuple[int, ...]
    input_format: dict[str, int]
    output_count: int
    output_format: dict[str, int]
    engines: tuple[EngineEntry, ...]
    steps: tuple[StepEntry, ...]
    ports: tuple[Port, ...]
    passes: tuple[str, ...] = ()
    #: The first step of the second pipeline stage (None: one image at a time), and the
    #: estimated cycles between images fed back to back when there are two stages.
    split: int | None = None
    interval_estimated: int | None = None
    #: SHA-256 of every other file of the build, by path relative to the build folder.
    files: dict[str, str] = field(default_factory=dict)
    #: :func:`manifest_checksum` of the rest of the manifest.
    checksum: str = ""
    format: str = field(default=BUILD_FORMAT)
    version: int = field(default=BUILD_VERSION)

    @property
    def cycles_estimated(self) -> int:
        """Estimated cycles of one inference: the sum over the steps."""
        return sum(s.cycles_estimated for s in self.steps)

    def port(self, name: str) -> Port:
        """The port called ``name`` (``i_pixel__valid``)."""
        for p in self.ports:
            if p.name == name:
                return p
        raise KeyError(f"the top level has no port {name!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cycles_estimated"] = self.cycles_estimated  # for readers of the JSON alone
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> Manifest:
        """Parse a manifest's JSON form, checking format and version first.

        Raises
        ------
        BuildError
            For another format or version, or a missing or malformed field.
        """
        if not isinstance(d, dict) or d.get("format") != BUILD_FORMAT:
            raise BuildError(f"{where}: not a squeezeforge build manifest")
        if d.get("version") != BUILD_VERSION:
            raise BuildError(
                f"{where}: build version {d.get('version')!r}, this squeezeforge reads"
                f" {BUILD_VERSION}; generate it again"
            )
        try:
            return cls(
                net=str(d["net"]),
                top=str(d["top"]),
                target=dict(d["target"]) if d.get("target") is not None else None,
                act_bits=int(d["act_bits"]),
                memory_depth=int(d["memory_depth"]),
                input_shape=tuple(int(n) for n in d["input_shape"]),
                input_format=dict(d["input_format"]),
                output_count=int(d["output_count"]),
                output_format=dict(d["output_format"]),
                engines=tuple(EngineEntry(**e) for e in d["engines"]),
                steps=tuple(
                    StepEntry(
                        **{
                            **s,
                            "layers": tuple(s["layers"]),
                            "in_shape": tuple(s["in_shape"]),
                            "out_shape": tuple(s["out_shape"]),
                            "sources": tuple(s.get("sources", ())),
                            "in_segments": tuple(
                                (int(a), int(c)) for a, c in s.get("in_segments", ())
                            ),
                        }
                    )
                    for s in d["steps"]
                ),
                ports=tuple(Port(**p) for p in d["ports"]),
                passes=tuple(d.get("passes", ())),
                split=None if d.get("split") is None else int(d["split"]),
                interval_estimated=(
                    None if d.get("interval_estimated") is None else int(d["interval_estimated"])
                ),
                files={str(k): str(v) for k, v in dict(d.get("files", {})).items()},
                checksum=str(d.get("checksum", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BuildError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> Manifest:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BuildError(f"{where}: not valid JSON: {exc}") from None
        return cls.from_dict(d, where)


def manifest_checksum(manifest: dict[str, Any]) -> str:
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


def read_manifest(build_dir: str | os.PathLike) -> Manifest:
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
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path}: not valid JSON: {exc}") from None
    except OSError as exc:
        raise BuildError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != BUILD_FORMAT:
        raise BuildError(f"{path}: not a squeezeforge build manifest")
    if raw.get("version") != BUILD_VERSION:
        raise BuildError(
            f"{path}: build version {raw.get('version')!r}, this squeezeforge reads"
            f" {BUILD_VERSION}; generate it again"
        )
    if raw.get("checksum") != manifest_checksum(raw):
        raise BuildError(f"{path}: edited after generate (checksum differs); generate it again")
    manifest = Manifest.from_dict(raw, str(path))
    if not manifest.files:
        raise BuildError(f"{path}: lists no file hashes; generate it again")
    for name in ("top.v", "net.sfnet"):
        if name not in manifest.files:
            raise BuildError(f"{path}: lists no {name}; generate it again")
    for name, digest in sorted(manifest.files.items()):
        part = build / name
        if not part.is_file():
            raise BuildError(f"{build}: {name} is missing; generate the build again")
        if hashlib.sha256(part.read_bytes()).hexdigest() != digest:
            raise BuildError(
                f"{build}: {name} is not the file this build was generated with"
                " (changed or copied from another build); generate it again"
            )
    return manifest
