"""VinDr-Mammo 1.0.0 (PhysioNet): BI-RADS >= 4 vs BI-RADS 1, one sample per image.

Published format: ``breast-level_annotations.csv`` has one row per image (``images/<study_id>/
<image_id>.dicom``) with ``study_id``, ``series_id``, ``image_id``, ``laterality`` (L, R),
``view_position`` (CC, MLO), ``height``, ``width``, ``breast_birads`` ("BI-RADS 1" ...
"BI-RADS 5", the assessment of that image's breast after double reading and arbitration),
``breast_density`` ("DENSITY A" ... "DENSITY D") and ``split`` (training, test). Each exam has
the four standard views (L/R x CC/MLO). ``finding_annotations.csv`` (boxes of the non-benign
findings) is not needed for this task.

Label rule: an image is positive (1) when its breast is BI-RADS >= ``positive_min`` (4:
suspicious or highly suggestive of malignancy), negative (0) when BI-RADS <= ``negative_max``
(1: negative). BI-RADS 2 (benign) and 3 (probably benign) sit in between and are left out by
default, so the negative class is clean screening-negative breasts; set ``negative_max: 3`` to
keep them as negatives. BI-RADS 0 (incomplete, not in VinDr-Mammo 1.0.0) is always left out.
The two breasts of an exam can differ, so one exam can give both classes.

Caveats:

- ``patient`` is the ``study_id``: the release carries no patient identifier, so shiftlab assumes
  one exam per woman. All images of an exam stay in one split; if a woman had two exams in the
  release they could still land in different splits.
- The BI-RADS is a radiological assessment, not biopsy-proven malignancy.
- The official ``split`` column is not used: shiftlab re-splits by exam inside each vendor.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from shiftlab.errors import ShiftlabError
from shiftlab.labels import FILE_STEM, LabelledSample, LabelTable, read_label_file, required_text

WHAT = "VinDr-Mammo label file"
_BIRADS = re.compile(r"^(?:BI-?RADS\s*)?([0-6])[A-C]?$", re.IGNORECASE)


def parse_birads(value: str) -> int | None:
    """ "BI-RADS 4" (or "4", "BI-RADS 4A") -> 4; None when the text is not a BI-RADS category."""
    match = _BIRADS.match(value.strip())
    return int(match.group(1)) if match else None


def _refuse_repeated_images(
    table: pd.DataFrame, images: pd.Series, image_column: str, path: Path
) -> None:
    """An image is one sample: a second row for it would give it two labels."""
    repeated = images.duplicated()
    if repeated.any():
        i = int(table.index[repeated][0])
        first = int(table.index[images == images[i]][0])
        raise ShiftlabError(
            f"{WHAT} {path}: {image_column} {images[i]!r} appears twice "
            f"(lines {first + 2} and {i + 2})."
        )


def _birads(table: pd.DataFrame, birads_column: str, path: Path) -> pd.Series:
    """Each row's BI-RADS category, refusing a cell that is not one (naming up to five)."""
    birads = table[birads_column].map(parse_birads)
    bad = birads.isna()
    if bad.any():
        examples = [f"line {i + 2}: {table[birads_column][i]!r}" for i in table.index[bad][:5]]
        raise ShiftlabError(
            f"{WHAT} {path}: column {birads_column!r} must hold BI-RADS "
            f"categories such as 'BI-RADS 4', found {int(bad.sum())} other value(s) "
            f"({'; '.join(examples)})."
        )
    return birads


def _label(category: int, positive_min: int, negative_max: int) -> int | None:
    """1 or 0 by the label rule; None for a category left out (in between, or 0)."""
    if category == 0:  # "incomplete: needs additional imaging", no assessment yet
        return None
    if category >= positive_min:
        return 1
    if category <= negative_max:
        return 0
    return None


def read_labels(
    path: str | os.PathLike[str],
    positive_min: int = 4,
    negative_max: int = 1,
    image_column: str = "image_id",
    study_column: str = "study_id",
    birads_column: str = "breast_birads",
    extra_columns: tuple[str, ...] | list[str] = ("laterality", "view_position"),
    key_tag: str = FILE_STEM,
) -> LabelTable:
    """Read ``breast-level_annotations.csv`` into a LabelTable keyed by image_id (FileStem).

    Images whose BI-RADS lies strictly between ``negative_max`` and ``positive_min`` are left out.
    ``extra_columns`` are copied into the manifest (laterality and view by default).
    """
    if not negative_max < positive_min:
        raise ShiftlabError(
            f"dataset.labels: negative_max={negative_max} must be below "
            f"positive_min={positive_min} (BI-RADS categories)."
        )
    path = Path(path)
    table = read_label_file(
        path,
        what=WHAT,
        source="breast-level_annotations.csv at the top of the PhysioNet release",
        columns=[study_column, image_column, birads_column, *extra_columns],
        rename="dataset.labels.study_column / image_column / birads_column / extra_columns",
    )
    images = required_text(table, image_column, what=WHAT, path=path)
    studies = required_text(table, study_column, what=WHAT, path=path)
    _refuse_repeated_images(table, images, image_column, path)
    birads = _birads(table, birads_column, path)

    samples: dict[str, list[LabelledSample]] = {}
    for i in table.index:
        label = _label(int(birads[i]), positive_min, negative_max)
        if label is None:
            continue
        extra = {c: table[c][i].strip() for c in extra_columns}
        samples[images[i]] = [LabelledSample(name="", label=label, extra=extra, patient=studies[i])]
    return LabelTable(key_tag=key_tag, samples=samples)
