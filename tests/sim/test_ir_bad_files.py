"""Net files with wrong field types, dtypes and bounds: one IRError each, never a crash.

Findings F4 (field types), F5 (uint64 wrap-around) and F6 (one bound on the requantization
shift for validation, reference and hardware) of issue 10.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.hw.arith import SHIFT_BITS
from squeezeforge.sim.ir import Dense, IRError, load_net, save_net
from squeezeforge.sim.numerics import MAX_SHIFT, FixedWeights, FormatError, round_shift
from squeezeforge.sim.random_layers import random_net
from squeezeforge.sim.reference import run_layer


@pytest.fixture
def net_file(tmp_path: Path) -> Path:
    return save_net(random_net(np.random.default_rng(2)), tmp_path / "n.sfnet")


def _layer(manifest: dict, name: str) -> dict:
    return next(e for e in manifest["layers"] if e["name"] == name)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: _layer(m, "conv1").update(kernel=3), "field 'kernel': must be a list"),
        (lambda m: _layer(m, "conv1").update(kernel=[3, "3"]), "field 'kernel'"),
        (lambda m: m.update(metadata=[1, 2]), "field 'metadata': must be an object"),
        (lambda m: m.update(name=["x"]), "field 'name'"),
        (lambda m: m.update(test_vectors="none"), "field 'test_vectors'"),
        (lambda m: m["input"].update(shape=6), "field 'input'"),
        (lambda m: _layer(m, "fc1").update(weight_format="fixed8"), "field 'weight_format'"),
        (lambda m: _layer(m, "fc1")["weight_format"].update(bits=True), "must be an integer"),
        (lambda m: _layer(m, "conv1").update(arrays=[]), "field 'arrays'"),
        (lambda m: _layer(m, "pool1").update(kernel=[2, 2]), "layer 'pool1', field 'kernel'"),
    ],
)
def test_wrong_field_types_are_one_ir_error(
    net_file: Path, edit, match: str, rewrite_net_file
) -> None:
    with pytest.raises(IRError, match=match):
        load_net(rewrite_net_file(net_file, edit))


def test_uint64_beyond_int64_is_refused_not_wrapped(net_file: Path, rewrite_net_file) -> None:
    with zipfile.ZipFile(net_file) as zf:
        w = np.load(io.BytesIO(zf.read("arrays/fc1.weight.npy")))

    def as_uint64(m: dict) -> None:
        _layer(m, "fc1")["arrays"]["weight"]["dtype"] = "uint64"

    # The same values as uint64 load: the dtype is not the problem, the value is.
    ok = np.abs(w).astype(np.uint64)
    ok[ok > 127] = 127
    load_net(rewrite_net_file(net_file, as_uint64, {"arrays/fc1.weight.npy": _npy(ok)}))
    bad = ok.copy()
    bad[0, 0] = np.uint64(2**64 - 1)  # astype(int64) would make it -1, inside the format
    with pytest.raises(IRError, match="18446744073709551615 does not fit"):
        load_net(rewrite_net_file(net_file, as_uint64, {"arrays/fc1.weight.npy": _npy(bad)}))


def test_one_shift_bound_for_validation_reference_and_hardware() -> None:
    net = random_net(np.random.default_rng(3))
    fc = next(layer for layer in net.layers if layer.name == "fc1")
    assert isinstance(fc, Dense) and isinstance(fc.weight_format, FixedWeights)

    def with_shift(shift: int) -> Dense:
        frac = shift - fc.input_format.frac + fc.output_format.frac
        return Dense(**{**fc.__dict__, "weight_format": FixedWeights(fc.weight_format.bits, frac)})

    # The largest shift validates and runs on the reference (everything rounds to 0 or -0).
    top = with_shift(MAX_SHIFT)
    assert top.shift == MAX_SHIFT
    x = np.ones((1, fc.in_features), dtype=np.int64)
    assert run_layer(top, x).shape == (1, fc.out_features)
    with pytest.raises(IRError, match=f"requantization shift {MAX_SHIFT + 1} exceeds {MAX_SHIFT}"):
        with_shift(MAX_SHIFT + 1)
    with pytest.raises(FormatError, match="shift 64"):
        round_shift(np.zeros(1, np.int64), 64)
    # Both engines hold every shift the IR admits in their cfg field.
    assert (1 << SHIFT_BITS) - 1 >= MAX_SHIFT


def test_folder_and_empty_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(IRError, match="is a folder, not a net file"):
        load_net(tmp_path)
    (tmp_path / "e.sfnet").write_bytes(b"")
    with pytest.raises(IRError, match="is empty"):
        load_net(tmp_path / "e.sfnet")
