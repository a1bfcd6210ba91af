import io

import numpy as np
import pytest
import torch

from squeezeforge.models.nets import DigitsCNN, DigitsMLP
from squeezeforge.models.train import (
    evaluate,
    load_checkpoint,
    predict,
    save_checkpoint,
    train,
)
from squeezeforge.sim.errors import UserError
from squeezeforge.sim.progress import progress


def test_nets_have_the_lenet_shapes():
    x = torch.zeros(2, 1, 8, 8)
    assert DigitsCNN()(x).shape == (2, 10) and DigitsMLP()(x).shape == (2, 10)
    assert (
        sum(p.numel() for p in DigitsMLP().parameters()) == 64 * 300 + 300 + 300 * 100 + 100 + 1010
    )


def test_training_is_deterministic(digits):
    a, ha = train("mlp", 1, 7, data=digits, quiet=True)
    b, hb = train("mlp", 1, 7, data=digits, quiet=True)
    c, _ = train("mlp", 1, 8, data=digits, quiet=True)
    assert ha == hb
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka
    assert not torch.equal(a.fc1.weight, c.fc1.weight)
    # Training restores the caller's settings.
    assert not torch.are_deterministic_algorithms_enabled()


def test_checkpoint_round_trip(tmp_path, digits, mlp_short):
    path = save_checkpoint(tmp_path / "m.pt", "mlp", mlp_short, {"seed": 0}, {"acc": 0.5})
    ckpt = load_checkpoint(path)
    assert ckpt.model_name == "mlp" and ckpt.config == {"seed": 0}
    np.testing.assert_array_equal(
        predict(ckpt.model, digits.x_test), predict(mlp_short, digits.x_test)
    )


def test_checkpoint_errors(tmp_path, mlp_short):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="is not a squeezeforge checkpoint"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(UserError, match="no 'squeezeforge-checkpoint' tag"):
        load_checkpoint(foreign)
    wrong = save_checkpoint(tmp_path / "wrong.pt", "cnn", mlp_short)  # MLP weights, CNN name
    with pytest.raises(UserError, match="weights do not fit the cnn model"):
        load_checkpoint(wrong)
    blob = torch.load(wrong, weights_only=True)
    blob["model"] = "vgg"
    torch.save(blob, wrong)
    with pytest.raises(UserError, match="unknown model 'vgg'"):
        load_checkpoint(wrong)


def test_progress_draws_a_bar_on_a_terminal_unless_quiet():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown = Terminal()
    with progress(3, "step", stream=shown) as p:
        for i in range(3):
            p.update(1, info=f"loss {i}")
    assert p.done == 3 and p.info == "loss 2"
    assert "step" in shown.getvalue() and "3/3" in shown.getvalue()
    assert "loss 2" in shown.getvalue()
    for stream, quiet in ((Terminal(), True), (io.StringIO(), False)):
        with progress(3, "step", stream=stream, quiet=quiet) as p:
            p.update(3)
        assert stream.getvalue() == ""


@pytest.mark.slow
def test_cnn_reaches_96_percent(digits):
    model, history = train("cnn", seed=0, data=digits, quiet=True)
    acc = evaluate(model, digits.x_test, digits.y_test)
    assert acc == history[-1]["test_accuracy"]
    assert acc >= 0.96
