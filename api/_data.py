"""A data set in the forms a notebook holds one, turned into a checked ``Dataset``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from squeezeforge.models.data import Dataset, as_dataset
from squeezeforge.sim.errors import UserError

__all__ = ["to_dataset"]

_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Enough to keep a DataLoader made here from costing one Python call per sample.
_BATCH = 256


def _array(value: Any) -> Any:
    """A torch tensor as NumPy (np.asarray of a tensor that needs grad fails); anything else
    unchanged, for ``as_dataset`` to check."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


def _is_torch_data(value: Any) -> bool:
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as TorchDataset

    return isinstance(value, DataLoader | TorchDataset)


def _from_torch(value: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Every (inputs, labels) sample of a torch Dataset or DataLoader, stacked."""
    from torch.utils.data import DataLoader

    loader = value if isinstance(value, DataLoader) else DataLoader(value, batch_size=_BATCH)
    xs, ys = [], []
    for batch in loader:
        if not isinstance(batch, Sequence) or len(batch) != 2:
            raise UserError(
                f"data: each {split} sample must be a pair (inputs, label), got"
                f" {type(batch).__name__}"
                + (f" of {len(batch)}" if isinstance(batch, Sequence) else "")
            )
        x, y = (np.asarray(_array(b)) for b in batch)
        xs.append(x)
        ys.append(y.reshape(-1))
    if not xs:
        raise UserError(f"data: the {split} set is empty")
    return np.concatenate(xs), np.concatenate(ys)


def to_dataset(data: Any) -> Dataset | None:
    """``data`` as a :class:`Dataset`: None (the digits set, chosen later), a Dataset, a dict
    with ``x_train``, ``y_train``, ``x_test``, ``y_test``, those four arrays as a tuple, or a
    pair (train, test) of torch ``Dataset``/``DataLoader`` objects yielding (inputs, label)."""
    if data is None or isinstance(data, Dataset):
        return data
    if isinstance(data, Mapping):
        missing = [k for k in _KEYS if k not in data]
        if missing:
            raise UserError(f"data: the dict lacks {', '.join(missing)} (it needs {_KEYS})")
        return as_dataset(*(_array(data[k]) for k in _KEYS), name="data")
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if len(data) == 4:
            return as_dataset(*(_array(a) for a in data), name="data")
        if len(data) == 2 and all(_is_torch_data(d) for d in data):
            x_train, y_train = _from_torch(data[0], "train")
            x_test, y_test = _from_torch(data[1], "test")
            return as_dataset(x_train, y_train, x_test, y_test, name="data")
    raise UserError(
        "data: expected (x_train, y_train, x_test, y_test) arrays, a dict of them, a"
        " squeezeforge Dataset, or a pair (train, test) of torch Datasets or DataLoaders; got"
        f" {type(data).__name__}"
    )
