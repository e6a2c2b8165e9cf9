"""One DICOM file's header, as ingest reads it: the values a manifest needs, the slice's position
and geometry, and why a file cannot be used (damage, missing attributes, no pixels, no decoder).

This is the only place that reads DICOM headers for a manifest (``read_slice``), and the one home
of ``instance_number``, which the preprocessing reads slices by too.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID

from shiftlab.ingest.damage import (
    missing_reason,
    no_pixels_reason,
    not_dicom_reason,
    read_error_reason,
    structure_damage,
)
from shiftlab.ingest.multiframe import (
    frame_attributes,
    frames_problem,
    is_multiframe,
    number_of_frames,
)
from shiftlab.labels import FILE_STEM
from shiftlab.manifest import PATH_SEPARATOR

# Every file must have these; PatientID may be empty when the label file names the patient.
# An image that is a sample of its own (group_by SOPInstanceUID) needs none: releases
# de-identified down to their pixel attributes keep no UIDs (VinDr-CXR), and its file identifies it.
_REQUIRED_TAGS = ("StudyInstanceUID", "SeriesInstanceUID")
# The source_uid of an image without SOPInstanceUID: its path, after this prefix.
_BY_FILE = "file:"
# Elements longer than this are not read, only located: pixel data is skipped like with
# stop_before_pixels, yet its declared length can still be checked against the file size.
_DEFER_BYTES = 1024


@dataclass
class SeriesHeader:
    """The header values of one series that the manifest needs, as raw text."""

    patient_id: str
    study_uid: str
    series_uid: str
    # The value files are grouped by: the SeriesInstanceUID, or the SOPInstanceUID of an image.
    source_uid: str
    manufacturer: str
    model_name: str
    field_strength: float | None
    modality: str
    # Paths relative to the DICOM root, in slice order.
    files: list[str] = field(default_factory=list)
    # Raw text of further attributes asked for by keyword (e.g. a label file's key tag).
    extra: dict[str, str] = field(default_factory=dict)
    # Caveats found while grouping its files (e.g. uneven slice spacing), for flagged.csv.
    notes: list[str] = field(default_factory=list)
    # Slices held by its one file (a NIfTI volume); None: one slice per file.
    n_slices: int | None = None
    # The SOPInstanceUID of each of its files (DICOM), for duplicates across samples.
    sop_uids: list[str] = field(default_factory=list)

    def raw(self, keyword: str) -> str:
        """The raw text of `keyword` for this series (a standard field, an `extra` one, or the
        pseudo keyword FileStem: its first file's name without extension)."""
        if keyword == FILE_STEM:
            return PurePosixPath(self.files[0]).name.split(".")[0] if self.files else ""
        standard = {
            "PatientID": self.patient_id,
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
            "Manufacturer": self.manufacturer,
            "ManufacturerModelName": self.model_name,
            "Modality": self.modality,
        }
        return standard[keyword] if keyword in standard else self.extra.get(keyword, "")


# (orientation, (Rows, Columns), PixelSpacing) of one image, None where absent or unreadable.
Geometry = tuple[tuple[float, ...] | None, tuple[int, int] | None, tuple[float, ...] | None]
# Orientation cosines and pixel spacings closer than this are the same.
_GEOMETRY_TOLERANCE = 1e-3


@dataclass
class Slice:
    """One file as read for grouping: its series' header values, where it lies, its geometry."""

    path: str
    header: SeriesHeader
    sop_uid: str
    position: float | None
    instance_number: int | None
    geometry: Geometry = (None, None, None)
    # Positions along the normal of a multi-frame file's frames, which are its slices
    # (Enhanced CT/MR), in stored order; empty for a file of one image.
    frame_positions: tuple[float | None, ...] = ()


def tag_text(ds: Dataset, keyword: str) -> str:
    """The raw text of an attribute (multiple values joined by a backslash), "" if absent."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _slice_position(ds: Dataset) -> float | None:
    """ImagePositionPatient projected on the slice normal (row x column direction)."""
    try:
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        position = np.asarray([float(v) for v in ds.ImagePositionPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    if orientation.shape != (6,) or position.shape != (3,):
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    return float(position @ normal)


def instance_number(ds: Dataset) -> int | None:
    """The slice's InstanceNumber, or None where absent or not a number."""
    try:
        return int(ds.InstanceNumber)
    except (AttributeError, TypeError, ValueError):
        return None


def _numbers(ds: Dataset, keyword: str, n: int, digits: int = 3) -> tuple[float, ...] | None:
    try:
        values = tuple(round(float(v), digits) for v in ds[keyword].value)
    except Exception:  # absent, empty, or not numbers (a damaged header)
        return None
    return values if len(values) == n and all(np.isfinite(values)) else None


def _geometry(ds: Dataset) -> Geometry:
    """What must agree between the slices of one volume: orientation, size, pixel spacing."""
    try:
        size: tuple[int, int] | None = (int(ds.Rows), int(ds.Columns))
    except Exception:
        size = None
    return (
        _numbers(ds, "ImageOrientationPatient", 6),
        size,
        _numbers(ds, "PixelSpacing", 2),
    )


@functools.cache
def decoder_problem(transfer_syntax: str) -> str | None:
    """Why pixel data in this transfer syntax cannot be decoded here, or None when it can.

    Checked at ingest, from the file meta alone, so that a compressed archive without its
    decoder plugin is reported per file now rather than as a failure inside a later cache build.
    """
    uid = UID(transfer_syntax)
    if not uid.is_valid:  # not digits and dots: a damaged value, not an unknown syntax
        return f"corrupted element: TransferSyntaxUID {transfer_syntax!r} is not a valid UID"
    if not uid.is_transfer_syntax:
        return f"no decoder: {transfer_syntax!r} is not a known transfer syntax"
    if not uid.is_compressed:
        return None
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"no decoder: pydicom cannot decode {uid.name} ({uid}) pixel data"
    if decoder.is_available:
        return None
    plugins = "; ".join(decoder.missing_dependencies) or "no plugin installed"
    return f"no decoder: {uid.name} ({uid}) pixel data needs a decoder plugin ({plugins})"


def _field_strength(ds: Dataset) -> float | None:
    try:
        return float(ds.MagneticFieldStrength)
    except (AttributeError, TypeError, ValueError):
        return None


def _read_header(path: Path) -> Dataset:
    """Read a header without loading pixel data, accepting legacy files that lack a preamble.

    Older archives hold files without the 128-byte preamble and file meta information; they are
    read with force=True and kept only if they parse as an image series, so that arbitrary
    non-DICOM files are still reported as such.
    """
    try:
        return pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except InvalidDicomError as not_dicom:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=True)
                is_image = "SeriesInstanceUID" in ds and "PixelData" in ds
        except Exception:
            raise not_dicom from None
        if not is_image:
            raise
        return ds


def read_slice(path: Path, relative: str, extra_tags: Sequence[str], group_by: str) -> Slice | str:
    """Read one file's header; return the slice, or the reason it cannot be used."""
    if PATH_SEPARATOR in relative:
        return f"file name contains {PATH_SEPARATOR!r}, the manifest's path separator"
    try:
        size = path.stat().st_size
        ds = _read_header(path)
        damaged = structure_damage(path, ds, size)
        if damaged:
            return damaged
        required = () if group_by == "SOPInstanceUID" else (*_REQUIRED_TAGS, group_by)
        missing = [k for k in dict.fromkeys(required) if not tag_text(ds, k)]
        if missing:
            return missing_reason(ds, size, missing)
        if "PixelData" not in ds:
            return no_pixels_reason(ds)
        transfer_syntax = tag_text(getattr(ds, "file_meta", Dataset()), "TransferSyntaxUID")
        undecodable = decoder_problem(transfer_syntax) if transfer_syntax else None
        if undecodable:
            return undecodable
        frames = _frames(ds, group_by) if is_multiframe(ds) else None
        if isinstance(frames, str):
            return frames
        geometry, positions = frames or (_geometry(ds), (_slice_position(ds),))
        header = SeriesHeader(
            patient_id=tag_text(ds, "PatientID"),
            study_uid=tag_text(ds, "StudyInstanceUID"),
            series_uid=tag_text(ds, "SeriesInstanceUID"),
            source_uid=tag_text(ds, group_by) or _BY_FILE + relative,
            manufacturer=tag_text(ds, "Manufacturer"),
            model_name=tag_text(ds, "ManufacturerModelName"),
            field_strength=_field_strength(ds),
            modality=tag_text(ds, "Modality"),
            extra={keyword: tag_text(ds, keyword) for keyword in extra_tags},
            n_slices=len(positions) if len(positions) > 1 else None,
        )
        return Slice(
            path=relative,
            header=header,
            sop_uid=tag_text(ds, "SOPInstanceUID"),
            position=positions[0],
            instance_number=instance_number(ds),
            geometry=geometry,
            frame_positions=positions if len(positions) > 1 else (),
        )
    except InvalidDicomError:
        return not_dicom_reason(path, size)
    # pydicom raises many exception types on damaged files; one bad file must not stop a scan.
    except Exception as error:
        return read_error_reason(path, error, _short(str(error)))


def _frames(ds: Dataset, group_by: str) -> tuple[Geometry, tuple[float | None, ...]] | str:
    """The geometry the frames of a multi-frame file share and their positions along the
    normal (``shiftlab.ingest.multiframe``), or why they cannot be the slices of one volume."""
    n = number_of_frames(ds)
    if n > 1 and group_by == "SOPInstanceUID":
        return (
            f"multi-frame image ({n} frames) where each image is one sample "
            "(dataset.ingest.group_by=SOPInstanceUID)"
        )
    problem = frames_problem(ds)
    if problem:
        return problem
    frames = frame_attributes(ds)
    reference = _geometry(frames[0])
    for frame in frames:
        difference = geometry_difference(_geometry(frame), reference)
        if difference:
            return f"frame geometry differs within the file: {difference}"
    return reference, tuple(_slice_position(frame) for frame in frames)


def _short(message: str, limit: int = 160) -> str:
    """An error message without the raw bytes some parsers quote (they can be header text)."""
    message = re.sub(r"""b(['"]).*?\1""", "<bytes>", " ".join(message.split()))
    return message if len(message) <= limit else message[: limit - 1] + "…"


def _close(a: tuple | None, b: tuple | None) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(
        abs(x - y) <= _GEOMETRY_TOLERANCE for x, y in zip(a, b, strict=True)
    )


def _shown(values: tuple | None) -> str:
    return "absent" if values is None else "x".join(f"{v:g}" for v in values)


def geometry_difference(geometry: Geometry, reference: Geometry) -> str:
    """What differs between two geometries, in words (empty when they agree)."""
    names = ("orientation", "Rows x Columns", "PixelSpacing")
    parts = [
        f"{name} {_shown(value)} vs {_shown(expected)}"
        for name, value, expected in zip(names, geometry, reference, strict=True)
        if not _close(value, expected)
    ]
    return "; ".join(parts)


def absent_uids(header: SeriesHeader) -> list[str]:
    absent = [k for k in _REQUIRED_TAGS if not header.raw(k)]
    return absent + (["SOPInstanceUID"] if header.source_uid.startswith(_BY_FILE) else [])
