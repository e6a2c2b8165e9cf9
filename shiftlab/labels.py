"""Read a dataset's own label file into labelled samples keyed by a raw DICOM attribute value.

Datasets ship labels in many shapes; the common one is a table with one key column (a
SeriesInstanceUID, PatientID, AccessionNumber ...) and one 0/1 column. Dataset configs point
`labels._target_` at `read_label_table` for that case, or at their own recipe returning a
`LabelTable`, so ingest never needs to know where labels came from.

A key usually names one sample (a series, an image). Tasks whose unit is smaller than a series,
such as one nodule of a CT scan, name a `sample_column` (unique within a key) and the
`extra_columns` the preprocessing needs (a nodule centre, a slice index), which are copied into
the manifest.

Every recipe reads its published table through the helpers here (``read_label_file``, ``text``,
``required_text``, ``zero_one``): they read each file the same way and word errors the same way,
naming the file, what is missing or wrong (line numbers count the header as line 1), what was
found and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from shiftlab.errors import ShiftlabError

EXCEL_SUFFIXES = (".xlsx", ".xls")
LABELS_PATH = "dataset.labels.path"
# A found-columns list longer than this is cut in error messages (ADNIMERGE has ~100 columns).
SHOWN_COLUMNS = 40
# Text cells that mean "no value". R's write.csv writes a missing value as NA (its default
# na = "NA", https://search.r-project.org/CRAN/refmans/utils/html/write.table.html), and tables
# exported from R (ADNIMERGE from its R package, e.g. cschneuw/optimus data/adnimerge/
# adnimerge.R) carry such cells; readers of them treat "NA" as missing (elenadoe/
# Brain_Age_PET_MRI, src/1.1_neuropsychology_merge/neuropsychology_merge.R). BIDS tables code
# a missing value as n/a (bids-standard/bids-specification, src/02-common-principles.md,
# "Tabular files"); "N/A" is the spreadsheet spelling. No published label table read here uses
# any of them as a value.
MISSING_MARKERS = frozenset({"NA", "N/A", "n/a"})


def not_found(what: str, path: Path, source: str, setting: str = LABELS_PATH) -> ShiftlabError:
    """The error for a missing label file or folder: ``what`` it is, where it comes from
    (``source``, e.g. "reads.csv from <url>") and which ``setting`` points elsewhere."""
    return ShiftlabError(
        f"{what} not found: {path}. It is {source}; put it there or point {setting} at it."
    )


def read_label_file(
    path: str | os.PathLike[str],
    *,
    what: str,
    source: str,
    columns: Sequence[str],
    setting: str = LABELS_PATH,
    rename: str | None = None,
    empty_as_na: bool = False,
) -> pd.DataFrame:
    """Read a label table (CSV, .tsv, or .xlsx/.xls) that must have ``columns``.

    ``what`` names the file in errors ("CQ500 reads file"), ``source`` says where it comes from
    and ``setting`` which option points at it (see :func:`not_found`); ``rename`` names the
    settings that rename the columns ("dataset.labels.key_column / label_column"); without
    any, a missing column makes the error ask whether the file is ``source``.
    Column names are stripped of surrounding spaces. Cells are read as text with empty cells as
    "" (nothing turns into a number or NaN, so UIDs stay intact; :func:`text` then reads the
    :data:`MISSING_MARKERS` as empty too); with ``empty_as_na`` they are read as the file holds
    them (numbers as numbers in a spreadsheet) and empty cells, "NA", "N/A" ... are NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise not_found(what, path, source, setting)
    options: dict[str, object] = (
        {"dtype": object} if empty_as_na else {"dtype": str, "keep_default_na": False}
    )
    suffix = path.suffix.lower()
    try:
        if suffix in EXCEL_SUFFIXES:
            table = pd.read_excel(path, **options)
        else:
            table = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", **options)
    except Exception as error:  # a damaged or mis-named file: say which
        raise ShiftlabError(f"cannot read {what} {path}: {error}") from error
    table.columns = [str(c).strip() for c in table.columns]
    wanted = list(dict.fromkeys(columns))
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        found = list(table.columns)
        shown = str(found[:SHOWN_COLUMNS])
        if len(found) > SHOWN_COLUMNS:
            shown += f" ... ({len(found) - SHOWN_COLUMNS} more)"
        hint = f"Set {rename} to the file's names." if rename else f"Check that it is {source}."
        raise ShiftlabError(
            f"{what} {path} lacks column(s) {missing}; expected {wanted}, found {shown}. {hint}"
        )
    return table


def text(values: pd.Series) -> pd.Series:
    """Cells as stripped text; empty cells (NaN when read with ``empty_as_na``) and the
    :data:`MISSING_MARKERS` ("NA", "N/A", "n/a") become ""."""

    def cell(value: object) -> str:
        stripped = "" if pd.isna(value) else str(value).strip()
        return "" if stripped in MISSING_MARKERS else stripped

    return values.map(cell)


def required_text(table: pd.DataFrame, column: str, *, what: str, path: Path) -> pd.Series:
    """``column`` as stripped text (see :func:`text`), refusing an empty cell."""
    values = text(table[column])
    empty = values == ""
    if empty.any():
        line = int(table.index[empty][0]) + 2
        raise ShiftlabError(f"{what} {path}: empty {column!r} on line {line}.")
    return values


def zero_one(table: pd.DataFrame, column: str, *, what: str, path: Path) -> pd.Series:
    """The 0/1 values of ``column`` as integers, refusing anything else (naming up to five)."""
    raw = text(table[column])
    numbers = pd.to_numeric(raw, errors="coerce")
    bad = ~numbers.isin([0, 1])
    if bad.any():
        cells = table[column]  # as written: "NA" shows as "NA", not as the empty text it means
        examples = [
            f"line {i + 2}: {cells[i] if isinstance(cells[i], str) else raw[i]!r}"
            for i in table.index[bad][:5]
        ]
        raise ShiftlabError(
            f"{what} {path}: column {column!r} must hold 0 or 1, found {int(bad.sum())} other "
            f"value(s) ({'; '.join(examples)})."
        )
    return numbers.astype(int)


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
