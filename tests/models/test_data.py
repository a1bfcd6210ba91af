import gzip
import struct

import numpy as np
import pytest

from squeezeforge.models.data import load_digits, load_mnist_idx
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
