"""BIDS: a Brain Imaging Data Structure folder as a sample table, imported like a hand-written one.

Layout read (BIDS specification, bids-standard/bids-specification; the raw-data layout of
``src/04-modality-specific-files/01-magnetic-resonance-imaging-data.md``)::

    <dicom_root>/participants.tsv
    <dicom_root>/sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_<key>-<value>...]_<suffix>.nii[.gz]
    ... JSON sidecars (.json) beside the images or higher up

Every image with the configured suffix (``T1w`` ...) is one sample; its participant is the
``sub-`` label, so all sessions and runs of a participant land in one split.

- Vendor: the sidecar keys ``Manufacturer``, ``ManufacturersModelName`` and
  ``MagneticFieldStrength`` (Tesla), RECOMMENDED hardware fields that "correspond to DICOM Tag
  0008, 0070 Manufacturer" and "0008, 1090" (specification, "Magnetic Resonance Imaging",
  "Hardware information"; https://bids-specification.readthedocs.io/en/stable/
  modality-specific-files/magnetic-resonance-imaging-data.html). Converters write their own
  spelling: dcm2niix writes ``"Manufacturer": "GE"`` for files whose DICOM header says "GE
  MEDICAL SYSTEMS", and ``"Siemens"`` (reference sidecars of neurolabusc/dcm_qa_nih,
  ``Ref/DCM2NIIX_regression_test_4.json``, ``Ref/EPI_PE=AP_3.json``); shiftlab/ingest/vendors.py
  maps them like DICOM values. RECOMMENDED is not REQUIRED: an image whose sidecars give no
  Manufacturer is skipped with that reason.
- Sidecars follow the Inheritance Principle (specification, Appendix "The Inheritance
  Principle", ``src/99-appendices/15-inheritance-principle.md``): a JSON file applies to an
  image when it lies in the image's folder or above (inside the dataset), has the same suffix,
  and names no entity the image's name lacks; applicable files are loaded from the top level
  down, within one level from fewest to most entities, later keys overwriting earlier ones. A
  top-level ``T1w.json`` thus holds what every T1w image shares.
- Labels: ``participants.tsv`` (``participant_id`` = ``sub-<label>``, one row per participant;
  ``src/03-modality-agnostic-files.md``), column ``dataset.bids.label_column``: a value in
  ``positive`` is 1, in ``negative`` 0. "Missing and non-applicable values MUST be coded as
  n/a" (``src/02-common-principles.md``, "Tabular files"): an ``n/a`` (or empty) cell, any other
  value, or a participant without a row leaves that participant's images out, each listed in
  skipped.csv with the reason.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from shiftlab.errors import ShiftlabError
from shiftlab.ingest.user_table import SampleTable

PARTICIPANTS = "participants.tsv"
MISSING = "n/a"
VENDOR_SOURCE = "BIDS sidecar"
_IMAGE_SUFFIXES = (".nii.gz", ".nii")
_ENTITY = re.compile(r"^([a-zA-Z0-9]+)-([a-zA-Z0-9+]+)$")


def split_name(name: str) -> tuple[dict[str, str], str] | None:
    """``sub-01_ses-1_T1w.nii.gz`` -> ({sub: 01, ses: 1}, "T1w"); None if not a BIDS name."""
    stem = name
    for extension in (*_IMAGE_SUFFIXES, ".json"):
        if stem.endswith(extension):
            stem = stem[: -len(extension)]
            break
    *pairs, suffix = stem.split("_")
    entities = {}
    for pair in pairs:
        match = _ENTITY.match(pair)
        if not match or match[1] in entities:
            return None
        entities[match[1]] = match[2]
    return (entities, suffix) if re.fullmatch(r"[a-zA-Z0-9]+", suffix) else None


def sidecar(image: Path, root: Path) -> dict:
    """The JSON metadata of ``image`` merged from its applicable sidecars (Inheritance
    Principle: top level first, then by number of entities within a level). Raises
    ShiftlabError naming (relative to ``root``) a sidecar that is not a readable JSON object."""
    parsed = split_name(image.name)
    if parsed is None:
        return {}
    entities, suffix = parsed
    parts = image.parent.relative_to(root).parts
    folders = [root.joinpath(*parts[:depth]) for depth in range(len(parts) + 1)]
    metadata: dict = {}
    for folder in folders:
        applicable = []
        for candidate in sorted(folder.glob(f"*_{suffix}.json")) + sorted(
            folder.glob(f"{suffix}.json")
        ):
            found = split_name(candidate.name)
            if found and found[1] == suffix and found[0].items() <= entities.items():
                applicable.append((len(found[0]), candidate))
        for _, path in sorted(applicable):
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise ShiftlabError(
                    f"sidecar {path.relative_to(root).as_posix()} is not readable JSON "
                    f"({type(error).__name__})"
                ) from error
            if not isinstance(content, dict):
                raise ShiftlabError(
                    f"sidecar {path.relative_to(root).as_posix()} is not a JSON object"
                )
            metadata.update(content)
    return metadata


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _field_strength(value: object) -> str:
    """MagneticFieldStrength as text of a number, or "" (the spec says number; some
    converters write text)."""
    try:
        return f"{float(value):g}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def _participants(root: Path, label_column: str) -> dict[str, str]:
    """participant_id -> the raw label cell (stripped), from participants.tsv."""
    path = root / PARTICIPANTS
    if not path.is_file():
        raise ShiftlabError(
            f"{path} not found. A BIDS dataset describes its participants there (one row per "
            f"participant_id); shiftlab reads the labels from its column {label_column!r}."
        )
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in ("participant_id", label_column) if c not in table.columns]
    if missing:
        raise ShiftlabError(
            f"{path} lacks column(s) {missing}; it has {list(table.columns)}. Set "
            "dataset.bids.label_column to the column that holds the label."
        )
    ids = table["participant_id"].str.strip()
    return dict(zip(ids, table[label_column].str.strip(), strict=True))


def _label(
    cell: str | None, column: str, positive: Sequence[str], negative: Sequence[str]
) -> int | str:
    """1 or 0, or why the participant has no label."""
    if cell is None:
        return f"participant not in {PARTICIPANTS}"
    if cell in positive:
        return 1
    if cell in negative:
        return 0
    if cell in (MISSING, ""):
        return f"{column} is {MISSING} (missing) in {PARTICIPANTS}"
    return f"{column} {cell!r} is neither positive {list(positive)} nor negative {list(negative)}"


def find_images(root: Path, suffix: str) -> tuple[list[Path], int]:
    """Images ``sub-*/[ses-*/]anat/*_<suffix>.nii[.gz]``, and how many other anat images."""
    anat = sorted([*root.glob("sub-*/anat"), *root.glob("sub-*/ses-*/anat")])
    images, others = [], 0
    for folder in anat:
        for path in sorted(folder.iterdir()):
            if not path.name.endswith(_IMAGE_SUFFIXES):
                continue
            parsed = split_name(path.name)
            if parsed and parsed[1] == suffix:
                images.append(path)
            else:
                others += 1
    return images, others


def sample_table(dataset_cfg: DictConfig) -> SampleTable:
    """The BIDS folder ``dataset.dicom_root`` as a sample table (see the module docstring)."""
    root = Path(dataset_cfg.dicom_root)
    if not root.is_dir():
        raise ShiftlabError(
            f"BIDS folder not found: {root} (dataset {dataset_cfg.name}).\n"
            f"{str(dataset_cfg.get('download', '')).strip()}"
        )
    options = dataset_cfg.bids
    column = str(options.label_column)
    positive = [str(v) for v in options.positive]
    negative = [str(v) for v in options.negative]
    labels = _participants(root, column)
    images, others = find_images(root, str(options.suffix))
    rows, skipped = [], []
    for image in images:
        relative = image.relative_to(root).as_posix()
        subject = relative.split("/", 1)[0]
        entities = (split_name(image.name) or ({}, ""))[0]
        if f"sub-{entities.get('sub')}" != subject:
            skipped.append((relative, f"file name's sub- entity is not its folder's ({subject})"))
            continue
        label = _label(labels.get(subject), column, positive, negative)
        if isinstance(label, str):
            skipped.append((relative, label))
            continue
        try:
            metadata = sidecar(image, root)
        except ShiftlabError as error:  # one bad sidecar leaves out the images it applies to
            skipped.append((relative, str(error)))
            continue
        manufacturer = _text(metadata.get("Manufacturer"))
        if not manufacturer:
            skipped.append((relative, "no Manufacturer in its JSON sidecars"))
            continue
        rows.append(
            {
                "path": relative,
                "patient_id": subject,
                "manufacturer": manufacturer,
                "label": str(label),
                "split": "",
                "model_name": _text(metadata.get("ManufacturersModelName")),
                "field_strength": _field_strength(metadata.get("MagneticFieldStrength")),
            }
        )
    print(
        f"BIDS images:        {len(images)} *_{options.suffix}.nii[.gz] under "
        f"sub-*/[ses-*/]anat ({others} other anat images not of this suffix)"
    )
    for reason, n in sorted(Counter(r for _, r in skipped).items(), key=lambda i: -i[1]):
        print(f"  {n:>8}  {reason}")
    columns = ["path", "patient_id", "manufacturer", "label", "split", "model_name"]
    table = pd.DataFrame(rows, columns=[*columns, "field_strength"])
    return SampleTable(table, PARTICIPANTS, VENDOR_SOURCE, skipped)
