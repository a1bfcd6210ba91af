"""The flow's resume keys and its interrupt: finding F9 of issue 10.

The steps themselves are replaced by fakes that record their calls: what is tested is which
steps run again, not what they compute (tests/codegen/test_flow.py runs the real flow).
"""

from __future__ import annotations

import importlib
import itertools
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from squeezeforge.codegen import flow
from squeezeforge.codegen.flow import FlowConfig, run_flow
from squeezeforge.sim.errors import UserError


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict:
    # By module path: a package re-exports functions under the names of their modules.
    mod = importlib.import_module
    build, plots = mod("squeezeforge.codegen.build"), mod("squeezeforge.codegen.plots")
    report_resources = mod("squeezeforge.codegen.report_resources")
    summary, netsim = mod("squeezeforge.codegen.summary"), mod("squeezeforge.sim.netsim")
    models_compress, data = mod("squeezeforge.models.compress"), mod("squeezeforge.models.data")
    train = mod("squeezeforge.models.train")

    calls: dict = {"compress": [], "generate": [], "simulate": [], "resources": []}
    clock = itertools.count(1)
    state = {"net_bytes": b"net v1"}

    def fake_compress(ckpt, recipe, net_path, quiet=True, **_kw):
        calls["compress"].append(recipe)
        Path(net_path).write_bytes(state["net_bytes"] + recipe.encode())
        # A report carries timings: they differ on every run even for identical output.
        return {"seconds": next(clock) * 1.5, "recipe": recipe}

    def fake_generate(net, out_dir, target=None, **_kw):
        calls["generate"].append(str(out_dir))
        return SimpleNamespace(cycles_estimated=10, checksum="c", to_dict=lambda: {"steps": []})

    monkeypatch.setattr(models_compress, "compress", fake_compress)
    monkeypatch.setattr(train, "train", lambda *a, **k: (object(), []))
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: 0.5)
    monkeypatch.setattr(
        train, "save_checkpoint", lambda path, *a, **k: Path(path).write_bytes(b"ckpt")
    )
    monkeypatch.setattr(data, "load_digits", lambda: SimpleNamespace(x_test=None, y_test=None))
    monkeypatch.setattr(build, "generate", fake_generate)
    monkeypatch.setattr(flow, "load_net", lambda path: Path(path).read_bytes())
    monkeypatch.setattr(
        netsim,
        "simulate",
        lambda b, n: calls["simulate"].append(b) or {"bit_exact": n, "images": n},
    )
    monkeypatch.setattr(
        report_resources,
        "build_resources",
        lambda b, t, with_fmax=False: calls["resources"].append((b, t)) or {"total": {}},
    )
    monkeypatch.setattr(plots, "write_plots", lambda report, out: [])
    monkeypatch.setattr(summary, "write_report", lambda report, out: None)
    return {"calls": calls, "state": state}


def test_identical_recompressed_net_does_not_rebuild(fakes: dict, tmp_path: Path) -> None:
    cfg = FlowConfig(out_dir=str(tmp_path / "flow"), recipes=("inq5",), targets=("ice40",))
    calls = fakes["calls"]
    (tmp_path / "flow").mkdir()
    run_flow(cfg, log=lambda m: None, quiet=True)
    assert len(calls["generate"]) == 2 and len(calls["compress"]) == 2
    # The compress step ran again (its result was lost, as in a resumed run): same bytes.
    (tmp_path / "flow" / "steps" / "compress-inq5.json").unlink()
    run_flow(cfg, log=lambda m: None, quiet=True)
    assert len(calls["compress"]) == 3
    assert len(calls["generate"]) == 2, "generate ran again for a byte-identical net"
    assert len(calls["simulate"]) == 2 and len(calls["resources"]) == 1
    # A net whose bytes changed is built again, and everything after it follows.
    fakes["state"]["net_bytes"] = b"net v2"
    (tmp_path / "flow" / "steps" / "compress-inq5.json").unlink()
    run_flow(cfg, log=lambda m: None, quiet=True)
    assert len(calls["generate"]) == 3


def test_flow_checks_its_folder_before_training(fakes: dict, tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("a file\n")
    cfg = FlowConfig(out_dir=str(tmp_path / "plain.txt"))
    with pytest.raises(UserError, match="is not a folder"):
        run_flow(cfg, log=lambda m: None, quiet=True)
    assert fakes["calls"]["compress"] == []


def test_stop_children_ends_a_tool_a_worker_waits_on() -> None:
    ended = threading.Event()

    def worker() -> None:
        subprocess.run(["sleep", "60"], check=False)
        ended.set()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not flow._child_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flow._child_pids(), "the tool never started"
    t0 = time.monotonic()
    flow._stop_children()
    assert ended.wait(10) and time.monotonic() - t0 < 5
