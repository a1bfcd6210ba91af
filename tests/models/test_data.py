import gzip
import struct

import numpy as np
import pytest

from squeezeforge.models.data import as_dataset, load_dataset, load_digits, load_mnist_idx
from squeezeforge.sim.errors import UserError


def test_digits_split_is_fixed_and_stratified():
    a, b = load_digits(), load_digits()
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert 0.0 <= a.x_train.min() and a.x_train.max() == 1.0
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~10% of 360 per class
    other = load_digits(seed=1)
    assert not np.array_equal(other.y_test, a.y_test)


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload


@pytest.fixture
def mnist_pair(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    img = tmp_path / "img-idx3-ubyte"
    lbl = tmp_path / "lbl-idx1-ubyte.gz"
    img.write_bytes(_idx(0x803, (5, 28, 28), images.tobytes()))
    with gzip.open(lbl, "wb") as f:
        f.write(_idx(0x801, (5,), labels.tobytes()))
    return img, lbl, images, labels


def test_mnist_idx_reads_raw_and_gzip(mnist_pair):
    img, lbl, images, labels = mnist_pair
    x, y = load_mnist_idx(img, lbl)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0] * 255.0, images, atol=1e-4)
    np.testing.assert_array_equal(y, labels)


def test_mnist_idx_rejects_swapped_files(mnist_pair):
    img, lbl, _, _ = mnist_pair
    with pytest.raises(UserError, match="magic number 0x00000801, expected 0x00000803"):
        load_mnist_idx(lbl, img)


def test_mnist_idx_rejects_bad_sizes(tmp_path, mnist_pair):
    img, lbl, _, _ = mnist_pair
    short = tmp_path / "short"
    short.write_bytes(img.read_bytes()[:-10])
    with pytest.raises(UserError, match="header promises 3920 bytes"):
        load_mnist_idx(short, lbl)
    few = tmp_path / "few-labels"
    few.write_bytes(_idx(0x801, (4,), bytes(4)))
    with pytest.raises(UserError, match="5 images but 4 labels"):
        load_mnist_idx(img, few)
    with pytest.raises(UserError, match="does not exist"):
        load_mnist_idx(tmp_path / "missing", lbl)


def _arrays(rng=None):
    rng = rng or np.random.default_rng(0)
    return {
        "x_train": rng.random((20, 5)).astype(np.float32),
        "y_train": rng.integers(0, 3, 20),
        "x_test": rng.random((6, 5)).astype(np.float32),
        "y_test": rng.integers(0, 3, 6),
    }


def test_npz_data_set(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "tab.npz", **arrays)
    data = load_dataset(tmp_path / "tab.npz")
    assert data.name == "tab" and data.input_shape == (5,)
    assert data.x_train.dtype == np.float32 and data.y_test.dtype == np.int64
    assert np.array_equal(data.y_train, arrays["y_train"])


def test_digits_by_name_and_upsampled():
    assert load_dataset("digits").input_shape == (1, 8, 8)
    big = load_dataset("digits28")
    assert big.input_shape == (1, 28, 28) and big.name == "digits28"
    assert np.array_equal(big.y_test, load_digits().y_test)


def test_mnist_folder(tmp_path, mnist_pair):
    images, labels, x, y = mnist_pair
    for prefix in ("train", "t10k"):
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(images.read_bytes())
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(labels.read_bytes())
    data = load_dataset(tmp_path)
    assert np.array_equal(data.y_train, y) and data.x_test.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(data.x_test[:, 0] * 255.0, x, atol=1e-4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("y_test"), r"lacks y_test \(it holds x_train, y_train, x_test\)"),
        (
            lambda a: a.update(y_test=np.zeros((6, 2))),
            r"y_train targets are \[\], y_test targets \[2\]",
        ),
        (lambda a: a.update(y_test=np.full(6, np.nan)), r"y_test holds NaN or infinite values"),
        (lambda a: a.update(y_train=np.zeros((20, 2, 2))), r"expected \(N,\) or \(N, K\) targets"),
        (lambda a: a.update(x_train=np.full((20, 5), np.nan)), r"x_train holds NaN or infinite"),
        (lambda a: a.update(x_test=np.full((6, 5), np.inf)), r"x_test holds NaN or infinite"),
        (lambda a: a.update(y_train=-a["y_train"] - 1), r"y_train has a negative label"),
        (
            lambda a: a.update(y_train=a["y_train"] + 0.5),
            r"y_train holds values that are not class",
        ),
        (lambda a: a.update(y_test=np.zeros((6, 2))), r"expected one class index per sample"),
        (lambda a: a.update(y_test=a["y_test"] + 10), r"y_test has label 1\d, never seen"),
        (lambda a: a.update(y_train=a["y_train"][:5]), r"x_train has 20 samples but y_train has 5"),
        (lambda a: a.update(x_test=np.zeros((6, 4))), r"x_train samples are \[5\], x_test"),
        (lambda a: a.update(x_train=np.zeros(20)), r"x_train has shape \[20\]; expected"),
    ],
)
def test_bad_npz_is_one_line(tmp_path, change, message):
    arrays = _arrays()
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    # Real-valued labels are regression targets unless the user says they are classes.
    task = "regression" if "targets" in message or "y_test holds NaN" in message else None
    task = "classification" if "class" in message else task
    with pytest.raises(UserError, match=message) as err:
        load_dataset(tmp_path / "bad.npz", task=task)
    assert "\n" not in str(err.value)


def test_the_task_follows_the_labels(tmp_path):
    arrays = _arrays()
    assert as_dataset(**arrays).task == "classification"
    real = dict(arrays, y_train=arrays["y_train"] + 0.25, y_test=arrays["y_test"] * 1.0)
    data = as_dataset(**real)
    assert data.task == "regression" and data.y_train.dtype == np.float32
    whole = dict(arrays, y_train=arrays["y_train"] * 1.0)
    assert as_dataset(**whole).task == "classification"
    assert as_dataset(**whole, task="regression").task == "regression"
    wide = dict(arrays, y_train=np.zeros((20, 3)), y_test=np.ones((6, 3)))
    assert as_dataset(**wide).y_test.shape == (6, 3)


def test_bad_data_paths(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    (tmp_path / "data.csv").write_text("1,2\n")
    for spec, message in [
        (tmp_path / "none.npz", r"does not exist"),
        (tmp_path / "junk.npz", r"is not a readable \.npz"),
        (tmp_path / "data.csv", r"expected an \.npz file or an MNIST folder"),
        (tmp_path, r"has no train-images-idx3-ubyte\[\.gz\]"),
    ]:
        with pytest.raises(UserError, match=message):
            load_dataset(spec)
