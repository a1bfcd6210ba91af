"""scripts/compression_results.py runs end to end (short training, one sweep point each)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compression_results.py"


@pytest.mark.slow
def test_compression_results_script(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("compression_results", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    png = tmp_path / "rd.png"
    argv = ["--epochs", "3", "--sparsity", "0.5", "--bits", "6", "--plot", str(png), "--json", "-q"]
    rc = module.main(argv)
    out = json.loads(capsys.readouterr().out)
    assert rc in (0, 1)  # 3 epochs of training need not meet the targets
    kinds = [row["kind"] for row in out["rows"]]
    assert kinds == ["recipe"] * 3 + ["sparsity sweep", "bit-width sweep"]
    assert all(row["byte_identical"] for row in out["rows"][:3])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = module.markdown_table(out["rows"])
    assert table.count("\n") == 2 + len(out["rows"]) and "| mlp | deep-compression |" in table
