"""Bring your own dataset: import a sample table written by hand into a shiftlab manifest.

The table (CSV) has one row per sample and the columns

    path          a DICOM file (one image) or a folder holding one series, relative to
                  dataset.dicom_root (or absolute, inside it)
    patient_id    any patient identifier; pseudonymised here, never written as given
    manufacturer  scanner manufacturer as text ("GE MEDICAL SYSTEMS", "Siemens" ...); empty
                  means: take the file's Manufacturer attribute
    label         0 or 1
    split         optional: train / val / test for every row, or empty to split by patient

The headers are read only to order slices and fill the study/series/modality columns; the rest
follows the same path as an ingest (pseudonyms, vendor aliases, splits, count table, usable
domain pairs), so the DataModule cannot tell the two apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from shiftlab.errors import ShiftlabError
from shiftlab.ingest import (
    SKIPPED_NAME,
    SeriesHeader,
    finish_manifest,
    read_slice,
    scan_dicom_tree,
)
from shiftlab.manifest import (
    COLUMNS,
    PATH_SEPARATOR,
    SPLITS,
    ManifestInfo,
    csv_bytes,
    write_if_changed,
)
from shiftlab.pseudonym import load_or_create_key, pseudonym
from shiftlab.vendors import normalise_vendor

REQUIRED = ("path", "patient_id", "manufacturer", "label")


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ShiftlabError(
            f"sample table not found: {path}. Write it with the columns "
            f"{', '.join(REQUIRED)} (and optionally split), one row per sample."
        )
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ShiftlabError(
            f"{path} lacks column(s) {missing}; it has {list(table.columns)}. "
            f"Needed: {', '.join(REQUIRED)} (optional: split)."
        )
    table = table.apply(lambda column: column.str.strip())
    problems = []
    for i, row in table.iterrows():
        line = int(i) + 2
        if row["label"] not in ("0", "1"):
            problems.append(f"line {line}: label {row['label']!r} is not 0 or 1")
        if not row["patient_id"]:
            problems.append(f"line {line}: empty patient_id")
        if not row["path"]:
            problems.append(f"line {line}: empty path")
    if "split" in table.columns:
        given = table["split"] != ""
        if given.any() and not given.all():
            problems.append("split is given for some rows only: give it for all rows or none")
        bad = sorted(set(table.loc[given, "split"]) - set(SPLITS))
        if bad:
            problems.append(f"split values {bad} are not one of {list(SPLITS)}")
        split_counts = table[given].groupby("patient_id")["split"].nunique()
        mixed = split_counts.index[split_counts > 1].tolist()
        if mixed:
            problems.append(f"patients in more than one split (a leak): {mixed[:5]}")
    duplicated = table["path"][table["path"].duplicated()].tolist()
    if duplicated:
        problems.append(f"paths listed twice: {duplicated[:5]}")
    if problems:
        raise ShiftlabError(f"sample table {path}:\n  " + "\n  ".join(problems[:20]))
    return table


def _relative(path_text: str, dicom_root: Path) -> Path:
    path = Path(path_text)
    absolute = path if path.is_absolute() else dicom_root / path
    try:
        return absolute.resolve().relative_to(dicom_root.resolve())
    except ValueError:
        raise ShiftlabError(
            f"sample table path {path_text!r} is outside dataset.dicom_root ({dicom_root}); "
            "put the data under it or point dicom_root at a folder that holds it."
        ) from None


def _read_sample(dicom_root: Path, relative: Path) -> SeriesHeader | str:
    """The series header of one row's file or folder, or the reason it cannot be used."""
    absolute = dicom_root / relative
    if absolute.is_file():
        result = read_slice(absolute, relative.as_posix(), (), "SeriesInstanceUID")
        if isinstance(result, str):
            return result
        result.header.files = [result.path]
        return result.header
    if not absolute.is_dir():
        return "no such file or folder"
    series, skipped = scan_dicom_tree(absolute)
    if len(series) != 1:
        why = f"; skipped files: {skipped[:3]}" if skipped else ""
        return f"a folder must hold exactly one DICOM series, found {len(series)}{why}"
    header = series[0]
    header.files = [(relative / name).as_posix() for name in header.files]
    return header


def import_user_manifest(
    dataset_cfg: DictConfig, paths_cfg: DictConfig, split_seed: int
) -> ManifestInfo:
    """Read ``dataset.user_manifest``, check every row against its files, write the manifest."""
    table_path = Path(dataset_cfg.user_manifest)
    dicom_root = Path(dataset_cfg.dicom_root)
    table = _read_table(table_path)
    key = load_or_create_key(paths_cfg.pseudonym_key)
    has_split = "split" in table.columns and (table["split"] != "").all()
    rows, raw_patients, skipped = [], [], []
    for _, row in table.iterrows():
        relative = _relative(row["path"], dicom_root)
        header = _read_sample(dicom_root, relative)
        if isinstance(header, str):
            skipped.append((relative.as_posix(), header))
            continue
        manufacturer = row["manufacturer"] or header.manufacturer
        raw_patients.append(row["patient_id"])
        rows.append(
            {
                "sample_id": pseudonym(key, f"user-table:{relative.as_posix()}", "s-"),
                "patient_id": pseudonym(key, row["patient_id"], "p-"),
                "study_id": pseudonym(key, header.study_uid, "st-"),
                "series_id": pseudonym(key, header.series_uid, "se-"),
                "paths": PATH_SEPARATOR.join(header.files),
                "n_slices": len(header.files),
                "label": int(row["label"]),
                "manufacturer": manufacturer,
                "vendor": normalise_vendor(manufacturer),
                "model_name": header.model_name,
                "field_strength": (
                    np.nan if header.field_strength is None else header.field_strength
                ),
                "modality": header.modality,
                "split": row["split"] if has_split else "",
            }
        )
    skipped_path = Path(dataset_cfg.manifest_dir) / SKIPPED_NAME
    write_if_changed(skipped_path, csv_bytes(pd.DataFrame(skipped, columns=["path", "reason"])))
    print(f"rows in table:      {len(table)} ({table_path})")
    print(f"rows skipped:       {len(skipped)} (reasons in {skipped_path})")
    if not rows:
        raise ShiftlabError(f"no row of {table_path} could be used; see {skipped_path}.")
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    raw = pd.Series(raw_patients, index=df.index, dtype=str)
    meta = {
        "source_table": table_path.name,
        "n_rows": len(table),
        "n_rows_skipped": len(skipped),
        "pseudonym_key_id": pseudonym(key, "shiftlab-key-id", "k-"),
    }
    return finish_manifest(df, raw, dataset_cfg, split_seed, meta)
