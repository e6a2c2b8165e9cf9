"""Duke-Breast-Cancer-MRI (TCIA): does this slice show the tumour? (slice-level samples)

Published format: ``Annotation_Boxes.xlsx`` (one sheet, one header row), one row per patient
with columns ``Patient ID`` ("Breast_MRI_001" ..., the DICOM PatientID), ``Start Row``,
``End Row``, ``Start Column``, ``End Column``, ``Start Slice``, ``End Slice``: a box around the
patient's tumour. Every patient of the collection has cancer, so every patient gives both
classes.

How the dataset's authors count the boxes' slices (their lab's own code, the evidence this
recipe follows):

- mazurowski-lab/MRI-parameter-prediction, ``data/dbc/png_extractor.py``, and the lab's
  tutorial mazurowski-lab/MRI-deeplearning-tutorial, ``tutorial-part1.ipynb``, read the boxes
  against the fat-saturated *pre-contrast* series only (the file-path mapping rows whose
  original name contains "pre"), take the 1-based slice number from the file's number in that
  series, and label a slice positive when ``Start Slice <= slice < End Slice``: the End Slice
  is exclusive. Their negatives lie more than 5 slices outside [Start Slice, End Slice].
- LangDaniel/MAEMI, ``utils/bboxes/bboxes_ROI.py``, maps the same boxes onto the pre-contrast
  fat-saturated series ("t1_FS", see ``utils/download_MRI_data.py`` there for the collection's
  SeriesDescriptions) and mirrors a box's slices when InstanceNumber runs against the slice
  position: the slice numbers count in InstanceNumber order, not in position order.

Label rule, per patient, on the slices of the pre-contrast series numbered 1, 2, ... in
InstanceNumber order:

- 1 for every slice from Start Slice up to, not including, End Slice;
- 0 for slices at least ``margin`` (default 3) slices outside the box (slice <= Start Slice -
  margin or >= End Slice + margin); the slices in between, End Slice among them, are left out,
  because a tumour's edge can reach past a hand-drawn box and a 2.5D sample also sees
  ``context`` neighbours;
- negatives are capped at ``negatives_per_positive`` (default 1.0) times the patient's positive
  slices (at least one): they are taken alternately below and above the box, nearest first, every
  ``negative_stride`` (default 2) slices, so they show breast tissue near the tumour rather than
  the empty ends of the volume.

Sample names are "slice<NNN>" with extra columns ``slice_index`` = slice number - 1 (0-based,
in InstanceNumber order) and ``slice_numbering`` = "instance", which the slice preprocessor
checks against its own ``slice_numbering`` so that a sample never reads another slice than the
one its label names.

Caveats:

- The authors' code takes the slice number from the files' names; that these run in
  InstanceNumber order is not documented, MAEMI's flip implies it. Ingest never relies on file
  names. A row whose Start Slice equals its End Slice has no slice inside the box: that patient
  gives no samples (a warning counts them).
- The slice count of a series is not in the box table, so negatives above the box can fall past
  the last slice of a short series: ingest drops those samples with a reason.
- Series. The preset's series_filter keeps the fat-saturated pre-contrast series under the
  spellings the collection uses; a patient whose series is named otherwise is unlabelled.
- A patient listed twice gets the union of its boxes as positives and negatives away from all of
  them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from shiftlab.errors import ShiftlabError
from shiftlab.labels import LabelledSample, LabelTable, read_label_file, required_text

PATIENT = "Patient ID"
SLICE_COLUMNS = ("Start Slice", "End Slice")
BOX_COLUMNS = ("Start Row", "End Row", "Start Column", "End Column", *SLICE_COLUMNS)
WHAT = "Duke annotation box table"
# The order Start/End Slice count in (see above); MRISlicePreprocessor reads slice_index so.
SLICE_NUMBERING = "instance"


def _slice_numbers(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    numbers = table[list(SLICE_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    bad = (
        numbers.isna().any(axis=1)
        | (numbers < 1).any(axis=1)
        | (numbers[SLICE_COLUMNS[0]] > numbers[SLICE_COLUMNS[1]])
        | (numbers != numbers.round()).any(axis=1)
    )
    if bad.any():
        i = table.index[bad][0]
        raise ShiftlabError(
            f"{WHAT} {path}, line {int(i) + 2}: Start Slice and End Slice must be "
            f"whole numbers >= 1 with Start <= End, found "
            f"{table.loc[i, list(SLICE_COLUMNS)].tolist()}."
        )
    return numbers.astype(int)


def _negatives(boxes: list[tuple[int, int]], wanted: int, margin: int, stride: int) -> list[int]:
    """1-based slice numbers of up to ``wanted`` negatives, alternately below and above."""
    low = min(start for start, _ in boxes)
    high = max(end for _, end in boxes)

    def far(number: int) -> bool:
        return all(number <= start - margin or number >= end + margin for start, end in boxes)

    below = [s for s in range(low - margin, 0, -stride) if far(s)]
    above = [high + margin + i * stride for i in range(wanted)]
    above = [s for s in above if far(s)]
    chosen: list[int] = []
    while len(chosen) < wanted and (below or above):
        for side in (below, above):
            if side and len(chosen) < wanted:
                chosen.append(side.pop(0))
    return sorted(chosen)


def read_labels(
    path: str | os.PathLike[str],
    margin: int = 3,
    negatives_per_positive: float = 1.0,
    negative_stride: int = 2,
) -> LabelTable:
    """Read ``Annotation_Boxes.xlsx`` into slice samples keyed by PatientID (see above)."""
    if margin < 1 or negative_stride < 1 or negatives_per_positive < 0:
        raise ShiftlabError(
            f"dataset.labels: margin ({margin}) and negative_stride ({negative_stride}) must be "
            f">= 1 and negatives_per_positive ({negatives_per_positive}) >= 0."
        )
    path = Path(path)
    table = read_label_file(
        path,
        what=WHAT,
        source="Annotation_Boxes.xlsx from "
        "https://www.cancerimagingarchive.net/collection/duke-breast-cancer-mri/",
        columns=[PATIENT, *BOX_COLUMNS],
        empty_as_na=True,
    )
    numbers = _slice_numbers(table, path)
    patients = required_text(table, PATIENT, what=WHAT, path=path)

    boxes: dict[str, list[tuple[int, int]]] = {}
    for patient, start, end in zip(
        patients, numbers[SLICE_COLUMNS[0]], numbers[SLICE_COLUMNS[1]], strict=True
    ):
        boxes.setdefault(patient, []).append((int(start), int(end)))

    samples: dict[str, list[LabelledSample]] = {}
    empty = []
    for patient, patient_boxes in boxes.items():
        positives = sorted({s for start, end in patient_boxes for s in range(start, end)})
        if not positives:
            empty.append(patient)
            continue
        wanted = round(negatives_per_positive * len(positives))
        wanted = max(1, wanted) if negatives_per_positive > 0 else 0
        negatives = _negatives(patient_boxes, wanted, margin, negative_stride)
        labelled = [(s, 1) for s in positives] + [(s, 0) for s in negatives]
        samples[patient] = [
            LabelledSample(
                name=f"slice{s - 1:03d}",
                label=label,
                extra={"slice_index": s - 1, "slice_numbering": SLICE_NUMBERING},
            )
            for s, label in sorted(labelled)
        ]
    if empty:
        warnings.warn(
            f"{WHAT} {path}: {len(empty)} patient(s) have Start Slice = End Slice, so no slice "
            "lies inside their box (End Slice is exclusive, as in the dataset authors' code); "
            "they give no samples.",
            stacklevel=2,
        )
    return LabelTable(key_tag="PatientID", samples=samples)
