"""Data sets: the embedded digits set (the default) and MNIST IDX files a user already has.

The digits set is scikit-learn's ``load_digits()``: 1,797 grey images of 8x8 with pixels 0..16,
shipped inside scikit-learn, so nothing is downloaded. Pixels are scaled to [0, 1] (x / 16) and
the set is split once, stratified by class, with a fixed seed: every run, every machine and every
engineer sees the same 1,437 training and 360 test images.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from squeezeforge.sim.errors import UserError

__all__ = ["DIGITS_SEED", "DIGITS_TEST_FRACTION", "Dataset", "load_digits", "load_mnist_idx"]

DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.2

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte), the rank.
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


@dataclass(frozen=True)
class Dataset:
    """A train/test split of images (N, 1, H, W) float32 in [0, 1] and labels (N,) int64."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self) -> None:
        # A NaN pixel quantizes to garbage and poisons calibration; refuse it where data enters.
        for split in ("x_train", "x_test"):
            x = getattr(self, split)
            if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.isfinite(x).all():
                raise UserError(f"data set {self.name!r}: {split} holds NaN or infinite values")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_digits(seed: int = DIGITS_SEED, test_fraction: float = DIGITS_TEST_FRACTION) -> Dataset:
    """The embedded digits set, split stratified by class (20% test = 360 images by default)."""
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Dataset(
        name="digits",
        x_train=np.ascontiguousarray(x_train),
        y_train=np.ascontiguousarray(y_train),
        x_test=np.ascontiguousarray(x_test),
        y_test=np.ascontiguousarray(y_test),
    )


def _read_idx(path: str | os.PathLike, magic: int, what: str) -> tuple[tuple[int, ...], bytes]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"MNIST {what} file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"MNIST {what} file {path} is unreadable: {exc}") from None
    if len(data) < 4:
        raise UserError(f"MNIST {what} file {path} is too short to be an IDX file")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise UserError(
            f"MNIST {what} file {path}: magic number 0x{found:08x}, expected 0x{magic:08x}"
            f" (is it the {what} file, uncompressed or .gz?)"
        )
    rank = magic & 0xFF
    header = 4 + 4 * rank
    if len(data) < header:
        raise UserError(f"MNIST {what} file {path}: header is cut short")
    dims = struct.unpack(f">{rank}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise UserError(
            f"MNIST {what} file {path}: header promises {expected} bytes of data for shape"
            f" {dims}, file holds {len(data) - header}"
        )
    return dims, data[header:]


def load_mnist_idx(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-style pair of IDX files (raw or ``.gz``).

    Returns images (N, 1, H, W) float32 scaled to [0, 1] (x / 255) and labels (N,) int64.
    Magic numbers, sizes and the image/label counts are checked; any mismatch is a
    :class:`~squeezeforge.sim.errors.UserError` naming the file.
    """
    (n, h, w), pixels = _read_idx(images_path, _IDX_IMAGES_MAGIC, "images")
    (m,), labels = _read_idx(labels_path, _IDX_LABELS_MAGIC, "labels")
    if n != m:
        raise UserError(f"MNIST files disagree: {n} images but {m} labels")
    x = np.frombuffer(pixels, dtype=np.uint8).reshape(n, 1, h, w).astype(np.float32) / 255.0
    y = np.frombuffer(labels, dtype=np.uint8).astype(np.int64)
    if y.size and y.max() > 9:
        raise UserError(f"MNIST labels file {labels_path}: label {int(y.max())} is not a digit")
    return x, y
