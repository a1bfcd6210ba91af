"""The reference model against an independent plain-loop implementation of the contract."""

from __future__ import annotations

import numpy as np
import pytest

from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import Conv2d, Dense, Flatten, MaxPool2d, SparseDense
from squeezeforge.sim.numerics import quantize
from squeezeforge.sim.random_layers import (
    random_activations,
    random_conv2d,
    random_dense,
    random_net,
    random_sparse_dense,
)
from squeezeforge.sim.reference import net_inputs, predictions, run_layer, run_net


def _requant_loop(acc: int, layer) -> int:
    """The contract spelled out with Python integers: round half up, saturate, ReLU."""
    s = layer.shift
    y = acc if s == 0 else (acc + (1 << (s - 1))) >> s  # Python >> floors, as arithmetic shift
    lo = -(1 << (layer.output_format.bits - 1))
    hi = (1 << (layer.output_format.bits - 1)) - 1
    y = min(max(y, lo), hi)
    return max(y, 0) if layer.relu else y


def conv_loop(layer: Conv2d, x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    kh, kw = layer.kernel
    s, p = layer.stride, layer.padding
    oh, ow = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    wv = layer.weight_values()
    out = np.zeros((n, layer.out_channels, oh, ow), dtype=np.int64)
    for b in range(n):
        for m in range(layer.out_channels):
            for oy in range(oh):
                for ox in range(ow):
                    acc = int(layer.bias[m])
                    for ci in range(c):
                        for ky in range(kh):
                            for kx in range(kw):
                                iy, ix = oy * s + ky - p, ox * s + kx - p
                                if 0 <= iy < h and 0 <= ix < w:
                                    acc += int(x[b, ci, iy, ix]) * int(wv[m, ci, ky, kx])
                    out[b, m, oy, ox] = _requant_loop(acc, layer)
    return out


def dense_loop(layer, x: np.ndarray) -> np.ndarray:
    wv = layer.weight_values()
    out = np.zeros((x.shape[0], wv.shape[0]), dtype=np.int64)
    for b in range(x.shape[0]):
        for o in range(wv.shape[0]):
            products = (int(a) * int(w) for a, w in zip(x[b], wv[o], strict=True))
            acc = int(layer.bias[o]) + sum(products)
            out[b, o] = _requant_loop(acc, layer)
    return out


def pool_loop(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    out = np.zeros((n, c, h // 2, w // 2), dtype=np.int64)
    for idx in np.ndindex(out.shape):
        b, ch, y, xx = idx
        out[idx] = max(int(x[b, ch, 2 * y + i, 2 * xx + j]) for i in (0, 1) for j in (0, 1))
    return out


KINDS = ["fixed", "pow2", "codebook"]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("kind", ["fixed", "pow2"])
def test_conv_matches_loop(kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    layer = random_conv2d(rng, kind=kind, extreme=seed == 0, density=0.7)
    h, w = int(rng.integers(3, 8)), int(rng.integers(3, 8))
    x = random_activations(rng, layer.input_format, (2, layer.in_channels, h, w), extreme=seed == 0)
    assert np.array_equal(run_layer(layer, x), conv_loop(layer, x))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("kind", KINDS)
def test_dense_matches_loop(kind: str, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    layer = random_dense(rng, kind=kind, extreme=seed == 0)
    x = random_activations(rng, layer.input_format, (3, layer.in_features), extreme=seed < 2)
    assert np.array_equal(run_layer(layer, x), dense_loop(layer, x))


@pytest.mark.parametrize("bits", [2, 8, 16])
def test_extreme_widths_saturate_exactly(bits: int) -> None:
    # Most-negative times most-negative over a long fan-in: the worst case for width derivation.
    rng = np.random.default_rng(bits)
    layer = random_dense(
        rng, in_features=300, out_features=3, act_bits=bits, weight_bits=bits, extreme=True
    )
    x = np.full((1, 300), layer.input_format.min)
    acc_max = 300 * layer.input_format.min * layer.weight_format.value_range[0]
    assert acc_max.bit_length() + 1 <= layer.acc_bits
    assert np.array_equal(run_layer(layer, x), dense_loop(layer, x))


@pytest.mark.parametrize("seed", range(6))
def test_sparse_dense_equals_its_dense_form(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    layer = random_sparse_dense(rng, kind=KINDS[seed % 3], density=0.3)
    x = random_activations(rng, layer.input_format, (3, layer.in_features), density=0.5)
    assert np.array_equal(run_layer(layer, x), dense_loop(layer, x))


def test_pool_and_flatten_match_loop() -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, size=(2, 3, 5, 7))
    assert np.array_equal(run_layer(MaxPool2d("p"), x), pool_loop(x))
    flat = run_layer(Flatten("f"), x)
    assert flat.shape == (2, 105) and flat[1, 36] == x[1, 1, 0, 1]


def test_whole_net_taps_chain() -> None:
    net = random_net(np.random.default_rng(3), n_tests=5)
    taps = run_net(net, net.test_inputs, taps=True)
    assert len(taps) == len(net.layers)
    assert np.array_equal(taps[-1], net.test_outputs)
    x = net.test_inputs.astype(np.int64)
    for layer, tap in zip(net.layers, taps, strict=True):
        if isinstance(layer, Conv2d):
            expect = conv_loop(layer, x)
        elif isinstance(layer, Dense | SparseDense):
            expect = dense_loop(layer, x)
        elif isinstance(layer, MaxPool2d):
            expect = pool_loop(x)
        else:
            expect = x.reshape(x.shape[0], -1)
        assert np.array_equal(tap, expect), layer.name
        x = tap


def test_golden_comparison_detects_corruption() -> None:
    net = random_net(np.random.default_rng(4), n_tests=3)
    corrupted = net.test_outputs.copy()
    corrupted[1, 2] += 1
    assert not np.array_equal(run_net(net, net.test_inputs), corrupted)


def test_rejects_inputs_outside_format() -> None:
    net = random_net(np.random.default_rng(5), n_tests=1)
    bad = net.test_inputs.copy()
    bad[0, 0, 0, 0] = net.input_format.max + 1
    with pytest.raises(ValueError, match="outside the input format"):
        run_net(net, bad)


def test_predictions_first_max_wins() -> None:
    assert predictions(np.array([[1, 5, 5], [7, 0, 7]])).tolist() == [1, 0]


def test_net_inputs_quantizes_floats_and_checks_integers() -> None:
    net = random_net(np.random.default_rng(3), n_tests=4)
    fmt = net.input_format
    x = np.random.default_rng(4).uniform(-3, 3, (5, *net.input_shape))
    assert np.array_equal(net_inputs(net, x), quantize(x, fmt))
    assert net_inputs(net, x[0]).shape == (1, *net.input_shape)
    ints = net.test_inputs.astype(np.int16)
    got = net_inputs(net, ints)
    assert got.dtype == np.int64 and np.array_equal(got, ints)
    edge = np.full((1, *net.input_shape), fmt.max)
    assert np.array_equal(net_inputs(net, edge), edge)
    with pytest.raises(UserError, match="outside the input format"):
        net_inputs(net, edge + 1)
    with pytest.raises(UserError, match="expected integers"):
        net_inputs(net, x, floats=False)
    with pytest.raises(UserError, match="mine: holds NaN"):
        net_inputs(net, np.where(x > 2, np.nan, x), what="mine")
    with pytest.raises(UserError, match="the net takes"):
        net_inputs(net, x.reshape(5, -1))
