"""Run cocotb benches against Verilog built by Verilator.

The flow is three calls: :func:`amaranth_to_verilog` emits the Verilog of a component,
:func:`build_verilog` verilates it once into a build folder (and skips the build when the folder
already holds the same Verilog), and :func:`run_cocotb` runs a cocotb test module against that
build as many times as needed, each run with its own case data passed through ``extra_env``.

Verilator and cocotb write their output to log files in the build folder (``build.log``, and
``sim.log`` in each run folder) unless ``quiet=False``, so a pytest run stays readable while the
full output remains on disk.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from amaranth.back import verilog as amaranth_verilog
from amaranth.lib import wiring
from cocotb_tools.check_results import get_results
from cocotb_tools.runner import Verilator

from .errors import ToolError
from .progress import activity
from .toolchain import _package_version, cache_dir, setup_verilator_env, verilator_bin_dir

__all__ = [
    "RtlBuildError",
    "RtlResult",
    "RtlRunError",
    "amaranth_to_verilog",
    "build_verilog",
    "fst_supported",
    "run_cocotb",
]

# Amaranth's Verilog has width mismatches Verilator warns about (e.g. WIDTHEXPAND on
# comparisons it emits); they are benign, and fatal warnings would stop every build.
_BASE_BUILD_ARGS: tuple[str, ...] = ("-Wno-fatal",)

# The C++ optimization of Verilator's model, from SQUEEZEFORGE_VERILATOR_OPT: unset keeps
# Verilator's own (-Os), which simulates fastest; -O0 compiles a model about 10 s sooner and
# simulates it about three times slower, the better trade for a run of a few inputs (the test
# suite sets it). The level changes how fast the model runs, never what it computes.
OPT_ENV = "SQUEEZEFORGE_VERILATOR_OPT"
_OPT_LEVELS = ("-O0", "-O1", "-O2", "-O3", "-Os")

_STAMP_NAME = "squeezeforge-build.json"
_log = logging.getLogger(__name__)
_LOG_TAIL_LINES = 40


class RtlBuildError(ToolError):
    """Verilator could not build the Verilog; the message ends with the tail of the build log."""


class RtlRunError(ToolError):
    """The simulation ended without writing a results file (crash, missing module, ...)."""


@dataclass(frozen=True)
class RtlResult:
    """Outcome of one cocotb run.

    Parameters
    ----------
    tests
        Number of cocotb tests reported, skipped ones included.
    failures
        Number of tests that failed or errored.
    results_xml
        The xUnit results file the run wrote.
    skipped
        Number of skipped tests.
    log
        The file holding the simulator's and cocotb's output, None when it went to the terminal.
    """

    tests: int
    failures: int
    results_xml: Path
    skipped: int = 0
    log: Path | None = None

    @property
    def passed(self) -> bool:
        """True when at least one test ran and none failed."""
        return self.failures == 0 and self.tests - self.skipped > 0

    @property
    def run_dir(self) -> Path:
        """The folder the run happened in (results, log and waves)."""
        return self.results_xml.parent

    def failure_messages(self) -> list[str]:
        """Return one message per failed or errored test, read from the results file."""
        messages = []
        root = ElementTree.parse(self.results_xml).getroot()
        for case in root.iter("testcase"):
            for outcome in ("failure", "error"):
                for element in case.findall(outcome):
                    name = f"{case.get('classname', '')}.{case.get('name', '')}".strip(".")
                    # The element text is the traceback, which ends with the message itself.
                    detail = _tail((element.text or "").strip(), 15)
                    if detail:
                        text = f"{name}:\n{detail}"
                    else:
                        text = (
                            f"{name}: {element.get('type', outcome)}: {element.get('message', '')}"
                        )
                    messages.append(text)
        return messages

    def check(self) -> None:
        """Raise if the run did not pass.

        Raises
        ------
        AssertionError
            When a test failed (the message lists each failure as cocotb reported it) or when no
            test ran at all: a bench that ran nothing must not look like a pass.
        """
        where = f"results: {self.results_xml}" + (f", log: {self.log}" if self.log else "")
        if self.tests - self.skipped <= 0:
            raise AssertionError(
                f"cocotb ran no tests ({self.tests} reported, {self.skipped} skipped); {where}"
            )
        if self.failures:
            details = "\n\n".join(self.failure_messages())
            raise AssertionError(
                f"{self.failures} of {self.tests} cocotb tests failed; {where}\n\n{details}"
            )


def amaranth_to_verilog(component: wiring.Component, name: str, *, emit_src: bool = False) -> str:
    """Emit the Verilog of an Amaranth component, with the ports of its signature.

    Parameters
    ----------
    component
        The component; its signature members become the top-level ports (nested members are
        joined with ``__``), plus ``clk`` and ``rst`` when it uses the ``sync`` domain.
    name
        Name of the Verilog module.
    emit_src
        Keep the ``src`` attributes naming the Python source lines. Off by default so that the
        same hardware gives the same text wherever the code lives, which keeps the build cache of
        :func:`build_verilog` valid across edits that move lines.

    Returns
    -------
    str
        The Verilog source.
    """
    if not isinstance(component, wiring.Component):
        raise TypeError(f"expected an amaranth.lib.wiring.Component, not {component!r}")
    return amaranth_verilog.convert(component, name=name, emit_src=emit_src)


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _read_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError:
        return "(no log)"


@functools.cache
def fst_supported() -> bool:
    """Tell whether the C++ toolchain can build Verilator's FST writer.

    Verilator 5.48's FST writer includes ``lz4.h`` and links ``-llz4 -lz``; without the
    development packages (Debian: ``liblz4-dev``, ``zlib1g-dev``) an FST build fails, so
    :func:`build_verilog` records VCD instead.
    """
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        return False
    probe = "#include <lz4.h>\n#include <zlib.h>\nint main() { return LZ4_versionNumber() > 0; }\n"
    with tempfile.TemporaryDirectory() as scratch:
        try:
            done = subprocess.run(
                [compiler, "-x", "c++", "-", "-llz4", "-lz", "-o", str(Path(scratch) / "probe")],
                input=probe,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == 0


def _cxx_opt() -> str | None:
    level = os.environ.get(OPT_ENV) or None
    if level is not None and level not in _OPT_LEVELS:
        raise RtlBuildError(f"{OPT_ENV}={level!r}: expected one of {', '.join(_OPT_LEVELS)}")
    return level


def _build_key(
    verilog: str, toplevel: str, build_args: list[str], waves: bool
) -> dict[str, object]:
    return {
        "verilog_sha256": hashlib.sha256(verilog.encode()).hexdigest(),
        "toplevel": toplevel,
        "build_args": build_args,
        "cxx_opt": _cxx_opt(),
        "waves": waves,
        "verilator": _package_version("verilator"),
        "cocotb": _package_version("cocotb"),
    }


def build_verilog(
    verilog: str,
    toplevel: str,
    build_dir: Path,
    *,
    waves: bool = False,
    extra_args: list[str] | None = None,
    quiet: bool = True,
) -> Path:
    """Verilate a Verilog source into ``build_dir`` for cocotb, reusing an identical build.

    Parameters
    ----------
    verilog
        The Verilog text; it is written to ``build_dir/<toplevel>.v``.
    toplevel
        Name of the top module.
    build_dir
        Folder of the build. If it holds a finished build of byte-identical Verilog with the same
        options, nothing is rebuilt, so one build serves many test runs.
    waves
        Build with tracing so that :func:`run_cocotb` can record waves: ``dump.fst`` when
        :func:`fst_supported`, else ``dump.vcd`` (with a logged warning). The environment
        variable ``WAVES`` overrides it, as in cocotb.
    extra_args
        More Verilator arguments (after ``-Wno-fatal``).
    quiet
        Send Verilator's and make's output to ``build_dir/build.log`` instead of the terminal.

    Returns
    -------
    pathlib.Path
        ``build_dir``, absolute.

    Raises
    ------
    RtlBuildError
        When Verilator or the C++ build fails.
    """
    setup_verilator_env()
    build_dir = Path(build_dir).resolve()
    waves = _waves_requested(waves)
    trace_args = []
    if waves:
        if fst_supported():
            trace_args = ["--trace-fst"]
        else:
            _log.warning("lz4/zlib headers missing: recording VCD instead of FST")
    build_args = list(_BASE_BUILD_ARGS) + trace_args + list(extra_args or [])
    key = _build_key(verilog, toplevel, build_args, waves)
    stamp = build_dir / _STAMP_NAME
    if _build_is_current(stamp, key, build_dir / toplevel):
        return build_dir

    build_dir.mkdir(parents=True, exist_ok=True)
    # Parallel test processes may ask for the same build: one builds, the others wait and then
    # find the stamp current.
    with open(build_dir / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _build_is_current(stamp, key, build_dir / toplevel):
            return build_dir
        # Remove the stamp before touching anything: a build interrupted from here on is redone.
        stamp.unlink(missing_ok=True)
        source = build_dir / f"{toplevel}.v"
        source.write_text(verilog)
        log = build_dir / "build.log" if quiet else None
        runner = Verilator()
        level = key["cxx_opt"]
        saved = os.environ.get("MAKEFLAGS")
        # The runner calls make on Verilator's makefile; variables in MAKEFLAGS override the
        # makefile's: the optimization flags, and the compiler cache hook.
        overrides = []
        if level is not None:
            overrides += [f"{v}={level}" for v in ("OPT_FAST", "OPT_SLOW", "OPT_GLOBAL")]
        objcache = _objcache_command()
        if objcache is not None:
            overrides.append(f"OBJCACHE={objcache}")
        if overrides:
            os.environ["MAKEFLAGS"] = " ".join([saved or "", *overrides]).strip()
        try:
            with activity(f"verilator: building {toplevel}", quiet=not quiet):
                runner.build(
                    sources=[source],
                    hdl_toplevel=toplevel,
                    build_dir=build_dir,
                    build_args=build_args,
                    waves=waves,
                    log_file=log,
                )
        except (RuntimeError, subprocess.CalledProcessError, SystemExit) as error:
            tail = _read_tail(log) if log is not None else "(output went to the terminal)"
            raise RtlBuildError(
                f"Verilator build of {toplevel!r} in {build_dir} failed ({error}); "
                f"last lines of the build log:\n{tail}"
            ) from None
        finally:
            if overrides:
                if saved is None:
                    os.environ.pop("MAKEFLAGS", None)
                else:
                    os.environ["MAKEFLAGS"] = saved
        stamp.write_text(json.dumps(key, indent=1))
    return build_dir


def _objcache_command() -> str | None:
    """``OBJCACHE`` for make: :mod:`.objcache` with this Verilator's cache folder, or None
    without a cache folder."""
    root = cache_dir()
    bin_dir = verilator_bin_dir()
    if root is None or bin_dir is None:
        return None
    cache = root / "verilator-runtime" / str(_package_version("verilator"))
    words = [sys.executable, "-I", str(Path(__file__).with_name("objcache.py"))]
    words += [str(cache), str(bin_dir.parent / "include")]
    # Quoted for the shell that runs make's recipe, its spaces escaped for MAKEFLAGS.
    return " ".join(shlex.quote(w) for w in words).replace(" ", "\\ ")


def _waves_requested(waves: bool) -> bool:
    """Apply cocotb's WAVES variable, which overrides the argument as it does in the runner."""
    setting = os.environ.get("WAVES", "").strip().lower()
    if setting in ("1", "yes", "y", "on", "true", "enable"):
        return True
    if setting in ("0", "no", "n", "off", "false", "disable"):
        return False
    return waves


def _build_is_current(stamp: Path, key: Mapping[str, object], binary: Path) -> bool:
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return recorded == key and binary.is_file()


class _BenchRunner(Verilator):
    """cocotb's Verilator runner with the bench folder importable and caller variables kept.

    The stock runner rebuilds the simulator environment from ``os.environ`` after applying
    ``extra_env`` (so an outer variable of the same name wins) and sets PYTHONPATH to
    ``sys.path`` (so a bench outside the importable packages is not found).
    """

    def __init__(self, bench_dir: Path, overrides: Mapping[str, str]) -> None:
        super().__init__()
        self._bench_dir = bench_dir
        self._overrides = dict(overrides)

    def _set_env_common(self) -> None:
        super()._set_env_common()
        self.env["PYTHONPATH"] = os.pathsep.join([str(self._bench_dir), self.env["PYTHONPATH"]])
        self.env.update(self._overrides)


def run_cocotb(
    build_dir: Path,
    toplevel: str,
    test_module: str,
    test_dir: Path | str,
    *,
    extra_env: dict[str, str] | None = None,
    waves: bool = False,
    testcase: str | None = None,
    quiet: bool = True,
) -> RtlResult:
    """Run a cocotb test module against a build made by :func:`build_verilog`.

    Parameters
    ----------
    build_dir
        The build folder.
    toplevel
        Name of the top module (as given to :func:`build_verilog`).
    test_module
        Module name of the cocotb bench, e.g. ``"_rtl_smoke_bench"``.
    test_dir
        Folder holding the bench module; it is put first on the simulator's PYTHONPATH.
    extra_env
        Variables for the simulator process; they override same-named outer variables. Benches
        receive their case data this way, e.g. a variable naming a JSON or ``.npz`` file.
    waves
        Record ``dump.fst`` (or ``dump.vcd``, see :func:`fst_supported`) in the run folder; the
        build must have been made with ``waves=True``.
    testcase
        Run only this cocotb test (comma-separated names allowed).
    quiet
        Send the simulator's output to ``sim.log`` in the run folder instead of the terminal.

    Returns
    -------
    RtlResult
        Counts and the results file; call :meth:`RtlResult.check` to fail on a bad run. Each call
        runs in a fresh folder under ``build_dir/runs`` so that concurrent runs do not collide.

    Raises
    ------
    RtlRunError
        When the simulation wrote no results file.
    """
    setup_verilator_env()
    build_dir = Path(build_dir).resolve()
    if not (build_dir / toplevel).is_file():
        raise RtlRunError(f"no Verilator build of {toplevel!r} in {build_dir}; run build_verilog")
    runs = build_dir / "runs"
    runs.mkdir(exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{test_module}-", dir=runs))
    results_xml = run_dir / "results.xml"
    log = run_dir / "sim.log" if quiet else None

    runner = _BenchRunner(Path(test_dir).resolve(), extra_env or {})
    problem = "no results file"
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=toplevel,
            hdl_toplevel_lang="verilog",
            build_dir=build_dir,
            test_dir=run_dir,
            results_xml=str(results_xml),
            testcase=testcase,
            waves=waves,
            log_file=log,
        )
    except SystemExit as error:
        # The runner exits the process when it sees failures under pytest or a non-zero
        # simulator exit; the results file, read below, says what happened.
        problem = f"exit status {error.code}"
    except RuntimeError as error:
        # A non-zero simulator exit surfaces as RuntimeError; results may still be there.
        problem = str(error)
    if not results_xml.is_file():
        tail = _read_tail(log) if log is not None else "(output went to the terminal)"
        raise RtlRunError(
            f"the simulation of {toplevel!r} with {test_module!r} ended without results "
            f"({problem}; {results_xml}); last lines of the log:\n{tail}"
        )
    tests, failures = get_results(results_xml)
    skipped = sum(
        int(suite.get("skipped", 0))
        for suite in ElementTree.parse(results_xml).getroot().iter("testsuite")
    )
    return RtlResult(tests, failures, results_xml, skipped=skipped, log=log)
