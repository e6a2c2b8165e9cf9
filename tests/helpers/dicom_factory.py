"""Write small but real DICOM series for tests.

Tests exercise ingest and preprocessing on files pydicom (and other readers) actually parse, not on
mocks, so header quirks such as slice order, orientation and missing tags are tested for real.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Row along +y, column along -z: the slice normal (row x column) points along -x, so slices
# ordered by their x coordinate alone come out reversed.
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


@dataclass(frozen=True)
class WrittenSeries:
    """What was written, so tests can check what ingest made of it."""

    patient_id: str
    study_uid: str
    series_uid: str
    # Absolute file paths in true slice order (slice 0 first), whatever their file names.
    files: tuple[Path, ...]
    positions: tuple[tuple[float, float, float], ...]
    orientation: tuple[float, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)


def default_pixels(index: int, shape: tuple[int, int]) -> np.ndarray:
    """A ramp offset by slice index, so a slice's pixels tell which slice it is."""
    rows, cols = shape
    ramp = np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols)
    return ramp + np.uint16(1000 * index)


def uid_for(*parts: object) -> str:
    """A deterministic valid UID, so test trees are identical from run to run."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_series(
    directory: Path,
    *,
    patient_id: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
    manufacturer: str | None = "GE MEDICAL SYSTEMS",
    model_name: str | None = "SIGNA HDxt",
    field_strength: float | None = 1.5,
    modality: str = "MR",
    sop_class_uid: str = MRImageStorage,
    n_slices: int = 3,
    shape: tuple[int, int] = (8, 8),
    pixel_spacing: tuple[float, float] = (0.7, 0.7),
    slice_thickness: float = 2.0,
    orientation: Sequence[float] = AXIAL,
    origin: Sequence[float] = (-100.0, -100.0, 20.0),
    instance_numbers: Sequence[int] | None = None,
    with_position: bool = True,
    file_names: Sequence[str] | None = None,
    shuffle_file_names: bool | int = False,
    pixels: Callable[[int, tuple[int, int]], np.ndarray] = default_pixels,
    extra: Mapping[str, Any] | None = None,
) -> WrittenSeries:
    """Write one series of single-frame uint16 images into `directory` (created if needed).

    Slice k sits at origin + k * slice_thickness * normal, normal = row x column direction.
    File names default to TCIA's 1-01.dcm, 1-02.dcm ... in slice order; `shuffle_file_names`
    (True or an int seed) assigns them in a shuffled order instead, so that sorting by name is
    wrong. `instance_numbers` defaults to 1..n in slice order; `with_position=False` omits
    ImagePositionPatient and ImageOrientationPatient. `manufacturer`, `model_name` or
    `field_strength` set to None omits the tag. `extra` sets further attributes by keyword.
    """
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or uid_for("study", patient_id, directory.parent.name, directory.name)
    series_uid = series_uid or uid_for("series", patient_id, directory.parent.name, directory.name)
    orientation = tuple(float(v) for v in orientation)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = tuple(
        tuple(float(v) for v in np.asarray(origin, dtype=float) + k * slice_thickness * normal)
        for k in range(n_slices)
    )
    names = list(file_names or [f"1-{k + 1:02d}.dcm" for k in range(n_slices)])
    if len(names) != n_slices:
        raise ValueError(f"{len(names)} file names for {n_slices} slices")
    if shuffle_file_names is not False:
        seed = 0 if shuffle_file_names is True else int(shuffle_file_names)
        rng = random.Random(seed)
        while n_slices > 1 and names == sorted(names):
            rng.shuffle(names)
    numbers = list(instance_numbers or range(1, n_slices + 1))

    files = []
    for k in range(n_slices):
        path = directory / names[k]
        ds = _slice_dataset(
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_instance_uid=uid_for("sop", series_uid, k),
            sop_class_uid=sop_class_uid,
            modality=modality,
            manufacturer=manufacturer,
            model_name=model_name,
            field_strength=field_strength,
        )
        ds.InstanceNumber = numbers[k]
        if with_position:
            ds.ImagePositionPatient = list(positions[k])
            ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = slice_thickness
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)
        ds.set_pixel_data(
            pixels(k, shape).astype(np.uint16),
            photometric_interpretation="MONOCHROME2",
            bits_stored=16,
            generate_instance_uid=False,
        )
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return WrittenSeries(
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        files=tuple(files),
        positions=positions,
        orientation=orientation,
        extra=dict(extra or {}),
    )


def _slice_dataset(
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_instance_uid: str,
    sop_class_uid: str,
    modality: str,
    manufacturer: str | None,
    model_name: str | None,
    field_strength: float | None,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.PatientID = patient_id
    ds.PatientName = "Anonymous"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    if manufacturer is not None:
        ds.Manufacturer = manufacturer
    if model_name is not None:
        ds.ManufacturerModelName = model_name
    if field_strength is not None:
        ds.MagneticFieldStrength = field_strength
    return ds


def copy_as_new_scan(source: Path | str, target: Path, **attributes: Any) -> Path:
    """A real DICOM file (e.g. one of pydicom's test files) as another scan: its pixels, encoding
    and header kept, with study, series and SOP instance UIDs of its own (derived from `target`)
    and `attributes` set by keyword. A byte copy would be the same SOP instance twice."""
    ds = pydicom.dcmread(source)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, uid_for(keyword, target))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)
    return target
