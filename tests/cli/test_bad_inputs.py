# ruff: noqa: E501  (one row a line keeps the table readable)
"""The bad-input corpus: every subcommand against every class of bad input.

Each row builds one bad input (a truncated file, a wrong field type, an unwritable output, an
edited build, ...) and runs the command line in-process. Every row must end with exit status 2,
exactly one line on stderr that names the problem, no traceback, and every file that existed
before (the shared good outputs and the row's own files) byte-identical afterwards. A bad input
found later becomes a new row here.

The expensive good inputs (a checkpoint, two nets, one generated build) are made once per
session; no row may run a long step, so the whole table stays within about a minute.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from squeezeforge.cli.main import main
from squeezeforge.codegen.build import generate
from squeezeforge.models.nets import build_model
from squeezeforge.models.train import save_checkpoint
from squeezeforge.sim.ir import Flatten, Net, save_net
from squeezeforge.sim.numerics import FixedFormat
from squeezeforge.sim.random_layers import random_net

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class World:
    """The good outputs every row may start from; none of them may change."""

    root: Path
    ckpt: Path
    net: Path
    other_net: Path
    build: Path


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    # An untrained model is a valid checkpoint: no row needs its accuracy, only its format.
    ckpt = save_checkpoint(root / "mlp.pt", "mlp", build_model("mlp"), {"seed": 0}, {})
    net = save_net(random_net(np.random.default_rng(0), n_tests=4), root / "net.sfnet")
    other = save_net(random_net(np.random.default_rng(1), n_tests=4), root / "other.sfnet")
    build = root / "build"
    generate(net, build)
    return World(root, ckpt, net, other, build)


# ---------------------------------------------------------------------------------------------
# Makers of bad inputs (each returns the path it wrote)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    return _write(dst, data[: int(len(data) * keep)])


def edited_net(
    src: Path,
    dst: Path,
    edit: Callable[[dict], None] | None = None,
    arrays: dict[str, bytes | None] | None = None,
) -> Path:
    """A copy of a net file with its manifest edited and array files replaced or dropped."""
    with zipfile.ZipFile(src) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        files = {n: zf.read(n) for n in zf.namelist() if n != "manifest.json"}
    if edit is not None:
        edit(manifest)
    for name, data in (arrays or {}).items():
        if data is None:
            files.pop(name, None)
        else:
            files[name] = data
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for name, data in files.items():
            zf.writestr(name, data)
    return dst


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def layer(manifest: dict, name: str) -> dict:
    return next(e for e in manifest["layers"] if e["name"] == name)


def with_weight(w: World, d: Path, arr: np.ndarray, dtype_name: str | None = None) -> Path:
    """The good net with fc1's weight array replaced (manifest dtype and shape follow)."""

    def edit(m: dict) -> None:
        spec = layer(m, "fc1")["arrays"]["weight"]
        spec["dtype"], spec["shape"] = dtype_name or arr.dtype.name, list(arr.shape)

    return edited_net(w.net, d / "bad.sfnet", edit, {"arrays/fc1.weight.npy": npy(arr)})


def fc1_weight(w: World) -> np.ndarray:
    with zipfile.ZipFile(w.net) as zf:
        return np.load(io.BytesIO(zf.read("arrays/fc1.weight.npy")))


def edited_ckpt(w: World, d: Path, edit: Callable[[dict], None]) -> Path:
    blob = torch.load(w.ckpt, weights_only=True)
    edit(blob)
    buf = io.BytesIO()
    torch.save(blob, buf)
    return _write(d / "bad.pt", buf.getvalue())


def poisoned_ckpt(w: World, d: Path, key: str, value: float) -> Path:
    def edit(blob: dict) -> None:
        blob["state_dict"][key] = blob["state_dict"][key].clone()
        blob["state_dict"][key].view(-1)[0] = value

    return edited_ckpt(w, d, edit)


def first_weight(w: World, suffix: str) -> str:
    state = torch.load(w.ckpt, weights_only=True)["state_dict"]
    return next(k for k in state if k.endswith(suffix))


def copied_build(w: World, d: Path, edit: Callable[[Path], None]) -> Path:
    """A copy of the good build with one part edited."""
    out = d / "build"
    for src in w.build.rglob("*"):
        if src.is_file():
            _write(out / src.relative_to(w.build), src.read_bytes())
    edit(out)
    return out


def edit_manifest(build: Path, edit: Callable[[dict], None]) -> None:
    path = build / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m, indent=1))


def under_a_file(d: Path, name: str) -> Path:
    """A path no one can write, root included: its parent is a regular file."""
    _write(d / "plain.txt", b"a regular file\n")
    return d / "plain.txt" / name


def unwritable_folder(d: Path) -> Path:
    """An existing folder this process cannot write into.

    Root ignores permission bits, so as root the folder is /proc (nothing may be created there);
    otherwise a 0555 folder of our own.
    """
    if IS_ROOT:
        return Path("/proc")
    folder = d / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def recipe(d: Path, text: str) -> Path:
    return _write(d / "recipe.toml", text.encode())


def flatten_only(d: Path) -> Path:
    x = np.zeros((1, 2, 2, 2), dtype=np.int64)
    net = Net("flat", (2, 2, 2), FixedFormat(8, 4), (Flatten("f"),), x, np.zeros(1, np.int64),
              np.zeros((1, 8), np.int64))  # fmt: skip
    return save_net(net, d / "flat.sfnet")


# ---------------------------------------------------------------------------------------------
# The table: id, argv maker, a fragment the one error line must contain

Maker = Callable[[World, Path], list[str]]
CASES: list[tuple[str, Maker, str]] = []


def row(cid: str, expect: str, fn: Maker) -> None:
    CASES.append((cid, fn, expect))


# fmt: off
# --- top level and flags
row("unknown-subcommand", "invalid choice", lambda w, d: ["frobnicate"])
row("train-epochs-0", "--epochs must be >= 1", lambda w, d: ["train", "--epochs", "0", "-o", str(d / "m.pt")])
row("train-epochs-text", "invalid int value", lambda w, d: ["train", "--epochs", "many", "-o", str(d / "m.pt")])
row("train-batch-0", "--batch-size must be >= 1", lambda w, d: ["train", "--batch-size", "0", "-o", str(d / "m.pt")])
row("train-lr-negative", "--lr must be > 0", lambda w, d: ["train", "--lr", "-1", "-o", str(d / "m.pt")])
row("train-lr-nan", "--lr must be > 0", lambda w, d: ["train", "--lr", "nan", "-o", str(d / "m.pt")])
row("train-unknown-model", "invalid choice", lambda w, d: ["train", "--model", "vgg", "-o", str(d / "m.pt")])
row("train-no-output", "required", lambda w, d: ["train"])
row("export-bits-1", "--bits must be in 2..16", lambda w, d: ["export", str(w.ckpt), "--bits", "1", "-o", str(d / "n.sfnet")])
row("export-bits-17", "--bits must be in 2..16", lambda w, d: ["export", str(w.ckpt), "--bits", "17", "-o", str(d / "n.sfnet")])
row("reference-limit-0", "--limit must be >= 1", lambda w, d: ["reference", str(w.net), "--limit", "0"])
row("reference-limit-negative", "--limit must be >= 1", lambda w, d: ["reference", str(w.net), "--limit", "-2"])
row("simulate-images-0", "--images 0", lambda w, d: ["simulate", str(w.build), "--images", "0"])
row("simulate-images-too-many", "holds 4 test images", lambda w, d: ["simulate", str(w.build), "--images", "100000"])
row("resources-unknown-target", "unknown target", lambda w, d: ["resources", str(w.build), "--target", "stratix"])
row("flow-images-0", "--images 0", lambda w, d: ["flow", "-o", str(d / "f"), "--images", "0"])
row("flow-unknown-target", "unknown target", lambda w, d: ["flow", "-o", str(d / "f"), "--targets", "gowin"])
row("flow-unknown-recipe", "unknown recipe", lambda w, d: ["flow", "-o", str(d / "f"), "--recipes", "zip9"])
row("flow-unknown-model", "invalid choice", lambda w, d: ["flow", "-o", str(d / "f"), "--model", "vgg"])

# --- checkpoints: missing, empty, truncated, folders, wrong kind, wrong version, NaN/inf
row("export-missing-ckpt", "does not exist", lambda w, d: ["export", str(d / "none.pt"), "-o", str(d / "n.sfnet")])
row("export-empty-ckpt", "is empty", lambda w, d: ["export", str(_write(d / "e.pt", b"")), "-o", str(d / "n.sfnet")])
row("export-truncated-ckpt", "truncated", lambda w, d: ["export", str(truncated(w.ckpt, d / "t.pt")), "-o", str(d / "n.sfnet")])
row("export-folder-ckpt", "is a folder", lambda w, d: ["export", str(w.root), "-o", str(d / "n.sfnet")])
row("export-text-ckpt", "not a squeezeforge checkpoint", lambda w, d: ["export", str(_write(d / "t.pt", b"hello\n")), "-o", str(d / "n.sfnet")])
row("export-net-as-ckpt", "not a squeezeforge checkpoint", lambda w, d: ["export", str(w.net), "-o", str(d / "n.sfnet")])
row("export-ckpt-version", "checkpoint version 99", lambda w, d: ["export", str(edited_ckpt(w, d, lambda b: b.update(version=99))), "-o", str(d / "n.sfnet")])
row("export-ckpt-no-tag", "not a squeezeforge checkpoint", lambda w, d: ["export", str(edited_ckpt(w, d, lambda b: b.pop("format"))), "-o", str(d / "n.sfnet")])
row("export-ckpt-unknown-model", "unknown model", lambda w, d: ["export", str(edited_ckpt(w, d, lambda b: b.update(model="vgg"))), "-o", str(d / "n.sfnet")])
row("export-ckpt-no-state", "no state_dict", lambda w, d: ["export", str(edited_ckpt(w, d, lambda b: b.update(state_dict=[1, 2]))), "-o", str(d / "n.sfnet")])
row("export-ckpt-wrong-shapes", "do not fit", lambda w, d: ["export", str(edited_ckpt(w, d, lambda b: b["state_dict"].update({first_weight(w, "weight"): torch.zeros(3, 3)}))), "-o", str(d / "n.sfnet")])
row("export-ckpt-nan", "nan", lambda w, d: ["export", str(poisoned_ckpt(w, d, first_weight(w, "weight"), float("nan"))), "-o", str(d / "n.sfnet")])
row("export-ckpt-inf", "inf", lambda w, d: ["export", str(poisoned_ckpt(w, d, first_weight(w, "weight"), float("inf"))), "-o", str(d / "n.sfnet")])
row("export-ckpt-neg-inf-bias", "-inf", lambda w, d: ["export", str(poisoned_ckpt(w, d, first_weight(w, "bias"), float("-inf"))), "-o", str(d / "n.sfnet")])
row("compress-ckpt-nan", "nan", lambda w, d: ["compress", str(poisoned_ckpt(w, d, first_weight(w, "weight"), float("nan"))), "--recipe", "fixed8", "-o", str(d / "n.sfnet")])
row("compress-ckpt-neg-inf-bias", "-inf", lambda w, d: ["compress", str(poisoned_ckpt(w, d, first_weight(w, "bias"), float("-inf"))), "--recipe", "fixed8", "-o", str(d / "n.sfnet")])
row("compress-truncated-ckpt", "truncated", lambda w, d: ["compress", str(truncated(w.ckpt, d / "t.pt")), "--recipe", "fixed8", "-o", str(d / "n.sfnet")])
row("compress-missing-ckpt", "does not exist", lambda w, d: ["compress", str(d / "none.pt"), "--recipe", "fixed8", "-o", str(d / "n.sfnet")])

# --- recipes
row("compress-unknown-recipe", "no shipped recipe", lambda w, d: ["compress", str(w.ckpt), "--recipe", "zip9", "-o", str(d / "n.sfnet")])
row("compress-recipe-bad-toml", "not valid TOML", lambda w, d: ["compress", str(w.ckpt), "--recipe", str(recipe(d, "[[pass\n")), "-o", str(d / "n.sfnet")])
row("compress-recipe-unknown-pass", "unknown", lambda w, d: ["compress", str(w.ckpt), "--recipe", str(recipe(d, '[[steps]]\npass = "teleport"\n')), "-o", str(d / "n.sfnet")])
row("compress-recipe-wrong-type", "recipe", lambda w, d: ["compress", str(w.ckpt), "--recipe", str(recipe(d, 'steps = "prune"\n')), "-o", str(d / "n.sfnet")])
row("compress-recipe-field-type", "weight_bits", lambda w, d: ["compress", str(w.ckpt), "--recipe", str(recipe(d, '[[steps]]\npass = "fixed-point"\nweight_bits = "eight"\n')), "-o", str(d / "n.sfnet")])
row("compress-recipe-folder", "is a folder", lambda w, d: ["compress", str(w.ckpt), "--recipe", str(w.root), "-o", str(d / "n.sfnet")])
row("compress-recipe-binary", "recipe", lambda w, d: ["compress", str(w.ckpt), "--recipe", str(_write(d / "r.toml", b"\xff\xfe\x00")), "-o", str(d / "n.sfnet")])

# --- net files: missing, empty, truncated, wrong kind, wrong version, field types, dtypes, ranges
row("reference-missing-net", "does not exist", lambda w, d: ["reference", str(d / "none.sfnet")])
row("reference-empty-net", "is empty", lambda w, d: ["reference", str(_write(d / "e.sfnet", b""))])
row("reference-truncated-net", "not a squeezeforge net file", lambda w, d: ["reference", str(truncated(w.net, d / "t.sfnet"))])
row("reference-folder-net", "is a folder", lambda w, d: ["reference", str(w.build)])
row("reference-ckpt-as-net", "manifest.json", lambda w, d: ["reference", str(w.ckpt)])
row("reference-wrong-format", "format", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: m.update(format="onnx")))])
row("reference-wrong-version", "version 7", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: m.update(version=7)))])
row("reference-manifest-not-json", "not valid JSON", lambda w, d: ["reference", str(_bad_json_net(w, d))])
row("reference-kernel-int", "'kernel'", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: layer(m, "conv1").update(kernel=3)))])
row("reference-kernel-strings", "'kernel'", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: layer(m, "conv1").update(kernel=["3", "3"])))])
row("reference-metadata-list", "'metadata'", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: m.update(metadata=[1, 2])))])
row("reference-layers-object", "'layers'", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: m.update(layers={"a": 1})))])
row("reference-layer-not-object", "object", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: m["layers"].insert(0, 5)))])
row("reference-unknown-kind", "unknown layer kind", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: layer(m, "pool1").update(kind="avgpool")))])
row("reference-name-int", "'name'", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: m.update(name=5)))])
row("reference-input-shape-text", "'input'", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: m["input"].update(shape="1x6x6")))])
row("reference-format-list", "'input_format'", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: layer(m, "conv1").update(input_format=[8, 4])))])
row("reference-weight-format-list", "'weight_format'", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: layer(m, "fc1").update(weight_format=[8])))])
row("reference-bits-float", "'input_format'", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: layer(m, "conv1")["input_format"].update(bits=8.5)))])
row("reference-bits-40", "bit width 40", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: layer(m, "fc1")["output_format"].update(bits=40)))])
row("reference-relu-string", "'relu'", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: layer(m, "fc1").update(relu="yes")))])
row("reference-features-string", "'in_features'", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: layer(m, "fc1").update(in_features="27")))])
row("reference-shift-64", "shift", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: layer(m, "fc1")["weight_format"].update(frac=64)))])
row("reference-array-missing", "is missing", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", arrays={"arrays/fc1.weight.npy": None}))])
row("reference-array-garbage", "unreadable", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", arrays={"arrays/fc1.weight.npy": b"garbage"}))])
row("reference-weight-float", "not an integer type", lambda w, d: ["reference", str(with_weight(w, d, fc1_weight(w).astype(np.float32)))])
row("reference-weight-uint64-max", "does not fit", lambda w, d: ["reference", str(with_weight(w, d, np.full(fc1_weight(w).shape, 2**64 - 1, np.uint64)))])
row("reference-weight-out-of-range", "outside the format's range", lambda w, d: ["reference", str(with_weight(w, d, np.full(fc1_weight(w).shape, 300, np.int16)))])
row("reference-weight-wrong-shape", "disagrees", lambda w, d: ["reference", str(with_weight(w, d, fc1_weight(w)[:2]))])
row("reference-dtype-mislabelled", "disagrees with manifest", lambda w, d: ["reference", str(with_weight(w, d, fc1_weight(w), "int32"))])
row("reference-test-vectors-list", "'test_vectors'", lambda w, d: ["reference", str(edited_net(w.net, d / "b.sfnet", lambda m: m.update(test_vectors=[1])))])

# --- reference inputs
row("reference-inputs-nan", "NaN", lambda w, d: ["reference", str(w.net), "--inputs", str(_npy_file(d, np.full((1, 1, 6, 6), np.nan, np.float32)))])
row("reference-inputs-inf", "infinite", lambda w, d: ["reference", str(w.net), "--inputs", str(_npy_file(d, np.full((2, 1, 6, 6), np.inf)))])
row("reference-inputs-bool", "numeric array", lambda w, d: ["reference", str(w.net), "--inputs", str(_npy_file(d, np.zeros((1, 1, 6, 6), bool)))])
row("reference-inputs-strings", "numeric array", lambda w, d: ["reference", str(w.net), "--inputs", str(_npy_file(d, np.full((1, 1, 6, 6), "a")))])
row("reference-inputs-npz", "not an .npz", lambda w, d: ["reference", str(w.net), "--inputs", str(_npz_file(d))])
row("reference-outputs-unwritable", "cannot write", lambda w, d: ["reference", str(w.net), "--outputs", str(under_a_file(d, "o.npy"))])
row("simulate-inputs-shape", "the net takes", lambda w, d: ["simulate", str(w.build), "--inputs", str(_npy_file(d, np.zeros((3, 36), np.float32)))])
row("simulate-inputs-nan", "NaN", lambda w, d: ["simulate", str(w.build), "--inputs", str(_npy_file(d, np.full((1, 1, 6, 6), np.nan)))])
row("simulate-inputs-range", "outside the input format", lambda w, d: ["simulate", str(w.build), "--inputs", str(_npy_file(d, np.full((1, 1, 6, 6), -1000, np.int32)))])
row("simulate-inputs-complex", "numeric array", lambda w, d: ["simulate", str(w.build), "--inputs", str(_npy_file(d, np.zeros((1, 1, 6, 6), np.complex64)))])
row("simulate-inputs-missing", "cannot read", lambda w, d: ["simulate", str(w.build), "--inputs", str(d / "none.npy")])
row("simulate-outputs-unwritable", "cannot write", lambda w, d: ["simulate", str(w.build), "--outputs", str(under_a_file(d, "o.npy"))])
row("reference-inputs-shape", "the net takes", lambda w, d: ["reference", str(w.net), "--inputs", str(_npy_file(d, np.zeros((1, 1, 5, 5), np.int8)))])
row("reference-inputs-range", "outside the input format", lambda w, d: ["reference", str(w.net), "--inputs", str(_npy_file(d, np.full((1, 1, 6, 6), 1000, np.int16)))])
row("reference-inputs-empty", "holds no inputs", lambda w, d: ["reference", str(w.net), "--inputs", str(_npy_file(d, np.zeros((0, 1, 6, 6), np.int8)))])
row("reference-inputs-not-npy", "cannot read", lambda w, d: ["reference", str(w.net), "--inputs", str(_write(d / "x.npy", b"1,2,3\n"))])
row("reference-inputs-folder", "cannot read", lambda w, d: ["reference", str(w.net), "--inputs", str(w.root)])

# --- generate: folders it must not replace, nets it cannot build
row("generate-user-folder", "not a squeezeforge build", lambda w, d: ["generate", str(w.net), "-o", str(_user_folder(d))])
row("generate-onto-file", "not a folder", lambda w, d: ["generate", str(w.net), "-o", str(_write(d / "notes.txt", b"mine\n"))])
row("generate-onto-file-force", "not a folder", lambda w, d: ["generate", str(w.net), "-o", str(_write(d / "notes.txt", b"mine\n")), "--force"])
row("generate-readonly-folder", "read-only", lambda w, d: ["generate", str(w.net), "-o", str(_readonly_folder(d))])
row("generate-dot", "current folder", lambda w, d: ["generate", str(w.net), "-o", "."])
row("generate-dotdot", "current folder", lambda w, d: ["generate", str(w.net), "-o", ".."])
row("generate-under-file", "not a folder", lambda w, d: ["generate", str(w.net), "-o", str(under_a_file(d, "b"))])
row("generate-unwritable", "cannot write", lambda w, d: ["generate", str(w.net), "-o", str(unwritable_folder(d) / "squeezeforge-b")])
row("generate-missing-net", "does not exist", lambda w, d: ["generate", str(d / "none.sfnet"), "-o", str(d / "b")])
row("generate-flatten-only", "nothing to build", lambda w, d: ["generate", str(flatten_only(d)), "-o", str(d / "b")])
row("generate-shift-64", "shift", lambda w, d: ["generate", str(edited_net(w.net, d / "b.sfnet", lambda m: layer(m, "fc1")["weight_format"].update(frac=64))), "-o", str(d / "b")])

# --- unwritable outputs, folders where files are expected
row("train-under-file", "cannot write", lambda w, d: ["train", "-o", str(under_a_file(d, "m.pt"))])
row("train-unwritable", "cannot write", lambda w, d: ["train", "-o", str(unwritable_folder(d) / "m.pt")])
row("train-onto-folder", "is a folder", lambda w, d: ["train", "-o", str(w.root)])
row("export-under-file", "cannot write", lambda w, d: ["export", str(w.ckpt), "-o", str(under_a_file(d, "n.sfnet"))])
row("export-unwritable", "cannot write", lambda w, d: ["export", str(w.ckpt), "-o", str(unwritable_folder(d) / "n.sfnet")])
row("export-onto-folder", "is a folder", lambda w, d: ["export", str(w.ckpt), "-o", str(w.build)])
row("compress-unwritable", "cannot write", lambda w, d: ["compress", str(w.ckpt), "--recipe", "fixed8", "-o", str(unwritable_folder(d) / "n.sfnet")])
row("compress-report-unwritable", "cannot write", lambda w, d: ["compress", str(w.ckpt), "--recipe", "fixed8", "-o", str(d / "n.sfnet"), "--report", str(under_a_file(d, "r.md"))])
row("flow-onto-file", "not a folder", lambda w, d: ["flow", "-o", str(_write(d / "notes.txt", b"mine\n"))])
row("flow-unwritable", "cannot write", lambda w, d: ["flow", "-o", str(under_a_file(d, "f"))])
row("sweep-unknown-spec", "no sweep spec file", lambda w, d: ["sweep", "zip9", "-o", str(d / "s")])
row("sweep-spec-not-toml", "not valid TOML", lambda w, d: ["sweep", str(_write(d / "s.toml", b"[axes\n")), "-o", str(d / "s")])
row("sweep-workers-0", "at least one worker", lambda w, d: ["sweep", "digits-cnn", "-o", str(d / "s"), "--workers", "0"])
row("sweep-onto-file", "not a folder", lambda w, d: ["sweep", "digits-cnn", "-o", str(_write(d / "notes.txt", b"mine\n"))])
row("sweep-unwritable", "cannot write", lambda w, d: ["sweep", "digits-cnn", "-o", str(under_a_file(d, "s"))])

# --- builds: missing, not builds, edited, mixed parts
row("simulate-missing-build", "no such build folder", lambda w, d: ["simulate", str(d / "none")])
row("simulate-file-as-build", "not a build folder", lambda w, d: ["simulate", str(w.net)])
row("simulate-no-manifest", "manifest.json is missing", lambda w, d: ["simulate", str(copied_build(w, d, lambda b: (b / "manifest.json").unlink()))])
row("simulate-manifest-garbage", "not valid JSON", lambda w, d: ["simulate", str(copied_build(w, d, lambda b: (b / "manifest.json").write_text("{")))])
row("simulate-foreign-manifest", "not a squeezeforge build", lambda w, d: ["simulate", str(copied_build(w, d, lambda b: (b / "manifest.json").write_text("[1, 2]")))])
row("simulate-old-version", "build version 1", lambda w, d: ["simulate", str(copied_build(w, d, lambda b: edit_manifest(b, lambda m: m.update(version=1))))])
row("simulate-steps-removed", "checksum", lambda w, d: ["simulate", str(copied_build(w, d, lambda b: edit_manifest(b, lambda m: m["steps"].pop())))])
row("simulate-truncated-top", "top.v", lambda w, d: ["simulate", str(copied_build(w, d, lambda b: truncated(b / "top.v", b / "top.v")))])
row("simulate-missing-top", "top.v is missing", lambda w, d: ["simulate", str(copied_build(w, d, lambda b: (b / "top.v").unlink()))])
row("simulate-swapped-net", "net.sfnet", lambda w, d: ["simulate", str(copied_build(w, d, lambda b: (b / "net.sfnet").write_bytes(w.other_net.read_bytes())))])
row("simulate-edited-engine", "engines/", lambda w, d: ["simulate", str(copied_build(w, d, lambda b: next((b / "engines").iterdir()).write_text("module x;\n")))])
row("resources-missing-build", "no such build folder", lambda w, d: ["resources", str(d / "none"), "--target", "ice40"])
row("resources-truncated-top", "top.v", lambda w, d: ["resources", str(copied_build(w, d, lambda b: truncated(b / "top.v", b / "top.v"))), "--target", "ice40"])
row("resources-edited-manifest", "checksum", lambda w, d: ["resources", str(copied_build(w, d, lambda b: edit_manifest(b, lambda m: m.update(top="evil")))), "--target", "ice40"])
# fmt: on


def _bad_json_net(w: World, d: Path) -> Path:
    dst = d / "b.sfnet"
    with zipfile.ZipFile(w.net) as src, zipfile.ZipFile(dst, "w") as zf:
        for name in src.namelist():
            zf.writestr(name, b"{not json" if name == "manifest.json" else src.read(name))
    return dst


def _npy_file(d: Path, arr: np.ndarray) -> Path:
    path = d / "x.npy"
    np.save(path, arr)
    return path


def _npz_file(d: Path) -> Path:
    path = d / "x.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.zeros((1, 1, 6, 6), np.int8))
    return path


def _user_folder(d: Path) -> Path:
    folder = d / "mine"
    _write(folder / "notes.txt", b"my notes\n")
    _write(folder / "sub" / "data.csv", b"1,2\n")
    return folder


def _readonly_folder(d: Path) -> Path:
    folder = d / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def snapshot(*roots: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under ``roots``: content hash (files) and permission bits."""
    seen: dict[str, tuple[str, int]] = {}
    for root in roots:
        for p in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(p.lstat().st_mode)
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            seen[str(p)] = (digest, mode)
    return seen


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        rc = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return rc, out, err


def test_corpus_is_large_and_covers_every_subcommand() -> None:
    from squeezeforge.cli.main import SUBCOMMANDS

    assert len(CASES) >= 60
    assert len({cid for cid, _, _ in CASES}) == len(CASES), "case ids must be unique"
    covered = {cid.split("-")[0] for cid, _, _ in CASES}
    assert set(SUBCOMMANDS) - {"info"} <= covered  # info takes no input


@pytest.mark.parametrize(("cid", "make", "expect"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(
    cid: str,
    make: Maker,
    expect: str,
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Relative outputs ("-o .") resolve inside the row's own folder.
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = make(world, tmp_path)
    before = snapshot(world.root, tmp_path)
    rc, _, err = run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == 2, f"exit status {rc}; stderr: {err}"
    assert len(lines) == 1, f"expected one line on stderr, got: {err}"
    assert "Traceback" not in err
    assert lines[0].startswith(f"squeezeforge {argv[0]}: error: ") or cid == "unknown-subcommand"
    assert expect.lower() in lines[0].lower(), lines[0]
    # Nothing that existed before changed; anything new is only a leftover the row must not make.
    after = snapshot(world.root, tmp_path)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"changed or removed: {changed}"
    created = sorted(set(after) - set(before))
    assert not created, f"left behind: {created}"
