"""Samples/s of a training epoch read from the preprocessing cache vs decoding DICOM every time.

    python benchmarks/cache_vs_decode.py [--patients 100] [--repeats 3]

For each synthetic modality, the same samples (the source domain's training split) go through
the same DataLoader twice: once from the memory-mapped cache a run uses, once through a dataset
that reads and preprocesses the DICOM files on every access, as a pipeline without a cache
would. Both are timed side by side in one process; the ratio is what matters (target >= 10x).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, Dataset

from shiftlab.config import CONF_DIR, register_resolvers
from shiftlab.data.cache import build_preprocessor
from shiftlab.data.datamodule import ShiftDataModule
from shiftlab.data.prepare import ensure_manifest
from shiftlab.data.preprocess import read_slices
from shiftlab.errors import instantiate
from shiftlab.manifest import PATH_SEPARATOR

DATASETS = ("synthetic_mri", "synthetic_ct", "synthetic_xray")


class DecodeEveryTime(Dataset):
    """The baseline: read and preprocess a sample's DICOM files at every access."""

    def __init__(self, datamodule: ShiftDataModule) -> None:
        frame = datamodule.frame(datamodule.domains.source, "train")
        self.samples = frame.to_dict("records")
        self.root = datamodule.dicom_root
        self.preprocessor = build_preprocessor(datamodule.preprocess)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = self.samples[i]
        files = [self.root / p for p in sample["paths"].split(PATH_SEPARATOR)]
        image = self.preprocessor(read_slices(files), sample)
        return {"image": torch.from_numpy(image), "label": torch.tensor(float(sample["label"]))}


def samples_per_second(loader: DataLoader, repeats: int) -> float:
    """Best of `repeats` full passes (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        n = sum(len(batch["label"]) for batch in loader)
        best = min(best, time.perf_counter() - started)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=100, help="patients per vendor")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    register_resolvers()
    print(f"{'dataset':16} {'samples':>7} {'cached/s':>10} {'decoded/s':>10} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in DATASETS:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(
                    config_name="train",
                    overrides=[
                        f"dataset={name}",
                        f"dataset.synthetic.patients_per_vendor={args.patients}",
                        f"paths.data_dir={tmp}/data",
                        f"paths.output_dir={tmp}/outputs",
                    ],
                )
            with contextlib.redirect_stdout(io.StringIO()):  # keep the table readable
                ensure_manifest(cfg)
            datamodule: ShiftDataModule = instantiate(cfg.data)
            datamodule.setup("fit")  # builds the cache once, as the first run of a grid does
            cached = datamodule.train_dataloader()
            decoded = DataLoader(DecodeEveryTime(datamodule), batch_size=cached.batch_size)
            fast = samples_per_second(cached, args.repeats)
            slow = samples_per_second(decoded, args.repeats)
            n = len(decoded.dataset)
            print(f"{name:16} {n:7d} {fast:10.0f} {slow:10.0f} {fast / slow:6.0f}x", flush=True)


if __name__ == "__main__":
    main()
