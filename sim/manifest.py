"""The build folder's manifest: what generate writes and simulate, resources and the reports read.

A versioned, typed record (:class:`Manifest`) with one JSON form. It lives below ``codegen`` so
the simulators can read a build without importing the compiler. It holds no memory contents:
those are in ``top.v`` (initial values) and ``mem/``.
"""

from __future__ import annotations

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
    "read_manifest",
]

BUILD_FORMAT = "squeezeforge-build"
#: 2: typed manifest; engine parameters without memory contents; ports from the top's signature.
BUILD_VERSION = 2


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


@dataclass(frozen=True)
class Manifest:
    """What a build holds, shared by generate, simulate, resources and the reports."""

    net: str
    top: str
    act_bits: int
    buffer_depth: int
    input_shape: tuple[int, ...]
    input_format: dict[str, int]
    output_count: int
    output_format: dict[str, int]
    engines: tuple[EngineEntry, ...]
    steps: tuple[StepEntry, ...]
    ports: tuple[Port, ...]
    passes: tuple[str, ...] = ()
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
                act_bits=int(d["act_bits"]),
                buffer_depth=int(d["buffer_depth"]),
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
                        }
                    )
                    for s in d["steps"]
                ),
                ports=tuple(Port(**p) for p in d["ports"]),
                passes=tuple(d.get("passes", ())),
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


def read_manifest(build_dir: str | os.PathLike) -> Manifest:
    """The manifest of a finished build, checked for format and version."""
    build = Path(build_dir)
    path = build / "manifest.json"
    if not build.is_dir():
        raise BuildError(f"{build}: no such build folder (run `squeezeforge generate` first)")
    if not path.is_file():
        raise BuildError(f"{build}: not a finished build (manifest.json is missing)")
    manifest = Manifest.from_json(path.read_text(), str(path))
    for name in ("top.v", "net.sfnet"):
        if not (build / name).is_file():
            raise BuildError(f"{build}: {name} is missing; generate the build again")
    return manifest
