"""Design-space sweeps on a real two-worker Dask ``LocalCluster``: the cheap stages end to end,
failures as rows, resume, a worker killed mid-sweep, and the Pareto front.

The sweeps are small on purpose (the digits CNN trained one epoch, post-training fixed point,
no verification): the cluster's worker processes and their imports are most of the cost.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from squeezeforge.codegen.sweep import Objective, connect, load_spec, pareto_front, run_sweep

TINY_RECIPE = """\
description = "post-training fixed point, no fine-tuning"
[[steps]]
pass = "fixed-point"
weight_bits = 8
activation_bits = 8
"""


def write_spec(folder: Path, *, seed: int = 0, verify: str = "points = 0", axes: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.toml").write_text(TINY_RECIPE)
    spec = folder / "spec.toml"
    spec.write_text(
        f"""\
name = "test"
[model]
name = "cnn"
epochs = 1
seed = {seed}
[axes]
recipe = ["tiny.toml"]
target = ["ecp5-25f", "ice40-up5k"]
fc_pes = [2, 8]
"fixed-point.weight_bits" = [6, 8]
{axes}
[objectives]
accuracy = "max"
images_per_s = "max"
lut = "min"
[verify]
{verify}
"""
    )
    return spec


@pytest.fixture(scope="module")
def client():
    with connect(None, 2) as c:
        yield c


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_small_sweep_on_two_workers(client, tmp_path):
    spec = load_spec(write_spec(tmp_path / "spec"))
    out = tmp_path / "out"
    result = run_sweep(spec, out, client, quiet=True)
    assert result.workers == 2
    rows = _rows(out)
    # 2 targets x 2 FC sizes x 2 weight widths, each once.
    assert len(rows) == 8 and len({r["id"] for r in rows}) == 8
    assert {(r["target"], r["fc_pes"], r["fixed-point.weight_bits"]) for r in rows} == {
        (t, p, b) for t in ("ecp5-25f", "ice40-up5k") for p in ("2", "8") for b in ("6", "8")
    }
    by = {(r["target"], r["fc_pes"], r["fixed-point.weight_bits"]): r for r in rows}
    for bits in ("6", "8"):
        small, big = by[("ecp5-25f", "2", bits)], by[("ecp5-25f", "8", bits)]
        assert small["status"] == big["status"] == "ok", (small["reason"], big["reason"])
        # Four times the FC PEs: fewer cycles, more LUTs; images/s is the clock over cycles.
        assert int(big["cycles"]) < int(small["cycles"])
        assert int(big["lut"]) > int(small["lut"])
        assert float(big["images_per_s"]) == pytest.approx(50e6 / int(big["cycles"]))
    # Narrower weights store fewer bytes: a higher Cr on the same hardware.
    assert float(by[("ecp5-25f", "8", "6")]["compression_ratio"]) > float(
        by[("ecp5-25f", "8", "8")]["compression_ratio"]
    )
    # The iCE40 UltraPlus is too small for 8 FC PEs: a row with its reason, not an error.
    assert by[("ice40-up5k", "8", "8")]["status"] == "does-not-fit"
    assert "does not fit" in by[("ice40-up5k", "8", "8")]["reason"]
    assert sum(r["pareto"] == "True" for r in rows) >= 1
    assert all(r["pareto"] == "False" for r in rows if r["status"] != "ok")
    assert len(list((out / "points").glob("*.json"))) == 8
    report = (out / "report.md").read_text()
    assert "does not fit" in report and "estimated" in report
    assert (out / "pareto.png").stat().st_size > 1000
    assert (out / "pareto_cr.png").stat().st_size > 1000

    # A rerun resumes: no point is computed again, the table is the same.
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    table = (out / "results.csv").read_text()
    victim = sorted(stamps)[0]
    (out / "points" / victim).unlink()
    run_sweep(spec, out, client, quiet=True)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    assert set(after) == set(stamps)
    assert [n for n in after if after[n] != stamps.get(n)] == [victim]
    assert (out / "results.csv").read_text() == table


def test_worker_killed_mid_sweep(client, tmp_path):
    # Another seed: other content keys, so nothing of the first test is reused.
    spec = load_spec(write_spec(tmp_path / "spec", seed=1))
    out = tmp_path / "out"
    killed: list[str] = []

    def kill_a_busy_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for addr, keys in client.processing().items():
                if any(str(k).startswith(("sf-train", "sf-compress", "sf-estimate")) for k in keys):
                    pid = client.run(os.getpid, workers=[addr])[addr]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(str(keys))
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    result = run_sweep(spec, out, client, quiet=True)
    killer.join()
    assert killed, "no worker was busy with a point while the sweep ran"
    ids = [r["id"] for r in _rows(out)]
    assert len(ids) == 8 and len(set(ids)) == 8
    # The lost tasks ran again elsewhere: no row says the cluster failed it.
    assert not [r for r in result.rows if str(r["reason"]).startswith("cluster")]
    assert {r["status"] for r in result.rows} == {"ok", "does-not-fit"}


def test_nsga2_sampling(client, tmp_path):
    spec = load_spec(
        write_spec(
            tmp_path / "spec",
            axes='fifo_depth = [4, 8]\n[sampling]\nmethod = "nsga2"\nsamples = 4\nseed = 3',
        )
    )
    out = tmp_path / "out"
    result = run_sweep(spec, out, client, quiet=True)
    ids = [r["id"] for r in _rows(out)]
    # Optuna may propose a point twice; each is one row.
    assert 1 <= len(ids) <= 4 and len(set(ids)) == len(ids)
    assert len(ids) == len(result.rows)


def test_random_sampling_and_a_changed_model(client, tmp_path):
    axes = '[sampling]\nmethod = "random"\nsamples = 3\nseed = 5'
    spec = load_spec(write_spec(tmp_path / "spec", seed=2, axes=axes))
    out = tmp_path / "out"
    run_sweep(spec, out, client, quiet=True)
    rows = _rows(out)
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    # The same points of another model (another training seed) are not the ones done: a rerun
    # into the same folder computes them again instead of reporting the old figures.
    spec = load_spec(write_spec(tmp_path / "spec", seed=3, axes=axes))
    run_sweep(spec, out, client, quiet=True)
    assert [r["id"] for r in _rows(out)] == [r["id"] for r in rows]
    after = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    assert set(after) == set(stamps) and all(after[n] != stamps[n] for n in stamps)


def test_pareto_front():
    objs = [Objective("accuracy", "max"), Objective("lut", "min")]
    rows = [
        {"accuracy": 0.9, "lut": 100},
        {"accuracy": 0.95, "lut": 200},
        {"accuracy": 0.9, "lut": 150},  # dominated by the first
        {"accuracy": 0.97, "lut": None},  # a missing figure is never on the front
        {"accuracy": 0.95, "lut": 200},  # equal to the second: neither dominates
    ]
    assert pareto_front(rows, objs) == [True, True, False, False, True]
    assert pareto_front(rows, [Objective("accuracy", "min"), Objective("lut", "max")]) == [
        False,
        True,
        True,
        False,
        True,
    ]


def test_spec_loads_shipped_default():
    spec = load_spec("digits-cnn")
    points = spec.grid()
    assert len(points) == 54 and len({p.id for p in points}) == 54
    assert {o.figure for o in spec.objectives} == {"accuracy", "images_per_s", "lut"}
    assert json.dumps(points[0].params())


def test_synthesis_time_limit_and_failure(tmp_path):
    from squeezeforge.codegen.sweep import _resources_within
    from squeezeforge.sim.errors import ToolError

    # Python's start-up alone outlasts a 0.2 s limit: the run is stopped and said so.
    start = time.monotonic()
    with pytest.raises(ToolError, match="did not finish within"):
        _resources_within(tmp_path, "ecp5", True, 0.2)
    assert time.monotonic() - start < 5
    # A folder that is no build: the child's one-line reason, not a traceback.
    with pytest.raises(ToolError) as info:
        _resources_within(tmp_path, "ecp5", False, 60)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    assert str(tmp_path) in str(info.value) or "manifest" in str(info.value)


def test_target_file_beside_the_spec(tmp_path, monkeypatch):
    folder = tmp_path / "spec"
    spec_path = write_spec(folder)
    (folder / "board.toml").write_text(
        'family = "ecp5"\npart = "my-board"\nclock_mhz = 40.0\nfc_pes = 4\n'
        "[budget]\nlut = 30000\nff = 30000\ndsp = 40\nbram_kbit = 1000\n"
    )
    spec_path.write_text(spec_path.read_text().replace('"ice40-up5k"', '"board.toml"'))
    monkeypatch.chdir(tmp_path)  # the file is found beside the spec, not in the working folder
    spec = load_spec(spec_path)
    targets = {
        p.params()["target"]: spec.target(p) for p in spec.grid() if p.params()["fc_pes"] == 2
    }
    assert targets["board.toml"].part == "my-board" and targets["board.toml"].clock_mhz == 40.0
    assert targets["board.toml"].fc_pes == 2  # the point's knob over the file's
    assert targets["ecp5-25f"].part.startswith("LFE5U-25F")
