"""MRNet2D: the MRNet-style slice CNN of the study.

AlexNet features run on every slice, are average-pooled to one vector per slice, max-pooled over
slices, and a linear head gives one logit per series (Bien et al., 2018).

Deviations from the original, both switchable:

- ``norm``: BatchNorm after every convolution. AlexNet features trained from scratch did not
  learn on the synthetic data (AUROC 0.50-0.59, docs/study.md); the original relies on ImageNet
  weights, which cannot be downloaded at run time here. ``None`` (default) turns it on exactly
  when no pretrained weights are loaded.
- ``first_conv_stride``: AlexNet's stride 4 suits 256-pixel inputs; 2 keeps enough resolution at
  the 64-pixel inputs of the synthetic data.

Grayscale is handled explicitly: the first convolution takes one channel; with pretrained weights
its RGB kernels are summed, which equals feeding the grey image to all three channels as MRNet did.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import AlexNet_Weights, alexnet

from shiftlab.models.first_conv import adapt_first_conv, conv_like


class MRNet2D(nn.Module):
    def __init__(
        self,
        pretrained: bool = False,
        norm: bool | None = None,
        first_conv_stride: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        weights = AlexNet_Weights.IMAGENET1K_V1 if pretrained else None
        features = alexnet(weights=weights).features
        use_norm = (not pretrained) if norm is None else norm
        layers: list[nn.Module] = []
        for layer in features:
            if isinstance(layer, nn.Conv2d) and layer.in_channels == 3:
                # Not pretrained: the default initialisation's scale for one input channel.
                make = adapt_first_conv if pretrained else conv_like
                layer = make(layer, 1, first_conv_stride)
            layers.append(layer)
            if use_norm and isinstance(layer, nn.Conv2d):
                layers.append(nn.BatchNorm2d(layer.out_channels))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features[-3].out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, slices, height, width) -> one logit per series, shape (batch,)."""
        batch, slices = x.shape[:2]
        per_slice = self.pool(self.features(x.flatten(0, 1).unsqueeze(1))).flatten(1)
        per_series = per_slice.view(batch, slices, -1).amax(dim=1)
        return self.head(self.dropout(per_series)).squeeze(1)
