"""A user's trained model from a file, in the forms people save them in.

* a squeezeforge checkpoint (``squeezeforge train`` writes them);
* a ``state_dict`` saved with ``torch.save(model.state_dict(), path)``, plus the class that
  builds the model: ``model="path/to/file.py:ClassName"`` and its constructor arguments;
* a whole pickled ``nn.Module`` (``torch.save(model, path)``); its class must be importable, so
  name the file that defines it with ``model=`` when it is not on the Python path;
* an ONNX file (``torch.onnx.export``), read by :mod:`squeezeforge.models.onnx_import`.

Every failure is one :class:`~squeezeforge.sim.errors.UserError` line naming the file and what
is wrong with it, before any data is loaded or any training starts.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import pickle
import sys
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeezeforge.sim.errors import UserError

from .train import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    check_finite_state,
    load_checkpoint,
    torch_load_problem,
)

__all__ = ["import_class", "load_model"]

_NOT_A_MODEL = "is not a squeezeforge checkpoint nor a PyTorch model file"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def import_class(spec: str) -> type[nn.Module]:
    """The class ``spec`` names: ``path/to/file.py:ClassName`` or ``package.module:ClassName``."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise UserError(f"--model {spec!r}: expected FILE.py:ClassName or module:ClassName")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise UserError(f"--model {spec!r}: {path} does not exist")
        module_name = f"squeezeforge_user_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise UserError(f"--model {spec!r}: {path} is not a Python file")
        module = importlib.util.module_from_spec(module_spec)
        # Registered so that pickling and tracing can find the class again, under the file's
        # own name too (a model pickled by a script that did `from lenet import LeNet5`).
        sys.modules[module_name] = module
        sys.modules.setdefault(path.stem, module)
        # Its own folder first, so the file's sibling imports work as they do for its author.
        sys.path.insert(0, str(path.resolve().parent))
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's file: any error is hers to fix
            sys.modules.pop(module_name, None)
            raise UserError(
                f"--model {spec!r}: {path} fails to import ({type(exc).__name__}: "
                f"{_first_line(exc)})"
            ) from None
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # noqa: BLE001
            raise UserError(
                f"--model {spec!r}: cannot import {where} ({_first_line(exc)})"
            ) from None
    cls = getattr(module, name, None)
    if cls is None:
        raise UserError(f"--model {spec!r}: {where} defines no {name}")
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise UserError(f"--model {spec!r}: {name} is not an nn.Module class")
    return cls


def _build(spec: str, args: Mapping[str, Any] | None) -> nn.Module:
    cls = import_class(spec)
    try:
        return cls(**dict(args or {}))
    except Exception as exc:  # noqa: BLE001
        call = ", ".join(f"{k}={v!r}" for k, v in (args or {}).items())
        raise UserError(
            f"--model {spec!r}: {cls.__name__}({call}) fails: {_first_line(exc)}"
        ) from None


def _load_state_dict(path: Path, model: nn.Module, state: Mapping[str, Any], spec: str) -> None:
    mine = model.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(
                f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}"
            )
        raise UserError(f"{path}: the state_dict does not match {spec} ({'; '.join(parts)})")
    for key, value in state.items():
        if tuple(value.shape) != tuple(mine[key].shape):
            raise UserError(
                f"{path}: the state_dict does not match {spec}: {key} has shape"
                f" {list(value.shape)}, the model's has {list(mine[key].shape)}"
            )
    model.load_state_dict(state)


def load_model(
    path: str | os.PathLike,
    *,
    model: str | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> Checkpoint:
    """The model in ``path`` (see the module docstring for the forms), in eval mode."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a model file (.pt, .pth or .onnx)")
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"model file {path} is empty")
    if path.suffix.lower() == ".onnx":
        from .onnx_import import load_onnx
        from .qonnx_import import is_qonnx

        if is_qonnx(path):
            raise UserError(
                f"{path} is a quantized QONNX model: it needs no compression; turn it into a"
                " net with `squeezeforge export`"
            )

        net = load_onnx(path)
        return Checkpoint(model_name=path.stem, model=net.eval())
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses a pickled class: the file is a whole module, not just tensors.
        if "Weights only load failed" not in str(exc):
            raise UserError(f"{path} {_NOT_A_MODEL} ({_first_line(exc)})") from None
        blob = _load_pickled_module(path, model)
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} {_NOT_A_MODEL} ({torch_load_problem(path, exc)})") from None
    except Exception as exc:  # noqa: BLE001 - an unpickling error of a foreign or corrupt file
        raise UserError(f"{path} {_NOT_A_MODEL} ({type(exc).__name__})") from None
    if isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT:
        return load_checkpoint(path)
    if isinstance(blob, nn.Module):
        loaded = blob
        name = type(blob).__name__.lower()
    elif isinstance(blob, Mapping) and all(isinstance(v, torch.Tensor) for v in blob.values()):
        if model is None:
            raise UserError(
                f"{path} holds a state_dict (weights without the model): name the class that"
                " builds it with --model path/to/file.py:ClassName"
            )
        loaded = _build(model, model_args)
        _load_state_dict(path, loaded, blob, model)
        name = type(loaded).__name__.lower()
    else:
        raise UserError(
            f"{path} is not a squeezeforge checkpoint, a state_dict or a pickled model (it holds"
            f" a {type(blob).__name__})"
        )
    check_finite_state(loaded.state_dict(), str(path))
    return Checkpoint(model_name=name, model=loaded.eval())


def _pickle_module(cls: type | None) -> Any:
    """A ``pickle_module`` for :func:`torch.load` that finds a class pickled from a script
    (``__main__.LeNet5``) in the file ``--model`` names."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "__main__" and cls is not None and name == cls.__name__:
                return cls
            return super().find_class(module, name)

    return types.SimpleNamespace(
        __name__="pickle", Unpickler=Unpickler, load=pickle.load, loads=pickle.loads
    )


def _load_pickled_module(path: Path, model: str | None) -> Any:
    """A whole pickled module: its class must import (``model=`` names its file)."""
    cls = import_class(model) if model is not None else None
    try:
        # The user's own file, which she asked us to read: unpickling runs its classes' code.
        return torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=_pickle_module(cls)
        )
    except (ModuleNotFoundError, AttributeError) as exc:
        raise UserError(
            f"{path} is a pickled model whose class cannot be imported ({_first_line(exc)});"
            " pass --model path/to/file.py:ClassName, or save its state_dict instead"
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path} {_NOT_A_MODEL} ({_first_line(exc)})") from None
