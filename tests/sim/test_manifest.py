"""The typed build manifest: JSON round trip, version and field checks, no memory contents."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.codegen.build import generate
from squeezeforge.sim.manifest import BUILD_VERSION, BuildError, Manifest, read_manifest
from squeezeforge.sim.random_layers import random_net


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("manifest") / "b"
    generate(random_net(np.random.default_rng(0), n_tests=2), out)
    return out


def test_round_trip_and_derived_total(build: Path) -> None:
    m = read_manifest(build)
    assert isinstance(m, Manifest) and m.version == BUILD_VERSION == 3
    assert Manifest.from_json(m.to_json()) == m
    assert m.cycles_estimated == sum(s.cycles_estimated for s in m.steps) > 0
    assert json.loads(m.to_json())["cycles_estimated"] == m.cycles_estimated
    # A changed step is a different manifest: the comparison above can fail.
    changed = replace(m, steps=(replace(m.steps[0], cycles_estimated=1), *m.steps[1:]))
    assert Manifest.from_json(changed.to_json()) != m


def test_no_memory_contents_in_the_manifest(build: Path) -> None:
    m = read_manifest(build)
    text = (build / "manifest.json").read_text()
    for e in m.engines:
        assert not {"init", "init_weights", "init_biases"} & set(e.params)
        assert e.storage_bytes > 0
    # Every engine's images are in mem/; no list of numbers in the manifest is as long as one.
    mems = list((build / "mem").iterdir())
    assert {p.name.split(".")[0] for p in mems} == {e.name for e in m.engines}
    words = [int(w, 16) for w in (build / "mem" / "conv_mac.weight.hex").read_text().split()]
    assert max(_number_lists(json.loads(text)), default=0) < len(words)
    # The check finds words where they are (as version 1 kept the conv weights in its params).
    assert max(_number_lists({"params": {"init_weights": words}})) == len(words)


def _number_lists(obj) -> list[int]:
    """Lengths of the lists of numbers anywhere in a JSON value."""
    if isinstance(obj, dict):
        return [n for v in obj.values() for n in _number_lists(v)]
    if isinstance(obj, list):
        if obj and all(isinstance(v, int | float) for v in obj):
            return [len(obj)]
        return [n for v in obj for n in _number_lists(v)]
    return []


def test_ports_are_those_of_the_verilog_top(build: Path) -> None:
    m = read_manifest(build)
    verilog = (build / "top.v").read_text()
    module = verilog[verilog.index("module top(") :]
    header = module[: module.index(";")]
    declared = {name.strip() for name in header[len("module top(") : -1].split(",")}
    assert {p.name for p in m.ports} == declared
    assert {p.name for p in m.ports[:-1]} != declared  # a lost port would show
    assert m.port("i_pixel__payload").width == m.act_bits
    assert m.port("o_score__ready").direction == "in"
    with pytest.raises(KeyError, match="no port 'score'"):
        m.port("score")


def test_foreign_or_broken_manifests_are_refused(build: Path, tmp_path: Path) -> None:
    d = json.loads((build / "manifest.json").read_text())
    with pytest.raises(BuildError, match="build version 1"):
        Manifest.from_dict({**d, "version": 1})
    with pytest.raises(BuildError, match="not a squeezeforge build manifest"):
        Manifest.from_dict({**d, "format": "other"})
    broken = {k: v for k, v in d.items() if k != "steps"}
    with pytest.raises(BuildError, match="malformed manifest.*steps"):
        Manifest.from_dict(broken)
    with pytest.raises(BuildError, match="not valid JSON"):
        Manifest.from_json("{", "x.json")
