"""From the preprocessing cache to training batches: the Dataset and the DataLoader settings.

Kept apart from the DataModule (and free of DICOM, Hydra and Lightning imports) so that
``benchmarks/gpu_throughput.py`` measures the very loader a run uses on a machine that has only
PyTorch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


class CachedSeries(Dataset):
    """Rows of the preprocessing cache: (image, label, manifest row index)."""

    def __init__(self, arrays: np.ndarray, rows: np.ndarray, labels: np.ndarray) -> None:
        self.arrays, self.rows, self.labels = arrays, rows, labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[i])
        return {
            "image": torch.from_numpy(np.array(self.arrays[row])),
            "label": torch.tensor(float(self.labels[i])),
            "row": torch.tensor(row),
        }


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def loader_workers(
    num_workers: int,
    gpu_workers: Mapping[str, int] | None = None,
    modality: str | None = None,
    cuda: bool | None = None,
) -> int:
    """Worker processes for a run's loaders.

    On CPU ``num_workers`` as configured (0 by default: the memory-mapped cache is fast and workers
    would take cores from training). With CUDA, the modality's entry of ``gpu_workers`` where it
    has one, at most one less than the usable cores (the training process keeps one): a GPU step is
    short enough for loading in the training process to leave the GPU idle.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda and gpu_workers and modality in gpu_workers:
        return max(0, min(int(gpu_workers[modality]), usable_cores() - 1))
    return num_workers


def loader_options(num_workers: int, pin_memory: bool | None = None) -> dict[str, Any]:
    """DataLoader keyword arguments shared by every loader of a run.

    Pinned (page-locked) host memory lets batches reach a CUDA device asynchronously; it is only
    asked for when one is present (``pin_memory=None``). Workers persist across epochs, so their
    start-up is paid once per run.
    """
    return {
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "pin_memory": torch.cuda.is_available() if pin_memory is None else pin_memory,
    }
