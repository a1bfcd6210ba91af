"""Low-rank decomposition: SVD for linear layers, Tucker-2 for convs, as a recipe pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeezeforge.models.compress import compress, parse_recipe
from squeezeforge.models.compress.base import Context
from squeezeforge.models.compress.lowrank import LowRank, energy_rank, svd_factors, tucker2
from squeezeforge.models.quant import compute_stages, prepare
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import load_net
from squeezeforge.sim.reference import run_net


def test_energy_rank_counts_the_leading_values() -> None:
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])  # squares 9, 4, 1: 64.3%, 92.9%, 100%
    assert [energy_rank(s, e) for e in (0.5, 0.64, 0.65, 0.92, 0.93, 1.0)] == [1, 1, 2, 2, 3, 3]


def test_svd_factors_are_the_best_rank_r_approximation() -> None:
    torch.manual_seed(0)
    w = torch.randn(12, 7, dtype=torch.float64)
    a, b = svd_factors(w, 7)
    assert a.shape == (7, 7) and b.shape == (12, 7)
    assert torch.allclose(b @ a, w, atol=1e-10)
    a2, b2 = svd_factors(w, 2)
    s = torch.linalg.svdvals(w)
    # Eckart-Young: the error's norm is that of the dropped singular values.
    assert torch.isclose(torch.linalg.norm(w - b2 @ a2), s[2:].norm(), rtol=1e-9)


def test_tucker2_at_full_rank_rebuilds_the_conv() -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    first, core, last = tucker2(w, 6, 4)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    y = F.conv2d(x, first[:, :, None, None])
    y = F.conv2d(y, core, padding=1)
    y = F.conv2d(y, last[:, :, None, None])
    assert torch.allclose(y, F.conv2d(x, w, padding=1), atol=1e-9)


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, 10),
    )  # fmt: skip


def test_the_pass_replaces_layers_and_keeps_relu_on_the_last_factor(digits) -> None:
    model = prepare(_model())
    x = torch.randn(3, 1, 8, 8)
    before = model(x)
    LowRank(energy=1.0).apply(model, Context(data=digits))
    stages = compute_stages(model)
    assert [(s.name, s.relu) for s in stages] == [
        ("0_a", False), ("0_b", False), ("0_c", True), ("4_a", False), ("4_b", True),
        ("6_a", False), ("6_b", False),
    ]  # fmt: skip
    # At full energy the factors are exact up to float rounding.
    assert torch.allclose(model(x), before, atol=1e-4)


def test_a_lower_energy_or_rank_cuts_macs(digits) -> None:
    model = prepare(_model())
    LowRank(rank={"fc[0]": 4}, energy=None, layers="fc").apply(model, Context(data=digits))
    fc = dict(model.named_children())
    assert fc["4_a"].layer.weight.shape == (4, 128) and fc["4_b"].layer.weight.shape == (32, 4)
    assert "6" in fc  # not named in the table: untouched


def test_bad_ranks_are_named(digits) -> None:
    with pytest.raises(UserError, match=r"layer '4': rank 40 outside 1\.\.32 for a 128 -> 32"):
        LowRank(rank=40, energy=None, layers="fc").apply(prepare(_model()), Context(data=digits))
    recipe = {"steps": [{"pass": "low-rank", "energy": 0.9, "rank": 3}]}
    with pytest.raises(UserError, match="give exactly one of energy, rank"):
        parse_recipe(recipe)
    step = parse_recipe({"steps": [{"pass": "low-rank", "rank": {"fc[-1]": 3}}]}).steps[0]
    assert isinstance(step, LowRank) and step.rank == {"fc[-1]": 3}


@pytest.mark.slow
def test_low_rank_then_fixed_point_exports_a_consistent_net(digits, cnn_short, tmp_path) -> None:
    recipe = parse_recipe(
        {
            "steps": [
                {"pass": "low-rank", "energy": 0.95, "layers": "conv", "epochs": 1},
                {"pass": "fixed-point"},
            ]
        }
    )
    report = compress(cnn_short, recipe, tmp_path / "lr.sfnet", data=digits, quiet=True)
    net = load_net(tmp_path / "lr.sfnet")
    names = [layer.name for layer in net.layers]
    assert {"conv1_a", "conv1_b", "conv1_c", "conv2_c"} <= set(names)
    assert (run_net(net, net.test_inputs) == net.test_outputs).all()
    assert report["accuracy"]["agreement"] >= 0.995
