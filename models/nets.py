"""The reference networks, sized for 8x8 digits.

Both are plain :class:`torch.nn.Sequential` stacks with named children, so every pass and the
export walk their modules in execution order, and a layer is addressed by a stable name
(``conv1``, ``fc2``...) in recipes and reports.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

__all__ = ["MODELS", "DigitsCNN", "DigitsMLP", "DigitsMobile", "build_model"]


class DigitsCNN(nn.Sequential):
    """LeNet-5 style for 8x8 inputs.

    conv1 1->6 3x3 pad 1, ReLU, 2x2 max pool (8x8 -> 4x4); conv2 6->16 3x3 pad 1, ReLU, pool
    (4x4 -> 2x2); flatten (16*2*2 = 64); fc1 64->120, ReLU; fc2 120->84, ReLU; fc3 84->10.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(1, 6, 3, padding=1)),
                    ("relu1", nn.ReLU()),
                    ("pool1", nn.MaxPool2d(2)),
                    ("conv2", nn.Conv2d(6, 16, 3, padding=1)),
                    ("relu2", nn.ReLU()),
                    ("pool2", nn.MaxPool2d(2)),
                    ("flatten", nn.Flatten()),
                    ("fc1", nn.Linear(64, 120)),
                    ("relu3", nn.ReLU()),
                    ("fc2", nn.Linear(120, 84)),
                    ("relu4", nn.ReLU()),
                    ("fc3", nn.Linear(84, num_classes)),
                ]
            )
        )


class DigitsMLP(nn.Sequential):
    """LeNet-300-100 style: flatten 8x8 -> 64, fc1 64->300, ReLU, fc2 300->100, ReLU, fc3 100->10.

    (Deep Compression's LeNet-300-100 sized for 64 inputs instead of 784.)
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            OrderedDict(
                [
                    ("flatten", nn.Flatten()),
                    ("fc1", nn.Linear(64, 300)),
                    ("relu1", nn.ReLU()),
                    ("fc2", nn.Linear(300, 100)),
                    ("relu2", nn.ReLU()),
                    ("fc3", nn.Linear(100, num_classes)),
                ]
            )
        )


class DigitsMobile(nn.Sequential):
    """Compact filters (MobileNet's depthwise-separable block, global average pooling instead
    of large FC layers) for 8x8 inputs.

    conv1 1->16 3x3 pad 1, ReLU, 2x2 max pool (8x8 -> 4x4); dw2 16->16 3x3 pad 1 depthwise, ReLU;
    pw2 16->32 1x1, ReLU; gap: 4x4 average (16 values, an exact shift); flatten; fc 32->10.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(1, 16, 3, padding=1)),
                    ("relu1", nn.ReLU()),
                    ("pool1", nn.MaxPool2d(2)),
                    ("dw2", nn.Conv2d(16, 16, 3, padding=1, groups=16)),
                    ("relu2", nn.ReLU()),
                    ("pw2", nn.Conv2d(16, 32, 1)),
                    ("relu3", nn.ReLU()),
                    ("gap", nn.AvgPool2d(4)),
                    ("flatten", nn.Flatten()),
                    ("fc", nn.Linear(32, num_classes)),
                ]
            )
        )


MODELS: dict[str, type[nn.Sequential]] = {
    "cnn": DigitsCNN,
    "mlp": DigitsMLP,
    "mobile": DigitsMobile,
}


def build_model(name: str) -> nn.Sequential:
    """A freshly initialised model from :data:`MODELS` (seed torch first for repeatability)."""
    from squeezeforge.sim.errors import UserError

    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name]()
