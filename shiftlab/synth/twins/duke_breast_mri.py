"""Miniature twin of Duke-Breast-Cancer-MRI (TCIA): GE and Siemens breast DCE-MRI, slice level.

Layout written (TCIA's descriptive download layout; the number suffixes of the study and series
folders are made up here, as TCIA's are opaque)::

    <out_dir>/Annotation_Boxes.xlsx
    <out_dir>/Duke-Breast-Cancer-MRI/Breast_MRI_001/01-01-1990-NA-MRI BREAST BILATERAL W  WO-<n>/
        <SeriesNumber>.000000-<SeriesDescription>-<n>/1-001.dcm ...

Annotation_Boxes.xlsx has Duke's columns: Patient ID, Start Row, End Row, Start Column,
End Column, Start Slice, End Slice (one row per patient). Its boxes mean what they mean to the
dataset's authors (see shiftlab.recipes.duke_breast_mri for the evidence): they are drawn on the
fat-saturated pre-contrast series, slices are numbered 1, 2, ... in InstanceNumber order, and
the tumour lies on slices Start Slice <= slice < End Slice. The twin plants its tumour on exactly
those slices, so a reader that counts by position, takes End Slice as inside the box or reads
another series labels slices that do not show it.

What a real download has and the twin copies:

- several series per patient: the pre-contrast series, post-contrast passes and sometimes a
  non-fat-saturated T1, under descriptions the collection uses (the list of TCIA's
  SeriesDescriptions in LangDaniel/MAEMI, utils/download_MRI_data.py): pre-contrast
  "ax dyn pre", "ax 3d dyn", "ax 3d dyn MP", "ax dynamic", "Ax Vibrant MultiPhase", "ax dyn",
  "ax 3d dyn pre", "t1_fl3d_tra_dynVIEWS_spair_ pre"; passes "ax dyn 1st pass",
  "Ph1/ax 3d dyn", "1st ax dyn", ...; T1 "ax t1" and "ax t1 pre" (not fat-saturated, although
  it says "pre"). Which scanner writes which spelling is not documented beyond the vendors'
  sequence names (VIBRANT is GE's, t1_fl3d Siemens'); the pairing below is made up otherwise;
- volumes whose InstanceNumber runs against the slice position (reading code for the collection
  flips them, e.g. MAEMI's utils/bboxes/bboxes_ROI.py): which scanners do is not documented;
  here every GE patient and every fourth Siemens patient is numbered from the top;
- every patient has cancer (one box each); one patient of the box table has no images in the
  download and one downloaded patient has no box.

The tumour is a bright blob on every series inside its box (brighter after contrast), vessels
enhance after contrast on every slice. Boxes lie low in InstanceNumber order, so that the
recipe's negatives (above the box) stay inside the 12-slice series. Matrices are tiny (48 / 64
px, 12 slices), not Duke's 512.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from shiftlab.synth.common import seeded_rng
from shiftlab.synth.twins.mr_series import (
    AXIAL,
    Scanner,
    Series,
    blob,
    folder_name,
    render,
    texture,
    uid,
    write_excel,
    write_series,
    write_twin_marker,
)

COLLECTION = "Duke-Breast-Cancer-MRI"
LABEL_FILE = "Annotation_Boxes.xlsx"
COLUMNS = (
    "Patient ID",
    "Start Row",
    "End Row",
    "Start Column",
    "End Column",
    "Start Slice",
    "End Slice",
)
SLICES = 12
PATIENTS_PER_VENDOR = 16

SCANNERS = {
    "ge": (
        Scanner("GE MEDICAL SYSTEMS", "SIGNA HDxt", 1.5, 48, 1400, 0.85, 0.035, 0.4),
        Scanner("GE MEDICAL SYSTEMS", "DISCOVERY MR750", 3.0, 48, 2200, 0.8, 0.03, 0.3),
    ),
    "siemens": (
        Scanner("SIEMENS", "Avanto", 1.5, 64, 3600, 1.2, 0.045, 0.9),
        Scanner("SIEMENS", "TrioTim", 3.0, 64, 3000, 1.25, 0.04, 0.8),
    ),
}
# (pre-contrast, 1st post-contrast, 2nd post-contrast) descriptions seen in the collection.
PROTOCOLS = {
    "ge": (
        ("ax dyn pre", "ax dyn 1st pass", "ax dyn 2nd pass"),
        ("ax 3d dyn", "Ph1/ax 3d dyn", "Ph2/ax 3d dyn"),
        ("Ax Vibrant MultiPhase", "Ph1/Ax Vibrant MultiPhase", "Ph2/Ax Vibrant MultiPhase"),
        ("ax 3d dyn MP", "Ph1/ax 3d dyn MP", "Ph2/ax 3d dyn MP"),
        ("ax dynamic", "Ph1/ax dynamic", "Ph2/ax dynamic"),
    ),
    "siemens": (
        (
            "t1_fl3d_tra_dynVIEWS_spair_ pre",
            "t1_fl3d_tra_dynVIEWS_spair 1st pass",
            "t1_fl3d_tra_dynVIEWS_spair_2nd pass",
        ),
        ("ax dyn", "1st ax dyn", "2nd ax dyn"),
        ("ax 3d dyn pre", "ax 3d dyn 1st pass", "ax 3d dyn 2nd pass"),
    ),
}
# Non-fat-saturated T1s some studies also hold; "ax t1 pre" is not the pre-contrast series.
T1_DESCRIPTIONS = ("ax t1", "ax t1 pre")
TUMOUR = (0.45, 0.8, 0.7)  # tumour signal on pre, 1st and 2nd post-contrast
VESSELS = (0.05, 0.3, 0.25)  # vessel signal, likewise
# (Start Slice, End Slice) of the boxes, End exclusive: low in InstanceNumber order.
BOXES = ((2, 4), (2, 5), (3, 5))


def _anatomy(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two breasts (fat with fibroglandular texture) over a chest wall, (SLICES, n, n) in [0, 1]."""
    y, x = np.mgrid[-1 : 1 : n * 1j, -1 : 1 : n * 1j]
    volume = np.zeros((SLICES, n, n))
    gland = texture(rng, (SLICES, n, n), (1.0, n / 24, n / 24))
    for k in range(SLICES):
        taper = 1 - 0.2 * abs(k - (SLICES - 1) / 2) / SLICES
        breasts = np.zeros((n, n), dtype=bool)
        for side in (-0.45, 0.45):
            breasts |= ((x - side) / (0.42 * taper)) ** 2 + ((y + 0.1) / (0.6 * taper)) ** 2 < 1
        breasts &= y < 0.35
        chest = (y >= 0.35) & (y < 0.6) & (np.abs(x) < 0.95)
        fat = 0.55 * breasts
        glandular = breasts * (gland[k] > 0.4) * 0.25
        volume[k] = fat - glandular + 0.3 * chest
    return volume


def _patient(seed: int, index: int, vendor: str) -> dict:
    """Scanner, protocol, slice numbering and tumour box of one patient (a row of
    Annotation_Boxes.xlsx)."""
    rng = seeded_rng(seed, "duke", index)
    scanner = SCANNERS[vendor][int(rng.integers(len(SCANNERS[vendor])))]
    protocol = PROTOCOLS[vendor][int(rng.integers(len(PROTOCOLS[vendor])))]
    n = scanner.matrix
    box = BOXES[int(rng.integers(len(BOXES)))]
    side = rng.choice([-0.45, 0.45])
    center = (rng.uniform(-0.35, 0.05), side + rng.uniform(-0.1, 0.1))
    radius = rng.uniform(0.08, 0.12)
    to_pixel = (n - 1) / 2
    rows = [int((center[0] + 1 - radius) * to_pixel), int((center[0] + 1 + radius) * to_pixel)]
    cols = [int((center[1] + 1 - radius) * to_pixel), int((center[1] + 1 + radius) * to_pixel)]
    return {
        "rng": rng,
        "scanner": scanner,
        "protocol": protocol,
        "top_down": vendor == "ge" or index % 8 == 2,  # every fourth Siemens patient
        "box": box,
        "center": center,
        "radius": radius,
        # Written 1-based like the slices; rows and columns are not used by the recipe.
        "row": (rows[0] + 1, rows[1] + 1),
        "column": (cols[0] + 1, cols[1] + 1),
    }


def _write_patient(dicom_root: Path, patient_id: str, spec: dict, t1: str | None) -> None:
    rng, scanner = spec["rng"], spec["scanner"]
    n = scanner.matrix
    anatomy = _anatomy(rng, n)
    # InstanceNumber of the slice at each position (bottom first), and the tumour on the slices
    # the box names in that numbering.
    numbers = list(range(SLICES, 0, -1)) if spec["top_down"] else list(range(1, SLICES + 1))
    start, end = spec["box"]
    tumour = np.zeros_like(anatomy)
    for k, number in enumerate(numbers):
        if start <= number < end:
            tumour[k] = blob((n, n), spec["center"], spec["radius"])
    # Enhancing vessels on every slice, so that "something bright" is not the tumour cue.
    vessels = np.zeros_like(anatomy)
    for _ in range(3):
        center = np.array([rng.uniform(-0.5, 0.1), rng.choice([-0.45, 0.45])])
        drift = rng.uniform(-0.02, 0.02, 2)
        for k in range(SLICES):
            vessels[k] += blob((n, n), tuple(center + k * drift), 0.05)
    study_uid = uid("duke", patient_id, "study")
    study = folder_name(
        f"01-01-1990-NA-MRI BREAST BILATERAL W  WO-{int(rng.integers(10000, 99999))}"
    )
    descriptions = [*spec["protocol"], *([t1] if t1 else [])]
    signals = [*zip(TUMOUR, VESSELS, strict=True), *([(0.2, 0.05)] if t1 else [])]
    for number, (description, (lesion, vessel)) in enumerate(
        zip(descriptions, signals, strict=True), start=3
    ):
        series = Series(
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=uid("duke", patient_id, description),
            description=description,
            series_number=number,
            orientation=AXIAL,
            slice_thickness=2.0,
            field_of_view=340.0,
            study_date="19900101",
            study_description="MRI BREAST BILATERAL W & WO",
        )
        signal = anatomy + lesion * tumour + vessel * vessels
        pixels = render(scanner, np.clip(signal, 0, None), rng)
        folder = (
            dicom_root
            / patient_id
            / study
            / folder_name(f"{number}.000000-{description}-{int(rng.integers(10000, 99999))}")
        )
        write_series(scanner, series, pixels, folder, lambda number: f"1-{number:03d}.dcm", numbers)


def generate(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the twin into ``out_dir`` (see the module docstring); TWIN.txt is written last."""
    out = Path(out_dir)
    dicom_root = out / COLLECTION
    vendors = ["ge", "siemens"] * PATIENTS_PER_VENDOR
    rows = []
    for index, vendor in enumerate(vendors, start=1):
        patient_id = f"Breast_MRI_{index:03d}"
        spec = _patient(seed, index, vendor)
        t1 = T1_DESCRIPTIONS[index // 3 % 2] if index % 3 == 0 else None
        _write_patient(dicom_root, patient_id, spec, t1)
        rows.append([patient_id, *spec["row"], *spec["column"], *spec["box"]])
    # In the box table but not downloaded; downloaded but not in the box table.
    missing = len(vendors) + 1
    rows.append([f"Breast_MRI_{missing:03d}", 10, 20, 10, 20, 2, 4])
    extra = len(vendors) + 2
    _write_patient(dicom_root, f"Breast_MRI_{extra:03d}", _patient(seed, extra, "ge"), None)
    out.mkdir(parents=True, exist_ok=True)
    write_excel(pd.DataFrame(rows, columns=list(COLUMNS)), out / LABEL_FILE)
    write_twin_marker(
        out,
        COLLECTION,
        f"{len(vendors)} annotated patients ({PATIENTS_PER_VENDOR} GE, {PATIENTS_PER_VENDOR} "
        f"Siemens), {SLICES} slices per series, seed {seed}.",
    )
    return out
