"""Graph nets on the PyTorch side: residual adds, concats, ReLU6 and Hardsigmoid written the ways
users write them, captured, fake-quantized exactly as the reference computes, compressed and
exported; and what the IR cannot express refused in one line."""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeezeforge.models.capture import capture
from squeezeforge.models.compress import compress_net, parse_recipe
from squeezeforge.models.compress.base import Context
from squeezeforge.models.compress.filters import FilterPrune
from squeezeforge.models.compress.fixed import FixedPoint, calibrate, concat_groups
from squeezeforge.models.compress.lowrank import LowRank
from squeezeforge.models.export import to_net
from squeezeforge.models.graph import ChannelConcat, LayerGraph, ResidualAdd
from squeezeforge.models.nets import MODELS, DigitsCNN, build_model
from squeezeforge.models.quant import (
    CompressedLayer,
    activation_frac,
    compute_stages,
    net_graph,
    prepare,
)
from squeezeforge.models.train import fit, predict
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import NET_INPUT, Add, Concat, Conv2d, Net, load_net, save_net
from squeezeforge.sim.reference import run_net

# ---------------------------------------------------------------------------------------------
# Models as users write them


class ResBlock(nn.Module):
    """Stem, two 3x3 convs, the stem added back (written ``style``), ReLU, pool, head."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        y = self.conv2(F.relu(self.conv1(x)))
        if self.style == "plus":
            y = y + x
        elif self.style == "iadd":
            y += x
        elif self.style == "torch.add":
            y = torch.add(x, y)
        elif self.style == "operator.add":
            y = operator.add(y, x)
        elif self.style == "method":
            y = y.add(x)
        y = F.relu(y)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class FireCat(nn.Module):
    """A fire module with ``torch.cat`` along ``dim``, then a global average and a head."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.squeeze = nn.Conv2d(6, 3, 1)
        self.e1 = nn.Conv2d(3, 4, 1)
        self.e3 = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(x)), 2)
        s = F.relu(self.squeeze(x))
        x = torch.cat([F.relu(self.e1(s)), F.relu(self.e3(s))], dim=self.dim)
        return self.head(x.mean(dim=(2, 3)))


class FlatCat(nn.Module):
    """Two linear branches joined along the features of flat tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 6)
        self.b = nn.Linear(6, 5)
        self.c = nn.Linear(6, 3)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.a(x.flatten(1)))
        return self.head(torch.cat((F.relu(self.b(h)), F.relu(self.c(h))), 1))


class Clamped(nn.Module):
    """A conv whose output is clamped by ``clamp`` (a ReLU6 in some spelling)."""

    def __init__(self, clamp: str) -> None:
        super().__init__()
        self.clamp = clamp
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu6 = nn.ReLU6()
        self.hardtanh = nn.Hardtanh(0.0, 4.0)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = {
            "nn.ReLU6": lambda: self.relu6(y),
            "F.relu6": lambda: F.relu6(y),
            "nn.Hardtanh": lambda: self.hardtanh(y),
            "torch.clamp": lambda: torch.clamp(y, 0, 6),
            "method": lambda: y.clamp(min=0, max=6),
            "hardsigmoid": lambda: F.hardsigmoid(y),
        }[self.clamp]()
        return self.head(F.max_pool2d(y, 2).flatten(1))


CLAMPS = {
    "nn.ReLU6": 6.0,
    "F.relu6": 6.0,
    "nn.Hardtanh": 4.0,
    "torch.clamp": 6.0,
    "method": 6.0,
    "hardsigmoid": 1.0,
}


def _init(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.uniform_(m.weight, -0.6, 0.6)
            nn.init.uniform_(m.bias, -0.2, 0.4)
    return model.eval()


def _exported(model: nn.Module, digits, **fixed) -> tuple[nn.Module, Net]:
    prepared = prepare(capture(model, digits.input_shape))
    FixedPoint(**fixed).apply(prepared, Context(data=digits))
    return prepared, to_net(prepared, digits)


def _fake_equals_reference(prepared: nn.Module, net: Net, digits) -> bool:
    """The fake-quantized model in float64 against the net's stored reference outputs."""
    fake = predict(_double(prepared), digits.x_test)
    return np.array_equal(fake, net.test_outputs * 2.0**-net.output_format.frac)


def _double(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double()


# ---------------------------------------------------------------------------------------------
# Capture


@pytest.mark.parametrize("style", ["plus", "iadd", "torch.add", "operator.add", "method"])
def test_a_residual_add_is_captured_whatever_its_spelling(style: str) -> None:
    model = _init(ResBlock(style))
    graph = capture(model, (1, 8, 8))
    assert isinstance(graph, LayerGraph)
    (add,) = [n for n, m in graph.named_children() if isinstance(m, ResidualAdd)]
    assert set(graph.inputs[add]) == {"conv2", "relu"}  # the block's output and the shortcut
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(graph(x), model(x), atol=1e-6)
    # The ReLU after the add is the add's; the shortcut is the stem's (ReLU) output.
    node = next(n for n in net_graph(graph).nodes if n.name == add)
    assert node.relu and set(node.sources) == {"conv2", "stem"}


@pytest.mark.parametrize("dim", [1, -3])
def test_a_concat_along_the_channels_is_captured(dim: int) -> None:
    model = _init(FireCat(dim))
    graph = capture(model, (1, 8, 8))
    cat = next(n for n in net_graph(graph).nodes if isinstance(n.module, ChannelConcat))
    assert cat.sources == ("e1", "e3")
    # The 3x3 expand reads the squeeze, not the layer before it.
    assert graph.inputs["e3"] == ("relu_1",)
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(graph(x), model(x), atol=1e-6)


def test_a_concat_of_flat_tensors_joins_the_features(digits) -> None:
    prepared, net = _exported(_init(FlatCat()), digits)
    cat = next(layer for layer in net.layers if isinstance(layer, Concat))
    assert cat.inputs == ("b", "c") and net.tensor_shapes()[cat.name] == (8,)
    assert _fake_equals_reference(prepared, net, digits)


@pytest.mark.parametrize("clamp", list(CLAMPS))
def test_relu6_and_clamps_become_the_layers_clamp(clamp: str, digits) -> None:
    model = _init(Clamped(clamp))
    with torch.no_grad():
        model.conv.weight.mul_(8.0)  # outputs beyond the clamp, so that it clamps something
    prepared, net = _exported(model, digits)
    (stage, _) = compute_stages(prepared)
    assert stage.relu and stage.clamp == CLAMPS[clamp]
    conv = net.layers[0]
    assert isinstance(conv, Conv2d) and conv.relu
    out = conv.output_format
    assert conv.clamp_max == min(math.floor(CLAMPS[clamp] * 2**out.frac), out.max)
    assert _fake_equals_reference(prepared, net, digits)
    # The clamp is exercised: without it the reference computes other outputs.
    unclamped = net.replace(layers=(replace(conv, clamp_max=None), *net.layers[1:]))
    assert not np.array_equal(run_net(unclamped, net.test_inputs), net.test_outputs)


def test_a_trailing_softmax_of_a_graph_is_dropped_with_a_note() -> None:
    class WithSoftmax(ResBlock):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.softmax(super().forward(x), dim=1)

    notes: list[str] = []
    model = _init(WithSoftmax("plus"))
    graph = capture(model, (1, 8, 8), notes=notes)
    assert isinstance(graph, LayerGraph) and list(graph._modules)[-1] == "head"
    (note,) = notes
    assert "softmax" in note and "argmax is unchanged" in note
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(torch.softmax(graph(x), dim=1), model(x), atol=1e-6)


def test_a_chain_is_still_a_plain_stack() -> None:
    model = _init(ResBlock("none"))
    stack = capture(model, (1, 8, 8))
    assert type(stack) is nn.Sequential


# ---------------------------------------------------------------------------------------------
# Refusals: one line, naming the operation and where it is


class CatDim2(FireCat):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(F.relu(self.stem(x))))
        return torch.cat([self.e1(s), self.e3(s)], dim=2)


class Broadcast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 1, 1)
        self.fc = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.fc((y + self.b(y)).flatten(1))


class Product(ResBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head((x * self.conv1(x)).mean(dim=(2, 3)))


class ReluBeforeShortcut(ResBlock):
    """The shortcut reads the stem's output before its ReLU: not one IR tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        y = self.conv1(F.relu(s)) + s
        return self.head(y.mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        (CatDim2(), r"torch\.cat\(\) at test_graphs\.py:\d+ in forward: concatenates 4-D tensors"
         r" along dim 2; the IR joins along the channels"),
        (Broadcast(), r"_operator\.add\(\) at test_graphs\.py:\d+ in forward: adds tensors of"
         r" shapes \[4, 8, 8\] and \[1, 8, 8\]; the IR adds tensors of one shape"),
        (Product("plus"), r"_operator\.mul\(\) at test_graphs\.py:\d+ in forward: combines 2"
         r" tensors; the IR combines tensors only by an add or a concat along the channels"),
    ],
)  # fmt: skip
def test_what_the_ir_cannot_express_is_refused_in_one_line(model, pattern) -> None:
    with pytest.raises(UserError, match=pattern) as err:
        capture(_init(model), (1, 8, 8))
    assert "\n" not in str(err.value)


def test_a_relu_whose_input_another_layer_reads_is_refused() -> None:
    graph = capture(_init(ReluBeforeShortcut("plus")), (1, 8, 8))
    with pytest.raises(UserError, match=r"ReLU 'relu': another layer reads the output of 'stem'"):
        prepare(graph)


# ---------------------------------------------------------------------------------------------
# Fake quantization equals the reference, exported nets


@pytest.fixture(scope="module")
def graph_nets(digits) -> dict[str, tuple[nn.Module, Net]]:
    """The built-in residual and fire nets, briefly trained, fixed point, exported."""
    out = {}
    for name in ("resnet", "fire"):
        torch.manual_seed(0)
        model = build_model(name)
        fit(model, digits, epochs=1, lr=5e-3, seed=0, quiet=True)
        out[name] = _exported(model.eval(), digits)
    return out


@pytest.mark.parametrize("name", ["resnet", "fire"])
def test_fake_quantization_equals_the_reference_bit_for_bit(name, graph_nets, digits, tmp_path):
    prepared, net = graph_nets[name]
    assert not net.is_chain and len(net.consumers(NET_INPUT)) == 1
    # The file keeps the graph, and the stored outputs are the reference's.
    loaded = load_net(save_net(net, tmp_path / f"{name}.sfnet"))
    assert [getattr(x, "inputs", ()) for x in loaded.layers] == [x.inputs for x in net.layers]
    assert np.array_equal(run_net(loaded, loaded.test_inputs), loaded.test_outputs)
    assert _fake_equals_reference(prepared, loaded, digits)


def test_the_residual_add_aligns_two_fraction_lengths(graph_nets):
    _, net = graph_nets["resnet"]
    formats = net.tensor_formats()
    adds = [layer for layer in net.layers if isinstance(layer, Add)]
    assert len(adds) == 2 and all(a.relu for a in adds)
    # Item 7 is exercised, not just a plain sum: some add reads two fraction lengths.
    assert any(len({formats[s].frac for s in a.inputs}) == 2 for a in adds)


@pytest.mark.parametrize("name", ["resnet", "fire"])
def test_the_comparison_fails_on_a_corrupted_net(name, graph_nets, digits):
    prepared, net = graph_nets[name]
    k = next(i for i, x in enumerate(net.layers) if isinstance(x, Add | Concat))
    # The layer before the join (a conv of its branch) gets one weight changed.
    conv_k = max(i for i in range(k) if isinstance(net.layers[i], Conv2d))
    conv = net.layers[conv_k]
    weight = conv.weight.copy()
    lo, hi = conv.weight_format.value_range
    weight.flat[np.argmax(np.abs(weight))] = (
        lo if weight.flat[np.argmax(np.abs(weight))] > 0 else hi
    )
    layers = list(net.layers)
    layers[conv_k] = replace(conv, weight=weight)
    bad = net.replace(layers=tuple(layers))
    bad = bad.replace(test_outputs=run_net(bad, bad.test_inputs))
    assert not _fake_equals_reference(prepared, bad, digits)
    if name == "resnet":  # an add without its ReLU
        add = net.layers[k]
        layers = list(net.layers)
        layers[k] = replace(add, relu=False)
        bad = net.replace(layers=tuple(layers))
        bad = bad.replace(test_outputs=run_net(bad, bad.test_inputs))
        assert not _fake_equals_reference(prepared, bad, digits)


def test_concat_producers_share_the_coarser_format(graph_nets, digits):
    prepared, net = graph_nets["fire"]
    graph = net_graph(prepared)
    groups = concat_groups(graph)
    assert groups["fire1_expand1"] == groups["fire1_expand3"] == groups["fire1_cat"]
    assert groups["fire1_squeeze"] != groups["fire1_expand1"]
    # The ranges the pass calibrated: quantized weights, float activations.
    float_acts = copy.deepcopy(prepared)
    for m in float_acts.modules():
        if isinstance(m, CompressedLayer):
            m.input_format = m.output_format = None
        elif hasattr(m, "format"):
            m.format = None
    _, maxima = calibrate(float_acts, digits.x_train)
    formats = net.tensor_formats()
    alone = set()
    for cat in ("fire1_cat", "fire2_cat"):
        members = next(x for x in net.layers if x.name == cat).inputs
        wanted = [activation_frac(8, maxima[m]) for m in members]
        alone.add(len(set(wanted)))
        assert {formats[m] for m in members} == {formats[cat]}
        assert formats[cat].frac == min(wanted)
    assert 2 in alone  # some members would choose different fraction lengths alone


def test_qat_trains_through_the_add_and_stays_exact(digits):
    torch.manual_seed(0)
    model = _init(ResBlock("plus"))
    prepared = prepare(capture(model, digits.input_shape))
    FixedPoint().apply(prepared, Context(data=digits))
    before = prepared.conv2.layer.weight.detach().clone()
    fit(prepared, digits, epochs=1, lr=1e-3, seed=0, quiet=True)
    assert not torch.equal(before, prepared.conv2.layer.weight)  # gradients pass the add
    net = to_net(prepared, digits)
    assert _fake_equals_reference(prepared, net, digits)


# ---------------------------------------------------------------------------------------------
# Compression passes on graphs


def _recipe(*steps: dict):
    return parse_recipe({"steps": list(steps)}, name="test")


@pytest.mark.parametrize(
    "steps",
    [
        ({"pass": "fixed-point", "epochs": 1},),
        ({"pass": "inq", "bits": 5, "portions": [0.5, 1.0], "epochs": 1}, {"pass": "fixed-point"}),
        (
            {"pass": "prune", "layers": "all", "sparsity": 0.5, "epochs": 1},
            {"pass": "share", "layers": "fc", "bits": 3, "epochs": 1},
            {"pass": "fixed-point"},
        ),
    ],
    ids=["fixed8", "inq5", "prune-share"],
)
def test_passes_compress_a_residual_net(steps, digits):
    model = _init(ResBlock("plus"))
    net, report = compress_net(model, _recipe(*steps), data=digits, model_name="res")
    assert any(isinstance(layer, Add) for layer in net.layers)
    assert np.array_equal(run_net(net, net.test_inputs), net.test_outputs)
    assert report["accuracy"]["agreement"] == 1.0


def test_filter_prune_refuses_a_conv_that_feeds_an_add(digits):
    model = _init(ResBlock("plus"))
    recipe = _recipe({"pass": "filter-prune", "ratio": 0.5, "layers": ["stem"], "epochs": 5})
    with pytest.raises(UserError) as err:
        compress_net(model, recipe, data=digits)
    assert str(err.value) == (
        "filter-prune: layer 'stem' feeds an add ('add'), whose channels must stay as they are;"
        " prune the filters of other layers (select them by name)"
    )


def test_filter_prune_shrinks_both_readers_of_a_squeeze(digits):
    prepared = prepare(capture(_init(FireCat()), digits.input_shape))
    FilterPrune(ratio={"squeeze": 0.34}, layers=["squeeze"]).apply(prepared, Context(data=digits))
    assert prepared.squeeze.layer.out_channels == 2
    assert prepared.e1.layer.in_channels == prepared.e3.layer.in_channels == 2
    FixedPoint().apply(prepared, Context(data=digits))
    net = to_net(prepared, digits)
    assert _fake_equals_reference(prepared, net, digits)
    with pytest.raises(UserError, match="layer 'e1' feeds a concat"):
        FilterPrune(layers=["e1"]).apply(prepare(capture(_init(FireCat()), (1, 8, 8))), None)


def test_low_rank_of_a_conv_that_feeds_an_add_keeps_the_graph(digits):
    prepared = prepare(capture(_init(ResBlock("plus")), digits.input_shape))
    LowRank(rank={"conv2": 2}, energy=None, layers=["conv2"]).apply(prepared, Context(data=digits))
    assert prepared.inputs["add"] == ("conv2_c", "relu")
    FixedPoint().apply(prepared, Context(data=digits))
    net = to_net(prepared, digits)
    assert [x.name for x in net.layers][2:6] == ["conv2_a", "conv2_b", "conv2_c", "add"]
    assert _fake_equals_reference(prepared, net, digits)


# ---------------------------------------------------------------------------------------------
# Built-in graph nets


def _macs(model: nn.Module) -> int:
    """Multiply-accumulates of one 1x8x8 input: conv weights once per output position."""
    positions: dict[nn.Module, int] = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o: positions.__setitem__(m, o.shape[2] * o.shape[3]))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 1, 8, 8))
    for h in hooks:
        h.remove()
    return sum(
        m.weight.numel() * positions.get(m, 1)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    )


@pytest.mark.parametrize("name", ["fire", "resnet"])
def test_the_built_in_graph_nets_are_small_and_read_the_input_once(name):
    assert name in MODELS
    graph = capture(build_model(name).eval(), (1, 8, 8))
    nodes = net_graph(graph).nodes
    # The hardware feeds the input to one layer, the stem.
    assert [n.name for n in nodes if NET_INPUT in n.sources] == ["conv1"]
    assert _macs(DigitsCNN()) == 35_880
    assert _macs(graph) < 0.8 * 35_880
