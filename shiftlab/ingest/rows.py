"""The label file joined to the series, and the manifest rows it gives: one row per labelled
sample, pseudonymised, then split by patient and written (``finish_manifest``)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pydicom
from omegaconf import DictConfig, OmegaConf
from pydicom.datadict import tag_for_keyword

from shiftlab.domains import usable_domains, usable_pairs
from shiftlab.errors import ShiftlabError, instantiate
from shiftlab.ingest.accounting import UsableDomains
from shiftlab.ingest.headers import SeriesHeader, absent_uids, tag_text
from shiftlab.ingest.pseudonym import pseudonym
from shiftlab.ingest.vendors import normalise_vendor
from shiftlab.labels import FILE_STEM, LabelledSample, LabelTable
from shiftlab.manifest import (
    COLUMNS,
    PATH_SEPARATOR,
    ManifestInfo,
    assign_splits,
    count_table,
    write_manifest,
)


def read_labels(dataset_cfg: DictConfig) -> LabelTable:
    labels = instantiate(dataset_cfg.labels)
    if not isinstance(labels, LabelTable):
        raise ShiftlabError(
            f"dataset.labels ({dataset_cfg.labels._target_}) returned "
            f"{type(labels).__name__}, expected a shiftlab.labels.LabelTable."
        )
    if labels.key_tag != FILE_STEM and tag_for_keyword(labels.key_tag) is None:
        raise ShiftlabError(
            f"dataset.labels.key_tag {labels.key_tag!r} is not a DICOM attribute keyword "
            f"(e.g. SeriesInstanceUID, PatientID, AccessionNumber) nor {FILE_STEM!r}."
        )
    return labels


def _slice_outside(sample: LabelledSample, n_slices: int) -> str | None:
    """Why a slice-level sample cannot be made from its series, if it cannot.

    Label files that give slice numbers without the series length (Duke's boxes) can name a
    slice past the end of a short series.
    """
    if "slice_index" not in sample.extra:
        return None
    index = int(sample.extra["slice_index"])
    if 0 <= index < n_slices:
        return None
    return f"sample {sample.name}: slice_index {index} outside the series' {n_slices} slices"


def manifest_rows(
    series: Sequence[SeriesHeader], labels: LabelTable, key: bytes
) -> tuple[pd.DataFrame, pd.Series, list[SeriesHeader], list[tuple[str, str]]]:
    """Labelled samples as manifest rows (no split yet), their raw patient ids, the unlabelled
    series, and the samples dropped (first file, reason): no patient id, or a slice the series
    does not have. A series gives one row per sample its label file names for it."""
    rows, raw_patients, unlabelled, dropped = [], [], [], []
    for header in series:
        samples = labels.samples.get(header.raw(labels.key_tag))
        if not samples:
            unlabelled.append(header)
            continue
        for sample in samples:
            patient = sample.patient or header.patient_id
            if not patient:
                dropped.append(
                    (header.files[0], "no PatientID, and the label file names no patient")
                )
                continue
            outside = _slice_outside(sample, header.n_slices or len(header.files))
            if outside:
                dropped.append((header.files[0], outside))
                continue
            raw_patients.append(patient)
            source = header.source_uid
            sample_key = f"{source}#{sample.name}" if sample.name else source
            rows.append(
                {
                    "sample_id": pseudonym(key, sample_key, "s-"),
                    "patient_id": pseudonym(key, patient, "p-"),
                    "study_id": pseudonym(key, header.study_uid or source, "st-"),
                    "series_id": pseudonym(key, header.series_uid or source, "se-"),
                    "paths": PATH_SEPARATOR.join(header.files),
                    "n_slices": header.n_slices or len(header.files),
                    "label": sample.label,
                    "manufacturer": header.manufacturer,
                    "vendor": normalise_vendor(header.manufacturer),
                    "model_name": header.model_name,
                    "field_strength": (
                        np.nan if header.field_strength is None else header.field_strength
                    ),
                    "modality": header.modality,
                    "split": "",
                    **sample.extra,
                }
            )
    df = pd.DataFrame(rows, columns=[*COLUMNS, *labels.extra_columns])
    return df, pd.Series(raw_patients, index=df.index, dtype=str), unlabelled, dropped


def unmatched_labels(
    labels: LabelTable,
    series: Sequence[SeriesHeader],
    chosen: Sequence[SeriesHeader],
    dicom_root: Path,
    skipped: Sequence[tuple[str, str]],
) -> dict[str, int]:
    """Why label keys matched no chosen series, counted: only a series that dataset.ingest did
    not choose carries the key, only skipped files carry it (their headers are read again
    here, as far as they can be), or no scanned file does."""
    chosen_keys = {s.raw(labels.key_tag) for s in chosen}
    scanned_keys = {s.raw(labels.key_tag) for s in series}
    unmatched = set(labels.samples) - chosen_keys
    elsewhere = unmatched - scanned_keys
    in_skipped = (
        elsewhere & _skipped_file_keys(dicom_root, skipped, labels.key_tag) if elsewhere else set()
    )
    return {
        "series_not_chosen": len(unmatched & scanned_keys),
        "only_skipped_files": len(in_skipped),
        "no_scanned_file": len(elsewhere - in_skipped),
    }


def _skipped_file_keys(
    dicom_root: Path, skipped: Sequence[tuple[str, str]], key_tag: str
) -> set[str]:
    """The label keys that skipped files carry, where their headers can be read."""
    if key_tag == FILE_STEM:
        return {PurePosixPath(path).name.split(".")[0] for path, _ in skipped}
    keys = set()
    for path, _ in skipped:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(
                    dicom_root / path, stop_before_pixels=True, specific_tags=[key_tag]
                )
            keys.add(tag_text(ds, key_tag))
        except Exception:  # a file too damaged to read carries no key that can be seen
            continue
    return keys - {""}


def no_match_error(series: Sequence[SeriesHeader], labels: LabelTable, label_path: str) -> str:
    series_example = series[0].raw(labels.key_tag) if series else "(no series)"
    label_example = next(iter(labels.samples), "(empty label file)")
    return (
        f"no series matched a label: labels from {label_path} are keyed by "
        f"{labels.key_tag}, e.g. {label_example!r}, while the scanned series have e.g. "
        f"{labels.key_tag} = {series_example!r}. Check dataset.labels.key_tag and key_column."
    )


def no_vendor_error(
    df: pd.DataFrame, chosen: Sequence[SeriesHeader], unit: str, hint: str, flagged: Path
) -> str:
    """Why no labelled sample has a known vendor, so that no domain can be formed."""
    n = len(df)
    given = df["manufacturer"].fillna("").str.strip()
    causes = []
    if (given == "").any():
        causes.append(f"{int((given == '').sum())} of {n} labelled {unit} have no Manufacturer")
    if (given != "").any():
        example = sorted(set(given[given != ""]))[0]
        causes.append(
            f"{int((given != '').sum())} of {n} have a Manufacturer that "
            f"shiftlab/ingest/vendors.py does not know (e.g. {example!r}; add its spelling there)"
        )
    in_samples = set(df["paths"])
    n_anonymous = sum(
        1 for h in chosen if PATH_SEPARATOR.join(h.files) in in_samples and absent_uids(h)
    )
    if n_anonymous:
        causes.append(
            f"{n_anonymous} carry no Study/Series/SOP Instance UIDs either (files de-identified "
            "down to their pixel attributes)"
        )
    return (
        f"no vendor could be formed: {'; '.join(causes)}. Domains are scanner vendors read from "
        f"Manufacturer, so no source and target exist in these files (notes in {flagged}). "
        f"{hint}"
    ).strip()


def finish_manifest(
    df: pd.DataFrame,
    raw_patients: pd.Series,
    dataset_cfg: DictConfig,
    split_seed: int,
    meta: Mapping[str, object],
) -> tuple[UsableDomains, ManifestInfo]:
    """Split by patient (unless the table came with splits), write the manifest; return its
    counts and usable domain pairs, and where it was written."""
    fractions = OmegaConf.to_container(dataset_cfg.split_fractions, resolve=True)
    if (df["split"] == "").any():
        # Splits are drawn on raw patient ids so that they do not depend on the pseudonym key.
        splits_on_raw = df.assign(patient_id=raw_patients)
        df["split"] = assign_splits(splits_on_raw, fractions, int(split_seed))
    meta = {
        "dataset": str(dataset_cfg.name),
        "split_seed": int(split_seed),
        "split_fractions": fractions,
        "sample_unit": str(dataset_cfg.get("sample_unit", "series")),
        **meta,
    }
    info = write_manifest(df, Path(dataset_cfg.manifest_dir), meta)
    return _usable_domains(df, dataset_cfg.domains.get("groups")), info


def _usable_domains(df: pd.DataFrame, groups: Mapping | None) -> UsableDomains:
    domains, pairs = usable_domains(df, groups), usable_pairs(df, groups)
    unusable = sorted(set(df["vendor"]) - set(domains))
    return UsableDomains(count_table(df), domains, unusable, pairs)
