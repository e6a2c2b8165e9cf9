"""The manifest: one row per sample, frozen on disk with a content hash.

Everything downstream (preprocessing, data modules, reports) reads this table instead of DICOM
headers, and the splits in it are the only splits: they are made once here, by patient, and the
sha256 in manifest.json lets caches and run records name exactly which manifest they used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shiftlab.errors import ShiftlabError
from shiftlab.files import write_bytes_atomic

COLUMNS: tuple[str, ...] = (
    "sample_id",
    "patient_id",
    "study_id",
    "series_id",
    "paths",
    "n_slices",
    "label",
    "manufacturer",
    "vendor",
    "model_name",
    "field_strength",
    "modality",
    "split",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
PATH_SEPARATOR = "|"
CSV_NAME = "manifest.csv"
JSON_NAME = "manifest.json"
_TEXT_COLUMNS = tuple(c for c in COLUMNS if c not in ("n_slices", "label", "field_strength"))


@dataclass(frozen=True)
class ManifestInfo:
    """Where a manifest was written, its hash, and whether this write changed anything."""

    csv_path: Path
    json_path: Path
    sha256: str
    n_samples: int
    changed: bool


def _split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder counts for `n` patients, every wanted split non-empty when n allows.

    Ties in the remainder go to the earlier split in SPLITS order. When there are at least as
    many patients as splits with a positive fraction, a split rounded down to zero takes one
    patient from the largest split, so a small vendor still has val and test patients of each
    label.
    """
    quotas = {s: n * fractions.get(s, 0.0) for s in SPLITS}
    counts = {s: int(np.floor(q)) for s, q in quotas.items()}
    by_remainder = sorted(SPLITS, key=lambda s: (-(quotas[s] - counts[s]), SPLITS.index(s)))
    for split in by_remainder[: n - sum(counts.values())]:
        counts[split] += 1
    wanted = [s for s in SPLITS if fractions.get(s, 0.0) > 0]
    if n >= len(wanted):
        for split in wanted:
            if counts[split] == 0:
                donor = max(SPLITS, key=lambda s: (counts[s], -SPLITS.index(s)))
                counts[donor] -= 1
                counts[split] += 1
    return counts


def _group_seed(split_seed: int, vendor: str, label: int) -> int:
    """A generator seed from split_seed, vendor and label that is the same on every machine."""
    digest = hashlib.sha256(f"shiftlab-split|{split_seed}|{vendor}|{label}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    fractions = {str(k): float(v) for k, v in fractions.items()}
    unknown = sorted(set(fractions) - set(SPLITS))
    if unknown:
        raise ShiftlabError(f"split_fractions has unknown split(s) {unknown}; use {list(SPLITS)}.")
    if any(v < 0 for v in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ShiftlabError(
            f"split_fractions must be non-negative and sum to 1, got {fractions} "
            f"(sum {sum(fractions.values()):g})."
        )
    return fractions


def assign_splits(df: pd.DataFrame, fractions: Mapping[str, float], split_seed: int) -> pd.Series:
    """Return each row's split, made by patient, inside each vendor, stratified by label.

    Needs columns patient_id, vendor and label. A patient's label is the max over its samples;
    a patient seen on several vendors is split with its most frequent one (ties: first by name),
    so no patient is ever in two splits. Patients of one (vendor, label) group are sorted by ID,
    shuffled by a generator seeded from (split_seed, vendor, label) and cut by `_split_counts`.
    Given raw patient IDs the result depends on nothing but the data and split_seed, so every
    site holding the same dataset gets the same splits whatever its pseudonym key.
    """
    fractions = _check_fractions(fractions)
    per_vendor = df.groupby(["patient_id", "vendor"]).size().rename("n").reset_index()
    per_vendor = per_vendor.sort_values(
        ["patient_id", "n", "vendor"], ascending=[True, False, True]
    )
    patients = per_vendor.drop_duplicates("patient_id").set_index("patient_id")[["vendor"]]
    patients["label"] = df.groupby("patient_id")["label"].max()

    split_of: dict[Any, str] = {}
    for (vendor, label), group in patients.groupby(["vendor", "label"], sort=True):
        ids = sorted(group.index)
        order = np.random.default_rng(_group_seed(split_seed, vendor, int(label))).permutation(
            len(ids)
        )
        counts = _split_counts(len(ids), fractions)
        names = [s for s in SPLITS for _ in range(counts[s])]
        for position, index in enumerate(order):
            split_of[ids[index]] = names[position]
    return df["patient_id"].map(split_of).rename("split")


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace `path` with `data` (``shiftlab.files``) unless it already holds exactly
    those bytes.

    Leaving identical files alone keeps their mtimes, so re-running ingest is visibly a no-op
    and anything keyed on mtimes is not invalidated.
    """
    if path.is_file() and path.read_bytes() == data:
        return False
    write_bytes_atomic(path, data, durable=True)
    return True


def csv_bytes(df: pd.DataFrame) -> bytes:
    """The exact bytes written for a table: UTF-8, "\\n" line ends, floats as %.10g."""
    buffer = io.StringIO()
    df.to_csv(buffer, index=False, lineterminator="\n", float_format="%.10g")
    return buffer.getvalue().encode("utf-8")


def _check_frame(df: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}")
    if df["sample_id"].duplicated().any():
        raise ValueError("manifest sample_id values are not unique")
    bad_splits = sorted(set(df["split"]) - set(SPLITS))
    if bad_splits:
        raise ValueError(f"manifest has split(s) {bad_splits}; expected {list(SPLITS)}")
    if not df["label"].isin([0, 1]).all():
        raise ValueError("manifest labels must be 0 or 1")
    splits_per_patient = df.groupby("patient_id")["split"].nunique()
    if (splits_per_patient > 1).any():
        raise ValueError("a patient appears in more than one split")


def write_manifest(
    df: pd.DataFrame, manifest_dir: str | os.PathLike[str], meta: Mapping[str, Any]
) -> ManifestInfo:
    """Write manifest.csv and manifest.json, touching only files whose bytes change.

    Columns come in COLUMNS order (extra dataset-specific columns after them), rows sorted by
    sample_id. The CSV is written before the JSON that holds its hash, so an interrupted write
    shows up as a hash mismatch rather than a silently stale manifest.
    """
    _check_frame(df)
    manifest_dir = Path(manifest_dir)
    extra = [c for c in df.columns if c not in COLUMNS]
    table = df[[*COLUMNS, *extra]].sort_values("sample_id", kind="stable")
    data = csv_bytes(table)
    sha256 = hashlib.sha256(data).hexdigest()
    record = {**dict(meta), "sha256": sha256, "n_samples": len(table)}
    meta_bytes = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")
    csv_path, json_path = manifest_dir / CSV_NAME, manifest_dir / JSON_NAME
    csv_changed = write_if_changed(csv_path, data)
    json_changed = write_if_changed(json_path, meta_bytes)
    return ManifestInfo(
        csv_path=csv_path,
        json_path=json_path,
        sha256=sha256,
        n_samples=len(table),
        changed=csv_changed or json_changed,
    )


def load_manifest(
    manifest_dir: str | os.PathLike[str], dataset_name: str | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a manifest and its metadata, refusing one whose CSV no longer matches its hash."""
    manifest_dir = Path(manifest_dir)
    csv_path, json_path = manifest_dir / CSV_NAME, manifest_dir / JSON_NAME
    meta: dict[str, Any] = json.loads(json_path.read_text()) if json_path.is_file() else {}
    name = dataset_name or meta.get("dataset") or "<name>"
    for path in (csv_path, json_path):
        if not path.is_file():
            raise ShiftlabError(
                f"no manifest at {path}. Create it with: python -m shiftlab.ingest dataset={name}"
            )
    data = csv_path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != meta.get("sha256"):
        raise ShiftlabError(
            f"{csv_path} does not match the sha256 recorded in {json_path} "
            f"(file {actual[:12]}…, recorded {str(meta.get('sha256'))[:12]}…): it was changed "
            "after ingest. Do not edit the manifest by hand; re-create it with: "
            f"python -m shiftlab.ingest dataset={name}"
        )
    df = pd.read_csv(
        io.BytesIO(data),
        dtype={c: str for c in _TEXT_COLUMNS} | {"n_slices": int, "label": int},
        keep_default_na=False,
        na_values={"field_strength": [""]},
    )
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ShiftlabError(
            f"{csv_path} lacks column(s) {missing}; it was written by another version of "
            f"shiftlab. Re-create it with: python -m shiftlab.ingest dataset={name}"
        )
    df["field_strength"] = df["field_strength"].astype(float)
    return df, meta


def count_table(df: pd.DataFrame) -> str:
    """Samples per vendor (rows) x split/label (columns), with totals, as printable text."""
    columns = [f"{split}/{label}" for split in SPLITS for label in (0, 1)]
    keys = df["split"].astype(str) + "/" + df["label"].astype(int).astype(str)
    table = pd.crosstab(df["vendor"], keys).reindex(columns=columns, fill_value=0)
    table = table.reindex(sorted(table.index))
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    table.index.name = "vendor"
    table.columns.name = None
    return table.to_string()
