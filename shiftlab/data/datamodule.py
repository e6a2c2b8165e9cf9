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
from torch.utils.data import DataLoader

from shiftlab.data import cache
from shiftlab.data.loading import (
    CachedSeries,
    cached_dataset,
    collate_for,
    loader_options,
    loader_workers,
)
from shiftlab.data.mitigation import Mitigation, mitigation_from
from shiftlab.data.shift import Ablation, BatchNoise, TrainingSet, ablation
from shiftlab.domains import Domains, domain_rows, resolve_domains
from shiftlab.errors import ShiftlabError
from shiftlab.manifest import load_manifest
from shiftlab.seeding import FLIP_STREAM, EpochGenerator, EpochShuffle

# Samples left out for undecodable pixels that a run names on the console (all in the list).
_EXCLUDED_SHOWN = 5


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
        gpu_workers: Mapping[str, int] | None = None,
        modality: str | None = None,
        shift: Ablation | Mapping | None = None,
        mitigation: Mitigation | Mapping | None = None,
        split_seed: int = 0,
        seed: int = 0,
        batch_reads: bool = True,
    ) -> None:
        """``batch_reads``: read each batch from the cache with one gather (``CachedBatches``)
        rather than sample by sample; the batches are the same. Not a config key, so it is not
        part of a run's identity; ``+data.batch_reads=false`` reads sample by sample."""
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
        # On CUDA the modality's gpu_workers entry, where it has one (shiftlab/data/loading.py).
        self.num_workers = loader_workers(num_workers, gpu_workers, modality)
        self.hflip = hflip
        self.batch_reads = batch_reads
        # Rows the cache could decode: all until it is built (setup, _leave_out_undecodable).
        self.decoded = pd.Series(True, index=self.manifest.index)
        # The samples left out as undecodable (set by setup), for the run record.
        self.excluded = pd.DataFrame(columns=cache.EXCLUDED_COLUMNS)
        self.val_domains = self._usable("val")
        self.test_domains = self._usable("test")
        self._check_source_and_target()
        self.arrays: np.ndarray | None = None
        # The ablation (shiftlab/data/shift.py): which rows train, and noise on their images.
        self.ablation = ablation(shift)
        self.split_seed = split_seed
        self.training = self._training_set()
        self.seed = seed
        self.flips = EpochGenerator(seed, FLIP_STREAM)
        self.noise: BatchNoise | None = None
        # The mitigation (shiftlab/data/mitigation.py): it learns from the source's training
        # images once the cache is built (``setup``) and changes batches
        # (``on_after_batch_transfer``); the training spine asks it for the network and the
        # test's callbacks.
        self.mitigation = mitigation_from(mitigation)
        self._mitigation_learnt = False

    @property
    def manifest_sha256(self) -> str:
        return str(self.manifest_meta["sha256"])

    @property
    def train_pixel_std(self) -> float | None:
        """The training pixels' spread that the noise ablation measured (None: not measured)."""
        return None if self.noise is None else self.noise.train_pixel_std

    def frame(self, domain: str, split: str) -> pd.DataFrame:
        """The manifest rows of one domain and split, ordered by file path.

        Not by sample_id: pseudonyms depend on the site's key, and the data order (hence the
        result of a seed) must not.
        """
        vendors = self.domains.vendors[domain]
        rows = domain_rows(self.manifest, vendors) & (self.manifest["split"] == split)
        rows &= self.decoded
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

    def _training_set(self) -> TrainingSet:
        return self.ablation.training_set(
            self.frame(self.domains.source, "train"),
            self.frame(self.domains.target, "train"),
            self.split_seed,
            target=self.domains.target,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.arrays is None:
            built = cache.load_or_build(
                self.manifest,
                self.manifest_sha256,
                self.dicom_root,
                self.preprocess,
                self.cache_dir,
            )
            self.arrays = built.arrays
            self._leave_out_undecodable(built.excluded, built.excluded_path)
        if self.noise is None:
            rows = self._rows(self.training.frame)
            self.noise = self.ablation.training_noise(self.arrays, rows, self.seed)
        if not self._mitigation_learnt:
            # The source's own training split: never a target image, injected ones included.
            source_train = self._rows(self.frame(self.domains.source, "train"))
            self.mitigation.learn(self.arrays, source_train)
            self._mitigation_learnt = True

    def _leave_out_undecodable(self, excluded: pd.DataFrame, path: Path) -> None:
        """Leave the samples the cache could not decode out of every split, and say so.

        The domains to evaluate were chosen when the run was set up; one that loses a class
        here stops the run with the reason (recorded as its failure) instead of reporting an
        AUROC without both classes. The training set is drawn again from what is left, with the
        same seed, so it stays the same from run to run.
        """
        if excluded.empty:
            return
        self.excluded = excluded
        self.decoded = ~self.manifest["sample_id"].isin(excluded["sample_id"])
        print(f"samples excluded:   {len(excluded)} whose pixels cannot be decoded (all in {path})")
        for sample_id, reason in excluded.head(_EXCLUDED_SHOWN).itertuples(index=False):
            print(f"  {sample_id}: {reason}")
        if len(excluded) > _EXCLUDED_SHOWN:
            print(f"  ... {len(excluded) - _EXCLUDED_SHOWN} more")
        needed = [(self.domains.source, "train")]
        needed += [(d, "val") for d in self.val_domains] + [(d, "test") for d in self.test_domains]
        for domain, split in needed:
            if not self._has_both_classes(domain, split):
                counts = _label_counts(self.frame(domain, split))
                raise ShiftlabError(
                    f"domain {domain!r} split {split!r} has {counts} samples once the "
                    f"{len(excluded)} that cannot be decoded are left out (listed in {path}); "
                    "training and AUROC need both classes."
                )
        self.training = self._training_set()

    def _rows(self, frame: pd.DataFrame) -> np.ndarray:
        return self.manifest.index.get_indexer(frame.index)

    def _series(self, frame: pd.DataFrame) -> CachedSeries:
        rows, labels = self._rows(frame), frame["label"].to_numpy()
        return cached_dataset(self.arrays, rows, labels, self.batch_reads)

    def _dataset(self, domain: str, split: str) -> CachedSeries:
        return self._series(self.frame(domain, split))

    def _loader(self, dataset: CachedSeries, train: bool) -> DataLoader:
        # The training order follows (seed, epoch) (shiftlab/seeding.py); the loader's own
        # generator only seeds its workers, which draw nothing, and keeps that draw off torch's
        # global generator.
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochShuffle(len(dataset), self.seed) if train else None,
            generator=torch.Generator().manual_seed(self.seed),
            drop_last=train and len(dataset) > self.batch_size,
            collate_fn=collate_for(dataset),
            **loader_options(self.num_workers),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._series(self.training.frame), train=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self._dataset(d, "val"), train=False) for d in self.val_domains]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self._dataset(d, "test"), train=False) for d in self.test_domains]

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        # Every batch of every split: the mitigation's intensity standardisation (if any).
        batch["image"] = self.mitigation.standardise(batch["image"])
        # Augment on the device, training batches only: a random left-right flip per sample.
        if self.hflip and self.trainer is not None and self.trainer.training:
            image = batch["image"]
            generator = self.flips(image.device, self.trainer.current_epoch)
            flip = torch.rand(image.shape[0], device=image.device, generator=generator) < 0.5
            batch["image"] = torch.where(flip.view(-1, 1, 1, 1), image.flip(-1), image)
        if self.trainer is not None and self.trainer.training:
            batch["image"] = self.mitigation.augment(batch["image"], self.trainer.current_epoch)
        if self.noise is not None and self.trainer is not None and self.trainer.training:
            batch["image"] = self.noise(batch["image"], self.trainer.current_epoch)
        return batch

    def counts(self) -> dict[str, dict[str, int]]:
        """Samples per evaluated domain and split, for the run record."""
        return {
            d: {s: len(self.frame(d, s)) for s in ("train", "val", "test")}
            for d in self.domains.names
        }

    def shift_record(self) -> dict:
        """The ablation as it was applied, for the run record (ids go to injected.csv)."""
        return self.ablation.record(self.training, self.noise)

    def shift_tables(self) -> dict[str, pd.DataFrame]:
        """Tables the ablation adds to the run record, by file name (``injected.csv``)."""
        return self.ablation.tables(self.training)

    def injection_table(self) -> pd.DataFrame:
        """The rows an injection changed: target rows added, source rows they replaced."""
        return self.training.changes()
