"""Pieces every synthetic generator shares: patients and their ids, the common header, labels."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from tqdm import tqdm

from shiftlab.files import write_via_temporary


def seeded_rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator that depends only on the seed and the keys (stable across processes)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def write_csv(path: Path, rows: Sequence[dict], fieldnames: Sequence[str]) -> Path:
    """Write a CSV atomically (``shiftlab.files``), creating its folder."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(fieldnames))
            writer.writeheader()
            writer.writerows(rows)

    return write_via_temporary(Path(path), write)


def write_labels_csv(out_dir: Path, rows: Sequence[dict], fieldnames: Sequence[str]) -> Path:
    """Write ``out_dir/labels.csv``. Written last: its presence marks a complete set."""
    return write_csv(Path(out_dir) / "labels.csv", rows, fieldnames)


@dataclass(frozen=True)
class SyntheticPatient:
    """One patient to write: its vendor, its own random stream, its identifiers."""

    vendor: str
    index: int
    rng: np.random.Generator
    patient_id: str
    study_uid: str
    series_uid: str


def synthetic_patients(
    known_vendors: Collection[str],
    vendors: Sequence[str],
    patients_per_vendor: int,
    seed: int,
    severity: float,
    lesion_contrast: float,
    desc: str,
) -> Iterator[SyntheticPatient]:
    """Every patient of a synthetic set, vendor by vendor, with a progress bar.

    A patient's random stream depends only on (seed, vendor, index), so a patient is the same
    whatever else is generated. UIDs also depend on severity and contrast: other settings are
    other acquisitions, as on a scanner, and never collide with this set's.
    """
    if patients_per_vendor < 1:
        raise ValueError(f"patients_per_vendor must be >= 1, got {patients_per_vendor}")
    unknown = set(vendors) - set(known_vendors)
    if unknown:
        raise ValueError(f"unknown vendors {sorted(unknown)}; choose from {sorted(known_vendors)}")
    total = patients_per_vendor * len(vendors)
    with tqdm(total=total, desc=desc, unit="patient", leave=False) as progress:
        for vendor in vendors:
            for i in range(patients_per_vendor):
                patient_id = f"SYN_{vendor.upper()}_{i:04d}"
                settings = [str(seed), str(severity), str(lesion_contrast), patient_id]
                yield SyntheticPatient(
                    vendor=vendor,
                    index=i,
                    rng=seeded_rng(seed, vendor, i),
                    patient_id=patient_id,
                    study_uid=generate_uid(entropy_srcs=[*settings, "study"]),
                    series_uid=generate_uid(entropy_srcs=[*settings, "series"]),
                )
                progress.update()


def image_dataset(
    sop_class_uid: str,
    modality: str,
    patient: SyntheticPatient,
    manufacturer: str,
    model_name: str,
) -> FileDataset:
    """The header every synthetic image shares; the generator adds its modality's attributes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class_uid
    ds.StudyInstanceUID = patient.study_uid
    ds.SeriesInstanceUID = patient.series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[patient.study_uid, "frame"])
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model_name
    ds.PatientID = patient.patient_id
    ds.PatientName = "Synthetic^Patient"
    ds.StudyDate = "20000101"
    return ds


def set_instance(ds: FileDataset, series_uid: str, index: int) -> None:
    """Give ``ds`` the SOP instance UID and number of the ``index``-th image of its series."""
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(index)])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.InstanceNumber = index + 1


def set_grey_pixels(
    ds: FileDataset, stored: np.ndarray, photometric: str, bits_stored: int
) -> None:
    """Give ``ds`` the pixels of a single-frame greyscale image (16 bits allocated, unsigned,
    identity rescale) and the Image Pixel attributes that describe them."""
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.PixelData = stored.astype(np.uint16).tobytes()
