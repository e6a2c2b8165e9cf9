"""VinDr-CXR 1.0.0 (PhysioNet): image-level labels, "any finding" vs "No finding".

Published format (``annotations/`` of the release):

- ``image_labels_train.csv``: one row per (image, radiologist): ``image_id``, ``rad_id`` (e.g.
  ``R8``), then one 0/1 column per finding and diagnosis ("Aortic enlargement" ... "Other
  diseases") and last ``No finding``. Every training image was read independently by three of
  the 17 radiologists, so it has three rows that may disagree.
- ``image_labels_test.csv``: one row per image, the consensus of five radiologists, without
  ``rad_id``; the same label columns, except that "Other diseases" is spelled "Other disease".

``image_id`` is the name of the image's file without its extension (``train/<image_id>.dicom``),
so the table is keyed by the pseudo keyword FileStem.

Label rule: an image is negative (0) when more than ``negative_majority`` of its readers ticked
``No finding`` (training images: at least 2 of 3; test images: the consensus row), positive (1)
otherwise. Only the ``No finding`` column is read: a reader who ticked it found nothing, whatever
the other columns say, and a reader who did not tick it found something.

Caveats:

- The release's files carry no Manufacturer, so no vendor domain can be formed from them: its
  de-identification (vinbigdata-medical/vindr-cxr, ``de-identification/anonymize.py`` with
  ``tags.csv``) keeps 25 patient and pixel attributes only; the xray_chest_vindr preset reads
  these labels and stops with that reason.
- VinDr-CXR releases no patient identifiers (the headers keep no PatientID and ``image_id`` is
  the MD5 of the image's original SOPInstanceUID), so every image is its own patient
  (``LabelledSample.patient`` = ``image_id``). Two images of one person can land in different
  splits.
- The official train/test partition is not used as shiftlab's split: both files are read and
  shiftlab re-splits by patient inside each scanner vendor. Training images carry the
  3-reader majority label, test images the 5-reader consensus, so label noise differs between
  the two halves of the release.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from shiftlab.errors import ShiftlabError
from shiftlab.labels import (
    FILE_STEM,
    LabelledSample,
    LabelTable,
    read_label_file,
    required_text,
    zero_one,
)

WHAT = "VinDr-CXR label file"


def _no_finding_votes(
    file: Path, readers: str | None, setting: str, image_column: str, no_finding_column: str
) -> tuple[pd.Series, pd.Series]:
    """One file's image ids and 0/1 ``No finding`` ticks, one per row (reading)."""
    table = read_label_file(
        file,
        what=WHAT,
        source=f"annotations/{file.name} of the PhysioNet release",
        columns=[image_column, *([readers] if readers else []), no_finding_column],
        setting=setting,
        rename="dataset.labels.image_column / reader_column / no_finding_column",
    )
    images = required_text(table, image_column, what=WHAT, path=file)
    if readers:
        _refuse_repeated_readings(table, images, readers, image_column, file)
    return images, zero_one(table, no_finding_column, what=WHAT, path=file)


def _refuse_repeated_readings(
    table: pd.DataFrame, images: pd.Series, readers: str, image_column: str, file: Path
) -> None:
    """A reader reads an image once: a second row would count their vote twice."""
    repeated = table.assign(_image=images).duplicated(["_image", readers])
    if repeated.any():
        line = int(table.index[repeated][0]) + 2
        raise ShiftlabError(
            f"{WHAT} {file}: line {line} repeats a reading "
            f"({image_column} {images[table.index[repeated][0]]!r}, {readers} "
            f"{table[readers][table.index[repeated][0]]!r})."
        )


def _samples(
    votes: dict[str, list[int]], negative_majority: float
) -> dict[str, list[LabelledSample]]:
    """Each image's label by the majority rule, the image being its own patient."""
    return {
        image: [
            LabelledSample(
                name="",
                label=0 if sum(nf) / len(nf) > negative_majority else 1,
                patient=image,
            )
        ]
        for image, nf in votes.items()
    }


def read_labels(
    path: str | os.PathLike[str],
    test_path: str | os.PathLike[str] | None = None,
    image_column: str = "image_id",
    reader_column: str | None = "rad_id",
    no_finding_column: str = "No finding",
    negative_majority: float = 0.5,
    key_tag: str = FILE_STEM,
) -> LabelTable:
    """Read ``image_labels_train.csv`` (and ``image_labels_test.csv``) into one LabelTable.

    ``path`` holds one row per reader of an image (``reader_column`` names the reader; null
    when there is none), ``test_path`` (optional) one consensus row per image. An image is
    labelled 0 when the fraction of its rows with ``no_finding_column`` = 1 exceeds
    ``negative_majority`` (default 0.5: a strict majority), else 1. An image may appear in only
    one of the two files; a reader may read an image only once.
    """
    if not 0 <= negative_majority < 1:
        raise ShiftlabError(
            f"dataset.labels.negative_majority={negative_majority}; expected 0 <= value < 1 "
            "(the fraction of readers that must tick 'No finding' for a negative image)."
        )
    files = [(Path(path), reader_column, "dataset.labels.path")]
    if test_path is not None:  # the consensus file has no reader column
        files.append((Path(test_path), None, "dataset.labels.test_path"))

    votes: dict[str, list[int]] = {}
    source: dict[str, Path] = {}
    for file, readers, setting in files:
        images, no_finding = _no_finding_votes(
            file, readers, setting, image_column, no_finding_column
        )
        for image, vote in zip(images, no_finding, strict=True):
            if source.setdefault(image, file) != file:
                raise ShiftlabError(
                    f"VinDr-CXR image {image!r} is listed in both {source[image]} and {file}."
                )
            votes.setdefault(image, []).append(int(vote))
    return LabelTable(key_tag=key_tag, samples=_samples(votes, negative_majority))
