"""The reference networks, sized for 8x8 digits.

The stacks are plain :class:`torch.nn.Sequential` with named children, so every pass and the
export walk their modules in execution order, and a layer is addressed by a stable name
(``conv1``, ``fc2``...) in recipes and reports. The graph nets (``fire``, ``resnet``) have a
``forward`` of their own, as a user's model would; :func:`~squeezeforge.models.capture.capture`
turns them into a :class:`~squeezeforge.models.graph.LayerGraph` whose layer names are the
module paths (``fire1_squeeze``, ``block1_add``...).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .graph import ChannelConcat, ResidualAdd

__all__ = [
    "MODELS",
    "DigitsCNN",
    "DigitsFire",
    "DigitsMLP",
    "DigitsMobile",
    "DigitsResNet",
    "build_model",
]


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
    """Compact filters (MobileNet's depthwise-separable block) for 8x8 inputs.

    conv1 1->8 3x3 pad 1, ReLU, 2x2 max pool (8x8 -> 4x4); dw2 8->8 3x3 pad 1 depthwise, ReLU;
    pw2 8->32 1x1, ReLU; 2x2 max pool (4x4 -> 2x2); flatten; fc 128->10. 11,136 MACs, 3.2x
    fewer than the CNN's 35,880.

    The classifier reads a 2x2 map, not a global average: on maps this small a global average
    throws away where the strokes are (the same block with a 4x4 global average pool and fc
    48->10 trained to 87-93%, this one to 97-98%). Compact nets train longer from scratch
    (:attr:`EPOCHS`), as the surveys note.
    """

    EPOCHS = 120

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(1, 8, 3, padding=1)),
                    ("relu1", nn.ReLU()),
                    ("pool1", nn.MaxPool2d(2)),
                    ("dw2", nn.Conv2d(8, 8, 3, padding=1, groups=8)),
                    ("relu2", nn.ReLU()),
                    ("pw2", nn.Conv2d(8, 32, 1)),
                    ("relu3", nn.ReLU()),
                    ("pool2", nn.MaxPool2d(2)),
                    ("flatten", nn.Flatten()),
                    ("fc", nn.Linear(128, num_classes)),
                ]
            )
        )


class Fire(nn.Module):
    """SqueezeNet's fire module: a 1x1 squeeze, then 1x1 and 3x3 (padding 1) expands side by
    side, their outputs concatenated along the channels; ReLU after each conv."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.squeeze_relu = nn.ReLU()
        self.expand1 = nn.Conv2d(squeeze, expand, 1)
        self.expand1_relu = nn.ReLU()
        self.expand3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.expand3_relu = nn.ReLU()
        self.cat = ChannelConcat()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_relu(self.squeeze(x))
        return self.cat(self.expand1_relu(self.expand1(s)), self.expand3_relu(self.expand3(s)))


class DigitsFire(nn.Module):
    """SqueezeNet-style fire net for 8x8 inputs.

    conv1 1->16 3x3 pad 1, ReLU, 2x2 max pool (8x8 -> 4x4); fire1 (squeeze 16->6, expands 6->8
    1x1 and 3x3: 16 channels); fire2 the same; gap: 4x4 average; flatten; fc 16->10. 27,808
    MACs. (A squeeze of 4 channels, or a stem of 8, trained to a few points less and less
    reliably from seed to seed.) 120 epochs: 95.6% and 97.2% on seeds 0 and 1, against 91.1% and
    93-95% at 40.
    """

    EPOCHS = 120

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.fire1 = Fire(16, 6, 8)
        self.fire2 = Fire(16, 6, 8)
        self.gap = nn.AvgPool2d(4)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.fire2(self.fire1(x))
        return self.fc(self.flatten(self.gap(x)))


class BasicBlock(nn.Module):
    """ResNet's basic block with an identity shortcut: 3x3 conv, ReLU, 3x3 conv, the block's
    input added, ReLU (same channels, stride 1, padding 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.add = ResidualAdd()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.add(self.conv2(self.relu1(self.conv1(x))), x))


class DigitsResNet(nn.Module):
    """Small ResNet for 8x8 inputs.

    conv1 1->8 3x3 pad 1, ReLU, 2x2 max pool (8x8 -> 4x4); block1 (two 3x3 convs 8->8, identity
    shortcut); 2x2 max pool (4x4 -> 2x2); block2 (the same at 2x2); gap: 2x2 average; flatten;
    fc 8->10. 27,728 MACs. (Both blocks at 4x4 cost 41,552 MACs; two narrower blocks of 6
    channels there, or one block alone, trained to about 4 points less.)
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.block1 = BasicBlock(8)
        self.pool2 = nn.MaxPool2d(2)
        self.block2 = BasicBlock(8)
        self.gap = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.pool1(self.relu1(self.conv1(x))))
        x = self.block2(self.pool2(x))
        return self.fc(self.flatten(self.gap(x)))


MODELS: dict[str, type[nn.Module]] = {
    "cnn": DigitsCNN,
    "mlp": DigitsMLP,
    "mobile": DigitsMobile,
    "fire": DigitsFire,
    "resnet": DigitsResNet,
}


def build_model(name: str) -> nn.Module:
    """A freshly initialised model from :data:`MODELS` (seed torch first for repeatability)."""
    from squeezeforge.sim.errors import UserError

    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name]()
