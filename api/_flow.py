"""``compress`` and ``generate`` for notebooks and scripts: objects in, objects out."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from squeezeforge.sim import ir
from squeezeforge.sim.target import Target, resolve_target

from ._accelerator import Accelerator
from ._data import to_dataset
from ._net import CompressedNet

__all__ = ["compress", "generate", "import_qonnx"]


def compress(
    model: Any,
    recipe: Any,
    data: Any = None,
    *,
    target: Target | str | os.PathLike | None = None,
    seed: int | None = None,
    model_class: str | None = None,
    model_args: dict | None = None,
    quiet: bool = False,
) -> CompressedNet:
    """Compress ``model`` with ``recipe`` and return the :class:`CompressedNet`.

    Parameters
    ----------
    model
        An ``nn.Module`` (a custom ``forward`` is traced), a :class:`Checkpoint`, or a model file
        for :func:`squeezeforge.load_model`; a state_dict file also needs ``model_class``
        (``"file.py:ClassName"``) and, when its constructor takes any, ``model_args``.
    recipe
        A shipped recipe name (``"fixed8"``, ``"inq5"``, ``"deep-compression"``), a TOML path or
        a :class:`squeezeforge.models.compress.Recipe`.
    data
        ``(x_train, y_train, x_test, y_test)`` arrays, a dict with those keys, a
        :class:`squeezeforge.models.data.Dataset`, or a pair (train, test) of torch
        ``Dataset``/``DataLoader`` objects; None takes the embedded digits set.
    target
        The hardware the report's storage is counted for, and that :func:`generate` builds for
        by default (a Target, a preset name or a TOML path; the default Target when None).
    seed
        Overrides the recipe's seed; the same seed gives the same net.
    quiet
        No progress bars.
    """
    from torch import nn

    from squeezeforge.codegen.engines import check_supported
    from squeezeforge.models.compress import compress_net
    from squeezeforge.models.train import Checkpoint
    from squeezeforge.models.user_model import load_model

    resolved = resolve_target(target)
    if not isinstance(model, nn.Module | Checkpoint):
        model = load_model(model, model=model_class, model_args=model_args)
    net, report = compress_net(
        model,
        recipe,
        data=to_dataset(data),
        seed=seed,
        quiet=quiet,
        # A layer no engine runs is refused before training, not at generate.
        check_layer=check_supported,
        target=resolved,
    )
    return CompressedNet(net, report, resolved if target is not None else None)


def import_qonnx(path: str | os.PathLike, data: Any = None) -> CompressedNet:
    """A QONNX model (Brevitas, FINN) as a :class:`CompressedNet`, as it is: its power-of-two
    ``Quant`` nodes map onto the numeric contract, with no calibration and no retraining.

    ``data`` (as for :func:`compress`; None: the embedded digits) gives the test vectors: its
    test inputs are quantized exactly as the model's input ``Quant`` node does.
    """
    from squeezeforge.models.data import load_digits
    from squeezeforge.models.qonnx_import import load_qonnx

    dataset = to_dataset(data) or load_digits()
    net = load_qonnx(path, test_inputs=dataset.x_test, test_labels=dataset.y_test)
    return CompressedNet(net)


def generate(
    net: CompressedNet | ir.Net | str | os.PathLike,
    target: Target | str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    force: bool = False,
) -> Accelerator:
    """Compile ``net`` into an accelerator and return it as an :class:`Accelerator`.

    ``target`` defaults to the one the net was compressed for, else the default Target.
    ``out`` is the build folder; None builds into a temporary folder that lives as long as the
    returned object. ``force`` replaces a non-empty folder that is not a build.
    """
    from squeezeforge.codegen.build import generate as write_generated

    if isinstance(net, CompressedNet):
        wrapped = net
    elif isinstance(net, ir.Net):
        wrapped = CompressedNet(net)
    else:
        wrapped = CompressedNet(ir.load_net(net))
    if target is None:
        target = wrapped.target
    owned = None
    if out is None:
        owned = Path(tempfile.mkdtemp(prefix="squeezeforge-"))
        out = owned / "build"
    try:
        manifest = write_generated(wrapped.ir, out, resolve_target(target), force=force)
    except BaseException:
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)
        raise
    return Accelerator(wrapped, Path(out).resolve(), manifest, owned)
