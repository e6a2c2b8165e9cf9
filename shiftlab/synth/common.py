"""Pieces every synthetic generator shares: patients and their ids, the common header, labels."""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from tqdm import tqdm

from shiftlab.files import write_via_temporary
from shiftlab.synth.dicom_writer import DicomTemplate

Row = TypeVar("Row")
# Below this many patients a set is written in one process; a worker takes patients in chunks
# of at most PARALLEL_CHUNK (each chunk is one exchange with the worker).
PARALLEL_MIN_PATIENTS = 64
PARALLEL_CHUNK = 32


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


@functools.lru_cache(maxsize=8)
def unit_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """An n x n image's coordinates in [-1, 1]: y down a column (n, 1), x along a row (1, n).

    The values of ``np.mgrid``'s full grids, made once per size; broadcast against each other
    where an image needs both, and a term of one coordinate only is computed once per row or
    column. Read-only: every image shares them.
    """
    y, x = np.mgrid[-1 : 1 : n * 1j, -1 : 1 : n * 1j]
    y, x = y[:, :1].copy(), x[:1, :].copy()
    y.flags.writeable = x.flags.writeable = False
    return y, x


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
) -> list[SyntheticPatient]:
    """Every patient of a synthetic set, vendor by vendor.

    A patient's random stream depends only on (seed, vendor, index), so a patient is the same
    whatever else is generated, and whichever process writes it. UIDs also depend on severity
    and contrast: other settings are other acquisitions, as on a scanner, and never collide with
    this set's.
    """
    if patients_per_vendor < 1:
        raise ValueError(f"patients_per_vendor must be >= 1, got {patients_per_vendor}")
    unknown = set(vendors) - set(known_vendors)
    if unknown:
        raise ValueError(f"unknown vendors {sorted(unknown)}; choose from {sorted(known_vendors)}")
    patients = []
    for vendor in vendors:
        for i in range(patients_per_vendor):
            patient_id = f"SYN_{vendor.upper()}_{i:04d}"
            settings = [str(seed), str(severity), str(lesion_contrast), patient_id]
            patients.append(
                SyntheticPatient(
                    vendor=vendor,
                    index=i,
                    rng=seeded_rng(seed, vendor, i),
                    patient_id=patient_id,
                    study_uid=generate_uid(entropy_srcs=[*settings, "study"]),
                    series_uid=generate_uid(entropy_srcs=[*settings, "series"]),
                )
            )
    return patients


def write_patients(
    write_patient: Callable[[SyntheticPatient], Row],
    patients: Sequence[SyntheticPatient],
    desc: str,
    workers: int | None = None,
) -> list[Row]:
    """``write_patient(patient)`` for every patient, results in order, with a progress bar.

    ``workers`` processes share the patients (default: every CPU this process may use); each
    patient draws from its own random stream, so its files are the same whichever process
    writes them. A set smaller than ``PARALLEL_MIN_PATIENTS`` is written here: starting the
    processes would cost more than it saves.
    """
    workers = usable_cpus() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(patients) >= PARALLEL_MIN_PATIENTS:
            # fork: the workers start in milliseconds with everything imported. They are started
            # (by map) before the progress bar, whose monitor thread a fork must not copy.
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            pool = stack.enter_context(
                ProcessPoolExecutor(
                    workers,
                    mp_context=context,
                    initializer=_install_writer,
                    initargs=(write_patient,),
                )
            )
            chunk = max(1, min(PARALLEL_CHUNK, len(patients) // (8 * workers)))
            results = pool.map(_write_with_installed, patients, chunksize=chunk)
        else:
            results = map(write_patient, patients)
        progress = stack.enter_context(
            tqdm(total=len(patients), desc=desc, unit="patient", leave=False)
        )
        rows = []
        for row in results:
            rows.append(row)
            progress.update()
    return rows


# A worker process's writer, installed once: what it keeps between patients (the headers it has
# encoded) serves every chunk of patients the process is given.
_installed_writer: Callable[[SyntheticPatient], object] | None = None


def _install_writer(write_patient: Callable[[SyntheticPatient], object]) -> None:
    global _installed_writer
    _installed_writer = write_patient


def _write_with_installed(patient: SyntheticPatient) -> object:
    assert _installed_writer is not None, "a worker's writer is installed when it starts"
    return _installed_writer(patient)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model_name
    ds.PatientName = "Synthetic^Patient"
    for keyword, value in patient_elements(patient).items():
        setattr(ds, keyword, value)
    ds.StudyDate = "20000101"
    return ds


def patient_elements(patient: SyntheticPatient) -> dict[str, str]:
    """The header elements that name a patient, its study and its series."""
    return {
        "PatientID": patient.patient_id,
        "StudyInstanceUID": patient.study_uid,
        "SeriesInstanceUID": patient.series_uid,
        "FrameOfReferenceUID": generate_uid(entropy_srcs=[patient.study_uid, "frame"]),
    }


def instance_uid(series_uid: str, index: int) -> str:
    """The SOP instance UID of the ``index``-th image of a series."""
    return generate_uid(entropy_srcs=[series_uid, str(index)])


def set_instance(ds: FileDataset, series_uid: str, index: int) -> None:
    """Give ``ds`` the SOP instance UID and number of the ``index``-th image of its series."""
    ds.file_meta.MediaStorageSOPInstanceUID = instance_uid(series_uid, index)
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


@dataclass(frozen=True)
class PatientWriter:
    """What each set's patient writer holds: where to write, each vendor's acquisition, the
    lesion contrast, and each vendor's header template, encoded once per process."""

    out: Path
    acquisitions: dict[str, dict[str, float]]
    lesion_contrast: float
    # A vendor's files differ only in their slots: its header is encoded once per process.
    templates: dict[str, DicomTemplate] = field(default_factory=dict)

    def template(
        self, vendor: str, first_file: Callable[[], tuple[FileDataset, list[str]]]
    ) -> DicomTemplate:
        """The vendor's template, made on first use from ``first_file()``: its first file's
        dataset and the keywords of the elements that change from file to file."""
        if vendor not in self.templates:
            self.templates[vendor] = DicomTemplate(*first_file())
        return self.templates[vendor]
