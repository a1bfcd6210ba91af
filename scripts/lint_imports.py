"""Check the package's layers with import-linter (the contracts are in pyproject.toml).

The code folders install as ``squeezeforge.*`` (``api/`` is ``squeezeforge`` itself) through
setuptools' ``package-dir`` mapping, which import-linter cannot follow: it walks the root
package's folder on disk. So the folders are copied under a temporary ``squeezeforge/`` and
checked there.

    python scripts/lint_imports.py            # exit 0 when every contract is kept
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cli", "codegen", "hw", "models", "sim")


def lint_imports(root: Path = ROOT, *, extra: dict[str, str] | None = None) -> tuple[int, str]:
    """Run lint-imports on a copy of ``root``'s packages; ``extra`` adds files (for tests).

    Returns the exit status and the report.
    """
    with tempfile.TemporaryDirectory(prefix="squeezeforge-layers-") as tmp:
        pkg = Path(tmp) / "squeezeforge"
        for name in PACKAGES:
            shutil.copytree(root / name, pkg / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(root / "api" / "__init__.py", pkg / "__init__.py")
        for rel, text in (extra or {}).items():
            (pkg / rel).write_text(text)
        shutil.copy(root / "pyproject.toml", tmp)
        exe = Path(sys.executable).with_name("lint-imports")
        env = {**os.environ, "PYTHONPATH": tmp}
        proc = subprocess.run(
            [str(exe), "--no-cache"], cwd=tmp, env=env, capture_output=True, text=True
        )
        return proc.returncode, proc.stdout + proc.stderr


def main() -> int:
    status, report = lint_imports()
    print(report[report.find("Contracts") :] if "Contracts" in report else report)
    return status


if __name__ == "__main__":
    sys.exit(main())
