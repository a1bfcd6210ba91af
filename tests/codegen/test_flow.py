"""The flow end to end on the MLP (small and quick), and its resume after an interruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squeezeforge.codegen.flow import FlowConfig, run_flow

pytestmark = [pytest.mark.rtl, pytest.mark.slow]


def test_flow_runs_resumes_and_reports(tmp_path: Path) -> None:
    cfg = FlowConfig(
        out_dir=str(tmp_path / "flow"),
        model="mlp",
        epochs=3,
        recipes=("deep-compression",),
        images=3,
        targets=(),
    )
    messages: list[str] = []
    report = run_flow(cfg, log=messages.append, quiet=True)
    sim = report["simulate"]["deep-compression"]
    assert sim["bit_exact"] == 3 and sim["golden_consistent"]
    assert report["simulate"]["fixed8"]["bit_exact"] == 3
    out = tmp_path / "flow"
    md = (out / "report.md").read_text()
    assert "| deep-compression |" in md and "Sr" in md
    assert json.loads((out / "report.json").read_text())["config"]["model"] == "mlp"
    for plot in report["plots"].values():
        assert Path(plot).stat().st_size > 1000

    # An interrupted flow: the last step's result is gone; a rerun redoes only that step.
    last = sorted((out / "steps").glob("simulate-fixed8.json"))
    assert last
    last[0].unlink()
    messages.clear()
    again = run_flow(cfg, log=messages.append, quiet=True)
    reused = [m for m in messages if "reused" in m]
    assert any(m.startswith("[train]") for m in reused)
    assert not any(m.startswith("[simulate-fixed8]") for m in reused)
    assert again["simulate"]["fixed8"]["bit_exact"] == 3
