"""What generate may replace, what a build records of itself, and what it leaves behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.codegen.build import (
    PARTIAL_MARKER,
    BuildError,
    check_output_folder,
    clean_stale,
    generate,
    read_manifest,
)
from squeezeforge.sim.ir import save_net
from squeezeforge.sim.manifest import manifest_checksum
from squeezeforge.sim.random_layers import random_net


@pytest.fixture(scope="module")
def net():
    return random_net(np.random.default_rng(0), n_tests=2)


@pytest.fixture(scope="module")
def build(net, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build") / "b"
    generate(net, out)
    return out


def _copy(build: Path, dst: Path) -> Path:
    for src in build.rglob("*"):
        if src.is_file():
            target = dst / src.relative_to(build)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(src.read_bytes())
    return dst


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# F1: a user's folder, a file and a read-only folder are never replaced by a build.


def test_refuses_a_folder_that_is_not_a_build(net, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes\n")
    with pytest.raises(BuildError, match="not a squeezeforge build; refusing"):
        generate(net, mine)
    assert (mine / "notes.txt").read_text() == "my notes\n" and (mine / "sub").is_dir()


def test_never_replaces_a_file_even_with_force(net, tmp_path: Path) -> None:
    notes = tmp_path / "some-file.txt"
    notes.write_text("mine\n")
    for force in (False, True):
        with pytest.raises(BuildError, match="not a folder; a build never replaces a file"):
            generate(net, notes, force=force)
    assert notes.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["some-file.txt"]


def test_refuses_a_read_only_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    with pytest.raises(BuildError, match="read-only"):
        check_output_folder(ro)
    check_output_folder(ro, force=True)  # the user said so


def test_refuses_the_current_folder_and_its_parents(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in (".", "..", str(tmp_path), "/"):
        with pytest.raises(BuildError, match="current folder or one of its parents"):
            check_output_folder(name, force=True)


def test_accepts_absent_empty_and_earlier_builds(build: Path, tmp_path: Path) -> None:
    check_output_folder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty")
    check_output_folder(build)


def test_force_replaces_a_user_folder_and_cleans_what_killed_runs_left(net, tmp_path: Path) -> None:
    mine = tmp_path / "b"
    mine.mkdir()
    (mine / "notes.txt").write_text("replace me\n")
    # What a killed generate leaves (F9): a marked temporary folder; a user's own hidden folder
    # of a similar name carries no marker and stays.
    stale = tmp_path / ".b.k1ll3d00"
    stale.mkdir()
    (stale / PARTIAL_MARKER).write_text("")
    (stale / "top.v").write_text("half")
    own = tmp_path / ".b.mine"
    own.mkdir()
    (own / "keep.txt").write_text("keep\n")
    (tmp_path / ".b.old").mkdir()  # also the user's: the earlier code overwrote this name
    old_umask = os.umask(0o027)
    try:
        generate(net, mine, force=True)
    finally:
        os.umask(old_umask)
    assert not (mine / "notes.txt").exists() and read_manifest(mine).net == net.name
    assert not stale.exists() and (own / "keep.txt").read_text() == "keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.mine", ".b.old", "b"]
    assert not (mine / PARTIAL_MARKER).exists()
    # F10: the build follows the umask (mkdtemp alone makes 0700).
    assert _mode(mine) == 0o750
    assert _mode(mine / "top.v") == 0o640


def test_replacing_a_build_keeps_its_simulator_builds(net, tmp_path: Path) -> None:
    """The Verilator build inside a build folder is a cache keyed by the Verilog (sim/rtl.py):
    regenerating carries it over, so the same hardware is not compiled twice."""
    out = tmp_path / "b"
    generate(net, out)
    (out / "sim_build").mkdir()
    (out / "sim_build" / "stamp.json").write_text("{}")
    generate(net, out)
    assert (out / "sim_build" / "stamp.json").read_text() == "{}"
    read_manifest(out)  # still a whole build: the cache is no part of its files
    # A folder that is not a build gives nothing to the build that replaces it.
    mine = tmp_path / "m"
    (mine / "sim_build").mkdir(parents=True)
    generate(net, mine, force=True)
    assert not (mine / "sim_build").exists()


def test_clean_stale_keeps_unmarked_folders(tmp_path: Path) -> None:
    (tmp_path / ".x.abcdefgh").mkdir()
    assert clean_stale(tmp_path / "x") == []
    assert (tmp_path / ".x.abcdefgh").is_dir()


# F7: the manifest records the hash of every part; simulate and resources read it through
# read_manifest, which refuses parts that do not belong together.


def test_manifest_records_every_file(build: Path) -> None:
    manifest = read_manifest(build)
    files = manifest.files
    on_disk = {
        p.relative_to(build).as_posix()
        for p in build.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert set(files) == on_disk and {"top.v", "net.sfnet"} <= set(files)


def test_truncated_verilog_is_refused(build: Path, tmp_path: Path) -> None:
    b = _copy(build, tmp_path / "b")
    read_manifest(b)
    top = (b / "top.v").read_bytes()
    (b / "top.v").write_bytes(top[: len(top) // 2])
    with pytest.raises(BuildError, match="top.v is not the file this build was generated with"):
        read_manifest(b)


def test_swapped_net_is_refused(build: Path, tmp_path: Path) -> None:
    b = _copy(build, tmp_path / "b")
    save_net(random_net(np.random.default_rng(7), n_tests=2), b / "net.sfnet")
    with pytest.raises(BuildError, match="net.sfnet is not the file"):
        read_manifest(b)


def test_edited_manifest_is_refused(build: Path, tmp_path: Path) -> None:
    b = _copy(build, tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["steps"] = m["steps"][:-1]
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BuildError, match="edited after generate"):
        read_manifest(b)


def test_build_without_hashes_is_refused(build: Path, tmp_path: Path) -> None:
    b = _copy(build, tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    del m["files"]
    m["checksum"] = manifest_checksum(m)
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BuildError, match="lists no file hashes"):
        read_manifest(b)
