"""Accelerators sized by a Target, end to end on Verilator: for three conv array / FC PE
combinations the command line builds them, the outputs are bit-exact and every step's measured
cycles equal the estimate exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.cli.main import main
from squeezeforge.sim.ir import save_net
from squeezeforge.sim.netsim import simulate
from squeezeforge.sim.random_layers import random_net

pytestmark = pytest.mark.rtl

# One test image: the estimate is the cycle model on the very activations the RTL sees, so
# the two must agree to the cycle (with more images the estimate is a rounded mean).
IMAGES = 1

COMBINATIONS = {
    "conv8x8_fc16": ["--conv-array", "8x8", "--fc-pes", "16"],
    "conv2x2_fc2_fifo1_index2": [
        "--conv-array",
        "2x2",
        "--fc-pes",
        "2",
        "--fifo-depth",
        "1",
        "--index-bits",
        "2",
    ],
    "preset_ice40_up5k": ["--target", "ice40-up5k"],
}
SIZES = {
    "conv8x8_fc16": (8, 8, 16, 8, 4),
    "conv2x2_fc2_fifo1_index2": (2, 2, 2, 1, 2),
    "preset_ice40_up5k": (2, 4, 4, 8, 4),
}


@pytest.fixture(scope="module")
def net_file(tmp_path_factory) -> Path:
    net = random_net(np.random.default_rng(9), n_tests=IMAGES, kind="pow2")
    return save_net(net, tmp_path_factory.mktemp("target") / "tiny.sfnet")


def _generate(net_file: Path, out: Path, flags: list[str], capsys) -> dict:
    assert main(["generate", str(net_file), "-o", str(out), "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_measured_cycles_equal_the_estimate(net_file: Path, tmp_path: Path, combo, capsys):
    manifest = _generate(net_file, tmp_path / combo, COMBINATIONS[combo], capsys)
    t = manifest["target"]
    sizes = (t["conv_rows"], t["conv_cols"], t["fc_pes"], t["fifo_depth"], t["index_bits"])
    assert sizes == SIZES[combo]
    engines = {e["name"]: e["params"] for e in manifest["engines"]}
    conv = engines["conv_pow2"]
    assert (conv["rows"], conv["cols"]) == sizes[:2]
    for name in ("fc_pow2", "fc_codebook"):
        fc = engines[name]
        assert (fc["n_pe"], fc["fifo_depth"], fc["index_bits"]) == sizes[2:]
    report = simulate(tmp_path / combo, IMAGES)
    assert report["golden_consistent"]
    assert report["bit_exact"] == IMAGES, report["first_mismatch"]
    for step in report["steps"]:
        assert step["cycles_measured"] == step["cycles_estimated"], step
    assert report["cycles_per_inference"] == report["cycles_estimated"]
