"""Checkpoints and data that are not finite, truncated, or outputs that cannot be written.

Findings F2 (NaN and infinity), F3 (unwritable outputs found before the long steps), F8
(a truncated checkpoint named as such) and F10 (files follow the umask) of issue 10.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from squeezeforge.models.compress import pipeline
from squeezeforge.models.data import Dataset
from squeezeforge.models.export import check_supported, post_training_export
from squeezeforge.models.nets import build_model
from squeezeforge.models.train import load_checkpoint, save_checkpoint
from squeezeforge.sim.errors import UserError


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp")


@pytest.mark.parametrize(
    ("param", "value", "shown"),
    [("fc1.weight", float("nan"), "nan"), ("fc1.weight", float("inf"), "inf"),
     ("fc3.bias", float("-inf"), "-inf")],
)  # fmt: skip
def test_non_finite_weights_are_refused_by_name(tmp_path: Path, param, value, shown) -> None:
    model = _model()
    with torch.no_grad():
        dict(model.named_parameters())[param].view(-1)[3] = value
    path = save_checkpoint(tmp_path / "m.pt", "mlp", model)
    with pytest.raises(UserError, match=rf"{param} holds {shown} \(weights must be finite"):
        load_checkpoint(path)
    # A model handed over in Python is checked too, before calibration turns NaN into garbage.
    with pytest.raises(UserError, match=f"{param} holds"):
        post_training_export(model, bits=8)
    with pytest.raises(UserError, match=f"{param} holds"):
        check_supported(model)


def test_finite_model_passes(tmp_path: Path) -> None:
    check_supported(_model())
    load_checkpoint(save_checkpoint(tmp_path / "m.pt", "mlp", _model()))


def test_non_finite_data_is_refused() -> None:
    x = np.zeros((2, 1, 8, 8), np.float32)
    y = np.zeros(2, np.int64)
    Dataset("ok", x, y, x, y)
    bad = x.copy()
    bad[1, 0, 2, 2] = np.nan
    with pytest.raises(UserError, match="x_test holds NaN"):
        Dataset("bad", x, y, bad, y)


def test_truncated_checkpoint_says_truncated(tmp_path: Path) -> None:
    data = save_checkpoint(tmp_path / "m.pt", "mlp", _model()).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"checkpoint \(the file is truncated"):
        load_checkpoint(cut)
    with pytest.raises(UserError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_compress_checks_its_output_before_any_work(tmp_path: Path, monkeypatch) -> None:
    ckpt = save_checkpoint(tmp_path / "m.pt", "mlp", _model())
    (tmp_path / "plain.txt").write_text("a file, not a folder\n")

    def must_not_run(*args, **kwargs):
        raise AssertionError("compression ran before the output was checked")

    monkeypatch.setattr(pipeline, "compress_model", must_not_run)
    monkeypatch.setattr(pipeline, "load_checkpoint", must_not_run)
    with pytest.raises(UserError, match="cannot write"):
        pipeline.compress(ckpt, "fixed8", tmp_path / "plain.txt" / "out.sfnet")


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.pt", "mlp", _model())
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        path = save_checkpoint(tmp_path / "p.pt", "mlp", _model())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_killed_write_leaves_nothing_the_next_write_keeps(tmp_path: Path) -> None:
    # What SIGKILL between mkstemp and the rename leaves: a hidden temporary beside the file.
    stale = tmp_path / ".m.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    mine = tmp_path / ".m.pt.notes"
    mine.write_text("not ours\n")
    save_checkpoint(tmp_path / "m.pt", "mlp", _model())
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.pt.notes", "m.pt"]
