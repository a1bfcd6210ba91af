"""Fuzzing the front end: for random small models with random formats, masks and inputs, the
fake-quantized torch model (models/quant.py) and the bit-accurate reference (on the exported
net) agree on every score, hence on every prediction.

Hypothesis draws the model (convs with k x 1 and 1 x k kernels, strides, padding, ReLU, 2x2
pools, linear layers), each layer's weight format (fixed point, INQ power of two, codebook),
activation formats (2..16 bits, negative and large fraction lengths), the pruning mask (empty,
one weight, random, full) and inputs in and far outside the input format's range.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from squeezeforge.models import export as export_mod
from squeezeforge.models.data import Dataset
from squeezeforge.models.quant import (
    CodebookQuantizer,
    CompressedLayer,
    FixedQuantizer,
    Pow2Quantizer,
    activation_frac,
    prepare,
)
from squeezeforge.models.train import predict
from squeezeforge.sim.numerics import FixedFormat, FixedWeights, Pow2Weights
from squeezeforge.sim.reference import predictions

IMAGES = 16


@st.composite
def small_models(draw) -> tuple[nn.Sequential, tuple[int, ...]]:
    """A small conv/linear stack and its input shape."""
    torch.manual_seed(draw(st.integers(0, 2**31 - 1)))
    modules: list[nn.Module] = []
    if draw(st.booleans()):
        c, h, w = draw(st.integers(1, 3)), draw(st.integers(2, 8)), draw(st.integers(2, 8))
        shape: tuple[int, ...] = (c, h, w)
        for _ in range(draw(st.integers(1, 2))):
            pad = draw(st.integers(0, 2))
            kh = draw(st.integers(1, min(4, h + 2 * pad)))
            kw = draw(st.integers(1, min(4, w + 2 * pad)))
            stride = draw(st.integers(1, 3))
            m = draw(st.integers(1, 5))
            modules.append(nn.Conv2d(c, m, (kh, kw), stride=stride, padding=pad))
            c, h, w = m, (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
            if draw(st.booleans()):
                modules.append(nn.ReLU())
            if h >= 2 and w >= 2 and draw(st.booleans()):
                modules.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        modules.append(nn.Flatten())
        features = c * h * w
    else:
        features = draw(st.integers(1, 40))
        shape = (features,)
    for i in range(draw(st.integers(1, 3))):
        out = draw(st.integers(1, 12))
        modules.append(nn.Linear(features, out))
        features = out
        if draw(st.booleans()) and i < 2:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules), shape


def _mask(draw, shape: torch.Size) -> torch.Tensor:
    kind = draw(st.sampled_from(["random", "full", "random", "full", "random", "empty", "one"]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    if kind == "full":
        return torch.ones(shape)
    if kind == "empty":
        return torch.zeros(shape)
    if kind == "one":
        mask = torch.zeros(shape).flatten()
        mask[int(torch.randint(0, mask.numel(), (1,), generator=gen))] = 1.0
        return mask.reshape(shape)
    return (torch.rand(shape, generator=gen) < 0.5).float()


@st.composite
def compressed(draw) -> tuple[nn.Sequential, Dataset]:
    """A prepared model with every layer's formats and weights set, and random inputs.

    Each output format is placed from the layer's actual accumulator range on these inputs
    (Ristretto's rule) and moved by a drawn offset, so outputs are mostly informative, sometimes
    saturated or rounded away.
    """
    model, shape = draw(small_models())
    prepared = prepare(model).double()
    fmt = FixedFormat(draw(st.integers(2, 16)), draw(st.integers(-4, 16)))
    gen_x = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    # Inputs inside the input format's range and up to twice beyond it (they saturate).
    span = 2.0 ** (fmt.bits - 1 - fmt.frac) * draw(st.sampled_from([0.5, 1.0, 2.0]))
    x = ((gen_x.random((IMAGES, *shape)) * 2 - 1) * span).astype(np.float32)
    h = torch.as_tensor(x, dtype=torch.float64)
    for m in prepared:
        if not isinstance(m, CompressedLayer):
            with torch.no_grad():
                h = m(h)
            continue
        weight = m.layer.weight
        m.mask = _mask(draw, weight.shape).double()
        kind = draw(st.sampled_from(["fixed", "pow2", "codebook"]))
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        if kind == "fixed":
            bits = draw(st.integers(2, 16))
            wfmt = FixedWeights(bits, draw(st.integers(-4, 20)))
            # Weights spread over the format's range, some of them saturating.
            scale = 2.0 ** (bits - 1 - wfmt.frac) * draw(st.sampled_from([0.7, 1.0, 2.0]))
            w = (torch.rand(weight.shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale
            m.layer.weight.data = w * m.mask
            m.weight_quantizer = FixedQuantizer(wfmt)
        elif kind == "pow2":
            bits = draw(st.integers(2, 6))
            n1 = draw(st.integers(-8, 4))
            pfmt = Pow2Weights(bits, n1, n1 + 1 - (1 << (bits - 2)))
            q = Pow2Quantizer(pfmt, weight.shape)
            e = torch.randint(pfmt.n2, pfmt.n1 + 1, weight.shape, generator=gen).double()
            sign = torch.randint(0, 2, weight.shape, generator=gen).double() * 2 - 1
            q.frozen[...] = True
            q.values = sign * 2.0**e * m.mask
            m.weight_quantizer = q
        else:
            k = draw(st.integers(1, 4))
            vf = FixedFormat(draw(st.integers(2, 16)), draw(st.integers(-4, 16)))
            # Pruned weights point at the zero entry, as the weight-sharing pass leaves them.
            index = torch.randint(1, 1 << k, weight.shape, generator=gen) * (m.mask != 0)
            spread = 2.0 ** (vf.bits - 1 - vf.frac) * 1.5  # some centroids saturate
            centroids = (torch.rand((1 << k) - 1, generator=gen) * 2 - 1) * spread
            m.weight_quantizer = CodebookQuantizer(index, centroids, k, vf)
        wf = m.weight_format()
        acc_frac = fmt.frac + wf.frac
        m.input_format = fmt
        m.output_format = None
        # Biases on the scale of the products (or none, or dominating them).
        m.layer.bias.data.zero_()
        with torch.no_grad():
            products = float(m(h).abs().max()) or 1.0
        bias_scale = products * draw(st.sampled_from([0.0, 0.1, 0.5, 1.0, 4.0]))
        bias = torch.rand(m.layer.bias.shape, generator=gen, dtype=torch.float64) * 2 - 1
        m.layer.bias.data = bias * bias_scale
        with torch.no_grad():
            peak = float(m(h).abs().max())
        bits = draw(st.integers(2, 16))
        frac = activation_frac(bits, peak) + draw(st.sampled_from([0, 0, 0, -1, 1, -3, 3]))
        frac = max(acc_frac - 63, -32, min(frac, acc_frac, 32))
        m.output_format = FixedFormat(bits, frac)
        with torch.no_grad():
            h = m(h)
        fmt = m.output_format
    labels = np.zeros(IMAGES, dtype=np.int64)
    return prepared, Dataset("fuzz", x, labels, x, labels)


def _scores(prepared: nn.Sequential, data: Dataset) -> tuple[np.ndarray, np.ndarray, object]:
    net = export_mod.to_net(prepared, data)
    fake = predict(copy.deepcopy(prepared).double(), data.x_test)
    scaled = fake.reshape(len(fake), -1) * 2.0**net.output_format.frac
    return scaled, net.test_outputs.reshape(len(fake), -1), net


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compressed())
def test_fake_quant_and_reference_agree_on_every_prediction(case) -> None:
    prepared, data = case
    scaled, reference, net = _scores(prepared, data)
    # Exact in float64 (every accumulator here is far below 53 bits): the fake-quantized scores
    # are the reference's integers times 2**-frac, so every prediction agrees as well.
    assert math.isfinite(float(np.abs(scaled).sum()))
    np.testing.assert_array_equal(scaled, reference)
    np.testing.assert_array_equal(np.argmax(scaled, axis=1), predictions(reference))


def test_the_comparison_fails_on_a_corrupted_reference() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    prepared = prepare(model)
    layer = prepared[0]
    layer.weight_quantizer = FixedQuantizer(FixedWeights(8, 4))
    layer.input_format = FixedFormat(8, 4)
    layer.output_format = FixedFormat(8, 4)
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    labels = np.zeros(3, dtype=np.int64)
    scaled, reference, _ = _scores(prepared, Dataset("t", x, labels, x, labels))
    np.testing.assert_array_equal(scaled, reference)
    bad = reference.copy()
    bad[1, 2] += 1
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(scaled, bad)
