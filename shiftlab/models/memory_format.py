"""channels_last (NHWC) memory format for the 2D networks and the batches they take.

On a GPU, convolutions with bf16 run on tensor cores in NHWC; a network kept in NCHW pays a layout
conversion around every convolution. 3D networks keep their layout: their batches are 4-D
(batch, depth, height, width) only until the network adds the channel axis. Shared by the
LightningModule and ``benchmarks/gpu_throughput.py`` so both measure the same thing.
"""

from __future__ import annotations

import torch
from torch import nn


def is_2d(net: nn.Module) -> bool:
    """Whether ``net`` convolves in 2D only (so channels_last applies to it)."""
    convolutions = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    return bool(convolutions) and all(isinstance(m, nn.Conv2d) for m in convolutions)


def to_channels_last(net: nn.Module) -> bool:
    """Put a 2D network's parameters in channels_last, in place; False (unchanged) otherwise."""
    if not is_2d(net):
        return False
    net.to(memory_format=torch.channels_last)
    return True


def first_conv_channels(net: nn.Module) -> int | None:
    """The input channels of the first 2D convolution of ``net`` (None without one)."""
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    return None if first is None else first.in_channels


def channels_last_batch(image: torch.Tensor, first_channels: int | None) -> torch.Tensor:
    """``image`` in channels_last where its channel axis is what the first convolution takes.

    ``first_channels``: ``first_conv_channels(net)``, looked up once rather than every step.
    MRNet2D folds its slices into the batch before the first convolution (one channel), so its
    (batch, slices, height, width) input is left alone: converting it would only add a copy.
    """
    if image.dim() != 4 or image.shape[1] != first_channels:
        return image
    return image.contiguous(memory_format=torch.channels_last)
