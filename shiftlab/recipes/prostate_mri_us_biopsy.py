"""Prostate-MRI-US-Biopsy (TCIA): clinically significant cancer on biopsy vs not.

Published format: the biopsy spreadsheet ``TCIA-Biopsy-Data_2020-07-14.xlsx`` (TCIA's page links
it as "TCIA Biopsy Data_2020-07-14.xlsx"), one row per biopsy core, with columns that include
``Patient Number`` ("Prostate-MRI-US-Biopsy-0001", the DICOM PatientID), ``Series Instance UID
(MRI)`` (the MRI series the fusion biopsy was planned on), ``Series Instance UID (US)``,
``Core Label``, ``Primary Gleason``, ``Secondary Gleason`` (empty for a benign core),
``Cancer Length (mm)``, ``% Cancer in Core``, the core's tip and base in MRI coordinates,
``PSA (ng/mL)`` and ``Prostate Volume (CC)``. The column names were taken from public code that
reads the file, not from TCIA's documentation; all the ones used are parameters. The collection's
other table, the MRI target list ("Target-Data_2019-12-05.xlsx", PI-RADS-like scores per target),
is not used: the label is the biopsy's pathology.

Label rule: a core's Gleason grade group (ISUP) comes from its two patterns (<= 6: 1, 3+4: 2,
4+3: 3, 8: 4, 9-10: 5; both empty or 0: benign). A sample is 1 ("clinically significant cancer")
when any of its cores has grade group >= ``min_grade_group`` (default 2, i.e. Gleason 3+4 or
more), 0 when all its cores are benign or below it. A sample whose only cores at or above the
threshold are unreadable (one pattern missing, a non-number) is left out rather than guessed.

Key: with ``key="series"`` (default) one sample per MRI series, keyed by SeriesInstanceUID from
``Series Instance UID (MRI)``: a patient biopsied after two MRIs gives two samples, each labelled
by its own biopsy. Cores without an MRI series UID (systematic-only biopsies) are then ignored.
With ``key="patient"`` one label per patient (any core of any biopsy), keyed by PatientID, and
the preset's series_filter picks the T2 axial series.

Caveats: the MRI UID is taken to be the T2 axial series the targets were drawn on (the series
the preset feeds the network); where it names another series of the study, that series is
dropped by the preset's series_filter and the study is unlabelled (ingest reports it). Patients
biopsied without a significant finding may still harbour cancer (biopsy sampling error).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from shiftlab.errors import ShiftlabError
from shiftlab.labels import LabelledSample, LabelTable, read_label_file, required_text, text

KEYS = {"series": "SeriesInstanceUID", "patient": "PatientID"}
WHAT = "Prostate-MRI-US-Biopsy biopsy table"


def grade_group(primary: float, secondary: float) -> int | None:
    """ISUP grade group of one core (0 = benign), None when the patterns are unreadable."""
    values = (primary, secondary)
    if all(np.isnan(v) or v == 0 for v in values):
        return 0
    if any(np.isnan(v) or not 1 <= v <= 5 or v != int(v) for v in values):
        return None
    total = primary + secondary
    if total <= 6:
        return 1
    if total == 7:
        return 2 if primary <= 3 else 3
    return 4 if total == 8 else 5


def _gleason_patterns(table: pd.DataFrame, primary: str, secondary: str) -> pd.DataFrame:
    """The two Gleason columns as numbers: NaN where empty, -1 where the cell is not a number."""
    patterns = table[[primary, secondary]].apply(pd.to_numeric, errors="coerce")
    unreadable = table[[primary, secondary]].notna() & patterns.isna()
    patterns.loc[unreadable.any(axis=1), :] = -1.0  # text in a Gleason column: unreadable
    return patterns


def _grades_by_key(
    patients: pd.Series,
    keys: pd.Series,
    primary_patterns: pd.Series,
    secondary_patterns: pd.Series,
    series_column: str,
    path: Path,
) -> dict[str, list[int | None]]:
    """The grade group of every core, gathered by sample key; a key must keep to one patient."""
    grades: dict[str, list[int | None]] = {}
    patient_of: dict[str, str] = {}
    for i, (patient, sample_key, primary, secondary) in enumerate(
        zip(patients, keys, primary_patterns, secondary_patterns, strict=True)
    ):
        if not sample_key:
            continue  # a core without an MRI series (systematic-only biopsy)
        if patient_of.setdefault(sample_key, patient) != patient:
            raise ShiftlabError(
                f"{WHAT} {path}: {series_column} {sample_key!r} belongs to two patients "
                f"({patient_of[sample_key]!r} and {patient!r}, line {i + 2})."
            )
        grades.setdefault(sample_key, []).append(grade_group(primary, secondary))
    return grades


def _samples(
    grades: dict[str, list[int | None]], min_grade_group: int
) -> dict[str, list[LabelledSample]]:
    """Each key's label from its cores (see the label rule), leaving out undecidable keys."""
    samples: dict[str, list[LabelledSample]] = {}
    for sample_key, cores in grades.items():
        known = [g for g in cores if g is not None]
        if any(g >= min_grade_group for g in known):
            label = 1
        elif len(known) == len(cores):
            label = 0
        else:
            continue  # an unreadable core could be the significant one
        samples[sample_key] = [LabelledSample(name="", label=label)]
    return samples


def read_labels(
    path: str | os.PathLike[str],
    key: str = "series",
    min_grade_group: int = 2,
    patient_column: str = "Patient Number",
    series_column: str = "Series Instance UID (MRI)",
    primary_column: str = "Primary Gleason",
    secondary_column: str = "Secondary Gleason",
) -> LabelTable:
    """Read the biopsy spreadsheet into one sample per MRI series (or patient), see above."""
    if key not in KEYS:
        raise ShiftlabError(f"dataset.labels.key={key!r}; choose one of {list(KEYS)}.")
    if not 1 <= min_grade_group <= 5:
        raise ShiftlabError(f"dataset.labels.min_grade_group={min_grade_group}; choose 1 to 5.")
    path = Path(path)
    table = read_label_file(
        path,
        what=WHAT,
        source="the biopsy spreadsheet from "
        "https://www.cancerimagingarchive.net/collection/prostate-mri-us-biopsy/",
        columns=[
            patient_column,
            *([series_column] if key == "series" else []),
            primary_column,
            secondary_column,
        ],
        rename="dataset.labels.patient_column / series_column / primary_column / secondary_column",
        empty_as_na=True,
    )
    if key == "series":
        patients = text(table[patient_column])
        keys = text(table[series_column])
    else:
        patients = keys = required_text(table, patient_column, what=WHAT, path=path)
    patterns = _gleason_patterns(table, primary_column, secondary_column)
    grades = _grades_by_key(
        patients, keys, patterns[primary_column], patterns[secondary_column], series_column, path
    )
    return LabelTable(key_tag=KEYS[key], samples=_samples(grades, min_grade_group))
