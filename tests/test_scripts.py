"""Every script in scripts/ runs: here the quick ones, on small settings (the rest have their own
tests beside the code they measure)."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _run(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, check=True
    )
    return proc.stdout


def test_bench_reference_meets_throughput_target() -> None:
    report = json.loads(_run("bench_reference.py", "--images", "512", "--json"))
    assert report["target"] == 2000
    assert set(report["images_per_s"]) == {"1", "64", "512"}
    assert all(rate > 0 for rate in report["images_per_s"].values())


@pytest.mark.slow
def test_resources_conv_script_on_one_small_case() -> None:
    rows = json.loads(
        _run(
            "resources_conv.py", "--arrays", "2", "--targets", "ice40",
            "--flavours", "mac", "shift-add", "--json",
        )
    )  # fmt: skip
    assert {r["array"] for r in rows} == {"2x2"} and len(rows) == 2
    shift_add = [r for r in rows if "shift" in r["flavour"]]
    mac = [r for r in rows if "MAC" in r["flavour"] and "no DSP" not in r["flavour"]]
    assert shift_add and all(r["dsp"] == 0 for r in shift_add)
    assert mac and all(r["dsp"] > 0 for r in mac)


@pytest.mark.slow
def test_throughput_benchmark_on_a_small_net(tmp_path: Path) -> None:
    """One build of a small net on the smallest engines (place and route of the 25F presets'
    engines takes ten minutes here, so they are the benchmark's, not the suite's): cycles
    measured on Verilator as estimated (the FC unit's estimate is the rounded mean over the
    net's test images, zeros being skipped), Fmax and the resources from nextpnr and Yosys, and
    the rates that follow from them."""
    import numpy as np

    from squeezeforge.sim.ir import save_net
    from squeezeforge.sim.random_layers import random_net

    net = save_net(random_net(np.random.default_rng(4), kind="pow2"), tmp_path / "n.sfnet")
    out = _run(
        "bench_throughput.py",
        "--nets", f"small={net}", "--configs", "smallest", "--images", "4",
        "--out", str(tmp_path / "runs"), "--json",
    )  # fmt: skip
    (row,) = json.loads(out)["small"]
    assert abs(row["cycles"] - row["estimated"]) <= 0.5 and row["bit_exact"] == "4/4"
    assert row["engines"] == "conv 2x2, 1 FC PE"
    assert row["fmax_mhz"] > 0 and row["lut"] > 0
    assert row["images_per_s"] == pytest.approx(row["fmax_mhz"] * 1e6 / row["cycles"])
    assert row["interval"] == row["cycles"] and row["latency_over_ideal"] >= 1.0


def test_every_script_is_covered() -> None:
    covered = {
        "bench_reference.py",
        "resources_conv.py",
        "headline.py",  # here and tests/codegen
        "bench_conv.py",  # tests/sim/test_conv_cycles.py
        "bench_eie.py",  # tests/sim/test_sparse_fc_cycles.py
        "resources_eie.py",  # tests/hw/test_sparse_fc.py
        "compression_results.py",  # tests/models/test_results_script.py
        "lint_imports.py",  # tests/test_layers.py
        "fuzz_rtl.py",  # tests/sim/test_fuzz.py
        "families.py",  # here (its flow: tests/codegen/test_flow.py)
        "fit_resources.py",  # its model: tests/codegen/test_folding.py
        "bench_throughput.py",  # here
    }
    assert {p.name for p in SCRIPTS.glob("*.py")} == covered


def test_headline_tables_from_a_report() -> None:
    headline = runpy.run_path(str(SCRIPTS / "headline.py"), run_name="headline")
    report = {
        "config": {"baseline_recipe": "fixed8"},
        "compress": {
            "inq5": {"compression_ratio": 6.2, "accuracy": {"float": 0.98, "reference": 0.985}},
        },
        "generate": {"inq5": {"cycles_estimated": 3000, "steps": [{"cycles_ideal": 1200.0}]}},
        "simulate": {
            "inq5": {
                "accuracy": 0.985,
                "bit_exact": 10,
                "images": 10,
                "cycles_per_inference": 3001.0,
            },
            "fixed8": {"cycles_per_inference": 3003.0},
        },
        "resources": {
            "inq5/ice40": {"total": {"lut": 1, "ff": 2, "dsp": 0, "bram": 3, "fmax_mhz": None}}
        },
    }
    text = headline["tables"](report)
    row = "| inq5 | 6.2x | 98.00% | 98.50% | 98.50% | 10/10 | 3001 | 3000 | 1200 | 3003 | 1.00x |"
    assert row in text
    assert "| inq5 | ice40 | 1 | 2 | 0 | 3 | – |" in text


def test_families_table_from_a_report() -> None:
    families = runpy.run_path(str(SCRIPTS / "families.py"), run_name="families")

    def comp(cr: float, macs: int, ref: float) -> dict:
        return {
            "compression_ratio": cr,
            "totals": {"macs": {"dense": 36000, "effective": macs}},
            "accuracy": {"float": 0.98, "reference": ref},
        }

    def sim(cycles: float) -> dict:
        return {"accuracy": 0.97, "bit_exact": 10, "images": 10, "cycles_per_inference": cycles}

    report = {
        "config": {"baseline_recipe": "fixed8"},
        "compress": {"fixed8": comp(2.5, 36000, 0.98), "low-rank": comp(2.0, 18000, 0.975)},
        "generate": {
            "fixed8": {"cycles_estimated": 3000, "steps": [{"cycles_ideal": 1.0}]},
            "low-rank": {"cycles_estimated": 2500, "steps": [{"cycles_ideal": 1.0}]},
        },
        "simulate": {"fixed8": sim(3000.0), "low-rank": sim(2400.0)},
    }
    text = families["table"](report)
    assert (
        "| low-rank | low-rank | 2.0x | 18,000 | 2.00x | 98.00% | 97.50% | 97.00% | 10/10 | 2400"
        " | 2500 | 1.25x |" in text
    )
    assert "| baseline (dense 8-bit) | fixed8 | 2.5x | 36,000 | 1.00x |" in text
    # A compact net against the CNN: its bytes over the CNN's float bytes, MACs and cycles
    # over the CNN's dense 8-bit net.
    report["compress"]["fixed8"]["totals"]["float_bytes"] = 80000
    mobile = {
        "config": {"baseline_recipe": "fixed8"},
        "compress": {"fixed8": comp(0.0, 12000, 0.975)},
        "generate": {"fixed8": {"cycles_estimated": 4000}},
        "simulate": {"fixed8": sim(4000.0)},
    }
    mobile["compress"]["fixed8"]["totals"]["bytes"] = 2000
    text = families["compact_table"](report, {"mobile": mobile})
    assert (
        "| compact: depthwise-separable (MobileNet) | mobile / fixed8 | 2,000 | 40.0x | 12,000"
        " | 3.00x | 98.00% | 97.50% | 97.00% | 10/10 | 4000.0 | 4000 | 0.75x |" in text
    )
