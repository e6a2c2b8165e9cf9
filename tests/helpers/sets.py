"""The synthetic sets and trained runs that the session fixtures (``conftest.py``) hand out, and
their sizes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from helpers.compose import compose_train

# The default synthetic set (400 patients per vendor): the size the user's default run trains on.
FULL_PATIENTS = 400
# Enough for every (vendor, label, split) cell to hold patients, small enough to train in seconds.
SMALL_PATIENTS = 100
# Epochs of the one full-size run (about 20 s on 2 CPU cores). Measured test AUROC at 8 epochs:
# source 0.87-0.89 vs target 0.66-0.69 over seeds 0-2 and two pseudonym keys; at 6 epochs seed 0
# gave only 0.81 vs 0.69.
DEFAULT_RUN_EPOCHS = 8
# The tiny set (12 patients per vendor) that the tests of a run's mechanics share
# (``conftest.tiny``): enough to train a step, seconds to make.
TINY_DATA = ("dataset.synthetic.patients_per_vendor=12",)


@dataclass(frozen=True)
class SyntheticSet:
    """A generated and ingested synthetic set, and the overrides that select it."""

    data_dir: Path
    patients_per_vendor: int
    overrides: tuple[str, ...]
    root: Path
    manifest_dir: Path

    @property
    def dicom_root(self) -> Path:
        return self.root / "dicom"

    def manifest(self) -> pd.DataFrame:
        return pd.read_csv(self.manifest_dir / "manifest.csv", dtype={"split": str})

    def manifest_meta(self) -> dict[str, Any]:
        return json.loads((self.manifest_dir / "manifest.json").read_text())

    def compose(self, output_dir: Path, *overrides: str) -> DictConfig:
        return compose_train(self.data_dir, output_dir, *self.overrides, *overrides)


@dataclass(frozen=True)
class PresetTwin:
    """A real preset's twin, generated and ingested as ``python -m shiftlab.ingest
    dataset=<preset> twin=true`` does, and what ingest printed."""

    cfg: DictConfig
    output: str


@dataclass(frozen=True)
class TrainedRun:
    cfg: DictConfig
    run_dir: Path
    result: dict[str, Any]
    data: SyntheticSet

    def metrics(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "metrics.json").read_text())

    def predictions(self) -> pd.DataFrame:
        return pd.read_csv(self.run_dir / "predictions.csv")
