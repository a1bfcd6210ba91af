"""Each compression pass on its own: the paper's formulas, masks, codebooks, shapes, folding."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from squeezeforge.models.compress import (
    INQ,
    Context,
    FilterPrune,
    Finetune,
    FixedPoint,
    MagnitudePrune,
    WeightShare,
    fold_batchnorm,
    inq_round,
    kmeans_1d,
)
from squeezeforge.models.compress.inq import freeze_portion
from squeezeforge.models.export import to_net
from squeezeforge.models.quant import CodebookQuantizer, CompressedLayer, Pow2Quantizer, prepare
from squeezeforge.models.train import Distillation, fit, predict
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import Conv2d, Dense, SparseDense
from squeezeforge.sim.numerics import Pow2Weights
from squeezeforge.sim.reference import run_net

ONE_EPOCH = Finetune(epochs=1, lr=1e-3)


def _layer(model: nn.Module, name: str) -> CompressedLayer:
    m = getattr(model, name)
    assert isinstance(m, CompressedLayer)
    return m


# --- INQ ---------------------------------------------------------------------------------------


def test_inq_set_follows_the_paper():
    # The paper's example: b = 3 and n1 = -1 give n2 = -2, P = {0, ±1/4, ±1/2}.
    fmt = Pow2Weights.for_max(3, 0.6)  # 4s/3 = 0.8 -> n1 = floor(log2 0.8) = -1
    assert (fmt.n1, fmt.n2) == (-1, -2)
    for s in (0.01, 0.3, 0.74, 1.0, 1.49, 5.0):
        for b in (3, 4, 5, 6):
            f = Pow2Weights.for_max(b, s)
            assert f.n1 == math.floor(math.log2(4 * s / 3))
            assert f.n2 == f.n1 + 1 - 2 ** (b - 1) // 2
            assert s < 1.5 * 2.0**f.n1  # so no weight starts beyond INQ's top interval


def _inq_round_brute(w: float, fmt: Pow2Weights) -> float:
    """The paper's rule, one weight at a time: beta*sgn(w) if (alpha+beta)/2 <= |w| < 3beta/2."""
    powers = [2.0**e for e in range(fmt.n2, fmt.n1 + 1)]
    for i, beta in enumerate(powers):
        alpha = powers[i - 1] if i else 0.0
        if (alpha + beta) / 2 <= abs(w) < 1.5 * beta:
            return math.copysign(beta, w)
    return 0.0


def test_inq_rounding_matches_the_formula():
    fmt = Pow2Weights.for_max(3, 0.6)  # P = {0, ±0.25, ±0.5}
    w = torch.tensor([0.1, 0.125, 0.3749, 0.375, 0.7499, -0.3, -0.12, 0.0])
    expected = [0.0, 0.25, 0.25, 0.5, 0.5, -0.25, 0.0, 0.0]
    assert inq_round(w, fmt).tolist() == expected
    rng = np.random.default_rng(0)
    for bits in (3, 5, 6):
        fmt = Pow2Weights.for_max(bits, 0.8)
        values = rng.uniform(-0.8, 0.8, size=500) * rng.choice([1, 0.1, 0.01], size=500)
        got = inq_round(torch.as_tensor(values), fmt).numpy()
        np.testing.assert_array_equal(got, [_inq_round_brute(v, fmt) for v in values])
    # Beyond 3 * 2**n1 / 2 the formula gives 0; a weight that grew there keeps the top power.
    assert inq_round(torch.tensor([-0.9]), Pow2Weights.for_max(3, 0.6)).tolist() == [-0.5]


def test_inq_partitions_by_magnitude_and_freezes(digits, cnn_short):
    model = prepare(cnn_short)
    before = _layer(model, "fc1").layer.weight.detach().clone()
    inq = INQ(bits=5, portions=(0.5, 1.0), layers=["fc1"], finetune=ONE_EPOCH)
    with pytest.raises(UserError, match="portions must increase and end at 1.0"):
        INQ(bits=5, portions=(0.5,))
    # The first portion by hand, to look at the partition.
    partial = copy.deepcopy(model)
    fc1 = _layer(partial, "fc1")
    fc1.weight_quantizer = Pow2Quantizer(
        Pow2Weights.for_max(5, float(before.abs().max())), before.shape
    )
    freeze_portion(fc1, 0.5)
    frozen = fc1.weight_quantizer.frozen
    assert int(frozen.sum()) == math.ceil(0.5 * before.numel())
    assert before.abs()[frozen].min() >= before.abs()[~frozen].max()
    inq.apply(model, Context(digits))
    q = _layer(model, "fc1").weight_quantizer
    assert isinstance(q, Pow2Quantizer) and q.complete
    w = _layer(model, "fc1").effective_weight().detach()
    nz = w[w != 0].abs()
    exps = torch.log2(nz)
    assert torch.equal(exps, exps.round())
    assert exps.min() >= q.fmt.n2 and exps.max() <= q.fmt.n1


# --- pruning -----------------------------------------------------------------------------------


def test_masks_keep_pruned_weights_zero_through_every_pass(digits, mlp_short):
    model = prepare(mlp_short)
    ctx = Context(digits)
    MagnitudePrune(
        sparsity={"fc1": 0.8, "fc2": 0.9}, layers="fc", iterations=2, finetune=ONE_EPOCH
    ).apply(model, ctx)
    masks = {n: _layer(model, n).mask.clone() for n in ("fc1", "fc2")}
    assert float((masks["fc1"] == 0).float().mean()) == pytest.approx(0.8, abs=1e-3)
    assert float((masks["fc2"] == 0).float().mean()) == pytest.approx(0.9, abs=1e-3)
    INQ(layers=["fc1"], portions=(0.5, 1.0), finetune=ONE_EPOCH).apply(model, ctx)
    WeightShare(layers=["fc2"], finetune=ONE_EPOCH).apply(model, ctx)
    FixedPoint(finetune=ONE_EPOCH).apply(model, ctx)
    fit(model, digits, epochs=1, lr=1e-2, seed=3, quiet=True)
    for name, mask in masks.items():
        m = _layer(model, name)
        assert torch.equal(m.mask, mask)
        assert torch.all(m.layer.weight[mask == 0] == 0)
        assert torch.all(m.effective_weight()[mask == 0] == 0)
    net = to_net(model, digits)
    for name, mask in masks.items():
        layer = next(layer for layer in net.layers if layer.name == name)
        assert np.all(layer.weight_values()[mask.numpy() == 0] == 0)


def test_global_threshold_pruning(digits, mlp_short):
    model = prepare(mlp_short)
    MagnitudePrune(global_sparsity=0.75, layers="fc").apply(model, Context(digits))
    masks = [_layer(model, n).mask for n in ("fc1", "fc2", "fc3")]
    pruned = sum(int((m == 0).sum()) for m in masks) / sum(m.numel() for m in masks)
    assert pruned == pytest.approx(0.75, abs=1e-3)
    # One threshold: every surviving weight is at least as large as every pruned one.
    w = [_layer(model, n).layer.weight.detach().abs() for n in ("fc1", "fc2", "fc3")]
    kept = torch.cat([x[m != 0] for x, m in zip(w, masks, strict=True)])
    orig = [getattr(mlp_short, n).weight.detach().abs() for n in ("fc1", "fc2", "fc3")]
    gone = torch.cat([x[m == 0] for x, m in zip(orig, masks, strict=True)])
    assert kept.min() >= gone.max()
    with pytest.raises(UserError, match="exactly one of"):
        MagnitudePrune(sparsity=0.5, threshold=0.1)


# --- weight sharing ----------------------------------------------------------------------------


def test_kmeans_finds_clusters():
    values = np.concatenate([np.full(10, -0.5), np.full(7, 0.1), np.full(3, 0.7)])
    centroids, labels = kmeans_1d(values, 3)
    np.testing.assert_allclose(np.sort(centroids), [-0.5, 0.1, 0.7])
    np.testing.assert_allclose(centroids[labels], values)


def test_sharing_reserves_code_zero_for_pruned_weights(digits, mlp_short):
    model = prepare(mlp_short)
    ctx = Context(digits)
    MagnitudePrune(sparsity=0.9, layers=["fc2"]).apply(model, ctx)
    WeightShare(bits=4, value_bits=8, layers=["fc2"], finetune=ONE_EPOCH).apply(model, ctx)
    m = _layer(model, "fc2")
    q = m.weight_quantizer
    assert isinstance(q, CodebookQuantizer)
    assert torch.equal(q.index == 0, m.mask == 0)  # code 0 exactly where pruned
    fmt = q.weight_format()
    assert fmt.table[0] == 0 and len(fmt.table) == 16
    assert len(set(fmt.table[1:])) > 8  # the 15 shared values are spread out, not collapsed
    FixedPoint().apply(model, ctx)
    net = to_net(model, digits, sparse=["fc2"])
    fc2 = next(layer for layer in net.layers if layer.name == "fc2")
    assert isinstance(fc2, SparseDense) and fc2.weight_format.kind == "codebook"
    np.testing.assert_array_equal(fc2.stored_dense(), q.index.numpy())


# --- structured filter pruning -----------------------------------------------------------------


def test_filter_pruning_shrinks_the_next_layer(digits, cnn_short):
    model = prepare(cnn_short)
    l1 = cnn_short.conv1.weight.detach().abs().flatten(1).sum(1)
    FilterPrune(ratio={"conv1": 0.5, "conv2": 0.25}).apply(model, Context(digits))
    conv1, conv2, fc1 = (_layer(model, n).layer for n in ("conv1", "conv2", "fc1"))
    assert conv1.out_channels == 3 and conv2.in_channels == 3
    assert conv2.out_channels == 12 and fc1.in_features == 12 * 2 * 2
    kept = torch.sort(torch.argsort(l1, stable=True)[3:]).values
    torch.testing.assert_close(conv1.weight, cnn_short.conv1.weight[kept])
    FixedPoint().apply(model, Context(digits))
    net = to_net(model, digits)
    shapes = {layer.name: layer for layer in net.layers if isinstance(layer, Conv2d | Dense)}
    assert shapes["conv2"].in_channels == 3 and shapes["fc1"].in_features == 48


def test_filter_pruning_is_exact_for_zero_filters(digits, cnn_short):
    """Removing filters whose output is already zero must not change the net at all."""
    model = copy.deepcopy(cnn_short)
    with torch.no_grad():
        model.conv2.weight[[1, 5, 9, 13]] = 0.0
        model.conv2.bias[[1, 5, 9, 13]] = -1.0  # ReLU then zeroes these channels
    prepared = prepare(model)
    FilterPrune(ratio={"conv2": 0.25}).apply(prepared, Context(digits))
    assert _layer(prepared, "conv2").layer.out_channels == 12
    x = torch.as_tensor(digits.x_test)
    torch.testing.assert_close(prepared(x), model(x), rtol=0, atol=1e-5)


# --- BatchNorm folding -------------------------------------------------------------------------


def _bn_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
        nn.BatchNorm1d(10),
    )
    with torch.no_grad():
        for bn in (model[1], model[6]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return model.eval().double()


def test_batchnorm_folds_exactly():
    model = _bn_model()
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64)
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), model(x), rtol=1e-12, atol=1e-12)
    prepared = prepare(model.float())
    assert [type(m).__name__ for m in prepared] == [
        "CompressedLayer",
        "ReLU",
        "MaxPool2d",
        "Flatten",
        "CompressedLayer",
    ]


def test_batchnorm_that_cannot_fold_is_named():
    after_relu = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4))
    with pytest.raises(UserError, match="BatchNorm '2' cannot be folded: it does not directly"):
        prepare(after_relu)
    no_stats = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8, track_running_stats=False)
    )
    with pytest.raises(UserError, match="BatchNorm '2' cannot be folded: it keeps no running"):
        prepare(no_stats)


# --- distillation ------------------------------------------------------------------------------


def test_distillation_is_an_option_of_fine_tuning(digits, mlp_short):
    runs = {}
    for key, dist in (
        ("plain", None),
        ("alpha0", Distillation(alpha=0.0)),
        ("kd", Distillation(temperature=4.0, alpha=0.9)),
    ):
        student = copy.deepcopy(mlp_short)
        fit(
            student,
            digits,
            epochs=1,
            lr=1e-3,
            seed=0,
            teacher=mlp_short,
            distillation=dist,
            quiet=True,
        )
        runs[key] = predict(student, digits.x_test)
    # alpha = 0 is plain cross-entropy, exactly; alpha > 0 follows the teacher instead.
    np.testing.assert_array_equal(runs["alpha0"], runs["plain"])
    assert not np.array_equal(runs["kd"], runs["plain"])


def test_exported_pow2_and_codebook_match_reference(digits, cnn_short):
    model = prepare(cnn_short)
    ctx = Context(digits)
    MagnitudePrune(sparsity=0.8, layers=["fc1", "fc2"]).apply(model, ctx)
    INQ(layers="conv", portions=(1.0,)).apply(model, ctx)
    WeightShare(layers=["fc1", "fc2"]).apply(model, ctx)
    FixedPoint(weight_bits=6, activation_bits=6).apply(model, ctx)
    net = to_net(model, digits, sparse=["fc1", "fc2"])
    kinds = {
        layer.name: (layer.kind, layer.weight_format.kind)
        for layer in net.layers
        if hasattr(layer, "weight_format")
    }
    assert kinds["conv1"] == ("conv2d", "pow2") and kinds["fc1"] == ("sparse_dense", "codebook")
    fake = predict(copy.deepcopy(model).double(), digits.x_test)
    np.testing.assert_array_equal(fake * 2.0**net.output_format.frac, net.test_outputs)
    np.testing.assert_array_equal(run_net(net, net.test_inputs), net.test_outputs)
