"""The issue's targets on digits, with the shipped recipes on fully trained nets (slow tier)."""

import pytest

from squeezeforge.models.compress import compress
from squeezeforge.models.train import Checkpoint, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full(digits):
    return {
        name: Checkpoint(name, train(name, seed=0, data=digits, quiet=True)[0])
        for name in ("cnn", "mlp")
    }


@pytest.mark.parametrize(
    ("model", "recipe", "max_drop", "min_cr"),
    [
        ("cnn", "fixed8", 0.005, 3.9),
        ("cnn", "inq5", 0.005, 6.0),
        ("mlp", "deep-compression", 0.01, 25.0),
    ],
)
def test_shipped_recipe_meets_target(tmp_path, digits, full, model, recipe, max_drop, min_cr):
    report = compress(full[model], recipe, tmp_path / "a.sfnet", data=digits)
    acc = report["accuracy"]
    assert acc["float"] - acc["reference"] <= max_drop + 1e-9
    assert report["compression_ratio"] >= min_cr
    assert acc["agreement"] >= 0.995
    again = compress(full[model], recipe, tmp_path / "b.sfnet", data=digits)
    assert (tmp_path / "a.sfnet").read_bytes() == (tmp_path / "b.sfnet").read_bytes()
    assert again["accuracy"] == acc
