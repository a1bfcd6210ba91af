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
from squeezeforge.sim.metrics import Task, task_of

__all__ = [
    "DIGITS_SEED",
    "DIGITS_TEST_FRACTION",
    "Dataset",
    "as_dataset",
    "load_dataset",
    "load_digits",
    "load_mnist_idx",
]

DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.2

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte), the rank.
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


@dataclass(frozen=True)
class Dataset:
    """A train/test split: inputs (N, ...) float32 and targets, either class indices (N,)
    int64 (classification) or real values (N,) or (N, K) float32 (regression)."""

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
    def task(self) -> Task:
        return task_of(self.y_train)

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_digits(
    seed: int = DIGITS_SEED, test_fraction: float = DIGITS_TEST_FRACTION, *, size: int = 8
) -> Dataset:
    """The embedded digits set, split stratified by class (20% test = 360 images by default).

    ``size`` > 8 upsamples the images (bilinear) to ``size`` x ``size``: a stand-in for a model
    built for larger inputs, such as LeNet-5's 28x28, since nothing can be downloaded here.
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    if size != 8:
        if not 8 <= size <= 256:
            raise UserError(f"digits size {size}: choose 8..256")
        import torch
        import torch.nn.functional as F

        x = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear").numpy()
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Dataset(
        name="digits" if size == 8 else f"digits{size}",
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


_NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_MNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def as_dataset(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    name: str = "data",
    task: Task | None = None,
) -> Dataset:
    """A :class:`Dataset` from arrays, checked: shapes agree, values finite, labels are class
    indices (integers from 0). Every problem is one :class:`UserError` naming the array.

    ``task`` None guesses from the labels: integer-valued labels (N,) are class indices; float
    labels with a fraction, or labels of shape (N, K), are regression targets. Pass
    ``"regression"`` for real-valued targets that happen to be whole numbers.
    """
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    if task not in (None, "classification", "regression"):
        raise UserError(f"{name}: task must be 'classification' or 'regression', got {task!r}")
    if task is None:
        ys = [np.asarray(y) for y in (y_train, y_test)]
        numeric = all(np.issubdtype(y.dtype, np.number) for y in ys)
        real = numeric and any(
            y.ndim != 1
            or (np.issubdtype(y.dtype, np.floating) and not np.all(y[np.isfinite(y)] % 1 == 0))
            for y in ys
        )
        task = "regression" if real else "classification"
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        a = np.asarray(value)
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise UserError(f"{name}: {key} is not a numeric array (dtype {a.dtype})")
        if key.startswith("x"):
            if a.ndim < 2:
                raise UserError(f"{name}: {key} has shape {list(a.shape)}; expected (N, ...)")
            if not np.all(np.isfinite(a)):
                raise UserError(f"{name}: {key} holds NaN or infinite values")
            out[key] = np.ascontiguousarray(a, dtype=np.float32)
        elif task == "regression":
            if a.ndim not in (1, 2):
                raise UserError(
                    f"{name}: {key} has shape {list(a.shape)}; expected (N,) or (N, K) targets"
                )
            if not np.all(np.isfinite(a)):
                raise UserError(f"{name}: {key} holds NaN or infinite values")
            out[key] = np.ascontiguousarray(a, dtype=np.float32)
        else:
            if a.ndim != 1:
                raise UserError(
                    f"{name}: {key} has shape {list(a.shape)}; expected one class index per sample"
                )
            if not np.issubdtype(a.dtype, np.integer):
                if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                    raise UserError(f"{name}: {key} holds values that are not class indices")
            if a.size and a.min() < 0:
                raise UserError(f"{name}: {key} has a negative label ({int(a.min())})")
            out[key] = np.ascontiguousarray(a, dtype=np.int64)
    for split in ("train", "test"):
        nx, ny = len(out[f"x_{split}"]), len(out[f"y_{split}"])
        if nx != ny:
            raise UserError(f"{name}: x_{split} has {nx} samples but y_{split} has {ny}")
        if nx == 0:
            raise UserError(f"{name}: x_{split} is empty")
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise UserError(
            f"{name}: x_train samples are {list(out['x_train'].shape[1:])}, x_test samples"
            f" {list(out['x_test'].shape[1:])}"
        )
    if task == "regression":
        if out["y_train"].shape[1:] != out["y_test"].shape[1:]:
            raise UserError(
                f"{name}: y_train targets are {list(out['y_train'].shape[1:])}, y_test targets"
                f" {list(out['y_test'].shape[1:])}"
            )
        return Dataset(name=name, **out)
    classes = int(out["y_train"].max()) + 1
    if int(out["y_test"].max()) >= classes:
        raise UserError(
            f"{name}: y_test has label {int(out['y_test'].max())}, never seen in y_train"
            f" (labels 0..{classes - 1})"
        )
    return Dataset(name=name, **out)


def load_dataset(spec: str | os.PathLike, task: Task | None = None) -> Dataset:
    """A user's data set from a file: ``digits`` (the default), ``digits28`` (upsampled), an
    ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``, or a folder of the four MNIST
    IDX files (``train-images-idx3-ubyte`` ... optionally ``.gz``). ``task`` is as for
    :func:`as_dataset` (None: guessed from the labels)."""
    text = str(spec)
    if text == "digits" or (text.startswith("digits") and text[6:].isdigit()):
        return load_digits(size=int(text[6:] or 8))
    path = Path(spec)
    if path.is_dir():
        files = []
        for base in _MNIST_NAMES:
            found = [path / n for n in (base, base + ".gz") if (path / n).is_file()]
            if not found:
                raise UserError(f"data folder {path} has no {base}[.gz] (an MNIST-style folder)")
            files.append(found[0])
        x_train, y_train = load_mnist_idx(files[0], files[1])
        x_test, y_test = load_mnist_idx(files[2], files[3])
        return as_dataset(x_train, y_train, x_test, y_test, name=path.name)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    if path.suffix != ".npz":
        raise UserError(f"data file {path}: expected an .npz file or an MNIST folder")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in _NPZ_ARRAYS if k not in archive.files]
            if missing:
                raise UserError(
                    f"data file {path} lacks {', '.join(missing)} (it holds"
                    f" {', '.join(archive.files) or 'nothing'})"
                )
            arrays = {k: archive[k] for k in _NPZ_ARRAYS}
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file, whatever numpy says
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"data file {path} is not a readable .npz ({first})") from None
    return as_dataset(**arrays, name=path.stem, task=task)
