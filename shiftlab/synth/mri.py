"""Synthetic two-vendor breast-MRI-like series, written as real DICOM files.

Each patient is one axial series of a few slices through a breast-like phantom (dark fat,
textured fibroglandular tissue, chest-wall muscle, small enhancing vessels on every patient).
Positive series hold an enhancing lesion. The two vendors differ as two scanners running "the
same" protocol do:

- the lesion renders differently (a bright core on GE, a bright rim on Siemens). Without this, a
  shift only makes one vendor *harder*, not *different* (docs/study.md): a model trained on the
  harder vendor then scores higher on the easier one;
- tissue contrast weighting, intensity transfer curve (gamma), coil bias field, blur, Rician
  noise level and texture (correlated on Siemens), matrix size and stored value range.

Every vendor parameter moves with one severity knob (``shiftlab.synth.severity``); severity 0
gives identical vendors. The magnitudes are set by design, not produced by physics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset
from pydicom.uid import MRImageStorage
from scipy.ndimage import gaussian_filter

from shiftlab.files import write_files_via_temporary
from shiftlab.synth.common import (
    PatientWriter,
    SyntheticPatient,
    image_dataset,
    instance_uid,
    patient_elements,
    synthetic_patients,
    unit_grid,
    write_labels_csv,
    write_patients,
)
from shiftlab.synth.severity import interpolate_vendors


@dataclass(frozen=True)
class MRIVendor:
    """What a scanner writes in its headers, and how it renders tissue at full shift."""

    manufacturer: str
    model_name: str
    field_strength: float
    matrix: int  # acquired in-plane matrix; preprocessing resizes it
    stored_max: int  # stored value of the brightest signal: MRI has no absolute scale
    acquisition: dict[str, float]


VENDORS: dict[str, MRIVendor] = {
    "ge": MRIVendor(
        manufacturer="GE MEDICAL SYSTEMS",
        model_name="SIGNA HDxt",
        field_strength=1.5,
        matrix=64,
        stored_max=1200,
        acquisition={
            "core": 1.1,
            "rim": 0.25,  # lesion rendering
            "fat": 0.18,
            "gland": 0.55,
            "muscle": 0.30,  # tissue contrast weighting
            "gamma": 0.8,
            "bias": 0.10,
            "blur": 0.4,
            "noise": 0.035,
            "noise_corr": 0.0,
        },
    ),
    "siemens": MRIVendor(
        manufacturer="SIEMENS",
        model_name="Avanto",
        field_strength=1.5,
        matrix=80,
        stored_max=3800,
        acquisition={
            "core": 0.25,
            "rim": 0.6,
            "fat": 0.32,
            "gland": 0.45,
            "muscle": 0.48,
            "gamma": 1.25,
            "bias": 0.35,
            "blur": 0.9,
            "noise": 0.05,
            "noise_corr": 1.0,
        },
    ),
}

SLICES = 3
SLICE_THICKNESS_MM = 3.0
FIELD_OF_VIEW_MM = 320.0
LESION_PREVALENCE = 0.5


def render_series(
    rng: np.random.Generator,
    acquisition: dict[str, float],
    matrix: int,
    lesion: bool,
    lesion_contrast: float,
) -> np.ndarray:
    """Magnitude images (slices, matrix, matrix), roughly in [0, 1]."""
    n = matrix
    y, x = unit_grid(n)  # a column and a row: broadcast, they give every pixel
    ax, ay = rng.uniform(0.8, 0.95), rng.uniform(1.2, 1.45)
    breast = ((x / ax) ** 2 + ((y + 0.55) / ay) ** 2 < 1) & (y > -0.55)
    chest = (y > -0.78) & (y <= -0.55) & (np.abs(x) < 0.97)
    px = n / 64  # texture scales with the field of view, not the matrix
    field = gaussian_filter(rng.standard_normal((SLICES, n, n)), (0.8, 2.5 * px, 2.5 * px))
    field /= field.std()
    gland = breast / (1 + np.exp(-4 * (field - rng.uniform(-0.3, 0.7))))
    signal = (
        acquisition["fat"] * (breast - gland)
        + acquisition["gland"] * gland
        + acquisition["muscle"] * chest
    )
    # Enhancing vessels on every patient, so "something bright" is not the lesion cue.
    for _ in range(rng.integers(2, 5)):
        cy, cx = rng.uniform(-0.4, 0.5), rng.uniform(-0.6, 0.6)
        d2 = (x - cx) ** 2 + (y - cy) ** 2
        signal += lesion_contrast * 0.9 * np.exp(-d2 / (2 * rng.uniform(0.03, 0.05) ** 2))
    if lesion:
        r = rng.uniform(0.13, 0.2)
        cy, cx = rng.uniform(-0.25, 0.45), rng.uniform(-0.5, 0.5)
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        for k, scale in enumerate((0.6, 1.0, 0.6)):  # a sphere cut by three slices
            rk = r * scale
            core = 1 / (1 + np.exp((d - 0.7 * rk) / (0.1 * rk)))  # homogeneous enhancement
            rim = np.exp(-((d - 0.8 * rk) ** 2) / (2 * (0.22 * rk) ** 2))
            signal[k] += lesion_contrast * (acquisition["core"] * core + acquisition["rim"] * rim)
    blur = acquisition["blur"] * px
    signal = gaussian_filter(signal, (0, blur, blur)) if blur > 0 else signal
    coeffs = rng.standard_normal(3)
    bias = 1 + acquisition["bias"] * np.tanh(coeffs[0] * x + coeffs[1] * y + coeffs[2] * x * y)
    signal = signal * bias
    noise = rng.standard_normal((2, SLICES, n, n))
    if acquisition["noise_corr"] > 0:
        corr = acquisition["noise_corr"] * px
        noise = gaussian_filter(noise, (0, 0, corr, corr))
        noise /= noise.std()
    magnitude = np.hypot(signal + acquisition["noise"] * noise[0], acquisition["noise"] * noise[1])
    return np.clip(magnitude, 0, None) ** acquisition["gamma"]


def _file_elements(
    patient: SyntheticPatient, pixels: np.ndarray, slice_index: int
) -> dict[str, object]:
    """The header elements of one slice's file that differ from file to file."""
    z = slice_index * SLICE_THICKNESS_MM - SLICE_THICKNESS_MM
    return {
        **patient_elements(patient),
        "SOPInstanceUID": instance_uid(patient.series_uid, slice_index),
        "InstanceNumber": slice_index + 1,
        "ImagePositionPatient": [-FIELD_OF_VIEW_MM / 2, -FIELD_OF_VIEW_MM / 2, z],
        "SliceLocation": z,
        "PixelData": pixels.astype(np.uint16).tobytes(),
    }


def _dataset(
    vendor: MRIVendor, patient: SyntheticPatient, pixels: np.ndarray, slice_index: int
) -> FileDataset:
    ds = image_dataset(MRImageStorage, "MR", patient, vendor.manufacturer, vendor.model_name)
    ds.MagneticFieldStrength = vendor.field_strength
    ds.StudyDescription = "MRI BREAST BILATERAL"
    ds.SeriesDescription = "ax t1 dyn post"
    ds.SeriesNumber = 3
    spacing = FIELD_OF_VIEW_MM / pixels.shape[0]
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = SLICE_THICKNESS_MM
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    for keyword, value in _file_elements(patient, pixels, slice_index).items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


@dataclass(frozen=True)
class _PatientWriter(PatientWriter):
    """Renders one patient's series, writes its files and returns its row of ``labels.csv``."""

    def __call__(self, patient: SyntheticPatient) -> dict[str, object]:
        vendor = VENDORS[patient.vendor]
        rng = patient.rng
        lesion = bool(rng.random() < LESION_PREVALENCE)
        images = render_series(
            rng, self.acquisitions[patient.vendor], vendor.matrix, lesion, self.lesion_contrast
        )
        stored = np.clip(np.round(images * vendor.stored_max), 0, 65535)
        template = self.template(
            patient.vendor,
            lambda: (
                _dataset(vendor, patient, stored[0], 0),
                list(_file_elements(patient, stored[0], 0)),
            ),
        )
        folder = (
            self.out / "dicom" / patient.patient_id / "01-01-2000-MRI BREAST" / "3.000-ax t1 dyn"
        )
        write_files_via_temporary(
            (folder / f"1-{k + 1:02d}.dcm", template.encode(_file_elements(patient, stored[k], k)))
            for k in range(SLICES)
        )
        return {"series_uid": patient.series_uid, "lesion": int(lesion)}


def generate(
    out_dir: str | Path,
    patients_per_vendor: int = 400,
    severity: float = 1.0,
    seed: int = 0,
    lesion_contrast: float = 0.45,
    vendors: tuple[str, ...] = ("ge", "siemens"),
    workers: int | None = None,
) -> Path:
    """Write ``out_dir/dicom/<PatientID>/<study>/<series>/1-0k.dcm`` and ``out_dir/labels.csv``.

    Deterministic from ``seed``: the same arguments give the same pixels and UIDs, with any
    number of ``workers`` (processes; default: every usable CPU). Patients are written in the
    TCIA folder layout; ``labels.csv`` has one row per series (series_uid, lesion).
    """
    out = Path(out_dir)
    acquisitions = interpolate_vendors(
        {name: vendor.acquisition for name, vendor in VENDORS.items()}, severity
    )
    patients = synthetic_patients(
        VENDORS, vendors, patients_per_vendor, seed, severity, lesion_contrast
    )
    writer = _PatientWriter(out, acquisitions, lesion_contrast)
    rows = write_patients(writer, patients, "synthetic MRI", workers)
    write_labels_csv(out, rows, ["series_uid", "lesion"])
    return out
