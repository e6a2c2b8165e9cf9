"""Bring your own dataset: import a sample table written by hand into a shiftlab manifest.

The table (CSV) has one row per sample and the columns

    path          a DICOM file (one image), a folder holding one series, a NIfTI volume
                  (.nii, .nii.gz) or a PNG image, relative to dataset.dicom_root (or absolute,
                  inside it)
    patient_id    any patient identifier; pseudonymised here, never written as given
    manufacturer  scanner manufacturer as text ("GE MEDICAL SYSTEMS", "Siemens" ...); empty
                  means: take the file's Manufacturer attribute (a DICOM file only: NIfTI and
                  PNG have no such header, so their rows must give it)
    label         0 or 1
    split         optional: train / val / test for every row, or empty to split by patient
    model_name, field_strength
                  optional: scanner model and field strength (T); empty means: from the header

The headers are read only to order slices and fill the study/series/modality columns; the rest
follows the same path as an ingest (pseudonyms, vendor aliases, splits, count table, usable
domain pairs), so the DataModule cannot tell the two apart.

Files are accounted for as in a folder scan: every file a row names (a folder: every file under
it) is in a sample or in skipped.csv with its reason, counted by kind; a row that repeats an
image of an earlier row (the same file, or the same SOPInstanceUID: a copy) is skipped; samples
kept with a caveat (vendor unknown, uneven slice spacing) are listed in flagged.csv.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from shiftlab.errors import ShiftlabError
from shiftlab.ingest.accounting import (
    FLAGGED_NAME,
    SKIPPED_NAME,
    IngestSummary,
    TableAccounts,
    count_skipped_kinds,
    vendor_note,
    write_flagged,
    write_skipped,
)
from shiftlab.ingest.headers import SeriesHeader, read_slice
from shiftlab.ingest.image_files import FORMAT_NAMES, image_format, read_image_info
from shiftlab.ingest.pseudonym import load_or_create_key, pseudonym
from shiftlab.ingest.rows import finish_manifest
from shiftlab.ingest.series import scan_dicom_tree
from shiftlab.ingest.vendors import UNKNOWN, normalise_vendor
from shiftlab.manifest import COLUMNS, PATH_SEPARATOR, SPLITS

REQUIRED = ("path", "patient_id", "manufacturer", "label")
# Where a sample's manufacturer came from, counted in manifest.json (meta "vendor_source").
FROM_TAG, FROM_COLUMN = "Manufacturer tag", "table column"


@dataclass
class SampleTable:
    """Rows to import (the columns above), from a hand-written CSV or built by a recipe."""

    rows: pd.DataFrame
    # Named in messages and manifest.json (the CSV's file name, or e.g. participants.tsv).
    source: str
    # Where a manufacturer given in a row came from: FROM_COLUMN, or e.g. "BIDS sidecar".
    vendor_source: str = FROM_COLUMN
    # Files left out before import, (relative path, reason), for skipped.csv.
    skipped: list[tuple[str, str]] = field(default_factory=list)


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
        kind = image_format(row["path"])
        if kind != "dicom" and not row["manufacturer"]:
            problems.append(
                f"line {line}: empty manufacturer, and {row['path']} is a {FORMAT_NAMES[kind]} "
                "file, with no header to take it from: write the scanner's manufacturer there"
            )
        if row.get("field_strength") and not _is_number(row["field_strength"]):
            problems.append(
                f"line {line}: field_strength {row['field_strength']!r} is not a number"
            )
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
        # Normalised without following links: a DataLad dataset's files are links into
        # .git/annex, and a sample is named by its own path, not by its content's key.
        return Path(os.path.abspath(absolute)).relative_to(os.path.abspath(dicom_root))
    except ValueError:
        raise ShiftlabError(
            f"sample table path {path_text!r} is outside dataset.dicom_root ({dicom_root}); "
            "put the data under it or point dicom_root at a folder that holds it."
        ) from None


def _read_sample(
    dicom_root: Path, relative: Path
) -> tuple[SeriesHeader | str, list[tuple[str, str]]]:
    """The series header of one row's file or folder, or the reason it cannot be used; and the
    files of a folder left out, with their reasons (paths relative to dicom_root)."""
    absolute = dicom_root / relative
    if absolute.is_file():
        result = read_slice(absolute, relative.as_posix(), (), "SeriesInstanceUID")
        if isinstance(result, str):
            return result, []
        result.header.files, result.header.sop_uids = [result.path], [result.sop_uid]
        return result.header, []
    if not absolute.is_dir():
        return "no such file or folder", []
    series, skipped = scan_dicom_tree(absolute)
    left_out = [((relative / name).as_posix(), reason) for name, reason in skipped]
    if len(series) != 1:
        reason = f"a row's folder must hold exactly one DICOM series; it holds {len(series)}"
        left_out += [((relative / name).as_posix(), reason) for s in series for name in s.files]
        return reason, sorted(left_out)
    header = series[0]
    header.files = [(relative / name).as_posix() for name in header.files]
    return header, left_out


def _repeats(header: SeriesHeader, claimed: dict[str, str]) -> str | None:
    """Why a row repeats images of an earlier row (a file, or a SOPInstanceUID, already taken),
    or None, and then its images are taken for it."""
    keys = [(f"file:{f}", f) for f in header.files]
    # A header without SOPInstanceUIDs (a NIfTI or PNG file) is known by its files alone.
    keys += [(uid, f) for uid, f in zip(header.sop_uids, header.files, strict=False) if uid]
    for key, _ in keys:
        if key in claimed:
            kind = "file" if key.startswith("file:") else "SOPInstanceUID"
            return f"duplicate {kind} of {claimed[key]} (in an earlier row)"
    claimed.update(keys)
    return None


def _read_image_file(dicom_root: Path, relative: Path, modality: str) -> SeriesHeader | str:
    """The header of a NIfTI or PNG row, or the reason it cannot be used. The file has no
    UIDs: study and series are named by its relative path (pseudonymised like UIDs); the row
    gives the manufacturer, the dataset config the modality."""
    absolute = dicom_root / relative
    if absolute.is_symlink() and not absolute.exists():
        # DataLad / git-annex datasets (OpenNeuro) hold links whose content comes with
        # `datalad get` (rordenlab/MRIcroGL issue 39 shows the steps).
        return "a link to a missing file (content not fetched? e.g. `datalad get` it)"
    if not absolute.is_file():
        return "no such file or folder"
    if PATH_SEPARATOR in relative.as_posix():
        return f"file name contains {PATH_SEPARATOR!r}, the manifest's path separator"
    info = read_image_info(absolute)
    if isinstance(info, str):
        return info
    name = f"file:{relative.as_posix()}"
    return SeriesHeader(
        patient_id="",
        study_uid=name,
        series_uid=name,
        source_uid=name,
        manufacturer="",
        model_name="",
        field_strength=None,
        modality=modality,
        files=[relative.as_posix()],
        sop_uids=[""],  # no SOPInstanceUID: a repeat is caught by its file only
        n_slices=info.n_slices,
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _field_strength(row: pd.Series, header: SeriesHeader) -> float:
    given = row.get("field_strength") or ""
    if given:
        return float(given)
    return np.nan if header.field_strength is None else header.field_strength


def import_user_manifest(
    dataset_cfg: DictConfig,
    paths_cfg: DictConfig,
    split_seed: int,
    summary: IngestSummary,
    table: SampleTable | None = None,
) -> None:
    """Check every row of a sample table against its files and write the manifest, filling
    ``summary`` as it goes.

    The table is ``dataset.user_manifest`` (a CSV written by hand) unless a recipe passes one it
    built (``shiftlab.ingest.bids``).
    """
    if table is None:
        table_path = Path(dataset_cfg.user_manifest)
        table = SampleTable(_read_table(table_path), table_path.name)
    dicom_root = Path(dataset_cfg.dicom_root)
    modality = str(dataset_cfg.get("modality", ""))
    key = load_or_create_key(paths_cfg.pseudonym_key)
    imported = _import_rows(table, dicom_root, modality, key)
    manifest_dir = Path(dataset_cfg.manifest_dir)
    summary.table = accounts = _write_accounts(table, imported, manifest_dir)
    if not imported.rows:
        skipped_path = manifest_dir / SKIPPED_NAME
        raise ShiftlabError(f"no row of {table.source} could be used; see {skipped_path}.")
    df = pd.DataFrame(imported.rows, columns=list(COLUMNS))
    raw = pd.Series(imported.raw_patients, index=df.index, dtype=str)
    meta = _table_meta(accounts, key)
    summary.domains, summary.manifest = finish_manifest(df, raw, dataset_cfg, split_seed, meta)


@dataclass
class _Imported:
    """What a table's rows gave: manifest rows, and where the files of the other rows went."""

    skipped: list[tuple[str, str]]  # (file, reason), for skipped.csv
    rows: list[dict[str, object]] = field(default_factory=list)
    raw_patients: list[str] = field(default_factory=list)  # as given, for the split by patient
    # (first file, caveat) of the samples kept, for flagged.csv
    flagged: list[tuple[str, str]] = field(default_factory=list)
    # Where each sample's manufacturer came from: FROM_TAG or the table's vendor_source.
    vendor_sources: Counter[str] = field(default_factory=Counter)
    n_rows_skipped: int = 0


def _import_rows(table: SampleTable, dicom_root: Path, modality: str, key: bytes) -> _Imported:
    """Read every row's file or folder: a usable row becomes a manifest row, the files of the
    others are listed in skipped.csv with their reason."""
    has_split = "split" in table.rows.columns and (table.rows["split"] != "").all()
    imported = _Imported(skipped=list(table.skipped))
    claimed: dict[str, str] = {}  # file or SOPInstanceUID -> the file of the row that has it
    for _, row in table.rows.iterrows():
        relative = _relative(row["path"], dicom_root)
        header = _usable_header(dicom_root, relative, modality, claimed, imported)
        if header is None:
            continue
        manufacturer = row["manufacturer"] or header.manufacturer
        notes = [vendor_note(manufacturer), *header.notes]
        imported.flagged += [(header.files[0], note) for note in notes if note]
        imported.vendor_sources[table.vendor_source if row["manufacturer"] else FROM_TAG] += 1
        imported.raw_patients.append(row["patient_id"])
        imported.rows.append(_manifest_row(row, relative, header, manufacturer, key, has_split))
    return imported


def _usable_header(
    dicom_root: Path,
    relative: Path,
    modality: str,
    claimed: dict[str, str],
    imported: _Imported,
) -> SeriesHeader | None:
    """The header of one row's images, or None when the row is skipped: it cannot be read or
    repeats an earlier row's images (its files then go to ``imported.skipped``, with why)."""
    header, left_out = (
        _read_sample(dicom_root, relative)
        if image_format(relative) == "dicom"
        else (_read_image_file(dicom_root, relative, modality), [])
    )
    imported.skipped += left_out
    repeated = None if isinstance(header, str) else _repeats(header, claimed)
    if isinstance(header, str) or repeated:
        imported.n_rows_skipped += 1
        if repeated:
            imported.skipped += [(f, repeated) for f in header.files]
        elif not left_out:
            imported.skipped.append((relative.as_posix(), header))
        return None
    return header


def _manifest_row(
    row: pd.Series,
    relative: Path,
    header: SeriesHeader,
    manufacturer: str,
    key: bytes,
    has_split: bool,
) -> dict[str, object]:
    """One sample's manifest row: identifiers pseudonymised, the table's values first, the
    header's where the table leaves them empty."""
    return {
        "sample_id": pseudonym(key, f"user-table:{relative.as_posix()}", "s-"),
        "patient_id": pseudonym(key, row["patient_id"], "p-"),
        "study_id": pseudonym(key, header.study_uid, "st-"),
        "series_id": pseudonym(key, header.series_uid, "se-"),
        "paths": PATH_SEPARATOR.join(header.files),
        "n_slices": header.n_slices or len(header.files),
        "label": int(row["label"]),
        "manufacturer": manufacturer,
        "vendor": normalise_vendor(manufacturer),
        "model_name": row.get("model_name") or header.model_name,
        "field_strength": _field_strength(row, header),
        "modality": header.modality,
        "split": row["split"] if has_split else "",
    }


def _write_accounts(table: SampleTable, imported: _Imported, manifest_dir: Path) -> TableAccounts:
    """Write skipped.csv and flagged.csv, and return the counts the summary prints: every file
    the table names is accounted for, also when no row can be used."""
    skipped = sorted(imported.skipped)
    write_skipped(manifest_dir / SKIPPED_NAME, skipped)
    flagged = sorted(imported.flagged)
    write_flagged(manifest_dir / FLAGGED_NAME, flagged)
    return TableAccounts(
        source=table.source,
        n_rows=len(table.rows),
        n_rows_skipped=imported.n_rows_skipped,
        manifest_dir=manifest_dir,
        skipped_by_kind=count_skipped_kinds(skipped),
        files=_files_accounted(imported.rows, skipped),
        n_vendor_unknown=sum(r["vendor"] == UNKNOWN for r in imported.rows),
        n_flagged=len(flagged),
        vendor_sources=dict(sorted(imported.vendor_sources.items())),
    )


def _files_accounted(
    rows: list[dict[str, object]], skipped: list[tuple[str, str]]
) -> dict[str, int]:
    """Every file the table names (a folder: every file under it): in a sample or skipped."""
    # A file is counted once: one that a repeating row names again is in a sample already.
    in_samples = {f for r in rows for f in r["paths"].split(PATH_SEPARATOR)}
    only_skipped = {path for path, _ in skipped} - in_samples
    return {
        "scanned": len(in_samples) + len(only_skipped),
        "in_samples": len(in_samples),
        "skipped": len(only_skipped),
    }


def _table_meta(accounts: TableAccounts, key: bytes) -> dict[str, object]:
    """What manifest.json records about an imported table: the counts the summary printed."""
    return {
        "source_table": accounts.source,
        "n_rows": accounts.n_rows,
        "n_rows_skipped": accounts.n_rows_skipped,
        # Every file the table names (a folder: every file under it): in a sample or skipped.
        "files": accounts.files,
        "skipped_by_kind": accounts.skipped_by_kind,
        "n_flagged": accounts.n_flagged,
        "n_samples_vendor_unknown": accounts.n_vendor_unknown,
        # Where each sample's manufacturer came from: the manifest says which
        # (docs/presets/custom.md).
        "vendor_source": accounts.vendor_sources,
        "pseudonym_key_id": pseudonym(key, "shiftlab-key-id", "k-"),
    }
