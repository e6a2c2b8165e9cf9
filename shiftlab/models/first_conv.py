"""The first convolution of an ImageNet network, rebuilt for grey medical images.

MRNet2D and DenseNet-121 both replace a 3-channel first convolution; with ImageNet weights the
new kernels come from the RGB ones, never left silently random.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_like(rgb: nn.Conv2d, in_channels: int, stride: int | None = None) -> nn.Conv2d:
    """A freshly initialised convolution shaped like ``rgb`` but taking ``in_channels``."""
    return nn.Conv2d(
        in_channels,
        rgb.out_channels,
        rgb.kernel_size,
        stride=rgb.stride if stride is None else stride,
        padding=rgb.padding,
        bias=rgb.bias is not None,
    )


def adapt_first_conv(rgb: nn.Conv2d, in_channels: int = 1, stride: int | None = None) -> nn.Conv2d:
    """A copy of ``rgb`` taking ``in_channels`` channels that is equivalent on grey inputs.

    Each new kernel is the sum of the RGB kernels divided by ``in_channels``, so the same grey
    image in every input channel gives the RGB convolution's output on the grey image in R, G and
    B. For one channel this is the plain sum of the RGB kernels.
    """
    grey = conv_like(rgb, in_channels, stride)
    with torch.no_grad():
        summed = rgb.weight.sum(dim=1, keepdim=True)
        grey.weight.copy_(summed.expand(-1, in_channels, -1, -1) / in_channels)
        if rgb.bias is not None:
            grey.bias.copy_(rgb.bias)
    return grey
