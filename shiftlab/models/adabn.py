"""AdaBN: BatchNorm statistics re-estimated on a domain's own images before testing it.

Li, Wang, Shi, Liu and Hou, "Revisiting Batch Normalization For Practical Domain Adaptation"
(arXiv:1603.04779, 2016; Pattern Recognition 80, 2018). Their Algorithm 1: for every neuron,
the mean and variance of its responses over all images of the target domain replace those of
the source in BatchNorm; every learnt weight stays as it is. It needs the target's images and
never their labels, and it is transductive: a test domain's statistics come from that domain's
test images themselves.

Where the paper is silent, shiftlab's choices:

- the images: each test domain's own test split, the very samples then tested (Li et al. use
  "all images of the target domain"); the source domain keeps the statistics it trained with,
  so ΔAUC compares the adapted target with the model as selected;
- how they pass: once, in the evaluation batches, every BatchNorm layer in training mode with a
  cumulative average (``momentum=None``, as ``torch.optim.swa_utils.update_bn`` re-estimates
  statistics), every other layer in evaluation mode (dropout off); so a layer's statistics are
  those of its inputs as the layers before normalise them batch by batch, and the mean of the
  batch means and of the batch variances stands for the domain's;
- the statistics of the model as tested are put back when testing ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

BATCHNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def batchnorm_layers(net: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers (1D, 2D, 3D) of ``net`` that keep running statistics."""
    return [m for m in net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def batchnorm_statistics(net: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every BatchNorm running statistic of ``net``, by state-dict name."""
    return {
        name: value.detach().clone()
        for name, value in net.named_buffers()
        if name.rsplit(".", 1)[-1] in BATCHNORM_BUFFERS
    }


def load_batchnorm_statistics(net: nn.Module, statistics: dict[str, torch.Tensor]) -> None:
    buffers = dict(net.named_buffers())
    for name, value in statistics.items():
        buffers[name].copy_(value)


@torch.no_grad()
def estimate_batchnorm_statistics(
    net: nn.Module, images: Iterable[torch.Tensor], forward: Callable | None = None
) -> dict[str, torch.Tensor]:
    """BatchNorm statistics of ``net`` re-estimated on ``images`` (batches of images, nothing
    else); ``forward`` runs the network (default ``net`` itself). The network's own statistics,
    modes and momenta are left as they were; the estimate comes back."""
    layers = batchnorm_layers(net)
    before = batchnorm_statistics(net)
    modes = {m: m.training for m in net.modules()}
    momenta = [layer.momentum for layer in layers]
    try:
        net.eval()
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # a cumulative average: every batch counts alike
            layer.train()
        for image in images:
            (forward or net)(image)
        return batchnorm_statistics(net)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        for module, training in modes.items():
            module.train(training)
        load_batchnorm_statistics(net, before)


class TestDomainBatchNorm(L.Callback):
    """At test time, each test domain but the first (the source) is tested with BatchNorm
    statistics re-estimated on its own test images; the source with the trained ones.

    The images reach the network as its test batches do (the datamodule's batch hooks, so an
    intensity standardisation applies too); only ``batch["image"]`` is read."""

    def __init__(self) -> None:
        self.statistics: list[dict[str, torch.Tensor]] = []
        self.current: int | None = None

    def on_test_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        loaders = trainer.test_dataloaders
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        source = batchnorm_statistics(module)
        self.statistics = [source]
        for index, loader in enumerate(loaders[1:], start=1):
            self.statistics.append(
                estimate_batchnorm_statistics(module, _images(trainer, loader, index), module)
            )
        self.current = 0

    def on_test_batch_start(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != self.current:
            load_batchnorm_statistics(module, self.statistics[dataloader_idx])
            self.current = dataloader_idx

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.statistics:
            load_batchnorm_statistics(module, self.statistics[0])
        self.statistics, self.current = [], None


def _images(trainer: L.Trainer, loader: Iterable, index: int) -> Iterable[torch.Tensor]:
    """The images of a test loader's batches, on the device, through the batch hooks."""
    for batch in loader:
        yield trainer.strategy.batch_to_device(batch, dataloader_idx=index)["image"]
