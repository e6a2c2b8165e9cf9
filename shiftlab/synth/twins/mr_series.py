"""Writing the MR series of the MRI twins (Duke breast, prostate biopsy, ADNI) as real DICOM.

Each twin decides the folder layout, names and pixel content; this module turns one volume into
single-frame MR Image Storage files with a consistent geometry (ImagePositionPatient along the
slice normal, so ingest orders slices by position) and the scanner's header.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.uid import MRImageStorage, generate_uid
from scipy.ndimage import gaussian_filter
from scipy.special import expit

from shiftlab.files import write_bytes_atomic, write_via_temporary
from shiftlab.synth.common import (
    SyntheticPatient,
    image_dataset,
    set_instance,
)
from shiftlab.synth.dicom_writer import write_dicom_atomic

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Rows along +y (anterior to posterior), columns along -z: the normal points along -x.
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


@dataclass(frozen=True)
class Scanner:
    """What one scanner writes in its headers, and how it renders a [0, 1] image."""

    manufacturer: str
    model_name: str
    field_strength: float
    matrix: int
    stored_max: int  # the stored value of signal 1.0: MRI has no absolute scale
    gamma: float = 1.0
    noise: float = 0.03
    blur: float = 0.0


@dataclass(frozen=True)
class Series:
    """One series to write: identity, description and geometry."""

    patient_id: str
    study_uid: str
    series_uid: str
    description: str
    series_number: int
    orientation: Sequence[float] = AXIAL
    slice_thickness: float = 3.0
    field_of_view: float = 320.0
    study_date: str = "20000101"
    study_description: str = ""


def uid(*parts: object) -> str:
    """A valid UID that depends only on ``parts`` (twins are deterministic from their seed)."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def folder_name(text: str) -> str:
    """A series or study description as a folder name: characters a file system or the NBIA
    retriever would not keep (``/``, ``_``, ``*`` ...) are dropped (the exact rule is not
    documented; TCIA folders look like "3.000000-ax dyn pre-93877")."""
    return re.sub(r"[^A-Za-z0-9 .+\-]", "", text).strip()


def render(scanner: Scanner, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scanner rendering of a [0, 1] signal volume: blur, Rician noise, gamma, stored range."""
    if scanner.blur > 0:
        signal = gaussian_filter(signal, (0, scanner.blur, scanner.blur))
    noise = rng.standard_normal((2, *signal.shape)) * scanner.noise
    magnitude = np.hypot(signal + noise[0], noise[1]) ** scanner.gamma
    return np.clip(np.round(magnitude * scanner.stored_max), 0, 65535).astype(np.uint16)


def write_series(
    scanner: Scanner,
    series: Series,
    volume: np.ndarray,
    folder: Path,
    file_name: Callable[[int], str],
    instance_numbers: Sequence[int] | None = None,
) -> list[Path]:
    """Write ``volume`` (slices, rows, cols; uint16) as one file per slice into ``folder``.

    Slice k lies at k * slice_thickness along the normal; ``instance_numbers`` (default 1..n)
    may run the other way, as some scanners number from the top. ``file_name(number)`` names a
    slice's file from its InstanceNumber (download tools name files so).
    """
    patient = SyntheticPatient(
        vendor=scanner.manufacturer,
        index=0,
        rng=np.random.default_rng(0),
        patient_id=series.patient_id,
        study_uid=series.study_uid,
        series_uid=series.series_uid,
    )
    orientation = np.asarray(series.orientation, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    rows, cols = volume.shape[1:]
    spacing = series.field_of_view / cols
    corner = -(orientation[:3] * cols + orientation[3:] * rows) * spacing / 2
    numbers = list(instance_numbers or range(1, len(volume) + 1))
    written = []
    for k, pixels in enumerate(volume):
        ds = image_dataset(MRImageStorage, "MR", patient, scanner.manufacturer, scanner.model_name)
        set_instance(ds, series.series_uid, k)
        ds.InstanceNumber = numbers[k]
        ds.StudyDate = series.study_date
        ds.SeriesDate = series.study_date
        ds.StudyDescription = series.study_description
        ds.SeriesDescription = series.description
        ds.SeriesNumber = series.series_number
        ds.MagneticFieldStrength = scanner.field_strength
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = series.slice_thickness
        position = corner + normal * (k - (len(volume) - 1) / 2) * series.slice_thickness
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.SliceLocation = round(float(position @ normal), 4)
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
        path = folder / file_name(numbers[k])
        write_dicom_atomic(ds, path)
        written.append(path)
    return written


def blob(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    """A soft disc in [0, 1] on a (rows, cols) grid with coordinates in [-1, 1]."""
    y, x = np.mgrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j]
    d = np.hypot(y - center[0], x - center[1])
    radius = max(radius, 1e-3)
    return expit((radius - d) / (0.15 * radius))


def texture(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Smooth random texture with zero mean and unit standard deviation."""
    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() or 1.0)


def write_twin_marker(out_dir: Path, dataset: str, details: str) -> Path:
    """Write TWIN.txt, last: its presence marks a complete twin."""
    text = (
        f"Miniature synthetic twin of {dataset}, not real data: a few made-up patients written "
        "as real DICOM files in the dataset's published folder layout, with a label file in "
        f"its published format, generated by shiftlab to test the preset end to end. {details}\n"
    )
    return write_via_temporary(Path(out_dir) / "TWIN.txt", lambda tmp: tmp.write_text(text))


def write_excel(table: pd.DataFrame, path: Path) -> Path:
    """Write ``table`` as .xlsx (pandas + openpyxl, one sheet, no index), byte-identical from run
    to run: openpyxl stamps the save time into the workbook properties and the zip entries, which
    are fixed here so a twin is deterministic from its seed."""
    buffer = io.BytesIO()
    table.to_excel(buffer, index=False)
    fixed = "2000-01-01T00:00:00Z"
    stamp = re.compile(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)")
    out = io.BytesIO()
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "docProps/core.xml":
                data = stamp.sub(rb"\g<1>" + fixed.encode() + rb"\g<2>", data)
            info = zipfile.ZipInfo(item.filename, date_time=(2000, 1, 1, 0, 0, 0))
            target.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return write_bytes_atomic(path, out.getvalue())
