"""DenseNet-121 (torchvision) for grey images, with one logit per image.

Grayscale is handled explicitly: the first convolution takes ``in_channels`` channels (default 1).
With ImageNet weights (``pretrained``, an opt-in download) that convolution is adapted from the RGB
one by ``adapt_first_conv``, so a grey image gives exactly what the RGB model gives on that image
copied into all three channels; without them it is freshly initialised like every other
convolution of torchvision's DenseNet. The 1000-class classifier becomes dropout + one logit.
Global average pooling before the classifier makes any input from 32 pixels up work (64 or 224).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import DenseNet121_Weights, densenet121

from shiftlab.models.first_conv import adapt_first_conv, conv_like


class DenseNet121(nn.Module):
    def __init__(
        self, pretrained: bool = False, in_channels: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        net = densenet121(weights=DenseNet121_Weights.IMAGENET1K_V1 if pretrained else None)
        rgb = net.features.conv0
        if pretrained:
            net.features.conv0 = adapt_first_conv(rgb, in_channels)
        else:
            stem = conv_like(rgb, in_channels)
            nn.init.kaiming_normal_(stem.weight)  # torchvision's initialisation of its convolutions
            net.features.conv0 = stem
        net.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(net.classifier.in_features, 1)
        )
        self.densenet = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, slices, height, width), slices = ``in_channels`` -> logits (batch,)."""
        return self.densenet(x).squeeze(1)
