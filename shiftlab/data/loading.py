"""From the preprocessing cache to training batches: the Dataset and the DataLoader settings.

Kept apart from the DataModule (and free of DICOM, Hydra and Lightning imports) so that
``benchmarks/gpu_throughput.py`` measures the very loader a run uses on a machine that has only
PyTorch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info


class CachedSeries(Dataset):
    """Rows of the preprocessing cache: (image, label, manifest row index), one sample at a time.

    The DataLoader reads ``batch_size`` samples one by one and stacks them (default collate).
    """

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


class CachedBatches(CachedSeries):
    """The same rows read a whole batch at a time: one gather from the memory-mapped cache.

    The DataLoader hands the sampler's indices of a batch to ``__getitems__`` (same sampler, same
    order as reading sample by sample); the batch comes back already stacked, equal element for
    element to what the per-sample path stacks. One ``np.take`` in batch order copies each sample
    (a contiguous block of the cache) once, straight into the batch: in a loader worker into
    shared memory, as PyTorch's default collate does, so that the batch is not copied again on its
    way to the training process. Reading in sorted row order and reordering afterwards costs a
    second copy of the batch and was slower (``benchmarks/loader_throughput.py``).
    """

    def __init__(self, arrays: np.ndarray, rows: np.ndarray, labels: np.ndarray) -> None:
        super().__init__(arrays, rows, labels)
        # np.take below clips instead of checking each batch's rows (its checking mode buffers
        # the whole batch once more), so every row is checked here, once.
        if len(rows) and not 0 <= int(np.min(rows)) <= int(np.max(rows)) < len(arrays):
            raise IndexError(f"rows outside the cache's {len(arrays)} samples")

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        rows = np.asarray(self.rows[index], dtype=np.int64)
        image = _batch_tensor((len(rows), *self.arrays.shape[1:]))
        np.take(self.arrays, rows, axis=0, out=image.numpy(), mode="clip")
        return {
            "image": image,
            "label": torch.from_numpy(np.asarray(self.labels[index], dtype=np.float32)),
            "row": torch.from_numpy(rows),
        }


def _batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 batch: in shared memory inside a loader worker, else backed by a
    NumPy allocation (which, unlike torch.empty, asks for huge pages and fills measurably faster).
    """
    if get_worker_info() is None:
        return torch.from_numpy(np.empty(shape, dtype=np.float32))
    return _shared_tensor(shape)


def _shared_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor in shared memory.

    PyTorch has no public call that allocates in shared memory: ``share_memory_()`` moves a
    tensor there, a second allocation and a copy (a 50x3x256x256 batch took 50 ms instead of
    20-40 ms to allocate and fill). So it is allocated as PyTorch's default collate allocates a
    worker's batch (torch/utils/data/_utils/collate.py, ``collate_tensor_fn``), through the
    private ``TypedStorage._new_shared``, and with the public call where a release lacks it.
    """
    try:
        new_shared = torch.empty(0)._typed_storage()._new_shared
    except AttributeError:
        return torch.empty(shape).share_memory_()
    return torch.empty(0).new(new_shared(int(np.prod(shape)), device="cpu")).resize_(shape)


def already_collated(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The collate function of ``CachedBatches``: its batches come out stacked."""
    return batch


def cached_dataset(
    arrays: np.ndarray, rows: np.ndarray, labels: np.ndarray, batch_reads: bool = True
) -> CachedSeries:
    """Batch-wise reads (``CachedBatches``) by default; ``batch_reads=False`` reads per sample."""
    return (CachedBatches if batch_reads else CachedSeries)(arrays, rows, labels)


def collate_for(dataset: Dataset) -> Callable | None:
    """The DataLoader's ``collate_fn`` for ``dataset`` (None: PyTorch's default collate)."""
    return already_collated if isinstance(dataset, CachedBatches) else None


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
