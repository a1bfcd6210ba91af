"""The compiler cache make runs Verilator's run-time library through (``OBJCACHE``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from squeezeforge.sim.objcache import cached_compile
from squeezeforge.sim.toolchain import CACHE_ENV, cache_dir

# A stand-in compiler: writes the object (the source's text, tagged) and make's dependency
# file, and logs each call, so a test sees which compiles ran.
FAKE_CC = """
import sys
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("-o") + 1])
src = Path(next(a for a in args if a.endswith(".cpp")))
with open(Path(__file__).with_name("calls.log"), "a") as log:
    log.write(src.name + "\\n")
if "fail" in src.read_text():
    sys.exit(1)
out.write_text("object of " + src.read_text())
out.with_suffix(".d").write_text(f"{out.name}: {src}\\n")
"""


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "include").mkdir()
    (tmp_path / "build").mkdir()
    (tmp_path / "include" / "verilated.cpp").write_text("runtime")
    (tmp_path / "build" / "Vtop.cpp").write_text("model")
    (tmp_path / "cc.py").write_text(FAKE_CC)
    return {
        "root": tmp_path,
        "cache": tmp_path / "cache",
        "include": tmp_path / "include",
        "build": tmp_path / "build",
    }


def compile_(world: dict[str, Path], source: Path, out: str, *flags: str) -> int:
    command = [sys.executable, str(world["root"] / "cc.py"), *flags, "-c", "-o"]
    command += [str(world["build"] / out), str(source)]
    return cached_compile(world["cache"], world["include"], command)


def calls(world: dict[str, Path]) -> list[str]:
    log = world["root"] / "calls.log"
    return log.read_text().split() if log.exists() else []


def test_runtime_objects_compile_once_and_are_copied_after(world) -> None:
    runtime = world["include"] / "verilated.cpp"
    assert compile_(world, runtime, "verilated.o", "-O0") == 0
    (world["build"] / "verilated.o").unlink()
    (world["build"] / "verilated.d").unlink()
    assert compile_(world, runtime, "verilated.o", "-O0") == 0
    assert calls(world) == ["verilated.cpp"]
    assert (world["build"] / "verilated.o").read_text() == "object of runtime"
    assert (world["build"] / "verilated.d").is_file()
    # Other flags are another object; so is a changed source.
    assert compile_(world, runtime, "verilated.o", "-Os") == 0
    runtime.write_text("runtime, another version")
    assert compile_(world, runtime, "verilated.o", "-Os") == 0
    assert calls(world) == ["verilated.cpp"] * 3
    assert (world["build"] / "verilated.o").read_text() == "object of runtime, another version"
    assert len([p for p in world["cache"].iterdir() if not p.name.startswith(".")]) == 3


def test_the_models_sources_always_compile(world) -> None:
    model = world["build"] / "Vtop.cpp"
    for _ in range(2):
        assert compile_(world, model, "Vtop.o") == 0
    assert calls(world) == ["Vtop.cpp", "Vtop.cpp"]
    assert not world["cache"].exists()


def test_a_failed_compile_is_not_kept(world) -> None:
    runtime = world["include"] / "verilated.cpp"
    runtime.write_text("fail")
    assert compile_(world, runtime, "verilated.o") == 1
    assert compile_(world, runtime, "verilated.o") == 1
    assert calls(world) == ["verilated.cpp", "verilated.cpp"]
    assert not world["cache"].exists()


def test_a_cache_that_cannot_be_written_only_costs_the_compile(world) -> None:
    world["cache"].write_text("a file where the folder should be")
    runtime = world["include"] / "verilated.cpp"
    for _ in range(2):
        assert compile_(world, runtime, "verilated.o") == 0
    assert calls(world) == ["verilated.cpp", "verilated.cpp"]
    assert (world["build"] / "verilated.o").read_text() == "object of runtime"


def test_cache_folder_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.setenv(CACHE_ENV, "")
    assert cache_dir() is None
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "squeezeforge"
