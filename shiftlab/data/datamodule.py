"""ShiftDataModule: train and validate on the source domain, evaluate on every domain.

Dataloaders for validation and test are lists in ``val_domains`` / ``test_domains`` order
(source first, then target and every other vendor whose split holds both classes), so the model
can name each metric by domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from shiftlab.data import cache
from shiftlab.data.domains import Domains, domain_rows, resolve_domains
from shiftlab.errors import ShiftlabError
from shiftlab.manifest import load_manifest


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


def _label_counts(frame: pd.DataFrame) -> str:
    counts = frame["label"].value_counts()
    return f"{int(counts.get(0, 0))} negative, {int(counts.get(1, 0))} positive"


class ShiftDataModule(L.LightningDataModule):
    def __init__(
        self,
        manifest_dir: str,
        dicom_root: str,
        cache_dir: str,
        preprocess: Mapping,
        source: str,
        target: str,
        domain_groups: Mapping | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        num_workers: int = 0,
        hflip: bool = True,
        dataset_name: str | None = None,
    ) -> None:
        super().__init__()
        self.manifest, self.manifest_meta = load_manifest(manifest_dir, dataset_name)
        self.domains: Domains = resolve_domains(self.manifest, source, target, domain_groups)
        self.dicom_root = Path(dicom_root)
        self.cache_dir = Path(cache_dir)
        # Plain containers: the settings are hashed into the cache key and instantiated.
        self.preprocess = (
            OmegaConf.to_container(preprocess, resolve=True)
            if isinstance(preprocess, DictConfig)
            else dict(preprocess)
        )
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.hflip = hflip
        self.val_domains = self._usable("val")
        self.test_domains = self._usable("test")
        self._check_source_and_target()
        self.arrays: np.ndarray | None = None

    @property
    def manifest_sha256(self) -> str:
        return str(self.manifest_meta["sha256"])

    def frame(self, domain: str, split: str) -> pd.DataFrame:
        """The manifest rows of one domain and split, ordered by file path.

        Not by sample_id: pseudonyms depend on the site's key, and the data order (hence the
        result of a seed) must not.
        """
        vendors = self.domains.vendors[domain]
        rows = domain_rows(self.manifest, vendors) & (self.manifest["split"] == split)
        return self.manifest[rows].sort_values("paths")

    def _usable(self, split: str) -> list[str]:
        """Domains to evaluate on ``split``, source first: those whose split has both classes.

        Source (train, val, test) and target (test) are checked to have both classes; any
        other domain, and the target's validation split, is left out where AUROC is undefined.
        """
        required = {"val": 1, "test": 2}[split]
        names = self.domains.names
        return names[:required] + [d for d in names[required:] if self._has_both_classes(d, split)]

    def _has_both_classes(self, domain: str, split: str) -> bool:
        return self.frame(domain, split)["label"].nunique() == 2

    def _check_source_and_target(self) -> None:
        needed = [(self.domains.source, s) for s in ("train", "val", "test")]
        needed.append((self.domains.target, "test"))
        for domain, split in needed:
            if not self._has_both_classes(domain, split):
                counts = _label_counts(self.frame(domain, split))
                raise ShiftlabError(
                    f"domain {domain!r} split {split!r} has {counts} samples; "
                    "training and AUROC need both classes. Use more patients, other split "
                    "fractions in the dataset config, or another domain."
                )

    def setup(self, stage: str | None = None) -> None:
        if self.arrays is None:
            self.arrays = cache.load_or_build(
                self.manifest,
                self.manifest_sha256,
                self.dicom_root,
                self.preprocess,
                self.cache_dir,
            )

    def _dataset(self, domain: str, split: str) -> CachedSeries:
        frame = self.frame(domain, split)
        rows = self.manifest.index.get_indexer(frame.index)
        return CachedSeries(self.arrays, rows, frame["label"].to_numpy())

    def _loader(self, dataset: CachedSeries, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._dataset(self.domains.source, "train"), train=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self._dataset(d, "val"), train=False) for d in self.val_domains]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self._dataset(d, "test"), train=False) for d in self.test_domains]

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        # Augment on the device, training batches only: a random left-right flip per sample.
        if self.hflip and self.trainer is not None and self.trainer.training:
            image = batch["image"]
            flip = torch.rand(image.shape[0], device=image.device) < 0.5
            batch["image"] = torch.where(flip.view(-1, 1, 1, 1), image.flip(-1), image)
        return batch

    def counts(self) -> dict[str, dict[str, int]]:
        """Samples per evaluated domain and split, for the run record."""
        return {
            d: {s: len(self.frame(d, s)) for s in ("train", "val", "test")}
            for d in self.domains.names
        }
