"""Random streams that follow (seed, epoch, step), so a resumed run is the run left alone.

A run resumed from ``last.ckpt`` gets its weights, optimiser, schedule and loop counters back
from the checkpoint, but not the random state of the process that wrote it. Worse, which random
numbers an epoch consumes depends on the process's history: Lightning creates the first
epoch's DataLoader iterator before ``on_train_epoch_start`` and every later one after it, and
creating one draws a seed from torch's global generator. So nothing here continues a global
stream. Each stream is derived from the run's seed and where training is:

- the order of the training samples: ``EpochShuffle``, from (seed, epoch);
- random flips (and the noise ablation, ``shiftlab.data.shift``): ``EpochGenerator``, from
  (seed, epoch), drawn in batch order;
- the appearance augmentation (``mitigation=augment``, ``shiftlab.data.mitigation``): from
  (seed, epoch, batch) for each training batch;
- whatever the network draws from torch's global generator (dropout): reseeded from
  (seed, epoch, batch) before every training step by ``StepSeed``.

Resumes start at an epoch boundary (``last.ckpt`` is written after every epoch), so a run killed
at any moment and resumed trains on the same batches with the same draws.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler

# Independent streams of one run; the noise ablation's stream is (seed, epoch) with no number,
# as it was before the others existed, so its runs keep their noise.
NOISE_STREAM = None
FLIP_STREAM, ORDER_STREAM, STEP_STREAM, AUGMENT_STREAM = 1, 2, 3, 4


def derived_seed(seed: int, *where: int) -> int:
    """A 32-bit seed, well mixed from the run's seed and a position (epoch, stream, step)."""
    return int(np.random.SeedSequence([int(seed), *map(int, where)]).generate_state(1)[0])


class EpochShuffle(Sampler[int]):
    """A fresh permutation of ``n`` samples per epoch, from (seed, epoch) alone.

    Lightning calls ``set_epoch`` before each training epoch draws its first batch (as it does
    for DistributedSampler), including the first epoch of a resumed run.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch, ORDER_STREAM))
        return iter(torch.randperm(self.n, generator=generator).tolist())


class EpochGenerator:
    """A torch generator on a given device, restarted from (seed, epoch, stream) each epoch."""

    def __init__(self, seed: int, stream: int | None) -> None:
        self.seed, self.stream = int(seed), stream
        self._generator: torch.Generator | None = None
        self._epoch: int | None = None

    def __call__(self, device: torch.device, epoch: int) -> torch.Generator:
        if self._generator is None or self._generator.device != device or self._epoch != epoch:
            where = (epoch,) if self.stream is None else (epoch, self.stream)
            seed = derived_seed(self.seed, *where)
            self._generator = torch.Generator(device=device).manual_seed(seed)
            self._epoch = epoch
        return self._generator


class StepSeed(L.Callback):
    """Reseeds Python's, NumPy's and torch's global generators (CPU and every CUDA device)
    from (seed, epoch, batch) before each training step, for the draws a network makes itself."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step_seed = derived_seed(self.seed, trainer.current_epoch, batch_idx, STEP_STREAM)
        random.seed(step_seed)
        np.random.seed(step_seed)
        torch.manual_seed(step_seed)
