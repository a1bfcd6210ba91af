"""Models written the way users write them, captured as stacks of supported layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeezeforge.models.capture import capture, is_stack
from squeezeforge.models.compress import compress
from squeezeforge.models.compress.base import Context
from squeezeforge.models.compress.fixed import FixedPoint
from squeezeforge.models.export import to_net
from squeezeforge.models.graph import LayerGraph
from squeezeforge.models.quant import prepare
from squeezeforge.models.train import predict
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import load_net
from squeezeforge.sim.reference import run_net


class FunctionalCNN(nn.Module):
    """Custom forward with functional calls and x.view(x.size(0), -1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(1, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(4, 8, 3, padding=1)
        self.head = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv_a(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv_b(x)), kernel_size=2)
        x = x.view(x.size(0), -1)
        return self.head(x)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class NestedNet(nn.Module):
    """Nested custom modules, an unnamed nn.Sequential, BatchNorm, Dropout, torch.flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(Block(1, 4), nn.MaxPool2d(2), Block(4, 4), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, 12), nn.ReLU())
        self.out = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        x = F.dropout(x, 0.1, self.training)
        return F.log_softmax(self.out(self.classifier(x)), dim=1)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x) + x
        return self.fc(y.flatten(1))


class Sigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x.reshape(-1, 64)))


def _init(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_functional_forward_becomes_a_stack_in_execution_order() -> None:
    model = _init(FunctionalCNN())
    stack = capture(model, (1, 8, 8))
    assert is_stack(stack) and not is_stack(model)
    kinds = [type(m).__name__ for m in stack]
    assert kinds == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"
    ]  # fmt: skip
    assert list(dict(stack.named_children()))[0] == "conv_a"
    # The stack shares the user's parameters: compression sees her trained weights.
    assert stack.conv_a.weight is model.conv_a.weight
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(stack(x), model(x))


def test_nested_modules_batchnorm_dropout_and_a_trailing_softmax() -> None:
    model = _init(NestedNet())
    notes: list[str] = []
    stack = capture(model, (1, 8, 8), notes=notes)
    names = list(dict(stack.named_children()))
    assert names[:3] == ["features_0_conv", "features_0_bn", "relu"]
    assert "classifier_1" in names and names[-1] == "out"
    assert len(notes) == 1 and "log_softmax" in notes[0] and "argmax is unchanged" in notes[0]
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(F.log_softmax(stack(x), dim=1), model(x), atol=1e-6)


def test_a_plain_stack_passes_unchanged() -> None:
    stack = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert capture(stack, (1, 8, 8)) is stack


def test_a_shortcut_from_the_input_is_an_add_that_reads_it(digits) -> None:
    model = _init(Residual())
    graph = capture(model, (1, 8, 8))
    assert isinstance(graph, LayerGraph) and graph.inputs == {"add": ("a", "input")}
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(graph(x), model(x))
    # The add takes the input as the conv does: quantized to the input format.
    prepared = prepare(graph)
    FixedPoint().apply(prepared, Context(data=digits))
    net = to_net(prepared, digits)
    assert net.layers[1].inputs == ("a", "input")
    fake = predict(prepared.double(), digits.x_test)
    assert np.array_equal(fake, net.test_outputs * 2.0**-net.output_format.frac)


def test_an_unknown_function_is_named() -> None:
    with pytest.raises(UserError, match=r"torch\.sigmoid\(\) at test_capture\.py:\d+ in forward"):
        capture(Sigmoid(), (1, 8, 8))


def test_a_model_that_does_not_take_the_input_shape_is_refused() -> None:
    with pytest.raises(UserError, match=r"does not run on inputs of shape \[1, 28, 28\]"):
        capture(_init(FunctionalCNN()), (1, 28, 28))


@pytest.mark.slow
def test_a_custom_forward_model_compresses_and_exports(digits, tmp_path) -> None:
    model = _init(FunctionalCNN())
    out = tmp_path / "functional.sfnet"
    report = compress(model, "fixed8", out, data=digits, quiet=True)
    net = load_net(out)
    assert [layer.name for layer in net.layers if hasattr(layer, "weight_format")] == [
        "conv_a", "conv_b", "head"
    ]  # fmt: skip
    # The exported net's stored outputs are the reference's: the net is self-consistent.
    assert (run_net(net, net.test_inputs) == net.test_outputs).all()
    assert report["accuracy"]["agreement"] >= 0.995


@pytest.mark.parametrize("softmax", [nn.Softmax(dim=1), nn.LogSoftmax(dim=1)])
def test_a_trailing_softmax_module_is_dropped_and_said(digits, tmp_path, softmax) -> None:
    # In a plain nn.Sequential too, which otherwise needs no tracing.
    model = _init(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), softmax))
    out = tmp_path / "s.sfnet"
    report = compress(model, "fixed8", out, data=digits, quiet=True)
    assert [layer.kind for layer in load_net(out).layers] == ["flatten", "dense"]
    (note,) = report["notes"]
    assert type(softmax).__name__ in note and "argmax is unchanged" in note
    assert load_net(out).metadata["notes"] == [note]
    # The scores the hardware gives rank the classes as the model's probabilities do.
    x = torch.from_numpy(digits.x_test[:50])
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), model[:2](x).argmax(1))


def test_a_softmax_before_the_last_layer_is_refused() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Softmax(dim=1), nn.Linear(64, 10))
    with pytest.raises(UserError, match="softmax is supported only as the last operation"):
        capture(model, (1, 8, 8))
