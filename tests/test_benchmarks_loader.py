"""Batch-wise reads from the cache: the same batches as reading sample by sample, and the loader
benchmark in its quickest mode."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SyntheticSet
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
