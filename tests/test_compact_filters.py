"""Compact filters end to end: grouped and depthwise convs, average and global average pooling.

A user's MobileNet-style model (custom ``forward``, BatchNorm after a depthwise conv, functional
pooling, ``x.mean``) goes through capture, fixed point and export; the fake-quantized model
equals the reference exactly, and the generated hardware equals the reference bit for bit, with
the cycle model's count, and fails on one corrupted weight of a depthwise group.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeezeforge.codegen.build import write_build
from squeezeforge.codegen.plan import compile_net
from squeezeforge.models.capture import capture
from squeezeforge.models.compress.base import Context
from squeezeforge.models.compress.filters import FilterPrune
from squeezeforge.models.compress.fixed import FixedPoint
from squeezeforge.models.compress.lowrank import LowRank
from squeezeforge.models.data import load_digits
from squeezeforge.models.export import post_training_export, to_net
from squeezeforge.models.nets import build_model
from squeezeforge.models.quant import prepare
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import (
    AvgPool2d,
    Conv2d,
    Flatten,
    IRError,
    Net,
    load_net,
    net_to_bytes,
    save_net,
)
from squeezeforge.sim.netsim import layer_cycles, simulate
from squeezeforge.sim.numerics import FixedFormat, FixedWeights, avg_pool_multiplier
from squeezeforge.sim.random_layers import random_activations, random_conv2d, random_dense
from squeezeforge.sim.reference import run_layer, run_net


class TinyMobile(nn.Module):
    """Written as a user would: depthwise-separable block, functional pools, a mean."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(4)
        self.pw = nn.Conv2d(4, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.max_pool2d(F.relu(self.bn(self.dw(x))), 2)
        x = F.relu(self.pw(x))
        x = F.avg_pool2d(x, 3, stride=1)  # a 9-value window: r / 2**s is not exact
        return self.fc(x.mean(dim=(2, 3)))  # global average pooling of 2x2


@pytest.fixture(scope="module")
def exported() -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    model = TinyMobile().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 2.0)
    data = load_digits()
    prepared = prepare(capture(model, data.input_shape))
    FixedPoint().apply(prepared, Context(data=data))
    return prepared, to_net(prepared, data, name="tiny_mobile")


def test_avg_pool_multiplier() -> None:
    for n in (1, 2, 4, 16, 64, 256):
        assert avg_pool_multiplier(n) == (1, n.bit_length() - 1)
    for n in (3, 9, 25, 49, 6):
        r, s = avg_pool_multiplier(n)
        assert r < 128 <= 2 * r + 1  # the widest reciprocal that fits 8 signed bits
        assert abs(r * n / 2**s - 1) <= 2**-6


def test_grouped_conv_reference_equals_torch() -> None:
    rng = np.random.default_rng(1)
    w = rng.integers(-30, 30, (6, 2, 3, 3))
    conv = Conv2d(
        "c", 4, 6, (3, 3), 2, 1, FixedFormat(8, 4), FixedWeights(8, 6), FixedFormat(16, 10),
        False, w, rng.integers(-50, 50, 6), groups=2,
    )  # fmt: skip
    x = rng.integers(-128, 128, (3, 4, 7, 7))
    want = F.conv2d(
        torch.tensor(x, dtype=torch.float64),
        torch.tensor(w, dtype=torch.float64),
        torch.tensor(conv.bias, dtype=torch.float64),
        stride=2,
        padding=1,
        groups=2,
    ).numpy()
    from squeezeforge.sim.reference import conv2d_acc

    assert np.array_equal(conv2d_acc(conv, x), want.astype(np.int64))
    # Each group alone is the matching slice of the whole.
    for g in range(2):
        part = run_layer(conv.group(g), x[:, 2 * g : 2 * g + 2])
        assert np.array_equal(part, run_layer(conv, x)[:, 3 * g : 3 * g + 3])


def test_avg_pool_reference_is_the_contract() -> None:
    rng = np.random.default_rng(2)
    fmt = FixedFormat(8, 3)
    r, s = avg_pool_multiplier(9)
    pool = AvgPool2d("p", (3, 3), 3, r, s, fmt)
    x = rng.integers(-128, 128, (2, 3, 6, 6))
    sums = x.reshape(2, 3, 2, 3, 2, 3).sum(axis=(3, 5))
    want = np.clip((sums * r + (1 << (s - 1))) >> s, fmt.min, fmt.max)
    assert np.array_equal(run_layer(pool, x), want)
    # A corrupted multiplier gives other outputs: the comparison can fail.
    assert not np.array_equal(run_layer(replace(pool, multiplier=r - 1), x), want)


def test_fake_quant_equals_reference(exported) -> None:
    prepared, net = exported
    kinds = [(layer.kind, getattr(layer, "groups", 1)) for layer in net.layers]
    assert ("conv2d", 4) in kinds and kinds.count(("avgpool2d", 1)) == 2
    with torch.no_grad():
        y = prepared(torch.tensor(load_digits().x_test).float()).double().numpy()
    assert np.array_equal(y * 2.0**net.output_format.frac, net.test_outputs)


def test_net_file_round_trip(exported, tmp_path: Path) -> None:
    _, net = exported
    back = load_net(save_net(net, tmp_path / "m.sfnet"))
    assert net_to_bytes(back) == net_to_bytes(net)
    assert np.array_equal(run_net(back, net.test_inputs), net.test_outputs)
    # An ungrouped conv writes no groups field: files of older nets stay byte-identical.
    plain = next(layer for layer in net.layers if isinstance(layer, Conv2d) and layer.groups == 1)
    assert "groups" not in plain.to_manifest()


def test_bad_groups_and_formats_are_named() -> None:
    fmt = FixedFormat(8, 4)
    with pytest.raises(IRError, match="groups"):
        Conv2d(
            "c", 4, 6, (1, 1), 1, 0, fmt, FixedWeights(8, 6), FixedFormat(8, 4), False,
            np.zeros((6, 1, 1, 1), int), np.zeros(6, int), groups=4,
        )  # fmt: skip
    with pytest.raises(IRError, match="multiplier"):
        AvgPool2d("p", (2, 2), 2, 0, 2, fmt)


def test_unsupported_pooling_is_one_line() -> None:
    class ReluAfterPool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2, 3)

        def forward(self, x):
            return self.fc(F.relu(F.adaptive_avg_pool2d(self.conv(x), 1)).flatten(1))

    with pytest.raises(UserError, match="average pool of values that can be negative"):
        prepare(capture(ReluAfterPool(), (1, 8, 8)))

    class Uneven(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return F.adaptive_avg_pool2d(self.conv(x), 4).flatten(1)

    with pytest.raises(UserError, match="uneven windows"):
        capture(Uneven(), (1, 8, 8))


def test_plan_runs_groups_as_slices_of_one_tensor(exported) -> None:
    _, net = exported
    plan = compile_net(net)
    dw = [s for s in plan.steps if s.layers[0] == "dw"]
    assert [s.in_offset for s in dw] == [0, 64, 128, 192]  # 1 channel of 8x8 each
    assert [s.out_offset for s in dw] == [0, 16, 32, 48]  # pooled to 4x4
    # Group g reads channel g of one stored tensor and writes channel g of another.
    src = dw[0].in_segments[0][0]
    assert [s.in_segments for s in dw] == [((src + 64 * g, 64),) for g in range(4)]
    dst = dw[0].out_address
    assert [s.out_address for s in dw] == [dst + 16 * g for g in range(4)]


IMAGES = 4


@pytest.mark.rtl
def test_rtl_bit_exact_and_cycles(exported, tmp_path: Path) -> None:
    _, net = exported
    plan = compile_net(net)
    write_build(plan, tmp_path / "b")
    report = simulate(tmp_path / "b", IMAGES)
    assert report["bit_exact"] == IMAGES and report["golden_consistent"]
    # The conv engine's schedule does not depend on the data: every conv step, the depthwise
    # groups and the pools included, takes exactly the modelled cycles.
    for s, measured in zip(plan.steps, report["steps"], strict=True):
        if s.engine.startswith("conv"):
            assert measured["cycles_measured"] == s.cycles_estimated, s.layers

    # One weight of depthwise group 2 changed in the generated memory: a mismatch at "dw".
    step = next(s for s in plan.steps if s.layer.name == "dw[2]")
    image = dict(plan.images[step.engine])
    words = list(image["weight"])
    words[step.cfg["weight_base"] + 4] ^= 1 << 6  # the centre tap of the 3x3 kernel
    bad = replace(plan, images={**plan.images, step.engine: {**image, "weight": words}})
    write_build(bad, tmp_path / "bad")
    report = simulate(tmp_path / "bad", IMAGES)
    assert report["bit_exact"] < IMAGES
    assert report["first_mismatch"]["first_bad_layer"] == "dw"


def test_passes_that_would_break_groups_say_so() -> None:
    data = load_digits()
    model = prepare(capture(TinyMobile().eval(), data.input_shape))
    ctx = Context(data=data)
    with pytest.raises(UserError, match="filter-prune: layer 'dw' is a grouped conv"):
        FilterPrune(ratio=0.5, layers=["stem"]).apply(model, ctx)
    with pytest.raises(UserError, match="low-rank: layer 'dw' is a grouped conv"):
        LowRank(layers=["dw"]).apply(model, ctx)


def test_builtin_compact_net_exports_and_compiles() -> None:
    torch.manual_seed(0)
    net = post_training_export(build_model("mobile"), bits=8)
    kinds = {layer.name: (layer.kind, getattr(layer, "groups", 1)) for layer in net.layers}
    assert kinds["dw2"] == ("conv2d", 8) and kinds["pool2"] == ("maxpool2d", 1)
    # 3.2x fewer MACs than the digits CNN's 35,880.
    assert sum(layer.macs(shape) for layer, shape in net.compute_layers()) == 11_136
    plan = compile_net(net)
    assert sum(s.layers[0] == "dw2" for s in plan.steps) == 8
    assert [s.layers for s in plan.steps][-2:] == [("pw2", "pool2"), ("fc",)]


def test_reports_sum_the_groups_of_a_layer() -> None:
    steps = [
        {"layers": ["c1", "p1"], "engine": "conv", "cycles_measured": 10.0, "cycles_estimated": 10},
        *[
            {"layers": ["dw"], "engine": "conv", "cycles_measured": 5.0, "cycles_estimated": 6}
            for _ in range(3)
        ],
        {"layers": ["fc"], "engine": "fc", "cycles_measured": 2.5, "cycles_estimated": 3},
    ]
    rows = layer_cycles(steps)
    assert [r["label"] for r in rows] == ["c1+p1", "dw (3 groups)", "fc"]
    assert (rows[1]["cycles_measured"], rows[1]["cycles_estimated"]) == (15.0, 18)


def _random_compact_net(rng: np.random.Generator) -> Net:
    """A grouped conv and an average pool of random shapes, formats chained, then a dense."""
    inp, act = FixedFormat(8, 4), FixedFormat(8, 3)
    groups = int(rng.integers(2, 5))
    c = groups * int(rng.integers(1, 3))
    m = groups * int(rng.integers(1, 3))
    side = int(rng.integers(5, 9))
    conv = random_conv2d(
        rng, in_channels=c, out_channels=m, act_bits=8, relu=True, name="gconv", groups=groups
    )
    conv = replace(conv, input_format=inp, output_format=act)
    _, oh, ow = conv.output_shape((c, side, side))
    k = (int(rng.integers(1, min(oh, 3) + 1)), int(rng.integers(1, min(ow, 3) + 1)))
    r, s = avg_pool_multiplier(k[0] * k[1])
    pool = AvgPool2d("avg", k, int(rng.integers(1, 3)), r, s, act)
    features = math.prod(pool.output_shape((m, oh, ow)))
    fc = random_dense(rng, in_features=features, out_features=3, act_bits=8, name="fc")
    fc = replace(fc, input_format=act, output_format=FixedFormat(8, 0))
    x = random_activations(rng, inp, (3, c, side, side))
    layers = (conv, pool, Flatten("flatten"), fc)
    probe = Net("compact", (c, side, side), inp, layers, x, np.zeros(3, np.int64),
                np.zeros((3, 3), np.int64))  # fmt: skip
    return probe.replace(test_outputs=run_net(probe, x))


@pytest.mark.rtl
@pytest.mark.parametrize("seed", [5])
def test_random_grouped_conv_and_pool_on_rtl(seed: int, tmp_path: Path) -> None:
    net = _random_compact_net(np.random.default_rng(seed))
    plan = compile_net(net)
    write_build(plan, tmp_path / "b")
    report = simulate(tmp_path / "b", 3)
    assert report["bit_exact"] == 3 and report["golden_consistent"], net.layers
    for s, measured in zip(plan.steps, report["steps"], strict=True):
        if s.engine.startswith("conv"):
            assert measured["cycles_measured"] == s.cycles_estimated, s.layers
