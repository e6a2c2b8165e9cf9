"""Images/s of iterating a run's training DataLoader (no model): per-sample reads against
batch-wise reads from the memory-mapped cache.

    python benchmarks/loader_throughput.py                    # 3x256x256 (mri_breast) and others
    python benchmarks/loader_throughput.py --shapes 3x256x256 --workers 0 --repeats 5
    python benchmarks/loader_throughput.py --quick            # a plumbing check, seconds

Both paths are the DataLoader ``ShiftDataModule`` builds (shuffled, ``drop_last``, the study's
batch size of 50, the run's worker settings) over one float32 ``.npy`` shaped like the
preprocessing cache and opened memory-mapped, as a run opens it. ``per-item`` is ``CachedSeries``
(one sample at a time, stacked by the default collate); ``batch`` is ``CachedBatches`` (one gather
per batch). The two are timed in alternation, repeat after repeat, each pass over the whole set
once the file is in the page cache; the best pass of each is kept (the least disturbed by other
work on the machine). Before any timing, the batch path is checked to give the per-item path's
batches under the same seed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # a bare checkout without shiftlab installed
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from shiftlab.data.loading import cached_dataset, collate_for, loader_options  # noqa: E402

STUDY_BATCH_SIZE = 50
# mri_breast (MRNet2D), synthetic_mri, synthetic_ct (NoduleX 2.5D), xray_chest (DenseNet-121)
DEFAULT_SHAPES = "3x256x256,3x64x64,5x47x47,1x224x224"
PATHS = ("per-item", "batch")


def parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(side) for side in text.lower().split("x"))


def write_cache(path: Path, shape: tuple[int, ...], samples: int) -> np.ndarray:
    """A float32 .npy of random samples, memory-mapped as shiftlab's cache is."""
    arrays = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(samples, *shape))
    rng = np.random.default_rng(0)
    chunk = max(1, (64 << 20) // (4 * int(np.prod(shape))))
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        arrays[start:stop] = rng.standard_normal((stop - start, *shape), dtype=np.float32)
    arrays.flush()
    del arrays
    return np.load(path, mmap_mode="r")


def make_loader(arrays: np.ndarray, path: str, batch_size: int, workers: int) -> DataLoader:
    """The training DataLoader of a run (``ShiftDataModule._loader``) over every cached sample,
    in a shuffled order that is not the file's (as a run's training rows are)."""
    n = len(arrays)
    rows = np.random.default_rng(1).permutation(n)
    labels = np.random.default_rng(2).integers(0, 2, n)
    dataset = cached_dataset(arrays, rows, labels, batch_reads=path == "batch")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate_for(dataset),
        **loader_options(workers, pin_memory=False),
    )


def one_pass(loader: DataLoader, seed: int) -> tuple[float, int]:
    """Seconds and images of one epoch of ``loader``; the shuffle is seeded as a run seeds it."""
    torch.manual_seed(seed)
    started = time.perf_counter()
    images = sum(len(batch["image"]) for batch in loader)
    return time.perf_counter() - started, images


def same_batches(loaders: dict[str, DataLoader], seed: int) -> bool:
    """The batch path gives the per-item path's batches, element for element, under one seed."""
    epochs = {}
    for path, loader in loaders.items():
        torch.manual_seed(seed)
        epochs[path] = list(loader)
    return len(epochs["per-item"]) == len(epochs["batch"]) and all(
        a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        for a, b in zip(epochs["per-item"], epochs["batch"], strict=True)
    )


def measure(
    arrays: np.ndarray, batch_size: int, workers: int, repeats: int
) -> dict[str, float] | None:
    """Best images/s of each path, measured in alternation; None when the batches differ."""
    loaders = {path: make_loader(arrays, path, batch_size, workers) for path in PATHS}
    if not same_batches(loaders, seed=0):
        return None
    best = dict.fromkeys(PATHS, float("inf"))
    images = 0
    for repeat in range(repeats):
        # Alternate which path goes first, so neither always runs on a warmer machine.
        for path in PATHS if repeat % 2 == 0 else PATHS[::-1]:
            seconds, images = one_pass(loaders[path], seed=repeat + 1)
            best[path] = min(best[path], seconds)
    return {path: images / seconds for path, seconds in best.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="sample shapes, comma-separated")
    parser.add_argument("--samples", type=int, default=1000, help="samples in the cache file")
    parser.add_argument("--max-mib", type=int, default=800, help="cap on each cache file's size")
    parser.add_argument("--batch-size", type=int, default=STUDY_BATCH_SIZE)
    parser.add_argument("--workers", default="0,1", help="loader workers to try, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="small shapes and sets, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.shapes, args.samples, args.repeats, args.workers = "3x32x32", 200, 2, "0"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    workers = [int(n) for n in args.workers.split(",")]
    print(f"{'shape':>10} {'samples':>7} {'workers':>7} {'per-item/s':>11} {'batch/s':>9} ratio")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.shapes.split(","):
            shape = parse_shape(text)
            per_sample = 4 * int(np.prod(shape))
            samples = max(
                2 * args.batch_size, min(args.samples, (args.max_mib << 20) // per_sample)
            )
            arrays = write_cache(Path(tmp) / f"{text}.npy", shape, samples)
            for n in workers:
                rates = measure(arrays, args.batch_size, n, args.repeats)
                if rates is None:
                    print(f"{text:>10} {samples:7d} {n:7d}  the batch path gave other batches")
                    failed = True
                    continue
                ratio = rates["batch"] / rates["per-item"]
                print(
                    f"{text:>10} {samples:7d} {n:7d} {rates['per-item']:11.0f} "
                    f"{rates['batch']:9.0f} {ratio:.2f}x",
                    flush=True,
                )
            del arrays
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
