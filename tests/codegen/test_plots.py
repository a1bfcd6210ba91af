"""The flow's plots draw to files without touching matplotlib's global state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_plots_leave_the_backend_alone(tmp_path: Path) -> None:
    # A notebook has chosen its backend; importing and running the plots must not switch it.
    code = f"""
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
from squeezeforge.codegen.plots import write_plots
report = {{
    "compress": {{"a": {{"compression_ratio": 4.0, "accuracy": {{"reference": 0.9}}}}}},
    "resources": {{"a": {{"engines": {{"conv": {{"lut": 10}}}}, "total": {{"lut": 12}}}}}},
}}
plots = write_plots(report, __import__("pathlib").Path({str(tmp_path)!r}))
print(matplotlib.get_backend(), len(plt.get_fignums()), sorted(plots))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["svg", "0", "['accuracy_vs_cr',", "'resources']"]
    assert (tmp_path / "accuracy_vs_cr.png").stat().st_size > 1000
    assert (tmp_path / "resources.png").read_bytes()[:4] == b"\x89PNG"
