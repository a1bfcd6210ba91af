"""The compressed-net file: round trip, determinism, validation, sparse encoding."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from squeezeforge.sim.ir import (
    CscMatrix,
    Dense,
    Flatten,
    IRError,
    SparseDense,
    decode_csc,
    encode_csc,
    load_net,
    net_from_bytes,
    net_to_bytes,
    save_net,
)
from squeezeforge.sim.random_layers import random_dense, random_net
from squeezeforge.sim.reference import run_net


@pytest.mark.parametrize("kind", ["fixed", "pow2", "codebook"])
def test_round_trip(tmp_path: Path, kind: str) -> None:
    net = random_net(np.random.default_rng(1), kind=kind)
    path = save_net(net, tmp_path / "n.sfnet")
    back = load_net(path)
    assert back.input_shape == net.input_shape and back.input_format == net.input_format
    for a, b in zip(net.layers, back.layers, strict=True):
        assert type(a) is type(b) and a.to_manifest() == b.to_manifest()
        for name in a.arrays:
            assert np.array_equal(getattr(a, name), getattr(b, name)), (a.name, name)
    assert np.array_equal(run_net(back, back.test_inputs), net.test_outputs)
    assert net_to_bytes(back) == path.read_bytes()


def test_net_from_bytes_reads_what_net_to_bytes_writes() -> None:
    net = random_net(np.random.default_rng(2), kind="pow2")
    data = net_to_bytes(net)
    back = net_from_bytes(data)
    assert back.name == net.name and net_to_bytes(back) == data
    assert np.array_equal(run_net(back, back.test_inputs), net.test_outputs)
    with pytest.raises(IRError, match="not a zip archive"):
        net_from_bytes(b"not a net")
    with pytest.raises(IRError, match="manifest.json"):
        net_from_bytes(_zip_without_manifest())


def _zip_without_manifest() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("other.txt", "x")
    return buf.getvalue()


def test_same_net_gives_identical_bytes() -> None:
    a = net_to_bytes(random_net(np.random.default_rng(9)))
    b = net_to_bytes(random_net(np.random.default_rng(9)))
    assert a == b


def _rewrite(path: Path, edit) -> Path:
    """Apply ``edit(manifest, arrays)`` to a net file and write it back."""
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        arrays = {n: zf.read(n) for n in zf.namelist() if n != "manifest.json"}
    edit(manifest, arrays)
    out = path.with_name("edited.sfnet")
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for n, data in arrays.items():
            zf.writestr(n, data)
    return out


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.fixture
def net_file(tmp_path: Path) -> Path:
    return save_net(random_net(np.random.default_rng(2)), tmp_path / "n.sfnet")


def test_wrong_version(net_file: Path) -> None:
    bad = _rewrite(net_file, lambda m, a: m.update(version=99))
    with pytest.raises(IRError, match="field 'version': file has version 99"):
        load_net(bad)


def test_missing_array(net_file: Path) -> None:
    bad = _rewrite(net_file, lambda m, a: a.pop("arrays/fc1.weight.npy"))
    with pytest.raises(IRError, match="layer 'fc1', field 'weight': array file .* is missing"):
        load_net(bad)


def test_shape_disagrees_with_manifest(net_file: Path) -> None:
    def edit(m, a):
        spec = m["layers"][3]["arrays"]["weight"]
        a["arrays/fc1.weight.npy"] = _npy(np.zeros((3, 3), dtype=spec["dtype"]))

    with pytest.raises(IRError, match="layer 'fc1', field 'weight': shape"):
        load_net(_rewrite(net_file, edit))


def test_dtype_disagrees_with_manifest(net_file: Path) -> None:
    def edit(m, a):
        a["arrays/conv1.bias.npy"] = _npy(np.zeros(3, dtype=np.float32))

    with pytest.raises(IRError, match="layer 'conv1', field 'bias': dtype float32"):
        load_net(_rewrite(net_file, edit))


def test_value_outside_format(net_file: Path) -> None:
    def edit(m, a):
        spec = m["layers"][3]["arrays"]["weight"]
        w = np.zeros(spec["shape"], dtype=spec["dtype"])
        w[0, 0] = np.iinfo(w.dtype).min  # below the most negative fixed-point weight
        a["arrays/fc1.weight.npy"] = _npy(w)
        m["layers"][3]["weight_format"]["bits"] = 2

    with pytest.raises(IRError, match="layer 'fc1', field 'weight': value"):
        load_net(_rewrite(net_file, edit))


def test_bit_width_out_of_range(net_file: Path) -> None:
    def edit(m, a):
        m["layers"][3]["output_format"]["bits"] = 40

    with pytest.raises(IRError, match="layer 'fc1', field 'output_format': .*bit width 40"):
        load_net(_rewrite(net_file, edit))


def test_unknown_layer_kind(net_file: Path) -> None:
    with pytest.raises(IRError, match="layer 'conv1', field 'kind': unknown layer kind 'lstm'"):
        load_net(_rewrite(net_file, lambda m, a: m["layers"][0].update(kind="lstm")))


def test_not_a_net_file(tmp_path: Path) -> None:
    p = tmp_path / "x.sfnet"
    p.write_text("hello")
    with pytest.raises(IRError, match="not a squeezeforge net file"):
        load_net(p)
    with pytest.raises(IRError, match="does not exist"):
        load_net(tmp_path / "missing.sfnet")


def test_format_chain_is_checked() -> None:
    net = random_net(np.random.default_rng(3))
    fc = net.layers[3]
    changed = Dense(**{**fc.__dict__, "input_format": fc.output_format.__class__(8, 0)})
    with pytest.raises(IRError, match="layer 'fc1', field 'input_format'"):
        net.replace(layers=(*net.layers[:3], changed, net.layers[4]))


def test_negative_requantization_shift_rejected() -> None:
    layer = random_dense(np.random.default_rng(0), act_bits=8)
    too_fine = layer.output_format.__class__(8, layer.acc_frac + 1)
    with pytest.raises(IRError, match="field 'output_format': fraction length"):
        Dense(**{**layer.__dict__, "output_format": too_fine})


def test_csc_matches_eie_example() -> None:
    # REFERENCES.md: v=[1,2,0,3], z=[2,0,15,2] (a padding zero after a 15-zero gap).
    col = np.zeros((23, 1), dtype=np.int64)
    col[[2, 3, 22], 0] = [1, 2, 3]
    v, z, ptr = encode_csc(col, n_pe=1, index_bits=4)
    assert v.tolist() == [1, 2, 0, 3] and z.tolist() == [2, 0, 15, 2]
    assert ptr.tolist() == [[0, 4]]
    assert np.array_equal(decode_csc(v, z, ptr, 23), col)


@pytest.mark.parametrize("n_pe", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("index_bits", [1, 2, 4])
def test_csc_decodes_exactly(n_pe: int, index_bits: int) -> None:
    rng = np.random.default_rng(n_pe * 10 + index_bits)
    # out_features < n_pe for the larger counts: some PEs own no row at all.
    out_f, in_f = int(rng.integers(3, 70)), int(rng.integers(1, 12))
    dense = np.where(rng.random((out_f, in_f)) < 0.15, rng.integers(-5, 6, (out_f, in_f)), 0)
    dense[:, 0] = 0  # an empty column
    if out_f > 40:
        dense[:, -1] = 0
        dense[-1, -1] = 3  # a long gap: padding entries
    v, z, ptr = encode_csc(dense, n_pe, index_bits)
    assert np.array_equal(decode_csc(v, z, ptr, out_f), dense)
    assert np.all(z < (1 << index_bits))


def test_csc_pointer_validation() -> None:
    rng = np.random.default_rng(0)
    d = random_dense(rng, kind="fixed", in_features=4, out_features=6, act_bits=8, weight_bits=8)
    good = CscMatrix.encode(d.weight, 2, 2, name="s")
    np.testing.assert_array_equal(good.stored_dense(), d.weight)
    ptr = good.ptr.copy()
    ptr[0, 1], ptr[0, 2] = ptr[0, 2], ptr[0, 1] - 1
    with pytest.raises(IRError, match="layer 's', field 'ptr'"):
        CscMatrix(**{**good.__dict__, "ptr": ptr})
    z = good.z.copy()
    z[:] = 3
    with pytest.raises(IRError, match="layer 's', field 'z'"):
        CscMatrix(**{**good.__dict__, "z": z})


def test_sparse_dense_holds_no_layout() -> None:
    net = random_net(np.random.default_rng(2))
    sparse = net.layers[-1]
    assert isinstance(sparse, SparseDense) and sparse.arrays == ("weight", "bias")
    assert "n_pe" not in sparse.to_manifest() and "index_bits" not in sparse.to_manifest()
    # The same matrix in any layout the compiler may choose.
    for n_pe, index_bits in ((1, 1), (4, 2), (16, 4)):
        np.testing.assert_array_equal(sparse.csc(n_pe, index_bits).stored_dense(), sparse.weight)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _as_version_1(net, n_pe: int = 2, index_bits: int = 2) -> bytes:
    """The net written as a version-1 file: sparse_dense layers as CSC arrays for ``n_pe`` PEs."""
    src = zipfile.ZipFile(io.BytesIO(net_to_bytes(net)))
    manifest = json.loads(src.read("manifest.json"))
    files = {n: src.read(n) for n in src.namelist() if n != "manifest.json"}
    manifest["version"] = 1
    for entry, layer in zip(manifest["layers"], net.layers, strict=True):
        if entry["kind"] != "sparse_dense":
            continue
        csc = layer.csc(n_pe, index_bits)
        entry.update(n_pe=n_pe, index_bits=index_bits)
        del files[entry["arrays"].pop("weight")["file"]]
        for key, arr in (
            ("v", csc.v.astype(np.int8)),
            ("z", csc.z.astype(np.uint8)),
            ("ptr", csc.ptr.astype(np.int32)),
        ):
            name = f"arrays/{layer.name}.{key}.npy"
            files[name] = _npy(arr)
            entry["arrays"][key] = {"file": name, "shape": list(arr.shape), "dtype": arr.dtype.name}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


def test_version_1_files_are_read(tmp_path: Path) -> None:
    net = random_net(np.random.default_rng(3), kind="codebook")
    path = tmp_path / "v1.sfnet"
    path.write_bytes(_as_version_1(net))
    back = load_net(path)
    for a, b in zip(net.layers, back.layers, strict=True):
        assert type(a) is type(b) and a.to_manifest() == b.to_manifest()
        for name in a.arrays:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # Read back, it is written as the current version: byte-identical to the original.
    assert net_to_bytes(back) == net_to_bytes(net)


def test_version_1_reader_sees_corrupted_arrays(tmp_path: Path) -> None:
    net = random_net(np.random.default_rng(3), kind="codebook")
    path = tmp_path / "v1.sfnet"
    path.write_bytes(_as_version_1(net))

    def flip_a_code(manifest, arrays):
        name = "arrays/fc2.v.npy"
        v = np.load(io.BytesIO(arrays[name]))
        v[np.flatnonzero(v)[0]] ^= 1  # another codebook index: another matrix
        arrays[name] = _npy(v)

    changed = load_net(_rewrite(path, flip_a_code))
    assert not np.array_equal(changed.layers[-1].weight, net.layers[-1].weight)

    def wrong_pe_count(manifest, arrays):
        manifest["layers"][-1]["n_pe"] = 4  # the pointers were written for 2 PEs

    with pytest.raises(IRError, match="layer 'fc2', field 'ptr'"):
        load_net(_rewrite(path, wrong_pe_count))


def test_repr_is_short() -> None:
    net = random_net(np.random.default_rng(0), n_tests=50)
    text = repr(net)
    assert len(text) < 250 and "\n" not in text, text
    assert net.name in text and "conv1:conv2d" in text and "50 test vectors" in text
    for layer in net.layers:
        assert len(repr(layer)) < 120 and layer.name in repr(layer), repr(layer)
    # A deep net lists its first layers and counts the rest.
    many = net.replace(layers=net.layers + tuple(Flatten(f"extra{i}") for i in range(20)))
    assert len(repr(many)) < 250 and "more" in repr(many)
