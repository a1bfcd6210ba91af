"""``squeezeforge sweep``: every bad input is one line and exit status 2 before any work; a
good spec runs on an existing cluster started the documented way (``dask scheduler``,
``dask worker``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from squeezeforge.cli.main import main

SPEC = """\
name = "cli"
[model]
name = "cnn"
epochs = 1
[axes]
recipe = ["tiny.toml"]
target = ["ecp5-25f"]
fc_pes = [2, 4]
[objectives]
accuracy = "max"
images_per_s = "max"
[verify]
points = 0
"""

TINY_RECIPE = """\
[[steps]]
pass = "fixed-point"
"""


def _spec(folder: Path, text: str = SPEC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.toml").write_text(TINY_RECIPE)
    (folder / "spec.toml").write_text(text)
    return folder / "spec.toml"


BAD_SPECS = {
    "unknown axis": ("[axes]\n", "[axes]\ncolour = [1, 2]\n", "unknown axis 'colour'"),
    "unknown recipe parameter": (
        "[axes]\n",
        '[axes]\n"fixed-point.widget" = [1]\n',
        "unknown key 'widget'",
    ),
    "recipe parameter out of range": (
        "[axes]\n",
        '[axes]\n"fixed-point.weight_bits" = [99]\n',
        "out of range",
    ),
    "parameter of a pass no recipe runs": (
        "[axes]\n",
        '[axes]\n"inq.bits" = [4]\n',
        "no recipe of the sweep has a inq pass",
    ),
    "empty axis": ("fc_pes = [2, 4]", "fc_pes = []", "axis 'fc_pes' is empty"),
    "bad Target value": ("fc_pes = [2, 4]", "fc_pes = [3]", "power of two"),
    "unknown preset": ('target = ["ecp5-25f"]', 'target = ["ecp9"]', "neither a preset"),
    "objective not measured": (
        'accuracy = "max"',
        'watts = "min"',
        "objective 'watts' is not measured",
    ),
    "unknown recipe": ('recipe = ["tiny.toml"]', 'recipe = ["nope"]', "no recipe file 'nope'"),
    "unknown model": ('name = "cnn"', 'name = "vgg"', "neither a built-in model"),
    "bad sampling": ("[verify]", '[sampling]\nmethod = "anneal"\n[verify]', "one of grid"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec(case, tmp_path, capsys):
    old, new, message = BAD_SPECS[case]
    assert old in SPEC
    spec = _spec(tmp_path, SPEC.replace(old, new, 1))
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()  # refused before any work


def test_bad_command_lines(tmp_path, capsys):
    spec = _spec(tmp_path)
    out = tmp_path / "out"
    for args, message in (
        (["no-such-spec"], "no sweep spec file"),
        ([str(spec), "--workers", "0"], "at least one worker"),
        ([str(spec), "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], "--workers is for"),
    ):
        assert main(["sweep", *args, "-o", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_scheduler_that_does_not_answer(tmp_path, capsys):
    spec = _spec(tmp_path)
    start = time.monotonic()
    # Port 9 (discard) has no scheduler: said within the probe's few seconds, not a hang.
    assert (
        main(["sweep", str(spec), "-o", str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:9"])
        == 2
    )
    assert time.monotonic() - start < 15
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not answer within" in err, err


def _dask() -> str:
    found = shutil.which("dask", path=str(Path(sys.executable).parent))
    assert found, "the dask console script is installed with distributed"
    return found


def test_sweep_on_an_existing_cluster(tmp_path, capsys):
    """The README's set-up on one machine: ``dask scheduler`` and a ``dask worker``."""
    spec = _spec(tmp_path)
    address_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    scheduler = subprocess.Popen(
        [_dask(), "scheduler", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(address_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = None
    try:
        deadline = time.monotonic() + 30
        while not address_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(address_file.read_text())["address"]
        worker = subprocess.Popen(
            [_dask(), "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        out = tmp_path / "out"
        code = main(
            ["sweep", str(spec), "-o", str(out), "--scheduler", address, "--json", "--quiet"]
        )
        assert code == 0
        result = json.loads(capsys.readouterr().out)
        assert result["workers"] == 1
        assert [r["fc_pes"] for r in sorted(result["rows"], key=lambda r: r["fc_pes"])] == [2, 4]
        assert all(r["status"] == "ok" for r in result["rows"])
        assert (out / "results.csv").read_text().count("\n") == 3
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
