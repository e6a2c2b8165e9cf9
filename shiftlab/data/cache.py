"""The preprocessing cache: every sample of a manifest decoded once, kept as one array on disk.

Why not MONAI's PersistentDataset: it stores one file per sample and loads it per access; a grid
of a thousand runs over the same manifest then opens millions of small files. One memory-mapped
``.npy`` per (manifest hash, DICOM root, preprocessing settings) is read at memory speed, shared
by all runs and worker processes through the page cache, and keeps a run's memory flat as
datasets grow.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from shiftlab.data.preprocess import Preprocessor, read_slices
from shiftlab.errors import ShiftlabError, instantiate
from shiftlab.manifest import PATH_SEPARATOR

# Bump when the decoding or array layout changes, so old caches are not reused.
CACHE_FORMAT = 1


def cache_key(manifest_sha256: str, dicom_root: Path, preprocess: Mapping) -> str:
    """Identifies the arrays. The manifest alone does not: two DICOM trees can share relative
    paths, UIDs and labels yet differ in pixels (a re-export, another synthetic setting)."""
    settings = json.dumps(
        {
            "manifest": manifest_sha256,
            "dicom_root": str(Path(dicom_root).resolve()),
            "preprocess": dict(preprocess),
            "format": CACHE_FORMAT,
        },
        sort_keys=True,
    )
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def load_or_build(
    manifest: pd.DataFrame,
    manifest_sha256: str,
    dicom_root: Path,
    preprocess: Mapping,
    cache_dir: Path,
) -> np.ndarray:
    """Preprocessed samples in manifest row order, shape (n, slices, size, size), memory-mapped.

    Built on first use (atomically, so concurrent runs at worst build it twice), then reused.
    """
    path = Path(cache_dir) / f"{cache_key(manifest_sha256, dicom_root, preprocess)}.npy"
    if not path.exists():
        _build(manifest, Path(dicom_root), build_preprocessor(preprocess), path)
    arrays = np.load(path, mmap_mode="r")
    if arrays.shape[0] != len(manifest):
        raise RuntimeError(
            f"cache {path} holds {arrays.shape[0]} samples, manifest {len(manifest)}"
        )
    return arrays


def build_preprocessor(preprocess: Mapping) -> Preprocessor:
    """The dataset's preprocessor from its config (``_target_`` names the modality's class)."""
    if "_target_" not in preprocess:
        raise ShiftlabError(
            "dataset.preprocess needs a _target_, e.g. shiftlab.data.preprocess.MRIPreprocessor, "
            f"CTPatchPreprocessor or XRayPreprocessor; got keys {sorted(preprocess)}"
        )
    return instantiate(dict(preprocess))


def _build(
    manifest: pd.DataFrame, dicom_root: Path, preprocessor: Preprocessor, path: Path
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    arrays = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.float32, shape=(len(manifest), *preprocessor.shape)
    )
    samples = manifest.to_dict("records")
    progress = tqdm(samples, desc="decoding DICOM into cache", unit="sample", leave=False)
    try:
        for i, sample in enumerate(progress):
            files = [dicom_root / p for p in sample["paths"].split(PATH_SEPARATOR)]
            arrays[i] = preprocessor(read_slices(files), sample)
        arrays.flush()
        del arrays
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
