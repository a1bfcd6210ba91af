"""The Target: one frozen description of the hardware a net will run on.

A :class:`Target` says how large the engines are (conv array rows x cols, FC processing
elements, activation FIFO depth, relative-index width), how wide activations are, and which FPGA
it is for (family, part, clock goal, the part's resource budget). Compression reports, the
compiler's passes, the cycle models and the storage accounting all read the same Target, so what
a report says is what the generated hardware holds.

It loads from a TOML file (:func:`load_target`), from a shipped preset by name
(``sim/targets/<name>.toml``, :func:`shipped_targets`) and from keyword overrides
(:meth:`Target.with_overrides`, used by the command line's flags). Every bad value raises one
:class:`~squeezeforge.sim.errors.UserError` naming the key.

This module is at the bottom of the package: it imports only :mod:`squeezeforge.sim.errors`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = [
    "FAMILIES",
    "Budget",
    "Target",
    "load_target",
    "parse_array",
    "resolve_target",
    "shipped_targets",
    "target_from_dict",
]

# The families codegen/resources.py synthesizes for (synth_ice40, synth_ecp5, synth_xilinx).
FAMILIES: tuple[str, ...] = ("ice40", "ecp5", "xc7")

# The sparse unit interleaves rows over its PEs with a bit mask, and its PE count is an
# elaboration parameter of hw/sparse_fc.py checked against the same bounds.
_MAX_FC_PES = 64
_MAX_CONV_SIDE = 32


@dataclass(frozen=True)
class Budget:
    """The resources of one part, as its vendor's data sheet gives them.

    ``bram_kbit`` is the block RAM in kbit (1 kbit = 1024 bits), excluding distributed RAM
    and the iCE40 UltraPlus SPRAM (the generated memories do not map to it).
    """

    lut: int
    ff: int
    dsp: int
    bram_kbit: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """The hardware a net runs on (defaults: the accelerator as it was before it had knobs).

    Attributes
    ----------
    name
        A label (the preset's name, or "custom").
    conv_rows, conv_cols
        The conv engine's PE array: ``rows`` output positions x ``cols`` filters per fold.
    fc_pes
        Processing elements of the sparse FC unit; rows are interleaved over them (a power of
        two, 1..64). The CSC encoding and its padding depend on it.
    fifo_depth
        Activation FIFO depth per FC PE (EIE's load-balancing queue).
    index_bits
        Width of the relative row index of a CSC entry; longer gaps take padding entries.
    act_bits
        Activation width of the datapath: ``None`` takes the widest format the net uses; a number
        fixes it (a net that needs more is refused when it is compiled).
    family, part
        FPGA family (one of :data:`FAMILIES`, what the resource report synthesizes for) and part.
    clock_mhz
        The clock goal in MHz (reports compare the achieved Fmax with it; 0: none).
    budget
        The part's LUT/FF/DSP/BRAM budget, for utilization and (later) a folding pass; None
        when the Target names no part.
    pipeline
        Run the net as two pipeline stages on disjoint engines (the conv layers, then the
        fully connected ones), so the next image enters the first stage while the last one is
        in the second; False: one image at a time (the latency mode, with no boundary queue).
    double_buffer
        Give the conv engine two input banks: a conv step that reads exactly the output of
        the conv step before it on the same engine takes those words as they are emitted,
        into the free bank, instead of loading them from the activation memory afterwards
        (twice the engine's input memory; ``docs/pipeline.md``).
    layers
        Per-layer overrides, reserved: a table per layer name. No pass reads them yet, so a
        Target that sets any is refused rather than silently ignored.
    """

    name: str = "default"
    conv_rows: int = 4
    conv_cols: int = 4
    fc_pes: int = 8
    fifo_depth: int = 8
    index_bits: int = 4
    act_bits: int | None = None
    family: str = "ice40"
    part: str = ""
    clock_mhz: float = 0.0
    budget: Budget | None = None
    pipeline: bool = False
    double_buffer: bool = False
    layers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _int(self.conv_rows, "conv_rows", 1, _MAX_CONV_SIDE)
        _int(self.conv_cols, "conv_cols", 1, _MAX_CONV_SIDE)
        _int(self.fc_pes, "fc_pes", 1, _MAX_FC_PES)
        if self.fc_pes & (self.fc_pes - 1):
            raise UserError(f"target key 'fc_pes': must be a power of two, got {self.fc_pes}")
        _int(self.fifo_depth, "fifo_depth", 1, 64)
        _int(self.index_bits, "index_bits", 1, 8)
        if self.act_bits is not None:
            _int(self.act_bits, "act_bits", 2, 16)
        if self.family not in FAMILIES:
            raise UserError(
                f"target key 'family': {self.family!r} is not one of {', '.join(FAMILIES)}"
            )
        if not isinstance(self.part, str):
            raise UserError(f"target key 'part': must be a string, got {self.part!r}")
        if isinstance(self.clock_mhz, bool) or not isinstance(self.clock_mhz, int | float):
            raise UserError(f"target key 'clock_mhz': must be a number, got {self.clock_mhz!r}")
        if not 0 <= self.clock_mhz <= 1000:
            raise UserError(f"target key 'clock_mhz': must be in 0..1000, got {self.clock_mhz}")
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise UserError(f"target key 'budget': expected a Budget, got {self.budget!r}")
        if not isinstance(self.pipeline, bool):
            raise UserError(f"target key 'pipeline': must be true or false, got {self.pipeline!r}")
        if not isinstance(self.double_buffer, bool):
            raise UserError(
                f"target key 'double_buffer': must be true or false, got {self.double_buffer!r}"
            )
        if not isinstance(self.layers, Mapping):
            raise UserError("target key 'layers': must be a table of per-layer tables")
        if self.layers:
            first = next(iter(self.layers))
            raise UserError(
                f"target key 'layers.{first}': per-layer overrides are reserved; no compiler pass"
                " reads them yet"
            )
        object.__setattr__(self, "clock_mhz", float(self.clock_mhz))

    @property
    def conv_array(self) -> str:
        return f"{self.conv_rows}x{self.conv_cols}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON- and TOML-friendly dict (``act_bits`` and ``budget`` left out when None,
        ``pipeline`` and ``double_buffer`` when False, so a Target written before they existed
        keeps its form)."""
        d: dict[str, Any] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("budget", "layers", "act_bits", "pipeline", "double_buffer")
        }
        if self.act_bits is not None:
            d["act_bits"] = self.act_bits
        if self.pipeline:
            d["pipeline"] = True
        if self.double_buffer:
            d["double_buffer"] = True
        if self.budget is not None:
            d["budget"] = self.budget.to_dict()
        return d

    def to_toml(self) -> str:
        """The Target as a TOML file that :func:`load_target` reads back to an equal Target."""
        d = self.to_dict()
        budget = d.pop("budget", None)
        lines = [f"{k} = {_toml_value(v)}" for k, v in d.items()]
        if budget is not None:
            lines += ["", "[budget]", *(f"{k} = {_toml_value(v)}" for k, v in budget.items())]
        return "\n".join(lines) + "\n"

    def with_overrides(self, **changes: Any) -> Target:
        """A copy with the given keys changed (None values are left as they were).

        ``conv_array`` may be given as ``"RxC"``. A changed Target is renamed
        ``"<name>+custom"`` so reports do not pass it off as the preset.
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        if "conv_array" in changes:
            rows, cols = parse_array(changes.pop("conv_array"))
            changes.update(conv_rows=rows, conv_cols=cols)
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise UserError(f"target key {unknown[0]!r}: unknown ({', '.join(_KEYS)})")
        if changes and "name" not in changes:
            if any(getattr(self, k) != v for k, v in changes.items()):
                changes["name"] = f"{self.name}+custom"
        return replace(self, **changes)

    def __repr__(self) -> str:
        part = f" {self.family}/{self.part}" if self.part else f" {self.family}"
        return (
            f"Target({self.name!r}: conv {self.conv_array}, {self.fc_pes} FC PEs,"
            f" FIFO {self.fifo_depth}, index {self.index_bits} bits,{part}"
            f"{', pipelined' if self.pipeline else ''}"
            f"{', double-buffered' if self.double_buffer else ''})"
        )


_KEYS = tuple(f.name for f in fields(Target))


def _int(value: Any, key: str, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"target key {key!r}: must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise UserError(f"target key {key!r}: must be in {lo}..{hi}, got {value}")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_array(text: Any) -> tuple[int, int]:
    """``"8x8"`` -> ``(8, 8)``: the conv array as rows x cols."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m:
        raise UserError(f"target key 'conv_array': expected ROWSxCOLS such as 8x8, got {text!r}")
    return int(m[1]), int(m[2])


def target_from_dict(data: Mapping[str, Any], where: str = "target") -> Target:
    """A Target from a parsed TOML table or a manifest's JSON (unknown keys are refused)."""
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: a target must be a table, got {type(data).__name__}")
    kw = dict(data)
    unknown = sorted(set(kw) - set(_KEYS) - {"conv_array"})
    if unknown:
        raise UserError(f"{where}: target key {unknown[0]!r} is unknown ({', '.join(_KEYS)})")
    if "conv_array" in kw:
        kw["conv_rows"], kw["conv_cols"] = parse_array(kw.pop("conv_array"))
    if "budget" in kw:
        b = kw["budget"]
        names = [f.name for f in fields(Budget)]
        if not isinstance(b, Mapping) or set(b) != set(names):
            raise UserError(f"{where}: target key 'budget' needs exactly {', '.join(names)}")
        for k in names:
            if isinstance(b[k], bool) or not isinstance(b[k], int) or b[k] < 0:
                raise UserError(f"{where}: target key 'budget.{k}' must be an integer >= 0")
        kw["budget"] = Budget(**{k: b[k] for k in names})
    try:
        return Target(**kw)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def load_target(path: str | os.PathLike) -> Target:
    """Read a Target from a TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such target file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    data.setdefault("name", path.stem)
    return target_from_dict(data, str(path))


def target_of_net(metadata: Mapping[str, Any]) -> Target | None:
    """The Target a net was compressed for, as its metadata records it (None: none recorded).

    ``compress`` records it so that ``generate`` builds, by default, the hardware the report's
    storage and Cr were counted for."""
    recorded = metadata.get("target")
    if not isinstance(recorded, Mapping):
        return None
    return target_from_dict(recorded, "the net's recorded target")


def shipped_targets() -> list[str]:
    """Names of the presets that ship with squeezeforge."""
    folder = resources.files("squeezeforge.sim") / "targets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _preset(name: str) -> Target:
    text = (resources.files("squeezeforge.sim") / "targets" / f"{name}.toml").read_text()
    data = tomllib.loads(text)
    data["name"] = name
    return target_from_dict(data, f"preset {name}")


def resolve_target(spec: str | os.PathLike | Target | None = None, **overrides: Any) -> Target:
    """A Target from a preset name, a TOML path, a Target or None (the default), with overrides.

    A name that is a shipped preset wins over a file of the same name in the working folder;
    anything else that does not end in ``.toml`` and is not a preset is refused.
    """
    if spec is None:
        base = Target()
    elif isinstance(spec, Target):
        base = spec
    elif str(spec) in shipped_targets():
        base = _preset(str(spec))
    elif str(spec).endswith(".toml") or Path(spec).is_file():
        base = load_target(spec)
    else:
        raise UserError(
            f"target {str(spec)!r} is neither a preset ({', '.join(shipped_targets())}) nor a"
            " .toml file"
        )
    return base.with_overrides(**overrides)
