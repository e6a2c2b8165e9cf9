"""The shift itself, measured on the images the networks saw: per-vendor intensity histograms and
how well a small classifier tells the two domains apart.

Both read the preprocessing cache (``shiftlab.data.cache``: the decoded, preprocessed arrays of a
manifest) found through a run's ``config.yaml``, never DICOM. Without the cache (the report runs
on another machine than the training, or the data folder was emptied) the report says so and
leaves these out.

Separability: every sample of the two domains (all splits; at most ``max_images`` per domain,
drawn at random with a fixed seed) becomes a vector of simple intensity statistics (mean, SD,
percentiles 1, 5, 25, 50, 75, 95, 99, and the share of its pixels in each of 16 bins spanning the
pooled 0.5-99.5 percentile range). A standardised L2 logistic regression predicts the domain,
cross-validated in 5 folds by patient (a patient's samples are never in both the training and
the held-out fold), and the AUROC of its held-out predictions is the vendor separability: 0.5
means the intensity statistics do not tell the vendors apart, 1.0 that they always do. It is a
property of the data and the preprocessing, not of a network, and it is the same for both
directions. A label prevalence that differs between vendors can add to it where the label
changes intensities.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shiftlab.errors import ShiftlabError
from shiftlab.extras import require

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
HISTOGRAM_BINS = 16
FOLDS = 5
PIXELS_PER_IMAGE = 65_536  # a strided subsample of larger images, for the statistics
SAMPLING_SEED = 0


class Unavailable(Exception):
    """The images of a dataset cannot be read here; the message says why."""


@dataclass
class DatasetImages:
    """A manifest and its preprocessed arrays (rows in manifest order, memory-mapped)."""

    dataset: str
    manifest: pd.DataFrame
    arrays: np.ndarray
    domain_groups: dict[str, Any]
    preprocess: dict[str, Any]
    # False for the samples the cache could not decode (NaN rows, left out of every run).
    decoded: np.ndarray

    def vendor_rows(self, vendor: str) -> np.ndarray:
        return np.flatnonzero((self.manifest["vendor"].to_numpy() == vendor) & self.decoded)

    def domain_rows(self, domain: str) -> np.ndarray:
        from shiftlab.domains import domain_rows, group_vendors

        present = set(self.manifest["vendor"])
        if domain in self.domain_groups:
            vendors = group_vendors(domain, self.domain_groups[domain], present)
        else:
            vendors = frozenset({domain})
        return np.flatnonzero(domain_rows(self.manifest, vendors).to_numpy() & self.decoded)


def source_of(config: Mapping[str, Any]) -> tuple[str, ...]:
    """What identifies a dataset's images in a run's config: manifest, DICOM root, cache and
    preprocessing (runs with equal keys read the same arrays)."""
    data = config.get("data") or {}
    return (
        str(data.get("dataset_name") or config.get("dataset", {}).get("name")),
        str(data.get("manifest_dir")),
        str(data.get("dicom_root")),
        str(data.get("cache_dir")),
        json.dumps(data.get("preprocess"), sort_keys=True),
        json.dumps(data.get("domain_groups") or {}, sort_keys=True),
    )


def open_images(config: Mapping[str, Any], manifest_sha256: str | None) -> DatasetImages:
    """The cached arrays a run of this config trained on; Unavailable with the reason if not."""
    from shiftlab.data.cache import cache_key, files_fingerprint, read_excluded
    from shiftlab.manifest import load_manifest

    data = config.get("data") or {}
    needed = ("manifest_dir", "dicom_root", "cache_dir", "preprocess")
    if any(data.get(key) is None for key in needed):
        raise Unavailable("config.yaml has no data.manifest_dir/dicom_root/cache_dir/preprocess")
    name = str(data.get("dataset_name") or "")
    try:
        manifest, meta = load_manifest(data["manifest_dir"], name or None)
        if manifest_sha256 and meta.get("sha256") != manifest_sha256:
            raise Unavailable(
                f"the manifest in {data['manifest_dir']} changed since the runs "
                f"(now {str(meta.get('sha256'))[:12]}, runs {manifest_sha256[:12]})"
            )
        fingerprint = files_fingerprint(manifest, Path(data["dicom_root"]))
    except ShiftlabError as error:
        raise Unavailable(str(error)) from None
    key = cache_key(meta["sha256"], Path(data["dicom_root"]), data["preprocess"], fingerprint)
    path = Path(data["cache_dir"]) / f"{key}.npy"
    if not path.is_file():
        raise Unavailable(
            f"no preprocessing cache at {path}: the first training run of this dataset builds it"
        )
    arrays = np.load(path, mmap_mode="r")
    if arrays.shape[0] != len(manifest):
        raise Unavailable(f"cache {path} holds {arrays.shape[0]} samples, manifest {len(manifest)}")
    return DatasetImages(
        dataset=name or str(config.get("dataset", {}).get("name", "")),
        manifest=manifest,
        arrays=arrays,
        domain_groups=dict(data.get("domain_groups") or {}),
        preprocess=dict(data["preprocess"]),
        decoded=~manifest["sample_id"].isin(read_excluded(path)["sample_id"]).to_numpy(),
    )


def _sample(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) > limit:
        rows = rng.choice(rows, size=limit, replace=False)
    return np.sort(rows)


def _pixels(image: np.ndarray) -> np.ndarray:
    flat = np.asarray(image, dtype=np.float32).ravel()
    step = max(1, flat.size // PIXELS_PER_IMAGE)
    return flat[::step]


def intensity_features(images: Sequence[np.ndarray], edges: np.ndarray) -> np.ndarray:
    """Per image: mean, SD, percentiles, and the share of pixels in each bin of ``edges``
    (values outside the range counted in the end bins)."""
    rows = []
    for image in images:
        pixels = _pixels(image)
        clipped = np.clip(pixels, edges[0], edges[-1])
        shares = np.histogram(clipped, bins=edges)[0] / max(pixels.size, 1)
        rows.append(
            np.concatenate(
                [[pixels.mean(), pixels.std()], np.percentile(pixels, PERCENTILES), shares]
            )
        )
    return np.asarray(rows, dtype=np.float64)


def common_edges(images: Sequence[np.ndarray], bins: int = HISTOGRAM_BINS) -> np.ndarray:
    pooled = np.concatenate([_pixels(image)[::16] for image in images])
    low, high = np.percentile(pooled, [0.5, 99.5])
    if not high > low:
        high = low + 1.0
    return np.linspace(low, high, bins + 1)


def domain_classifier_auroc(
    features: np.ndarray, domain: np.ndarray, patients: np.ndarray, folds: int = FOLDS
) -> dict[str, Any]:
    """Cross-validated (by patient) AUROC of a logistic regression predicting the domain."""
    require("sklearn", extra="report", needed_by="Vendor separability (or --no-characterisation)")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    per_domain = [len(np.unique(patients[domain == d])) for d in (0, 1)]
    folds = min(folds, *per_domain)
    if folds < 2:
        raise Unavailable(
            f"too few patients to cross-validate ({per_domain[0]} and {per_domain[1]})"
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=SAMPLING_SEED)
    held_out = np.full(len(domain), np.nan)
    fold_aurocs = []
    for train, test in splitter.split(features, domain, groups=patients):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(features[train], domain[train])
        held_out[test] = model.predict_proba(features[test])[:, 1]
        if len(np.unique(domain[test])) == 2:
            fold_aurocs.append(roc_auc_score(domain[test], held_out[test]))
    return {
        "separability_auroc": float(roc_auc_score(domain, held_out)),
        "separability_fold_sd": float(np.std(fold_aurocs, ddof=1))
        if len(fold_aurocs) > 1
        else np.nan,
        "folds": folds,
    }


def separability(
    images: DatasetImages, first: str, second: str, max_images: int = 500
) -> dict[str, Any]:
    """Vendor separability of two domains of a dataset (see the module docstring)."""
    rng = np.random.default_rng(SAMPLING_SEED)
    rows = {d: _sample(images.domain_rows(d), max_images, rng) for d in (first, second)}
    chosen = np.concatenate([rows[first], rows[second]])
    domain = np.repeat([0, 1], [len(rows[first]), len(rows[second])])
    pictures = [images.arrays[i] for i in chosen]
    features = intensity_features(pictures, common_edges(pictures))
    patients = images.manifest["patient_id"].to_numpy(dtype=str)[chosen]
    result = domain_classifier_auroc(features, domain, patients)
    return {
        "dataset": images.dataset,
        "domain_a": first,
        "domain_b": second,
        "samples_a": len(rows[first]),
        "samples_b": len(rows[second]),
        "patients_a": len(np.unique(patients[domain == 0])),
        "patients_b": len(np.unique(patients[domain == 1])),
        **result,
    }


def vendor_histograms(
    images: DatasetImages, max_images: int = 200, bins: int = 60
) -> dict[str, Any]:
    """Pixel-value densities of each vendor of the manifest, on common bins."""
    rng = np.random.default_rng(SAMPLING_SEED)
    vendors = sorted(images.manifest["vendor"].unique())
    chosen = {v: _sample(images.vendor_rows(v), max_images, rng) for v in vendors}
    pixels = {
        v: np.concatenate([_pixels(images.arrays[i]) for i in rows]) for v, rows in chosen.items()
    }
    pooled = np.concatenate([p[:: max(1, p.size // 200_000)] for p in pixels.values()])
    low, high = np.percentile(pooled, [0.5, 99.5])
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    return {
        "dataset": images.dataset,
        "preprocess": str(images.preprocess.get("_target_", "")).rsplit(".", 1)[-1],
        "edges": edges,
        "density": {v: np.histogram(p, bins=edges, density=True)[0] for v, p in pixels.items()},
        "samples": {v: len(rows) for v, rows in chosen.items()},
    }
