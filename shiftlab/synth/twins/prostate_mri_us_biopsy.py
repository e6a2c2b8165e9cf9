"""Miniature twin of Prostate-MRI-US-Biopsy (TCIA): prostate MRI and the biopsy pathology table.

Layout written (TCIA's descriptive download layout; folder number suffixes are made up)::

    <out_dir>/TCIA-Biopsy-Data_2020-07-14.xlsx
    <out_dir>/Prostate-MRI-US-Biopsy/Prostate-MRI-US-Biopsy-0001/
        <MM-DD-YYYY>-NA-MRI PROSTATE W WO CONTRAST-<n>/<SeriesNumber>.000000-<description>-<n>/
        1-01.dcm ...

The biopsy table has one row per core with the columns public code reads from the real file
(Patient Number, Series Instance UID (MRI), Series Instance UID (US), Core Label, Primary
Gleason, Secondary Gleason, Cancer Length (mm), % Cancer in Core, Bx Tip/Base X/Y/Z (MRI Coord),
PSA (ng/mL), Prostate Volume (CC)); the real file may have more. Core labels and the US series
UIDs are made up (no US images are written).

Messiness copied from the real collection: three vendors (Siemens, and GE and Philips, which
together make the default "other" domain); each MRI study also holds an ADC map and a sagittal
T2 series, which the preset's series_filter drops (the axial T2 is the input); benign cores have
empty Gleason columns and low-grade cancer (3+3) counts as not significant; one Siemens patient
had two MRI-biopsy rounds (benign first, significant later), so two samples with different
labels; one patient has extra systematic cores without an MRI series UID; one core has a
primary Gleason pattern but no secondary one; one patient of the table has no images.
Clinically significant cancer shows as a dark (T2-hypointense) focus in the peripheral zone.
Matrices are tiny (48 / 64 px, 10 slices).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shiftlab.synth.common import seeded_rng
from shiftlab.synth.twins.mr_series import (
    AXIAL,
    SAGITTAL,
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

COLLECTION = "Prostate-MRI-US-Biopsy"
LABEL_FILE = "TCIA-Biopsy-Data_2020-07-14.xlsx"
COLUMNS = (
    "Patient Number",
    "Series Instance UID (MRI)",
    "Series Instance UID (US)",
    "Core Label",
    "Primary Gleason",
    "Secondary Gleason",
    "Cancer Length (mm)",
    "% Cancer in Core",
    "Bx Tip X (MRI Coord)",
    "Bx Tip Y (MRI Coord)",
    "Bx Tip Z (MRI Coord)",
    "Bx Base X (MRI Coord)",
    "Bx Base Y (MRI Coord)",
    "Bx Base Z (MRI Coord)",
    "PSA (ng/mL)",
    "Prostate Volume (CC)",
)
SLICES = 10
CORE_LABELS = ("LA", "LM", "LB", "RA", "RM", "RB", "LLA", "LLM", "RLA", "RLM", "LAB", "RAB")


@dataclass(frozen=True)
class Vendor:
    scanners: tuple[Scanner, ...]
    t2_axial: str
    t2_sagittal: str
    adc: str
    patients: tuple[int, int]  # (negative, positive) patients


VENDORS = {
    "siemens": Vendor(
        (
            Scanner("SIEMENS", "Skyra", 3.0, 64, 900, 1.0, 0.04, 0.6),
            Scanner("SIEMENS", "TrioTim", 3.0, 64, 1100, 1.1, 0.045, 0.7),
        ),
        "t2_spc_rst_axial obl_Prostate",
        "t2_spc_rst_sag",
        "ep2d-advdiff-3Scan-4bval_spair_std_ADC",
        (7, 7),
    ),
    "ge": Vendor(
        (Scanner("GE MEDICAL SYSTEMS", "DISCOVERY MR750", 3.0, 48, 2600, 0.8, 0.03, 0.3),),
        "Ax T2 FRFSE",
        "Sag T2 FRFSE",
        "ADC (10^-6 mm^2/s)",
        (4, 4),
    ),
    "philips": Vendor(
        (Scanner("Philips Medical Systems", "Ingenia", 3.0, 56, 1800, 0.9, 0.035, 0.5),),
        "T2W_TSE_ax",
        "T2W_TSE_sag",
        "dADC",
        (3, 3),
    ),
}


def _prostate(rng: np.random.Generator, n: int, slices: int, lesion: bool) -> np.ndarray:
    """T2-like axial pelvis: dark muscle, a gland with a bright peripheral zone, (slices, n, n)."""
    y, x = np.mgrid[-1 : 1 : n * 1j, -1 : 1 : n * 1j]
    body = ((x / 0.95) ** 2 + (y / 0.8) ** 2 < 1) * 0.35
    detail = texture(rng, (slices, n, n), (1.0, n / 30, n / 30))
    lesion_center = (rng.uniform(0.05, 0.15), rng.uniform(-0.15, 0.15))
    volume = np.zeros((slices, n, n))
    for k in range(slices):
        size = 1 - 0.6 * abs(k - (slices - 1) / 2) / slices
        gland = blob((n, n), (0.05, 0.0), 0.3 * size)
        central = blob((n, n), (-0.02, 0.0), 0.17 * size)
        signal = body + 0.25 * gland + 0.25 * (gland - central).clip(0) + 0.04 * detail[k]
        if lesion and abs(k - slices // 2) <= 1:
            signal -= 0.3 * blob((n, n), lesion_center, 0.08) * gland
        volume[k] = signal
    return np.clip(volume, 0, None)


def _cores(
    rng: np.random.Generator, patient: str, mri_uid: str, positive: bool, n: int
) -> list[dict]:
    """Biopsy rows of one MRI-guided biopsy: benign and low-grade cores, a significant one if
    ``positive``."""
    labels = rng.choice(CORE_LABELS, size=n, replace=False)
    grades: list[tuple[float, float]] = [(np.nan, np.nan)] * n
    for i in rng.choice(n, size=int(rng.integers(0, 3)), replace=False):
        grades[i] = (3, 3)  # low-grade cancer: not clinically significant
    if positive:
        grades[int(rng.integers(n))] = [(3, 4), (4, 3), (4, 4), (4, 5)][int(rng.integers(4))]
    rows = []
    psa, volume = round(float(rng.uniform(3, 15)), 1), round(float(rng.uniform(25, 80)), 0)
    for label, (primary, secondary) in zip(labels, grades, strict=True):
        cancer = not np.isnan(primary)
        tip = rng.uniform(-20, 20, 3).round(2)
        rows.append(
            {
                "Patient Number": patient,
                "Series Instance UID (MRI)": mri_uid,
                "Series Instance UID (US)": uid("prostate-us", patient, mri_uid),
                "Core Label": str(label),
                "Primary Gleason": primary,
                "Secondary Gleason": secondary,
                "Cancer Length (mm)": round(float(rng.uniform(1, 10)), 1) if cancer else 0.0,
                "% Cancer in Core": int(rng.integers(5, 80)) if cancer else 0,
                "Bx Tip X (MRI Coord)": tip[0],
                "Bx Tip Y (MRI Coord)": tip[1],
                "Bx Tip Z (MRI Coord)": tip[2],
                "Bx Base X (MRI Coord)": round(float(tip[0] + rng.uniform(-3, 3)), 2),
                "Bx Base Y (MRI Coord)": round(float(tip[1] + rng.uniform(-3, 3)), 2),
                "Bx Base Z (MRI Coord)": round(float(tip[2] + 18), 2),
                "PSA (ng/mL)": psa,
                "Prostate Volume (CC)": volume,
            }
        )
    return rows


def _write_study(
    dicom_root: Path,
    patient: str,
    vendor: Vendor,
    rng: np.random.Generator,
    date: str,
    lesion: bool,
) -> str:
    """One MRI study (axial T2, sagittal T2, ADC); returns the axial T2's SeriesInstanceUID."""
    scanner = vendor.scanners[int(rng.integers(len(vendor.scanners)))]
    n = scanner.matrix
    study_uid = uid("prostate", patient, date)
    year, month, day = date[:4], date[4:6], date[6:]
    study = folder_name(
        f"{month}-{day}-{year}-NA-MRI PROSTATE W WO CONTRAST-{int(rng.integers(10000, 99999))}"
    )
    t2 = _prostate(rng, n, SLICES, lesion)
    series = [
        (vendor.t2_sagittal, 3, SAGITTAL, t2[:, :, n // 4 : n // 4 + 6].transpose(2, 0, 1)),
        (vendor.t2_axial, 5, AXIAL, t2),
        (vendor.adc, 9, AXIAL, 0.6 - 0.5 * t2[::2]),
    ]
    t2_uid = ""
    for description, number, orientation, signal in series:
        series_uid = uid("prostate", patient, date, description)
        if description == vendor.t2_axial:
            t2_uid = series_uid
        folder = (
            dicom_root
            / patient
            / study
            / folder_name(f"{number}.000000-{description}-{int(rng.integers(10000, 99999))}")
        )
        write_series(
            scanner,
            Series(
                patient_id=patient,
                study_uid=study_uid,
                series_uid=series_uid,
                description=description,
                series_number=number,
                orientation=orientation,
                slice_thickness=3.0,
                field_of_view=200.0,
                study_date=date,
                study_description="MRI PROSTATE W WO CONTRAST",
            ),
            render(scanner, np.ascontiguousarray(signal), rng),
            folder,
            lambda number: f"1-{number:02d}.dcm",
        )
    return t2_uid


def generate(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the twin into ``out_dir`` (see the module docstring); TWIN.txt is written last."""
    out = Path(out_dir)
    dicom_root = out / COLLECTION
    rows: list[dict] = []
    number = 0
    for name, vendor in VENDORS.items():
        negatives, positives = vendor.patients
        for i, positive in enumerate([False] * negatives + [True] * positives):
            number += 1
            patient = f"{COLLECTION}-{number:04d}"
            rng = seeded_rng(seed, "prostate", number)
            date = f"20{10 + i % 8:02d}{1 + i % 12:02d}{10 + i:02d}"
            if name == "siemens" and i == 0:
                # A first round that was benign, a second one years later that was not.
                first = _write_study(dicom_root, patient, vendor, rng, "20090310", False)
                rows += _cores(rng, patient, first, False, 12)
                positive = True
            mri_uid = _write_study(dicom_root, patient, vendor, rng, date, positive)
            rows += _cores(rng, patient, mri_uid, positive, int(rng.integers(8, 13)))
            if i == 1:
                # Systematic cores of a biopsy without an MRI (no MRI series UID).
                extra = _cores(rng, patient, "", False, 6)
                for row in extra:
                    row["Series Instance UID (US)"] = uid("prostate-us", patient, "systematic")
                rows += extra
            if positive and i == negatives + 1:
                # A benign core whose secondary pattern was never filled in.
                benign = next(r for r in rows[::-1] if np.isnan(r["Primary Gleason"]))
                benign["Primary Gleason"] = 3
    # A patient of the table whose images are not in the download.
    number += 1
    missing = f"{COLLECTION}-{number:04d}"
    rows += _cores(seeded_rng(seed, "prostate", number), missing, uid("prostate", missing), True, 8)
    out.mkdir(parents=True, exist_ok=True)
    write_excel(pd.DataFrame(rows, columns=list(COLUMNS)), out / LABEL_FILE)
    counts = ", ".join(f"{sum(v.patients)} {k}" for k, v in VENDORS.items())
    write_twin_marker(
        out, COLLECTION, f"{number - 1} patients with images ({counts}), seed {seed}."
    )
    return out
