"""The Target: defaults, presets, TOML and dict round trips, overrides, bad values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squeezeforge.sim.errors import UserError
from squeezeforge.sim.target import (
    FAMILIES,
    Budget,
    Target,
    load_target,
    resolve_target,
    shipped_targets,
    target_from_dict,
)

PRESETS = ("artix7-35t", "ecp5-25f", "ecp5-85f", "ice40-hx8k", "ice40-up5k")


def test_default_is_the_hardware_before_targets() -> None:
    t = Target()
    assert (t.conv_rows, t.conv_cols, t.fc_pes, t.fifo_depth, t.index_bits) == (4, 4, 8, 8, 4)
    assert t.act_bits is None and t.budget is None and t.family == "ice40"
    assert resolve_target(None) == t


def test_presets_ship_with_data_sheet_budgets() -> None:
    assert tuple(shipped_targets()) == PRESETS
    up5k = resolve_target("ice40-up5k")
    assert up5k.budget == Budget(lut=5280, ff=5280, dsp=8, bram_kbit=120)
    assert resolve_target("ecp5-85f").budget == Budget(83640, 83640, 156, 3744)
    assert resolve_target("artix7-35t").budget == Budget(20800, 41600, 90, 1800)
    for name in PRESETS:
        t = resolve_target(name)
        assert t.name == name and t.family in FAMILIES and t.part and t.budget is not None
        assert t.clock_mhz > 0


@pytest.mark.parametrize("name", PRESETS)
def test_toml_and_dict_round_trip(tmp_path: Path, name: str) -> None:
    t = resolve_target(name).with_overrides(conv_array="2x8", act_bits=12)
    path = tmp_path / "mine.toml"
    path.write_text(t.to_toml())
    assert load_target(path) == t
    assert target_from_dict(json.loads(json.dumps(t.to_dict()))) == t


def test_flags_override_the_preset() -> None:
    t = resolve_target("ecp5-85f", conv_array="2x4", fc_pes=4, fifo_depth=None)
    assert (t.conv_rows, t.conv_cols, t.fc_pes, t.fifo_depth) == (2, 4, 4, 8)
    assert t.name == "ecp5-85f+custom" and t.budget == resolve_target("ecp5-85f").budget
    # Overrides that change nothing keep the preset's name.
    assert resolve_target("ecp5-85f", fc_pes=16).name == "ecp5-85f"


def test_file_sets_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "wide.toml"
    path.write_text('conv_array = "8x2"\nfc_pes = 2\nfamily = "ecp5"\n')
    t = resolve_target(path, index_bits=3)
    assert (t.conv_rows, t.conv_cols, t.fc_pes, t.index_bits, t.family) == (8, 2, 2, 3, "ecp5")
    assert t.fifo_depth == Target().fifo_depth and t.name == "wide+custom"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fc_pes": 3}, r"target key 'fc_pes': must be a power of two, got 3"),
        ({"fc_pes": 128}, r"target key 'fc_pes': must be in 1\.\.64, got 128"),
        ({"conv_rows": 0}, r"target key 'conv_rows': must be in 1\.\.32, got 0"),
        ({"fifo_depth": "8"}, r"target key 'fifo_depth': must be an integer, got '8'"),
        ({"index_bits": 9}, r"target key 'index_bits': must be in 1\.\.8, got 9"),
        ({"act_bits": 1}, r"target key 'act_bits': must be in 2\.\.16, got 1"),
        ({"family": "stratix"}, r"target key 'family': 'stratix' is not one of ice40, ecp5, xc7"),
        ({"clock_mhz": -5}, r"target key 'clock_mhz': must be in 0\.\.1000"),
        ({"layers": {"fc1": {"fc_pes": 2}}}, r"target key 'layers\.fc1': per-layer overrides"),
    ],
)
def test_bad_values_name_the_key(changes: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        Target(**changes)


def test_bad_files_and_names(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("fc_pes = 8\nspeed = 3\n")
    with pytest.raises(UserError, match=r"t\.toml: target key 'speed' is unknown"):
        load_target(path)
    path.write_text("[budget]\nlut = 10\n")
    with pytest.raises(UserError, match=r"target key 'budget' needs exactly lut, ff, dsp"):
        load_target(path)
    path.write_text("fc_pes = = 8\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_target(path)
    with pytest.raises(UserError, match=r"'conv_array': expected ROWSxCOLS such as 8x8, got '8'"):
        resolve_target(None, conv_array="8")
    with pytest.raises(UserError, match=r"target 'virtex' is neither a preset"):
        resolve_target("virtex")
    with pytest.raises(UserError, match="no such target file"):
        resolve_target(tmp_path / "missing.toml")


def test_repr_is_short() -> None:
    text = repr(resolve_target("ice40-up5k"))
    assert text.startswith("Target('ice40-up5k': conv 2x4, 4 FC PEs") and "\n" not in text
