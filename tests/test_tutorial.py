"""docs/tutorial.md, run as a user would: every file written, every command run, in order.

A fenced block after ``<!-- file: NAME -->`` is written to NAME; an ``sh`` block is run line by
line (``\\`` continues a line) with bash in the same folder, the project's console script and
Python first on PATH. A command that fails fails the test with its output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
_BLOCK = re.compile(r"(?:<!-- file: (?P<file>\S+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


def tutorial_steps(text: str) -> list[tuple[str, str, str]]:
    """``("file", name, body)`` and ``("sh", command, "")`` in the order the text gives them."""
    steps: list[tuple[str, str, str]] = []
    for m in _BLOCK.finditer(text):
        if m["file"]:
            steps.append(("file", m["file"], m["body"]))
        elif m["lang"] == "sh":
            for command in m["body"].replace("\\\n", " ").splitlines():
                if command.strip():
                    steps.append(("sh", command.strip(), ""))
    return steps


def test_the_harness_reads_files_and_commands() -> None:
    text = (
        "<!-- file: a.py -->\n```python\nprint(1)\n```\n\n```sh\nls \\\n  -l\necho x\n```\n"
        "```python\nnot run\n```\n"
    )
    assert tutorial_steps(text) == [
        ("file", "a.py", "print(1)\n"),
        ("sh", "ls    -l", ""),
        ("sh", "echo x", ""),
    ]


@pytest.mark.slow
def test_tutorial_runs_as_written(tmp_path: Path) -> None:
    steps = tutorial_steps(TUTORIAL.read_text())
    assert sum(kind == "sh" for kind, _, _ in steps) >= 10
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(tmp_path)  # the user's own modules, as when run from her folder
    # Nor has she set MKL's reproducible mode (the suite has): the command line and the API
    # must train the same LeNet without it.
    env.pop("MKL_CBWR", None)
    for kind, name, body in steps:
        if kind == "file":
            (tmp_path / name).write_text(body)
            continue
        proc = subprocess.run(
            ["bash", "-c", name], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, f"{name}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "build" / "lenet" / "manifest.json").is_file()
    assert (tmp_path / "build" / "small" / "manifest.json").is_file()
