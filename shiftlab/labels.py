"""Read a dataset's own label file into labelled samples keyed by a raw DICOM attribute value.

Datasets ship labels in many shapes; the common one is a table with one key column (a
SeriesInstanceUID, PatientID, AccessionNumber ...) and one 0/1 column. Dataset configs point
`labels._target_` at `read_label_table` for that case, or at their own recipe returning a
`LabelTable`, so ingest never needs to know where labels came from.

A key usually names one sample (a series, an image). Tasks whose unit is smaller than a series,
such as one nodule of a CT scan, name a `sample_column` (unique within a key) and the
`extra_columns` the preprocessing needs (a nodule centre, a slice index), which are copied into
the manifest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from shiftlab.errors import ShiftlabError
from shiftlab.recipes.tables import read_label_file, required_text, text, zero_one


@dataclass(frozen=True)
class LabelledSample:
    """One sample of a series: its name within the series ("" when the series is the sample).

    ``patient`` is the patient identity when the label file knows it better than the headers
    (VinDr-Mammo's study_id; VinDr-CXR, whose headers carry no PatientID); "" means the
    DICOM PatientID. Either way it is pseudonymised before it reaches the manifest.
    """

    name: str
    label: int
    extra: dict[str, float | str] = field(default_factory=dict)
    patient: str = ""


# Pseudo keywords a label table may be keyed by besides DICOM attributes: the name of a
# series' first file without its extension (VinDr's <image_id>.dicom).
FILE_STEM = "FileStem"


@dataclass(frozen=True)
class LabelTable:
    """Samples keyed by the raw text of one DICOM attribute (`key_tag`, a pydicom keyword) or of
    the pseudo keyword ``FileStem``."""

    key_tag: str
    samples: dict[str, list[LabelledSample]]

    @property
    def extra_columns(self) -> list[str]:
        """Names of the extra per-sample columns, in their first-seen order."""
        names: dict[str, None] = {}
        for group in self.samples.values():
            for sample in group:
                names.update(dict.fromkeys(sample.extra))
        return list(names)


def _numeric_or_text(values: pd.Series) -> list[float | str]:
    numbers = pd.to_numeric(values, errors="coerce")
    return values.tolist() if numbers.isna().any() else numbers.astype(float).tolist()


def read_label_table(
    path: str | os.PathLike[str],
    key_column: str,
    key_tag: str,
    label_column: str,
    sample_column: str | None = None,
    extra_columns: Sequence[str] = (),
) -> LabelTable:
    """Read a CSV, .tsv or .xlsx label file; keys stay text so UIDs never turn into floats.

    Without `sample_column` each key is one sample (repeated rows must agree on the label);
    with it, each (key, sample) pair is one sample and must be unique.
    """
    path = Path(path)
    what = "label file"
    table = read_label_file(
        path,
        what=what,
        source="the dataset's label table",
        columns=[
            key_column,
            label_column,
            *([sample_column] if sample_column else []),
            *extra_columns,
        ],
        rename="dataset.labels.key_column / label_column / sample_column / extra_columns",
    )
    numeric = zero_one(table, label_column, what=what, path=path)
    keys = required_text(table, key_column, what=what, path=path)
    names = text(table[sample_column]) if sample_column else pd.Series("", index=table.index)
    extras = {c: _numeric_or_text(text(table[c])) for c in extra_columns}

    samples: dict[str, list[LabelledSample]] = {}
    seen: dict[tuple[str, str], int] = {}
    for i, (key, name, label) in enumerate(zip(keys, names, numeric, strict=True)):
        if (key, name) in seen:
            if sample_column:
                raise ShiftlabError(
                    f"label file {path}: {key_column} {key!r} {sample_column} {name!r} appears "
                    f"twice (lines {seen[(key, name)] + 2} and {i + 2})."
                )
            first = samples[key][0]
            if first.label != label:
                raise ShiftlabError(
                    f"label file {path}: {key_column} {key!r} is labelled both 0 and 1."
                )
            continue
        seen[(key, name)] = i
        extra = {c: values[i] for c, values in extras.items()}
        samples.setdefault(key, []).append(LabelledSample(name=name, label=label, extra=extra))
    return LabelTable(key_tag=key_tag, samples=samples)
