"""The engine registry: one line per engine, and the compiler reaching engines only through it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.codegen.engines import ENGINES, binding_for, check_supported
from squeezeforge.hw.engine import EngineBinding
from squeezeforge.sim.ir import IRError
from squeezeforge.sim.random_layers import random_conv2d, random_dense, random_sparse_dense

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("lint_imports", ROOT / "scripts/lint_imports.py")
lint = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lint)


def test_registry_lists_each_engine_once_with_its_own_layer_kinds() -> None:
    assert all(issubclass(e, EngineBinding) for e in ENGINES)
    families = [e.FAMILY for e in ENGINES]
    assert len(set(families)) == len(families)
    kinds = [k for e in ENGINES for k in e.LAYER_KINDS]
    assert len(set(kinds)) == len(kinds), "two engines claim one layer kind"


@pytest.mark.parametrize(
    ("layer_kind", "weight_kind", "why"),
    [
        ("conv2d", "fixed", None),
        ("conv2d", "pow2", None),
        ("conv2d", "codebook", "conv layers run fixed-point or power-of-two weights"),
        ("dense", "codebook", None),
        ("sparse_dense", "pow2", None),
        ("maxpool2d", "fixed", "no engine runs maxpool2d layers"),
    ],
)
def test_check_supported_before_any_layer_exists(layer_kind, weight_kind, why) -> None:
    assert check_supported(layer_kind, weight_kind) == why


def test_binding_for_names_the_flavour_or_the_layer() -> None:
    rng = np.random.default_rng(0)
    assert binding_for(random_conv2d(rng, kind="pow2")).name == "conv_pow2"
    assert binding_for(random_conv2d(rng, kind="fixed")).name == "conv_mac"
    assert binding_for(random_dense(rng, kind="fixed")).name == "fc_fixed"
    assert binding_for(random_sparse_dense(rng, kind="codebook")).name == "fc_codebook"
    coded = type("Coded", (), {"kind": "conv2d", "name": "c7", "weight_format": _Codebook()})()
    with pytest.raises(IRError, match="layer 'c7', field 'weight_format': conv layers run"):
        binding_for(coded)


class _Codebook:
    kind = "codebook"


def test_codegen_knows_no_engine_internals() -> None:
    # The import-linter contract holds, and breaks when a pass reads an engine's cycle model.
    status, report = lint.lint_imports()
    assert status == 0, report
    plots = (ROOT / "codegen" / "plots.py").read_text()
    probe = plots + "from squeezeforge.hw.conv.cycles import conv_cycles  # noqa: E402, F401\n"
    status, report = lint.lint_imports(extra={"codegen/plots.py": probe})
    assert status != 0
    assert "the compiler reaches engines only through the registry BROKEN" in report
