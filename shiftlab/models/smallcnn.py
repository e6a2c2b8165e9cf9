"""SmallCNN: a four-block CNN that trains in seconds on a CPU.

Not a network of the study. It exists for work where the study's networks are too slow on a
laptop-class CPU: calibrating the synthetic X-ray set over dozens of runs (DenseNet-121 takes
minutes per run on two cores), quick experiments, and smoke grids. The design is the one that
the synthetic prototype measured (docs/study.md) as learning the synthetic shifts at 64
pixels: four 3x3 convolutions with BatchNorm and ReLU (16-32-64-64 channels), max-pooling after
the first three, global average pooling, dropout and one logit. The sample's slices (or
channels) are its input channels.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(
        self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64, 64), dropout: float = 0.3
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, channels, height, width) -> one logit per sample, shape (batch,)."""
        return self.head(self.dropout(self.pool(self.features(x)).flatten(1))).squeeze(1)
