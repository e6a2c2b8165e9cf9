"""MixStyle: feature statistics mixed between the samples of a training batch, in early layers.

Zhou, Yang, Qiao and Xiang, "Domain Generalization with MixStyle", ICLR 2021
(openreview.net/forum?id=6xHJ37MVxxp; code: github.com/KaiyangZhou/mixstyle-release). With
probability ``p`` per layer and batch, each sample's feature maps are normalised by their own
per-channel mean and standard deviation (over the spatial axes, detached from the graph) and
given a mix of its own and another sample's: λ·(μ, σ) of the sample plus (1 − λ)·(μ, σ) of a
partner, λ ~ Beta(α, α). In evaluation mode the layer is the identity. The release's README
(``README.md``) gives p = 0.5, α = 0.1, ε = 1e-6, a random partner within the batch (its
``random`` mix; its ``crossdomain`` mix needs several source domains, and a run has one) and
places the layer after the first and second residual blocks, advising several lower layers and
never the last.

Where the paper is silent, shiftlab's choices:

- the "blocks" of shiftlab's networks, which are not ResNets (``early_blocks``): SmallCNN's and
  MRNet2D's first max-pooled stages, NoduleX's convolution blocks, DenseNet-121's dense stages
  with their transitions; ``blocks`` = 2 puts the layer after the first two, as the README does;
- the layer is attached as a forward hook on the block's output, so the network's parameter
  names, hence its checkpoints, are those of the network without it;
- its random draws (whether it acts, λ, the partner) come from torch's global generator, which
  ``shiftlab.seeding.StepSeed`` reseeds from (seed, epoch, batch) before every training step: a
  resumed run draws the same;
- a feature map of one spatial element has no spatial spread to mix; it is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shiftlab.models.densenet import DenseNet121
from shiftlab.models.mrnet2d import MRNet2D
from shiftlab.models.nodulex import NoduleX
from shiftlab.models.smallcnn import SmallCNN

EPS = 1e-6


class MixStyle(nn.Module):
    """Mixes the per-channel feature statistics of a batch's samples while training."""

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = EPS) -> None:
        super().__init__()
        self.p, self.alpha, self.eps = float(p), float(alpha), float(eps)

    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, channels, *spatial) features; the identity in evaluation mode."""
        if not self.training or torch.rand(()).item() >= self.p:
            return x
        spatial = tuple(range(2, x.ndim))
        if x[0, 0].numel() < 2:
            return x
        mean = x.mean(dim=spatial, keepdim=True).detach()
        std = (x.var(dim=spatial, keepdim=True) + self.eps).sqrt().detach()
        normed = (x - mean) / std
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))
        weight = beta.sample(shape).to(device=x.device, dtype=x.dtype)
        partner = torch.randperm(x.shape[0]).to(x.device)
        mixed_mean = weight * mean + (1 - weight) * mean[partner]
        mixed_std = weight * std + (1 - weight) * std[partner]
        return normed * mixed_std + mixed_mean


def early_blocks(net: nn.Module) -> list[nn.Module]:
    """The blocks of a shiftlab network in forward order, after any of which MixStyle may go.

    A network shiftlab does not know is refused: where its early blocks end is its design.
    """
    if isinstance(net, SmallCNN | MRNet2D):
        # Conv, (BatchNorm,) ReLU, max-pool: each max-pool closes a stage.
        return [layer for layer in net.features if isinstance(layer, nn.MaxPool2d)]
    if isinstance(net, NoduleX):
        return list(net.blocks)
    if isinstance(net, DenseNet121):
        features = net.densenet.features
        return [getattr(features, f"transition{i}") for i in (1, 2, 3)]
    raise ValueError(
        f"MixStyle knows the early blocks of SmallCNN, MRNet2D, NoduleX and DenseNet121, not of "
        f"{type(net).__name__}"
    )


def insert_mixstyle(net: nn.Module, blocks: int, p: float, alpha: float) -> Sequence[MixStyle]:
    """MixStyle after each of the first ``blocks`` early blocks of ``net``, in place.

    The layers become ``net.mixstyle`` (no parameters or buffers: the state dict is unchanged)
    and act through forward hooks, so they follow ``net.train()`` and ``net.eval()``.
    """
    available = early_blocks(net)
    if not 1 <= blocks <= len(available):
        raise ValueError(
            f"{type(net).__name__} has {len(available)} early blocks to follow; asked for {blocks}"
        )
    layers = nn.ModuleList(MixStyle(p, alpha) for _ in range(blocks))
    for block, layer in zip(available, layers, strict=False):
        block.register_forward_hook(lambda module, args, output, layer=layer: layer(output))
    net.mixstyle = layers
    return list(layers)
