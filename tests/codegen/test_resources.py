"""Resource reports through Yosys and Fmax through nextpnr, on tiny designs."""

import json
from pathlib import Path

import pytest

from squeezeforge.codegen.resources import (
    TARGETS,
    Port,
    ResourceReport,
    SynthesisError,
    count_cells,
    critical_path,
    fmax,
    pin_light_wrapper,
    synthesize,
)

MULTIPLIER = """
module mul8(input wire clk, input wire [7:0] a, input wire [7:0] b, output reg [15:0] p);
  always @(posedge clk) p <= a * b;
endmodule
"""

# Adds, a shift and a select: carry chains and LUTs, nothing a DSP block would take.
ADD_SHIFT = """
module addshift(
  input wire clk, input wire sel, input wire [7:0] a, input wire [7:0] b, output reg [9:0] y
);
  always @(posedge clk) y <= sel ? a + (b << 1) : {2'b00, a ^ b};
endmodule
"""


def test_targets() -> None:
    assert TARGETS == ("ice40", "ecp5", "xc7")


@pytest.mark.parametrize("call", [synthesize, fmax])
def test_unknown_target_names_the_valid_ones(call) -> None:
    with pytest.raises(ValueError, match=r"unknown target 'gowin'.*ice40, ecp5, xc7"):
        call(MULTIPLIER, "mul8", "gowin")


def test_count_cells_unknown_target() -> None:
    with pytest.raises(ValueError, match="unknown target 'vu9p'"):
        count_cells("vu9p", {})


def test_count_cells_xc7_rules() -> None:
    cells = {
        "LUT2": 3,
        "LUT6": 2,
        "MUXF7": 4,
        "FDRE": 5,
        "FDCE": 1,
        "DSP48E1": 2,
        "RAMB36E1": 1,
        "RAMB18E1": 3,
        "CARRY4": 2,
        "RAM32M": 1,
        "RAM64X1D": 2,
        "SRLC32E": 1,
        "IBUF": 9,
    }
    report = count_cells("xc7", cells)
    assert (report.lut, report.ff, report.dsp, report.carry) == (5, 6, 2, 2)
    assert report.bram == 2.5
    assert report.lutram == 4
    assert report.cells == cells
    assert report.fmax_mhz is None


def test_count_cells_ice40_and_ecp5_rules() -> None:
    ice40 = count_cells(
        "ice40",
        {"SB_LUT4": 7, "SB_DFF": 2, "SB_DFFESR": 3, "SB_MAC16": 1, "SB_RAM40_4K": 2, "SB_CARRY": 4},
    )
    assert (ice40.lut, ice40.ff, ice40.dsp, ice40.bram, ice40.carry, ice40.lutram) == (
        7,
        5,
        1,
        2,
        4,
        0,
    )
    ecp5 = count_cells(
        "ecp5",
        {"LUT4": 9, "PFUMX": 2, "TRELLIS_FF": 4, "MULT18X18D": 2, "DP16KD": 1, "CCU2C": 3},
    )
    assert (ecp5.lut, ecp5.ff, ecp5.dsp, ecp5.bram, ecp5.carry) == (9, 4, 2, 1, 3)


def test_report_to_dict_is_json_ready() -> None:
    report = count_cells("ice40", {"SB_LUT4": 1, "SB_CARRY": 2})
    data = json.loads(json.dumps(report.to_dict()))
    assert data["target"] == "ice40"
    assert data["cells"] == {"SB_CARRY": 2, "SB_LUT4": 1}
    assert set(data) == {f.name for f in ResourceReport.__dataclass_fields__.values()}


def test_pin_light_wrapper_connects_every_port() -> None:
    ports = [
        Port("clk", "input", 1),
        Port("a", "input", 8),
        Port("rst", "input", 1),
        Port("y", "output", 10),
        Port("odd.name", "output", 1),
    ]
    text, name = pin_light_wrapper(ports, "dut_top")
    assert name == "dut_top_pin_light"
    assert ".clk(clk)" in text
    assert ".a(sf_in[7:0])" in text and ".rst(sf_in[8:8])" in text
    assert ".y(sf_out[9:0])" in text and ".\\odd.name (sf_out[10:10])" in text
    assert "reg [8:0] sf_in" in text and "reg [10:0] sf_cap" in text


def test_pin_light_wrapper_refuses_what_it_cannot_wrap() -> None:
    with pytest.raises(ValueError, match="inout"):
        pin_light_wrapper([Port("io", "inout", 1), Port("y", "output", 1)], "t")
    with pytest.raises(ValueError, match="no outputs"):
        pin_light_wrapper([Port("a", "input", 1)], "t")


def test_fmax_xc7_is_not_measured() -> None:
    assert fmax(MULTIPLIER, "mul8", "xc7") is None


@pytest.mark.slow
def test_ice40_multiplier_uses_a_dsp(tmp_path: Path) -> None:
    report = synthesize(MULTIPLIER, "mul8", "ice40", dsp=True, work_dir=tmp_path)
    assert report.target == "ice40"
    assert report.dsp >= 1
    # The work folder keeps what a user needs to look into the run.
    assert (tmp_path / "synth_ice40.log").is_file()
    assert (tmp_path / "stat_ice40.json").is_file()


@pytest.mark.slow
def test_ice40_multiplier_without_dsp_is_logic() -> None:
    report = synthesize(MULTIPLIER, "mul8", "ice40", dsp=False)
    assert report.dsp == 0
    assert report.lut > 20


@pytest.mark.slow
def test_adds_and_shifts_use_no_dsp() -> None:
    report = synthesize(ADD_SHIFT, "addshift", "ice40", dsp=True)
    assert report.dsp == 0
    assert report.lut > 0 and report.carry > 0 and report.ff == 10


@pytest.mark.slow
@pytest.mark.parametrize("target", ["ecp5", "xc7"])
def test_other_targets_map_to_luts(target: str) -> None:
    report = synthesize(ADD_SHIFT, "addshift", target)
    assert report.target == target
    assert report.lut > 0
    assert report.ff == 10
    assert report.dsp == 0


@pytest.mark.slow
def test_yosys_failure_is_one_clear_error() -> None:
    broken = "module broken(input wire a, output wire y);\n  assign y = ;\nendmodule\n"
    with pytest.raises(SynthesisError, match=r"yosys failed synthesizing 'broken' for ecp5") as e:
        synthesize(broken, "broken", "ecp5")
    assert "syntax error" in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["ice40", "ecp5"])
def test_fmax_through_pin_light_wrapper(target: str, tmp_path: Path) -> None:
    # The wrapper brings any design down to four pins, so Fmax does not depend on the package.
    report = synthesize(MULTIPLIER, "mul8", target, with_fmax=True, work_dir=tmp_path)
    assert report.fmax_mhz is not None and 10 < report.fmax_mhz < 1000
    assert (tmp_path / f"pnr_{target}_report.json").is_file()
    # The path that sets it, in ns: 1000 / Fmax, to nextpnr's rounding.
    path = report.critical_path
    assert path is not None and path["ns"] == pytest.approx(1000 / report.fmax_mhz, rel=0.02)


@pytest.mark.slow
def test_fmax_returns_none_when_the_device_lacks_dsp(caplog: pytest.LogCaptureFixture) -> None:
    # The HX8K has no DSP blocks, so a multiplier mapped to SB_MAC16 cannot be placed.
    assert fmax(MULTIPLIER, "mul8", "ice40", device="hx8k", dsp=True) is None
    assert "not measured" in caplog.text


def _segment(kind: str, delay: float, src: str, dst: str) -> dict:
    return {"type": kind, "delay": delay, "from": {"cell": src}, "to": {"cell": dst}}


def test_critical_path_names_the_blocks_it_runs_through() -> None:
    """Parsed from nextpnr's report format (cell names as nextpnr gives them on ECP5)."""
    mem, mul = "dut.conv_mac.act_mem.3.0", "dut.conv_mac.array.pe_0_0.$2_MULT18X18D_P9"
    lut = "dut.conv_mac.array.a_in$32_TRELLIS_FF_Q_12_DI_LUT4_Z"
    acc = "dut.conv_mac.array.pe_0_0.acc_TRELLIS_FF_Q_21"
    report = {
        "critical_paths": [
            # A path from an input port is not the design's: skipped.
            {"from": "<async>", "to": "posedge clk", "path": [_segment("routing", 9.0, "a", "b")]},
            {
                "from": "posedge clk",
                "to": "posedge clk",
                "path": [
                    _segment("clk-to-q", 5.83, mem, mem),
                    _segment("routing", 1.65, mem, lut),
                    _segment("logic", 0.24, lut, lut),
                    _segment("routing", 1.23, lut, mul),
                    _segment("logic", 3.93, mul, mul),
                    _segment("routing", 0.66, mul, acc),
                    _segment("setup", 0.1, acc, acc),
                ],
            },
        ]
    }
    path = critical_path(report)
    assert path is not None
    assert path.blocks == ("conv_mac.act_mem", "conv_mac.array", "conv_mac.array.pe_0_0")
    assert path.ns == pytest.approx(13.64) and path.logic_levels == 2
    assert path.routing_ns == pytest.approx(3.54) and path.logic_ns == pytest.approx(10.1)
    assert path.summary().startswith("13.6 ns, 2 logic levels, 26% routing: conv_mac.act_mem")
    assert critical_path({"critical_paths": report["critical_paths"][:1]}) is None
