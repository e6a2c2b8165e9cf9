"""ADNI (LONI IDA): Alzheimer's disease vs cognitively normal, from ADNI's diagnosis table.

Published format: ``ADNIMERGE.csv`` (LONI IDA, "Study Data" > "Test Data" > "Data for
Challenges" / the ADNIMERGE package), one row per participant visit with, among ~100 columns,
``RID``, ``PTID`` ("002_S_0295", the DICOM PatientID of ADNI images), ``VISCODE`` ("bl",
"m06", ...), ``EXAMDATE``, ``DX_bl`` (baseline diagnosis: CN, SMC, EMCI, LMCI, AD) and ``DX``
(diagnosis at that visit: CN, MCI, Dementia; missing when not assessed; older releases spell it
NL, MCI, Dementia and transitions such as "MCI to Dementia"). A missing cell is empty, or the
literal ``NA`` where the table was written by R (the ADNIMERGE R package's data frames saved
with write.csv, whose default writes NA; e.g. cschneuw/optimus data/adnimerge/adnimerge.R, read
back with na.strings = c("NA", "") in elenadoe/Brain_Age_PET_MRI), or ``N/A`` / ``n/a``: all
are missing here (shiftlab.labels.text), never a diagnosis.

Label rule, per participant (keyed by PatientID = PTID): 1 when the baseline diagnosis ``DX_bl``
is one of ``positive`` (default AD), 0 when it is one of ``negative`` (default CN); every other
baseline diagnosis (SMC, EMCI, LMCI) is left out. With ``exclude_converters`` (default true) a
participant is also left out when any visit's assessed ``DX`` contradicts that class (a CN
participant later diagnosed MCI or Dementia, an AD participant later not Dementia): every scan
of a participant then carries a diagnosis that held at every assessed visit, so scans from later
visits can be used too. Participants whose rows disagree on ``DX_bl`` are left out.

Caveats: the label is clinical, not imaging-based; ADNIMERGE is revised with each data freeze
(column spellings above are those of recent releases; older ones may differ and the columns
are parameters). DXSUM_PDXCONV_ADNIALL.csv, ADNI's raw diagnosis form, codes diagnoses in
different columns per ADNI phase and is not read here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from shiftlab.errors import ShiftlabError
from shiftlab.labels import LabelledSample, LabelTable, read_label_file, text


def read_labels(
    path: str | os.PathLike[str],
    positive: Sequence[str] = ("AD",),
    negative: Sequence[str] = ("CN",),
    exclude_converters: bool = True,
    positive_visit_dx: Sequence[str] = ("Dementia", "AD"),
    negative_visit_dx: Sequence[str] = ("CN", "NL"),
    subject_column: str = "PTID",
    baseline_column: str = "DX_bl",
    visit_dx_column: str = "DX",
) -> LabelTable:
    """Read ADNIMERGE.csv into one label per participant keyed by PatientID (see above)."""
    positive, negative = [str(v) for v in positive], [str(v) for v in negative]
    if set(positive) & set(negative):
        raise ShiftlabError(
            f"dataset.labels: {sorted(set(positive) & set(negative))} are both positive and "
            "negative baseline diagnoses."
        )
    table = read_label_file(
        path,
        what="ADNI diagnosis table",
        source="ADNIMERGE.csv from LONI IDA (https://ida.loni.usc.edu/, ADNI > Download > "
        "Study Data)",
        columns=[
            subject_column,
            baseline_column,
            *([visit_dx_column] if exclude_converters else []),
        ],
        rename="dataset.labels.subject_column / baseline_column / visit_dx_column",
    )
    subjects = text(table[subject_column])
    baseline = text(table[baseline_column])
    visit_dx = text(table[visit_dx_column]) if exclude_converters else None
    allowed = {1: set(positive_visit_dx), 0: set(negative_visit_dx)}

    samples: dict[str, list[LabelledSample]] = {}
    for subject, rows in table.groupby(subjects, sort=True).groups.items():
        if not subject:
            continue
        diagnoses = set(baseline[rows]) - {""}
        if len(diagnoses) != 1:
            continue  # no baseline diagnosis, or conflicting ones
        (diagnosis,) = diagnoses
        if diagnosis in positive:
            label = 1
        elif diagnosis in negative:
            label = 0
        else:
            continue
        if visit_dx is not None and set(visit_dx[rows]) - {""} - allowed[label]:
            continue  # converted (or reverted) at a later visit
        samples[str(subject)] = [LabelledSample(name="", label=label)]
    return LabelTable(key_tag="PatientID", samples=samples)
