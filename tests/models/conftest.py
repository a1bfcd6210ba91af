"""Shared fixtures for the models tests: one thread (the machine is shared), small trained nets."""

from __future__ import annotations

import pytest
import torch

from squeezeforge.models.data import Dataset, load_digits
from squeezeforge.models.train import train

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="session")
def cnn_short(digits: Dataset) -> torch.nn.Module:
    """The CNN after 3 epochs: far from converged, but real weights and ~90% accuracy."""
    model, _ = train("cnn", 3, 0, data=digits, quiet=True)
    return model


@pytest.fixture(scope="session")
def mlp_short(digits: Dataset) -> torch.nn.Module:
    model, _ = train("mlp", 3, 0, data=digits, quiet=True)
    return model
