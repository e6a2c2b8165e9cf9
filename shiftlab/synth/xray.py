"""Synthetic two-vendor frontal chest radiographs, written as real DICOM files.

Each patient is one posteroanterior chest radiograph (Digital X-Ray Image Storage - For
Presentation, Modality DX). Image formation follows a digital radiography chain: an attenuation
map (soft tissue, air-filled lungs, mediastinum and heart, spine, ribs, clavicles, lung vessels,
optionally a finding: a soft-tissue nodule with a calcified core), transmission ``exp(-mu)``,
quantum noise, detector (scintillator) blur and the log; then the vendor's image processing:
unsharp-mask edge enhancement, gamma and a sigmoid tone curve. Positive images hold the finding.

The two vendors differ as two rooms running "the same" chest protocol do:

- the finding renders differently. Without this, a shift only makes one vendor *harder*, not
  *different* (docs/study.md): a model trained on the harder vendor then scores higher on the
  easier one. Here the tube voltage sets how dense bone and the calcified core look against soft
  tissue, and the edge enhancement sets which scale of the finding stands out (its sharp rim on
  GE, its broad opacity on Philips);
- detector matrix, blur and quantum noise, gamma and tone curve;
- the encoding, which correct preprocessing undoes exactly: GE writes MONOCHROME1 (high stored
  value = dark) in 14 bits and leaves its tone curve to a VOI LUT Sequence that the reader
  applies; Philips writes MONOCHROME2 in 12 bits with the tone curve already applied and a
  linear window over the full stored range.

Every continuous vendor parameter moves with one severity knob (``shiftlab.synth.severity``):
severity 0 gives identical rendering; the encodings stay per vendor, so the null check also
proves the preprocessing right. The magnitudes are set by design, not produced by physics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset, FileDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation
from scipy.ndimage import gaussian_filter

from shiftlab.files import write_files_via_temporary
from shiftlab.synth.common import (
    PatientWriter,
    SyntheticPatient,
    image_dataset,
    instance_uid,
    patient_elements,
    set_grey_pixels,
    set_instance,
    synthetic_patients,
    unit_grid,
    write_labels_csv,
    write_patients,
)
from shiftlab.synth.severity import interpolate_vendors


@dataclass(frozen=True)
class XrayVendor:
    """What a detector writes in its headers, and how it renders the chest at full shift."""

    manufacturer: str
    model_name: str
    bits_stored: int
    # MONOCHROME1: high stored value = dark; MONOCHROME2: high = bright.
    photometric: Literal["MONOCHROME1", "MONOCHROME2"]
    # "lut": the tone curve is left to a VOI LUT Sequence; "window": it is already applied and a
    # linear window spans the stored range.
    voi: Literal["lut", "window"]
    acquisition: dict[str, float]


VENDORS: dict[str, XrayVendor] = {
    "ge": XrayVendor(
        manufacturer="GE Healthcare",
        model_name="Definium 8000",
        bits_stored=14,
        photometric="MONOCHROME1",
        voi="lut",
        acquisition={
            "matrix": 160,  # detector pixels across: moves with severity like the rest
            "bone": 1.0,  # bone and calcium against soft tissue: a lower tube voltage
            "blur": 0.65,
            "noise": 0.012,
            "edge": 1.5,
            "edge_scale": 0.8,  # fine-scale enhancement: sharp rims
            "gamma": 0.85,
            "lut_center": 0.42,
            "lut_width": 0.14,
        },
    ),
    "philips": XrayVendor(
        manufacturer="Philips Medical Systems",
        model_name="DigitalDiagnost",
        bits_stored=12,
        photometric="MONOCHROME2",
        voi="window",
        acquisition={
            "matrix": 128,
            "bone": 0.5,  # high-kV chest technique: bone and calcium fade
            "blur": 0.85,
            "noise": 0.014,
            "edge": 1.3,
            "edge_scale": 3.0,  # broad contrast equalisation: whole opacities
            "gamma": 1.2,
            "lut_center": 0.44,
            "lut_width": 0.22,
        },
    ),
}

FIELD_OF_VIEW_MM = 430.0  # a 17-inch detector
FINDING_PREVALENCE = 0.5
LUT_BITS = 16  # VOI LUT output depth
# Log-signal range mapped to [0, 1] before processing (exposure recognition with fixed limits):
# lungs land near 0.2-0.4, the mediastinum near 0.8.
LOG_RANGE = (0.0, 3.2)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-t))


def _band(distance: np.ndarray, half_width: float) -> np.ndarray:
    """Projected thickness of a cylinder (peak 1) at ``distance`` from its axis."""
    return np.sqrt(np.clip(1 - (distance / half_width) ** 2, 0, None))


def _near(axis: np.ndarray, centre: float, half_width: float) -> slice:
    """The pixels of an increasing coordinate ``axis`` within ``half_width`` of ``centre``, and
    one more on each side: where a disc or band of that half-width can be non-zero.

    Beyond its half-width a ``_band`` is exactly 0, and adding 0 leaves an image as it was, so
    a term drawn into this window only gives the image it would give drawn everywhere.
    """
    lo = int(np.searchsorted(axis, centre - half_width)) - 1
    hi = int(np.searchsorted(axis, centre + half_width, side="right")) + 1
    return slice(max(lo, 0), min(hi, axis.size))


def _rows_near(axis: np.ndarray, centre: np.ndarray, half_width: float) -> np.ndarray:
    """Row indices (..., h, columns): in each column, the rows of the increasing ``axis`` within
    ``half_width`` of that column's ``centre`` (shape (..., columns)), and one more on each
    side. ``_near`` for bands that run across the image, one per leading index."""
    lo = np.searchsorted(axis, centre - half_width) - 1
    hi = np.searchsorted(axis, centre + half_width, side="right") + 1
    height = min(int((hi - lo).max()), axis.size)
    lo = np.clip(lo, 0, axis.size - height)
    return lo[..., None, :] + np.arange(height)[:, None]


def attenuation_map(
    rng: np.random.Generator,
    bone: float,
    matrix: int,
    finding: bool,
    lesion_contrast: float,
) -> np.ndarray:
    """Line integral of attenuation (matrix, matrix); row 0 is the apex, column 0 patient right.

    ``bone`` is bone (and calcium) attenuation relative to soft tissue at the vendor's tube
    voltage: it scales the ribs, clavicles and spine, and the finding's calcified core.
    Small structures are drawn only where they can be non-zero (``_near``, ``_rows_near``).
    """
    n = matrix
    y, x = unit_grid(n)
    ys, xs = y.ravel(), x.ravel()
    columns = np.arange(n)
    px = n / 64  # texture scales with the field of view, not the matrix
    width = rng.uniform(0.82, 0.95)
    shoulders = width * (0.7 + 0.3 * _sigmoid((y + 0.72) / 0.06))  # the neck above them
    mu = 2.0 * _band(x, shoulders) * (1 + 0.08 * rng.standard_normal())
    # Air-filled lungs: two ellipsoids; the heart overlaps the (image-right) left lung.
    lung_x, lung_y = rng.uniform(0.38, 0.46), rng.uniform(-0.12, 0.0)
    lung_w, lung_h = rng.uniform(0.26, 0.32), rng.uniform(0.58, 0.7)
    lungs = np.zeros((n, n))
    for side in (-1, 1):
        rows, cols = _near(ys, lung_y, lung_h), _near(xs, side * lung_x, lung_w)
        r2 = ((x[:, cols] - side * lung_x) / lung_w) ** 2 + ((y[rows] - lung_y) / lung_h) ** 2
        lungs[rows, cols] += np.sqrt(np.clip(1 - r2, 0, None))
    heart_x, heart_y = rng.uniform(0.08, 0.16), rng.uniform(0.3, 0.4)
    heart_r = rng.uniform(0.26, 0.34)
    heart = np.zeros((n, n))
    rows, cols = _near(ys, heart_y, heart_r), _near(xs, heart_x, 1.25 * heart_r)
    heart[rows, cols] = _band(np.hypot((x[:, cols] - heart_x) / 1.25, y[rows] - heart_y), heart_r)
    mu += -1.1 * lungs * (1 - 0.6 * heart) + 0.5 * heart
    # Vessels: lung texture and round end-on vessels in every patient, so "a round density" alone
    # is not the finding cue.
    texture = gaussian_filter(rng.standard_normal((n, n)), 1.5 * px)
    mu += 0.12 * lungs * texture / texture.std()
    for _ in range(rng.integers(3, 7)):
        side = rng.choice((-1, 1))
        vx, vy = side * rng.uniform(0.2, 0.6), rng.uniform(-0.4, 0.4)
        radius = rng.uniform(0.025, 0.045)
        rows, cols = _near(ys, vy, radius), _near(xs, vx, radius)
        mu[rows, cols] += 0.12 * _band(np.hypot(x[:, cols] - vx, y[rows] - vy), radius)
    # Bone: spine, posterior ribs, clavicles.
    skeleton = 0.9 * _band(x, 0.09)
    skeleton = np.broadcast_to(skeleton, (n, n)).copy()
    gap, phase, curve = rng.uniform(0.16, 0.2), rng.uniform(0, 0.18), rng.uniform(0.35, 0.5)
    lateral = np.abs(x)
    k = np.arange(10)[:, None]  # the ribs, one per row of ``centre``
    centre = -0.85 + phase + k * gap - 0.1 * lateral + curve * lateral**2
    rows = _rows_near(ys, centre, 0.035)
    ribs = 0.3 * _band(ys[rows] - centre[:, None], 0.035) * (lateral > 0.06) * (lateral < width)
    np.add.at(skeleton, (rows, columns), ribs)  # rib by rib where they cross, as a loop would
    for side in (-1, 1):
        centre = -0.68 - 0.12 * (side * x - 0.1)
        rows = _rows_near(ys, centre, 0.04)
        clavicle = 0.35 * _band(ys[rows] - centre, 0.04) * (side * x > 0.05) * (side * x < 0.65)
        skeleton[rows, columns] += clavicle
    mu += bone * skeleton
    if finding:
        side = rng.choice((-1, 1))
        angle, frac = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 0.55))
        fx = side * lung_x + frac * lung_w * np.cos(angle)
        fy = lung_y + frac * lung_h * np.sin(angle)
        r = rng.uniform(0.06, 0.1)
        rows, cols = _near(ys, fy, r), _near(xs, fx, r)
        d = np.hypot(x[:, cols] - fx, y[rows] - fy)
        nodule = _band(d, r) + 2.0 * bone * _band(d, 0.45 * r)  # soft tissue + calcified core
        mu[rows, cols] += 0.085 * lesion_contrast * nodule
    return mu


def render_radiograph(
    rng: np.random.Generator,
    acquisition: dict[str, float],
    matrix: int,
    finding: bool,
    lesion_contrast: float,
) -> np.ndarray:
    """Processed image in [0, 1] before the tone curve, bright = dense (MONOCHROME2 sense)."""
    n = matrix
    px = n / 64
    mu = attenuation_map(rng, acquisition["bone"], n, finding, lesion_contrast)
    transmitted = np.exp(-mu)
    # Quantum noise per pixel grows as pixels shrink (fewer photons each) and where less passes.
    noise = acquisition["noise"] * px * np.sqrt(transmitted) * rng.standard_normal((n, n))
    detected = gaussian_filter(transmitted + noise, acquisition["blur"] * px)
    log_signal = -np.log(np.clip(detected, 1e-4, None))
    low, high = LOG_RANGE
    image = (log_signal - low) / (high - low)
    smooth = gaussian_filter(image, acquisition["edge_scale"] * px)
    image = image + acquisition["edge"] * (image - smooth)
    return np.clip(image, 0, 1) ** acquisition["gamma"]


def tone_curve(values: np.ndarray, acquisition: dict[str, float]) -> np.ndarray:
    """The vendor's sigmoid LUT, scaled so that [0, 1] maps onto [0, 1]."""
    centre, width = acquisition["lut_center"], acquisition["lut_width"]
    ends = _sigmoid((np.array([0.0, 1.0]) - centre) / width)
    return (_sigmoid((values - centre) / width) - ends[0]) / (ends[1] - ends[0])


def encode(
    image: np.ndarray, vendor: XrayVendor, acquisition: dict[str, float]
) -> tuple[np.ndarray, Dataset]:
    """Stored pixel values and the VOI attributes that bring them back to the rendered image.

    A correct reader gets ``tone_curve(image)`` back, bright = dense: VOI (LUT or window) scaled
    to [0, 1] by its output range, then inverted for MONOCHROME1.
    """
    return stored_pixels(image, vendor, acquisition), voi_attributes(vendor, acquisition)


def stored_pixels(
    image: np.ndarray, vendor: XrayVendor, acquisition: dict[str, float]
) -> np.ndarray:
    """The stored pixel values of a rendered image (``encode``)."""
    top = 2**vendor.bits_stored - 1
    if vendor.voi == "lut":
        stored = np.round(image * top)
    else:
        stored = np.round(tone_curve(image, acquisition) * top)
    if vendor.photometric == "MONOCHROME1":
        stored = top - stored
    return stored.astype(np.uint16)


def voi_attributes(vendor: XrayVendor, acquisition: dict[str, float]) -> Dataset:
    """The VOI attributes of every image of a vendor (``encode``): its tone curve as a VOI LUT,
    or a linear window over the stored range."""
    top = 2**vendor.bits_stored - 1
    monochrome1 = vendor.photometric == "MONOCHROME1"
    voi = Dataset()
    if vendor.voi == "lut":
        levels = np.arange(top + 1) / top
        if monochrome1:
            levels = levels[::-1]
        shown = tone_curve(levels, acquisition)
        lut = np.round((1 - shown if monochrome1 else shown) * (2**LUT_BITS - 1))
        item = Dataset()
        item.LUTDescriptor = [top + 1, 0, LUT_BITS]
        item.LUTExplanation = "SIGMOID"
        item.add_new("LUTData", "OW", lut.astype("<u2").tobytes())
        voi.VOILUTSequence = [item]
    else:
        # Linear window over the whole stored range: maps 0 -> 0 and top -> 1 exactly.
        voi.WindowCenter = 2 ** (vendor.bits_stored - 1)
        voi.WindowWidth = 2**vendor.bits_stored
        voi.VOILUTFunction = "LINEAR"
    return voi


def _file_elements(patient: SyntheticPatient, pixels: np.ndarray) -> dict[str, object]:
    """The header elements of a patient's file that differ from patient to patient."""
    return {
        **patient_elements(patient),
        "SOPInstanceUID": instance_uid(patient.series_uid, 0),
        "PixelData": pixels.astype(np.uint16).tobytes(),
    }


def _dataset(
    vendor: XrayVendor, patient: SyntheticPatient, pixels: np.ndarray, voi: Dataset
) -> FileDataset:
    ds = image_dataset(
        DigitalXRayImageStorageForPresentation,
        "DX",
        patient,
        vendor.manufacturer,
        vendor.model_name,
    )
    set_instance(ds, patient.series_uid, 0)
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.StudyDescription = "CHEST PA"
    ds.SeriesDescription = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.SeriesNumber = 1
    spacing = FIELD_OF_VIEW_MM / pixels.shape[0]
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.PixelSpacing = [spacing, spacing]
    # DX images carry an identity rescale; the log relation says which way intensity runs.
    set_grey_pixels(ds, pixels, vendor.photometric, vendor.bits_stored)
    ds.RescaleType = "US"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if vendor.photometric == "MONOCHROME1" else -1
    ds.update(voi)
    return ds


@dataclass(frozen=True)
class _PatientWriter(PatientWriter):
    """Renders one patient's radiograph, writes its file and returns its row of ``labels.csv``."""

    def __call__(self, patient: SyntheticPatient) -> dict[str, object]:
        vendor, acquisition = VENDORS[patient.vendor], self.acquisitions[patient.vendor]
        finding = bool(patient.rng.random() < FINDING_PREVALENCE)
        matrix = round(acquisition["matrix"])
        image = render_radiograph(patient.rng, acquisition, matrix, finding, self.lesion_contrast)
        stored = stored_pixels(image, vendor, acquisition)
        template = self.template(
            patient.vendor,
            lambda: (
                _dataset(vendor, patient, stored, voi_attributes(vendor, acquisition)),
                list(_file_elements(patient, stored)),
            ),
        )
        data = template.encode(_file_elements(patient, stored))
        folder = self.out / "dicom" / patient.patient_id / "01-01-2000-CHEST PA" / "1.000-PA"
        write_files_via_temporary([(folder / "1-1.dcm", data)])
        return {"series_uid": patient.series_uid, "finding": int(finding)}


def generate(
    out_dir: str | Path,
    patients_per_vendor: int = 600,
    severity: float = 0.45,
    seed: int = 0,
    lesion_contrast: float = 4.0,
    vendors: tuple[str, ...] = ("ge", "philips"),
    workers: int | None = None,
) -> Path:
    """Write ``out_dir/dicom/<PatientID>/<study>/<series>/1-1.dcm`` and ``out_dir/labels.csv``.

    Deterministic from ``seed``: the same arguments give the same pixels and UIDs, with any
    number of ``workers`` (processes; default: every usable CPU). Patients are written in the
    TCIA folder layout; ``labels.csv`` has one row per series (series_uid, finding). The default
    ``lesion_contrast`` and ``severity`` were calibrated with a small CNN on 64x64 inputs (3
    seeds, both directions): in-domain AUROC about 0.93 and a mean ΔAUC about -0.07, the study's
    X-ray mean being -0.067.
    """
    out = Path(out_dir)
    acquisitions = interpolate_vendors(
        {name: vendor.acquisition for name, vendor in VENDORS.items()}, severity
    )
    patients = synthetic_patients(
        VENDORS, vendors, patients_per_vendor, seed, severity, lesion_contrast
    )
    writer = _PatientWriter(out, acquisitions, lesion_contrast)
    rows = write_patients(writer, patients, "synthetic X-ray", workers)
    write_labels_csv(out, rows, ["series_uid", "finding"])
    return out
