import copy

import numpy as np
import pytest
import torch
from torch import nn

from squeezeforge.models import export as export_mod
from squeezeforge.models.compress.base import Context
from squeezeforge.models.compress.fixed import FixedPoint
from squeezeforge.models.export import post_training_export, reference_quality
from squeezeforge.models.quant import prepare
from squeezeforge.models.train import evaluate, predict
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.ir import Conv2d, Dense, Flatten, MaxPool2d, load_net, net_to_bytes, save_net
from squeezeforge.sim.reference import run_net


def test_export_structure_and_round_trip(tmp_path, digits, cnn_short):
    net = post_training_export(cnn_short, bits=8, data=digits, name="cnn8")
    kinds = [type(layer) for layer in net.layers]
    assert kinds == [Conv2d, MaxPool2d, Conv2d, MaxPool2d, Flatten, Dense, Dense, Dense]
    assert [getattr(layer, "relu", None) for layer in net.layers] == [
        True,
        None,
        True,
        None,
        None,
        True,
        True,
        False,
    ]
    assert net.input_format.frac == 6  # 8 bits, 1.0 representable
    assert net.test_inputs.shape == (360, 1, 8, 8)
    np.testing.assert_array_equal(net.test_labels, digits.y_test)
    path = save_net(net, tmp_path / "cnn8.sfnet")
    loaded = load_net(path)
    np.testing.assert_array_equal(run_net(loaded, loaded.test_inputs), net.test_outputs)
    assert net_to_bytes(loaded) == net_to_bytes(net)
    again = post_training_export(cnn_short, bits=8, data=digits, name="cnn8")
    assert net_to_bytes(again) == net_to_bytes(net)


@pytest.mark.parametrize("model_fixture", ["cnn_short", "mlp_short"])
def test_exported_accuracy_close_to_float(request, digits, model_fixture):
    model = request.getfixturevalue(model_fixture)
    net = post_training_export(model, bits=8, data=digits)
    float_acc = evaluate(model, digits.x_test, digits.y_test)
    assert abs(reference_quality(net)["accuracy"] - float_acc) <= 0.02


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_fake_quant_agrees_with_reference(digits, cnn_short, bits):
    prepared = prepare(cnn_short)
    FixedPoint(weight_bits=bits, activation_bits=bits).apply(prepared, Context(data=digits))
    net = export_mod.to_net(prepared, digits)
    fake = predict(copy.deepcopy(prepared).double(), digits.x_test)
    # Exact in float64: the fake-quantized logits are the reference's integers times 2**-frac.
    scaled = fake * 2.0**net.output_format.frac
    np.testing.assert_array_equal(scaled, net.test_outputs)
    # The comparison can fail: a corrupted reference output is caught.
    bad = net.test_outputs.copy()
    bad[0, 0] += 1
    assert not np.array_equal(scaled, bad)


def test_unsupported_module_is_named_before_any_work(monkeypatch):
    def no_data():
        raise AssertionError("data was loaded before the model was checked")

    monkeypatch.setattr(export_mod, "load_digits", no_data)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.LSTM(32, 16))
    with pytest.raises(UserError, match=r"module '2' \(LSTM\) cannot be expressed"):
        post_training_export(model)
    dilated = nn.Sequential(nn.Conv2d(4, 4, 3, dilation=2))
    with pytest.raises(UserError, match=r"'0' \(Conv2d\) is not supported: dilation=\(2, 2\)"):
        post_training_export(dilated)
    stray = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(UserError, match="ReLU '0' does not follow"):
        post_training_export(stray)


def test_dropout_and_identity_are_skipped(digits):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(64, 10),
        nn.Identity(),
        nn.ReLU(),
        nn.Linear(10, 10),
    ).eval()
    net = post_training_export(model, data=digits)
    assert [layer.kind for layer in net.layers] == ["flatten", "dense", "dense"]
    assert net.layers[1].relu
