"""Read a dataset's own label file into {raw DICOM attribute value: 0/1}.

Datasets ship labels in many shapes; the common one is a table with one key column (a
SeriesInstanceUID, PatientID, AccessionNumber ...) and one 0/1 column. Dataset configs point
`labels._target_` at `read_label_table` for that case, or at their own recipe returning a
`LabelTable`, so ingest never needs to know where labels came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from shiftlab.errors import ShiftlabError


@dataclass(frozen=True)
class LabelTable:
    """Labels keyed by the raw text of one DICOM attribute (`key_tag`, a pydicom keyword)."""

    key_tag: str
    labels: dict[str, int]


def read_label_table(
    path: str | os.PathLike[str], key_column: str, key_tag: str, label_column: str
) -> LabelTable:
    """Read a CSV (or .tsv) label file; keys are kept as text so UIDs never turn into floats."""
    path = Path(path)
    if not path.is_file():
        raise ShiftlabError(
            f"label file not found: expected {path}. Put the dataset's label table there "
            "or point dataset.labels.path at it."
        )
    table = pd.read_csv(
        path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False
    )
    missing = [c for c in (key_column, label_column) if c not in table.columns]
    if missing:
        raise ShiftlabError(
            f"label file {path} lacks column(s) {missing}; it has {list(table.columns)}. "
            "Set dataset.labels.key_column / label_column to the right names."
        )
    keys = table[key_column].str.strip()
    raw_labels = table[label_column].str.strip()
    numeric = pd.to_numeric(raw_labels, errors="coerce")
    bad = ~numeric.isin([0, 1])
    if bad.any():
        examples = [f"line {i + 2}: {raw_labels[i]!r}" for i in table.index[bad][:5]]
        raise ShiftlabError(
            f"label file {path}: column {label_column!r} must hold 0 or 1, found "
            f"{int(bad.sum())} other value(s) ({'; '.join(examples)})."
        )
    if (keys == "").any():
        line = int(table.index[keys == ""][0]) + 2
        raise ShiftlabError(f"label file {path}: empty {key_column!r} on line {line}.")
    labels: dict[str, int] = {}
    for key, label in zip(keys, numeric.astype(int), strict=True):
        if labels.setdefault(key, label) != label:
            raise ShiftlabError(
                f"label file {path}: {key_column} {key!r} is labelled both 0 and 1."
            )
    return LabelTable(key_tag=key_tag, labels=labels)
