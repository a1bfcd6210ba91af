"""The console script: every subcommand explains itself; errors are one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.cli.main import SUBCOMMANDS, build_parser, main
from squeezeforge.sim.ir import save_net
from squeezeforge.sim.random_layers import random_net
from squeezeforge.sim.reference import run_net


def _registered() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return list(sub.choices)


def test_top_level_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in _registered():
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert name in _registered()
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: squeezeforge {name}" in out and len(out) > 200


def test_reference_json_and_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = random_net(np.random.default_rng(0), n_tests=3)
    path = save_net(net, tmp_path / "n.sfnet")
    assert main(["reference", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 3 and report["matches_stored_outputs"] == 3
    assert report["outputs"] == net.test_outputs.tolist()
    # A corrupted golden output must be reported as a mismatch (exit 1).
    bad = net.test_outputs.copy()
    bad[2, 0] += 1
    save_net(net.replace(test_outputs=bad), path)
    assert main(["reference", str(path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["matches_stored_outputs"] == 2


def test_reference_given_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = random_net(np.random.default_rng(1), n_tests=2)
    path = save_net(net, tmp_path / "n.sfnet")
    np.save(tmp_path / "x.npy", net.test_inputs[:1])
    assert main(["reference", str(path), "--inputs", str(tmp_path / "x.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"] == net.test_outputs[:1].tolist()


def test_reference_float_inputs_are_quantized(tmp_path: Path) -> None:
    net = random_net(np.random.default_rng(10), n_tests=3, kind="pow2")
    path = save_net(net, tmp_path / "n.sfnet")
    step = 2.0**-net.input_format.frac
    # The stored integer inputs as real values, nudged by less than half a step.
    x = (net.test_inputs + 0.3) * step
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    out = tmp_path / "y.npy"
    assert (
        main(["reference", str(path), "--inputs", str(tmp_path / "x.npy"), "--outputs", str(out)])
        == 0
    )
    assert np.array_equal(np.load(out), net.test_outputs)
    # The same floats taken as integers give other outputs: the comparison above can fail.
    assert not np.array_equal(run_net(net, x.astype(np.int64)), net.test_outputs)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import squeezeforge

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"squeezeforge {squeezeforge.__version__}"


def test_bad_file_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sfnet"
    bad.write_bytes(b"not a zip")
    proc = subprocess.run(
        [sys.executable, "-m", "squeezeforge.cli", "reference", str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "not a squeezeforge net file" in proc.stderr and "Traceback" not in proc.stderr


def test_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["info", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == (0 if report["ok"] else 1)
    assert report["versions"]["python"].startswith("3.")
    assert report["versions"]["verilator"] is not None


def test_info_lists_the_target_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--targets", "--json"]) == 0
    presets = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert presets["ecp5-85f"]["budget"] == {
        "lut": 83640,
        "ff": 83640,
        "dsp": 156,
        "bram_kbit": 3744,
    }
    assert main(["info", "--targets"]) == 0
    table = capsys.readouterr().out
    assert "| ice40-up5k | ice40  | iCE40UP5K-SG48" in table and "BRAM kbit" in table


def test_simulate_report_names_the_target(capsys: pytest.CaptureFixture[str]) -> None:
    from squeezeforge.cli.simulate import print_report
    from squeezeforge.sim.target import resolve_target

    report = {
        "target": resolve_target("ice40-up5k").to_dict(),
        "steps": [{"layers": ["fc1"], "engine": "fc_fixed", "cycles_measured": 7.0,
                   "cycles_estimated": 7}],
        "bit_exact": 1, "images": 1, "cycles_per_inference": 7.0, "cycles_estimated": 7,
        "accuracy": 1.0, "golden_consistent": True, "first_mismatch": None,
    }  # fmt: skip
    print_report(report)
    out = capsys.readouterr().out
    assert out.startswith("target ice40-up5k: conv 2x4, 4 FC PEs, FIFO 8, 4-bit index\n")
    print_report({**report, "target": None})
    assert not capsys.readouterr().out.startswith("target")
