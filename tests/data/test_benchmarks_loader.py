"""Batch-wise reads from the cache: the same batches as reading sample by sample, and the loader
benchmark in its quickest mode."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.compose import REPO
from helpers.sets import SyntheticSet
from torch.utils.data import DataLoader

from shiftlab.data.loading import CachedBatches, CachedSeries, cached_dataset, collate_for
from shiftlab.errors import instantiate


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _epoch(loader: DataLoader, seed: int) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    return list(loader)


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys() == {"image", "label", "row"}
        for key in x:
            assert x[key].dtype == y[key].dtype, key
            assert torch.equal(x[key], y[key]), key


@pytest.mark.parametrize("workers", [0, 1])
def test_batch_reads_give_the_per_sample_batches(tmp_path: Path, workers: int) -> None:
    path = tmp_path / "cache.npy"
    cache = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(40, 2, 5, 5))
    cache[:] = np.random.default_rng(0).standard_normal(cache.shape, dtype=np.float32)
    cache.flush()
    arrays = np.load(path, mmap_mode="r")
    rows = np.random.default_rng(1).permutation(40)[:23]  # not in file order, not all rows
    labels = np.random.default_rng(2).integers(0, 2, 23)
    epochs = []
    for batch_reads in (False, True):
        dataset = cached_dataset(arrays, rows, labels, batch_reads)
        assert isinstance(dataset, CachedBatches) == batch_reads
        loader = DataLoader(
            dataset,
            batch_size=5,
            shuffle=True,
            drop_last=True,
            collate_fn=collate_for(dataset),
            num_workers=workers,
        )
        epochs.append(_epoch(loader, seed=3))
    _assert_same(*epochs)


class _SharedInWorker(CachedBatches):
    """CachedBatches whose batches also say whether the worker read the images into shared
    memory (the main process gets every worker's tensor from shared memory either way)."""

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = super().__getitems__(indices)
        return {**batch, "shared_in_worker": torch.tensor(batch["image"].is_shared())}


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("share_memory_() copies the batch: the direct allocation is at hand")


@pytest.mark.skipif(sys.platform == "win32", reason="the worker must be forked to be patched")
@pytest.mark.parametrize("allocation", ["private", "public"])
def test_a_worker_reads_its_batch_into_shared_memory(
    monkeypatch: pytest.MonkeyPatch, allocation: str
) -> None:
    """A loader worker allocates each batch in shared memory, where the training process reads
    it without a copy: directly, through PyTorch's private TypedStorage._new_shared, as its own
    collate does; with the public share_memory_() where a PyTorch release has no such call."""
    if allocation == "public":
        monkeypatch.delattr(torch.TypedStorage, "_new_shared")
    else:
        monkeypatch.setattr(torch.Tensor, "share_memory_", _refuse)
    arrays = np.random.default_rng(0).standard_normal((30, 2, 5, 5), dtype=np.float32)
    rows = np.random.default_rng(1).permutation(30)[:20]
    labels = np.random.default_rng(2).integers(0, 2, 20)
    dataset = _SharedInWorker(arrays, rows, labels)
    loader = DataLoader(
        dataset,
        batch_size=6,
        collate_fn=collate_for(dataset),
        num_workers=1,
        multiprocessing_context="fork",  # the worker inherits the patch
    )
    batches = list(loader)
    assert [len(batch["image"]) for batch in batches] == [6, 6, 6, 2]
    for start, batch in zip(range(0, 20, 6), batches, strict=True):
        assert bool(batch["shared_in_worker"])
        assert torch.equal(batch["image"], torch.from_numpy(arrays[rows[start : start + 6]]))


def test_rows_outside_the_cache_are_refused() -> None:
    arrays = np.zeros((4, 1, 2, 2), dtype=np.float32)
    with pytest.raises(IndexError, match="4 samples"):
        CachedBatches(arrays, np.array([0, 4]), np.array([0, 1]))
    assert len(CachedSeries(arrays, np.array([0, 4]), np.array([0, 1]))) == 2


def test_datamodule_loaders_are_the_same_either_way(
    small_set: SyntheticSet, tmp_path: Path
) -> None:
    """Training (shuffled under the run's seed), validation and test loaders of a real run."""
    cfg = small_set.compose(tmp_path / "outputs", "data.batch_size=16")
    modules = {}
    for batch_reads in (False, True):
        datamodule = instantiate(cfg.data, batch_reads=batch_reads)
        datamodule.setup("fit")
        modules[batch_reads] = datamodule
    per_item, batch = modules[False], modules[True]
    _assert_same(_epoch(per_item.train_dataloader(), 0), _epoch(batch.train_dataloader(), 0))
    for split in ("val_dataloader", "test_dataloader"):
        for a, b in zip(getattr(per_item, split)(), getattr(batch, split)(), strict=True):
            _assert_same(_epoch(a, 0), _epoch(b, 0))


def test_loader_benchmark_prints_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert _script("loader_throughput").main(["--quick"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip().startswith("3x32x32")]
    assert len(lines) == 1, out
    assert lines[0].endswith("x") and float(lines[0].split()[-1].rstrip("x")) > 0
