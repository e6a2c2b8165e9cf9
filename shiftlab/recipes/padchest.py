"""PadChest (BIMCV, Bustos et al. 2020): one sample table, any radiological finding vs normal.

PadChest ships its images as 16-bit greyscale PNG, not DICOM, so nothing can be read from the
image files' headers: the scanner maker, the patient and the labels all come from the one label
table, ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz``. This recipe turns that table
into shiftlab's sample table (columns ``path, patient_id, manufacturer, label``), which is then
imported the same way as a hand-written ``dataset=custom`` table (``shiftlab.ingest.user_table``).

Published format, as read by public code (cited by repository and path):

- The table is built by the dataset authors' ``generatePublicFile`` (auriml/Rx-thorax-automatic-
  captioning, ``util.py``) and written with pandas' index, so its first column has no name
  ("Unnamed: 0" when read back; the authors' own ``image_prediction/Dataset-maintenance.ipynb``
  shows it). Columns read here: ``ImageID`` (the PNG's file name), ``ImageDir`` (the number of
  the zip file, and so of the folder, that holds it), ``PatientID``, ``Projection`` (``PA``,
  ``L``, ``AP``, ``AP_horizontal``, ``COSTAL``: reviewed from the DICOM fields, or predicted by a
  ResNet when ``MethodProjection`` says ``resnet-50.t7``), ``Manufacturer_DICOM`` and ``Labels``.
  Every value was cast to text, so missing values read ``nan`` or ``None``.
- ``Manufacturer_DICOM`` is the DICOM Manufacturer with every non-word character removed
  (``pattern.sub('', value.Manufacturer)`` with ``[\\W_]+`` in the same ``util.py``), hence the
  spellings ``PhilipsMedicalSystems`` and ``ImagingDynamicsCompanyLtd``: the only two in the
  dataset authors' own rows (BIMCV-CSUSP/BIMCV-COVID-19,
  ``padchest-covid/subsetsByPatology-tsv/neumo_infiltrates_[fm].tsv``: 4,462 and 1,459 of 5,921
  rows). A third-party count over the full table (its repository was not identified by the search
  index) gives 81,084 Philips and 79,777 Imaging Dynamics images; ``shiftlab.ingest.vendors`` maps
  the two spellings to ``philips`` and ``imaging_dynamics``.
- ``Labels`` holds a Python list literal per image, e.g. ``['normal']`` or
  ``['pacemaker', 'chronic changes']``; some entries carry a leading space, some rows hold ``[]``
  (a report from which no label was extracted) and about a hundred are empty (f10409/RadHarmony,
  ``docs/wiki/datasets/padchest.md``; Dataset-maintenance.ipynb above). The images of one
  study (PA and lateral) share their report and so their labels (``util.py``,
  ``summarizeAllStudiesLabel``).
- Images lie in ``<ImageDir>/<ImageID>``: the authors zipped each ImageDir's PNGs flat into
  ``<ImageDir>.zip`` (auriml/Rx-thorax-automatic-captioning, ``zipImages.py``); folders run 0-50
  plus 54, which holds the images added in February 2019 (same file; RadHarmony above).

Label rule, from the authors' label taxonomy (``manual_review/trees_code.txt``: ``normal``,
``exclude`` and ``suboptimal study`` are trees of their own beside the radiological findings and
differential diagnoses) and their count of normal studies (``buildTreeCounts`` in ``util.py``:
normal when the labels are a subset of {normal, exclude, suboptimal study}):

- rows carrying a label in ``drop_labels`` (default ``exclude``: "report not informative", and
  ``suboptimal study``) are dropped, as in RadHarmony and most public loaders; with
  ``drop_labels: []`` they follow the authors' rule, where those two labels are no findings;
- label 1 when any other label remains (a radiological finding or a differential diagnosis;
  ``unchanged`` is a radiological finding in the authors' taxonomy and counts as one unless it
  is listed in ``ignored_labels``);
- label 0 when ``normal`` is the only remaining label;
- rows with no label at all (``[]`` or empty) are dropped.

Only ``projections`` are kept, by default ``PA``: the common choice of public loaders
(mlmed/torchxrayvision ``torchxrayvision/datasets.py`` PC_Dataset's default views, Idiap's PadChest
data module, BIMCV's own PA-only handler ``Notebooks/padchest_handler.py``), and the one that keeps
bedside images out: ``AP_horizontal`` (supine, portable) images come from Philips only in the
authors' rows, so they would tie patient acuity to a vendor. Every dropped row is counted by reason
and the counts are printed; rows whose image file is missing or unreadable are counted by the
importer.
"""

from __future__ import annotations

import ast
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from shiftlab.errors import ShiftlabError
from shiftlab.ingest.user_table import SampleTable
from shiftlab.labels import read_label_file

WHAT = "PadChest label table"
TABLE_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
COLUMNS = ("ImageID", "ImageDir", "PatientID", "Projection", "Manufacturer_DICOM", "Labels")
NORMAL = "normal"
# Labels that are no finding in the authors' taxonomy (trees of their own beside the findings).
NOT_FINDINGS = frozenset({NORMAL, "exclude", "suboptimal study"})
# How the authors' all-text table spells a missing value.
MISSING = frozenset({"", "nan", "none", "null"})
VENDOR_SOURCE = "Manufacturer_DICOM column"


def _existing(path: Path) -> Path:
    """The table as given, or its other form (.csv.gz unpacked to .csv, or packed again)."""
    if path.is_file():
        return path
    other = path.with_suffix("") if path.suffix == ".gz" else path.with_name(path.name + ".gz")
    return other if other.is_file() else path


def _present(value: str) -> str:
    return "" if value.strip().lower() in MISSING else value.strip()


def _folder_number(text: str) -> int | None:
    """ImageDir as the folder's number: written "13" or, by older copies of the table, "13.0"."""
    try:
        return int(float(text))
    except ValueError:
        return None


def _unusable(
    image: str,
    seen: set[str],
    projection: str,
    keep: frozenset[str],
    patient: str,
    manufacturer: str,
    folder: str,
) -> str:
    """Why a row cannot be a sample whatever its labels say; "" when it can."""
    if not image:
        return "ImageID empty"
    if image in seen:
        return "ImageID listed again"
    if projection not in keep:
        return f"projection {projection or 'empty'} (kept: {', '.join(sorted(keep))})"
    if not patient:
        return "PatientID empty"
    if not manufacturer:
        return "Manufacturer_DICOM empty"
    if _folder_number(folder) is None:
        return f"ImageDir {folder or 'empty'} is not a folder number"
    return ""


def parse_labels(text: str) -> list[str] | None:
    """The labels of one ``Labels`` cell (stripped, empty entries dropped); None if unreadable."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(value, list | tuple):
        return None
    return [label for label in (str(v).strip() for v in value) if label]


def image_label(
    labels: Sequence[str], drop_labels: frozenset[str], ignored_labels: frozenset[str]
) -> int | str:
    """1 (a finding), 0 (normal only), or why the image has no usable label."""
    dropped = sorted(set(labels) & drop_labels)
    if dropped:
        return f"labelled {dropped[0]!r}"
    findings = set(labels) - NOT_FINDINGS - ignored_labels
    if findings:
        return 1
    if NORMAL in labels:
        return 0
    return "no finding and no 'normal' label" if labels else "Labels is [] (nothing extracted)"


def row_label(text: str, drop_labels: frozenset[str], ignored_labels: frozenset[str]) -> int | str:
    """The label of one ``Labels`` cell (see :func:`image_label`), or why there is none."""
    if not text:
        return "Labels empty"
    labels = parse_labels(text)
    if labels is None:
        return "Labels not a list"
    return image_label(labels, drop_labels, ignored_labels)


def sample_table(
    path: str | os.PathLike[str],
    projections: Sequence[str] = ("PA",),
    drop_labels: Sequence[str] = ("exclude", "suboptimal study"),
    ignored_labels: Sequence[str] = (),
) -> SampleTable:
    """Read the PadChest label table into a sample table (see the module docstring).

    Its rows are the usable images: ``path`` (``<ImageDir>/<ImageID>``, relative to the folder
    holding the numbered image folders), ``patient_id`` (PatientID), ``manufacturer``
    (Manufacturer_DICOM) and ``label`` ("0" or "1"). Every other row is listed in ``skipped``
    (for skipped.csv) with the reason; the counts by reason are printed.
    """
    table_path = _existing(Path(path))
    table = read_label_file(
        table_path,
        what=WHAT,
        source=f"{TABLE_NAME} of the BIMCV-PadChest-FULL download",
        columns=COLUMNS,
        setting="dataset.sample_table.path",
    )
    keep = frozenset(p.strip() for p in projections)
    drop = frozenset(label.strip() for label in drop_labels)
    ignored = frozenset(label.strip() for label in ignored_labels)
    rows, skipped, reasons = [], [], Counter()
    seen: set[str] = set()
    for record in table[list(COLUMNS)].itertuples(index=False):
        image, folder, patient, projection, manufacturer, label_text = (
            _present(str(v)) for v in record
        )
        number = _folder_number(folder)
        path = f"{folder if number is None else number}/{image}"
        why = _unusable(image, seen, projection, keep, patient, manufacturer, folder)
        label = why or row_label(label_text, drop, ignored)
        seen.add(image)
        if isinstance(label, str):
            reasons[label] += 1
            skipped.append((path if image else "(no ImageID)", f"label table: {label}"))
            continue
        rows.append(
            {"path": path, "patient_id": patient, "manufacturer": manufacturer, "label": str(label)}
        )
    _print_counts(table_path, len(table), rows, reasons)
    if not rows:
        raise ShiftlabError(
            f"{WHAT} {table_path}: no row is usable ({dict(reasons)}); check "
            "dataset.sample_table.projections and drop_labels."
        )
    frame = pd.DataFrame(rows, columns=["path", "patient_id", "manufacturer", "label"])
    return SampleTable(frame, table_path.name, VENDOR_SOURCE, skipped)


def _print_counts(path: Path, n_rows: int, rows: list[dict], reasons: Counter) -> None:
    positives = sum(row["label"] == "1" for row in rows)
    print(f"label table:        {n_rows} rows ({path})")
    normal = len(rows) - positives
    print(f"rows kept:          {len(rows)} ({positives} with a finding, {normal} normal)")
    print(f"rows dropped:       {sum(reasons.values())}")
    for why, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {count:>8}  {why}")
