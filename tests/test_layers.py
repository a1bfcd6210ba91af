"""The package's layers hold (import-linter contracts in pyproject.toml)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("lint_imports", ROOT / "scripts/lint_imports.py")
lint = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lint)


def test_every_layer_contract_is_kept() -> None:
    status, report = lint.lint_imports()
    assert status == 0, report
    assert "0 broken" in report and " kept" in report


def test_a_library_module_importing_the_cli_breaks_a_contract() -> None:
    status, report = lint.lint_imports(
        extra={"hw/_layer_probe.py": "from squeezeforge.cli import errors  # noqa: F401\n"}
    )
    assert status != 0
    assert "library code never imports the command line BROKEN" in report
