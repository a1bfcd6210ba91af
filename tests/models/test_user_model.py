"""A user's model from the files people save: state_dict + class, pickled module, ONNX."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from squeezeforge.models.onnx_import import load_onnx
from squeezeforge.models.user_model import load_model
from squeezeforge.sim.errors import UserError

LENET = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F
    from torch import nn


    class LeNet5(nn.Module):
        '''LeNet-5 for 28x28 inputs, written as users write it: custom forward, functional ops.'''

        def __init__(self, num_classes=10):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, num_classes)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = x.view(x.size(0), -1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)
    """
)


@pytest.fixture
def lenet_file(tmp_path: Path) -> Path:
    path = tmp_path / "lenet.py"
    path.write_text(LENET)
    return path


def _run(script: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, check=True)


def test_state_dict_with_a_class_path(lenet_file: Path, tmp_path: Path) -> None:
    _run(
        """
        import torch
        from lenet import LeNet5
        torch.manual_seed(0)
        model = LeNet5(num_classes=7)
        torch.save(model.state_dict(), "lenet.pt")
        torch.save(model(torch.ones(1, 1, 28, 28)), "expected.pt")
        """,
        tmp_path,
    )
    ckpt = load_model(
        tmp_path / "lenet.pt", model=f"{lenet_file}:LeNet5", model_args={"num_classes": 7}
    )
    assert ckpt.model_name == "lenet5" and not ckpt.model.training
    expected = torch.load(tmp_path / "expected.pt")
    assert torch.equal(ckpt.model(torch.ones(1, 1, 28, 28)), expected)


@pytest.mark.parametrize("where", ["module", "script"])
def test_a_pickled_module(where: str, lenet_file: Path, tmp_path: Path) -> None:
    # Pickled from a script that imports the class, and from one that defines it (__main__).
    source = "from lenet import LeNet5" if where == "module" else LENET
    _run(source + "\nimport torch\ntorch.save(LeNet5(), 'whole.pt')\n", tmp_path)
    ckpt = load_model(tmp_path / "whole.pt", model=f"{lenet_file}:LeNet5")
    assert type(ckpt.model).__name__ == "LeNet5"
    assert ckpt.model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_a_pickled_module_whose_class_is_missing(tmp_path: Path) -> None:
    _run(LENET + "\nimport torch\ntorch.save(LeNet5(), 'whole.pt')\n", tmp_path)
    with pytest.raises(UserError, match=r"whole\.pt is a pickled model whose class cannot be"):
        load_model(tmp_path / "whole.pt")


def test_bad_model_files_are_one_line_each(lenet_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "sd.pt"
    torch.save(nn.Linear(4, 2).state_dict(), state)
    cases = [
        (dict(path=state), r"holds a state_dict \(weights without the model\)"),
        (dict(path=state, model=f"{lenet_file}:LeNet5"), r"does not match .*missing conv1\.weight"),
        (dict(path=state, model=f"{lenet_file}:Nope"), r"defines no Nope"),
        (dict(path=state, model=f"{lenet_file}"), r"expected FILE\.py:ClassName"),
        (dict(path=state, model=f"{tmp_path}/none.py:X"), r"none\.py does not exist"),
        (dict(path=state, model="torch:Tensor"), r"Tensor is not an nn\.Module class"),
        (dict(path=tmp_path), r"is a folder"),
        (dict(path=tmp_path / "missing.pt"), r"does not exist"),
    ]
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    cases.append((dict(path=state, model=f"{broken}:X"), r"fails to import \(ModuleNotFoundError"))
    shape = tmp_path / "shape.pt"
    torch.save({"weight": torch.zeros(3, 4), "bias": torch.zeros(2)}, shape)
    cases.append(
        (dict(path=shape, model="torch.nn:Linear", model_args={"in_features": 4,
              "out_features": 2}), r"weight has shape \[3, 4\], the model's has \[2, 4\]")
    )  # fmt: skip
    nan = tmp_path / "nan.pt"
    torch.save({"weight": torch.full((2, 4), float("nan")), "bias": torch.zeros(2)}, nan)
    cases.append(
        (dict(path=nan, model="torch.nn:Linear", model_args={"in_features": 4,
              "out_features": 2}), r"weight holds nan \(weights must be finite")
    )  # fmt: skip
    text = tmp_path / "notes.pt"
    text.write_text("not a tensor file")
    cases.append((dict(path=text), r"is not a squeezeforge checkpoint nor a PyTorch model file"))
    torch.save([1, 2, 3], tmp_path / "list.pt")
    cases.append((dict(path=tmp_path / "list.pt"), r"or a pickled model \(it holds a list\)"))
    for kwargs, pattern in cases:
        path = kwargs.pop("path")
        with pytest.raises(UserError, match=pattern) as err:
            load_model(path, **kwargs)
        assert "\n" not in str(err.value)


class _OnnxNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return torch.log_softmax(self.fc(torch.flatten(x, 1)), dim=1)


class _Sigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x.flatten(1)))


def _export(model: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, 1, 8, 8),), str(path), dynamo=False)
    return path


def test_an_onnx_export_of_a_torch_model_comes_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _OnnxNet().eval()
    notes: list[str] = []
    stack = load_onnx(_export(model, tmp_path / "net.onnx"), notes=notes)
    assert [type(m).__name__ for m in stack] == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"]
    assert notes and "LogSoftmax" in notes[0]
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(torch.log_softmax(stack(x), 1), model(x), atol=1e-5)
    ckpt = load_model(tmp_path / "net.onnx")
    assert ckpt.model_name == "net"


def test_an_onnx_node_without_an_ir_equivalent_is_named(tmp_path: Path) -> None:
    path = _export(_Sigmoid(), tmp_path / "sig.onnx")
    with pytest.raises(UserError, match=r"sig\.onnx: node .*\(Sigmoid\) has no equivalent"):
        load_onnx(path)
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01junk")
    with pytest.raises(UserError, match=r"junk\.onnx is not a valid ONNX model"):
        load_onnx(tmp_path / "junk.onnx")


class _OnnxGraph(nn.Module):
    """A residual block, a depthwise conv with ReLU6, a fire-style concat and a global average
    pool: what a Keras or PyTorch user's compact net exports as."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.pw = nn.Conv2d(4, 4, 1)
        self.e1 = nn.Conv2d(4, 2, 1)
        self.e3 = nn.Conv2d(4, 2, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem(x))
        r = torch.relu(s + self.pw(nn.functional.relu6(self.dw(s))))
        c = torch.cat([torch.relu(self.e1(r)), torch.relu(self.e3(r))], dim=1)
        return self.fc(nn.functional.adaptive_avg_pool2d(c, 1).flatten(1))


def test_an_onnx_graph_comes_back_as_a_graph_and_compresses(tmp_path: Path) -> None:
    from squeezeforge.models.compress.pipeline import compress_net
    from squeezeforge.models.graph import LayerGraph

    torch.manual_seed(0)
    model = _OnnxGraph().eval()
    graph = load_onnx(_export(model, tmp_path / "graph.onnx"))
    assert isinstance(graph, LayerGraph)
    kinds = [type(m).__name__ for m in graph]
    assert {"ResidualAdd", "ChannelConcat", "Hardtanh", "AdaptiveAvgPool2d"} <= set(kinds)
    assert any(getattr(m, "groups", 1) == 4 for m in graph)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(graph(x), model(x), atol=1e-5)
    # On to the IR: an add, a concat, a depthwise conv with a clamp; fake quant == reference.
    net, report = compress_net(graph, "fixed8", model_name="graph", seed=0)
    by_kind = {layer.kind for layer in net.layers}
    assert {"add", "concat", "avgpool2d"} <= by_kind and not net.is_chain
    assert any(getattr(la, "clamp_max", None) is not None for la in net.layers)
    assert report["accuracy"]["agreement"] == 1.0


def test_an_onnx_concat_along_another_axis_is_named(tmp_path: Path) -> None:
    import onnx

    path = _export(_OnnxGraph(), tmp_path / "graph.onnx")
    model = onnx.load(str(path))
    cat = next(n for n in model.graph.node if n.op_type == "Concat")
    next(a for a in cat.attribute if a.name == "axis").i = 2
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(UserError, match=r"bad\.onnx: node .*\(Concat\): only a concat .* axis 1"):
        load_onnx(tmp_path / "bad.onnx")
