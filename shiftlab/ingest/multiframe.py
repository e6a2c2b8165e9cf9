"""Multi-frame DICOM images whose frames are the slices of a volume (Enhanced CT, MR, PET).

An Enhanced CT or MR file holds a whole series in one file: NumberOfFrames frames in one Pixel
Data element, and the values that single-frame files carry at the top level (position,
orientation, pixel spacing, rescale, window) per frame in functional groups. DICOM PS3.3
C.7.6.16 (Multi-frame Functional Groups Module,
https://dicom.nema.org/medical/dicom/current/output/chtml/part03/sect_C.7.6.16.html): each item
of PerFrameFunctionalGroupsSequence describes the frame of the same rank (first item, first
frame); a macro shared by all frames sits instead in the one item of
SharedFunctionalGroupsSequence, never in both. The macros read here are those of C.7.6.16.2
(https://dicom.nema.org/medical/dicom/current/output/chtml/part03/sect_C.7.6.16.2.html): Pixel
Measures, Plane Position (Patient), Plane Orientation (Patient), Pixel Value Transformation and
Frame VOI LUT, each a one-item sequence holding the attribute a single-frame file would carry.

Each frame becomes an in-memory single-frame Dataset with those attributes at the top level,
so every preprocessor and ingest's geometry checks work on frames as on the files of a series.
Frames come in ascending position along the slice normal when every frame has a position and
an orientation (the order ingest gives a series of files), else in stored order; InstanceNumber
is the frame's 1-based rank in the file.

Only the SOP classes whose frames are slices of one volume are read this way. Other multi-frame
images (an X-ray angiography or ultrasound cine, several views of a radiograph, a secondary
capture) have frames that are moments or views, not slices: ingest skips them with the reason.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    EnhancedPETImageStorage,
    ExplicitVRLittleEndian,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    LegacyConvertedEnhancedPETImageStorage,
)

# Greyscale image storage classes whose frames are the slices of a volume.
VOLUME_SOP_CLASSES = frozenset(
    {
        EnhancedCTImageStorage,
        LegacyConvertedEnhancedCTImageStorage,
        EnhancedMRImageStorage,
        LegacyConvertedEnhancedMRImageStorage,
        EnhancedPETImageStorage,
        LegacyConvertedEnhancedPETImageStorage,
    }
)
# Functional group macro (a one-item sequence) -> the attributes it carries for its frame.
FRAME_MACROS: Mapping[str, tuple[str, ...]] = {
    "PixelMeasuresSequence": ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices"),
    "PlanePositionSequence": ("ImagePositionPatient",),
    "PlaneOrientationSequence": ("ImageOrientationPatient",),
    "PixelValueTransformationSequence": ("RescaleIntercept", "RescaleSlope", "RescaleType"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
}
_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
# Not copied into a frame's Dataset: the frames' pixels and groups are given per frame.
_NOT_COPIED = frozenset(
    {"PixelData", "FloatPixelData", "DoubleFloatPixelData", "NumberOfFrames", *_GROUPS}
)


def number_of_frames(ds: Dataset) -> int:
    """NumberOfFrames, or 1 where it is absent, empty or not a positive number."""
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def is_multiframe(ds: Dataset) -> bool:
    """Whether the file's frames and their attributes must be read through its frames: several
    frames, or functional groups (where an Enhanced file keeps its geometry even for one)."""
    return number_of_frames(ds) > 1 or any(group in ds for group in _GROUPS)


def frames_problem(ds: Dataset) -> str | None:
    """Why the frames of a multi-frame file cannot be read as slices, or None when they can."""
    n = number_of_frames(ds)
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    if sop_class not in VOLUME_SOP_CLASSES:
        name = sop_class.name if sop_class.is_valid else "image of unknown SOP class"
        return (
            f"multi-frame {name} ({n} frames): its frames are not the slices of a volume "
            "(a cine or several views); read as slices only: Enhanced CT, MR and PET"
        )
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != n:
        return (
            f"corrupted element: PerFrameFunctionalGroupsSequence has {len(per_frame)} items "
            f"for NumberOfFrames {n}"
        )
    return None


def _macro(ds: Dataset, keyword: str, frame: int) -> Dataset | None:
    """The item of a functional group macro for one frame: per frame first, then shared."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    for groups in (
        per_frame[frame] if per_frame and frame < len(per_frame) else None,
        shared[0] if shared else None,
    ):
        sequence = groups.get(keyword) if groups is not None else None
        if sequence:
            return sequence[0]
    return None


def frame_attributes(ds: Dataset) -> list[Dataset]:
    """Per frame, what tells one slice from another: the attributes of FRAME_MACROS (from its
    functional groups, else the file's top level), with Rows and Columns. Reads no pixel data."""
    frames = []
    for k in range(number_of_frames(ds)):
        attributes = Dataset()
        for keyword in ("Rows", "Columns"):
            if keyword in ds:
                attributes[keyword] = ds[keyword]
        for macro, keywords in FRAME_MACROS.items():
            item = _macro(ds, macro, k)
            for keyword in keywords:
                source = item if item is not None and keyword in item else ds
                if keyword in source:
                    attributes[keyword] = source[keyword]
        frames.append(attributes)
    return frames


def frame_headers(ds: Dataset) -> list[Dataset]:
    """Each frame's header as a single-frame file would have it, without pixel data: the
    file's top-level attributes, then its own position, orientation, spacing, rescale, window."""
    shared = [ds[tag] for tag in sorted(ds.keys()) if keyword_for_tag(tag) not in _NOT_COPIED]
    headers = []
    for k, attributes in enumerate(frame_attributes(ds)):
        header = Dataset()
        # Copies: pydicom sets a value on the element object, which frames must not share.
        for element in [*shared, *attributes.values()]:
            header.add(copy.copy(element))
        header.add_new("InstanceNumber", "IS", k + 1)
        headers.append(header)
    return headers


def slice_order(headers: list[Dataset]) -> list[int]:
    """Frame indices in ascending position along the normal when every frame has a position
    and an orientation (ties: stored order), else in stored order."""
    positions = []
    for header in headers:
        try:
            orientation = np.asarray([float(v) for v in header.ImageOrientationPatient])
            position = np.asarray([float(v) for v in header.ImagePositionPatient])
        except (AttributeError, TypeError, ValueError):
            return list(range(len(headers)))
        if orientation.shape != (6,) or position.shape != (3,):
            return list(range(len(headers)))
        positions.append(float(position @ np.cross(orientation[:3], orientation[3:])))
    return sorted(range(len(headers)), key=lambda k: (positions[k], k))


def split_frames(ds: Dataset) -> list[Dataset]:
    """A multi-frame file as single-frame Datasets in slice order (see the module docstring).

    The pixels are each frame's stored values, re-encoded uncompressed little endian, so the
    preprocessors' modality LUT applies each frame's own rescale.
    """
    n = number_of_frames(ds)
    pixels = ds.pixel_array.reshape(n, int(ds.Rows), int(ds.Columns))
    headers = frame_headers(ds)
    meta = FileMetaDataset(getattr(ds, "file_meta", FileMetaDataset()))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    source = str(getattr(ds, "filename", None) or "<dataset in memory>")
    frames = []
    for k in slice_order(headers):
        frame = headers[k]
        frame.file_meta = meta
        frame.BitsAllocated = pixels.dtype.itemsize * 8
        little_endian = pixels.dtype.newbyteorder("<")
        frame.PixelData = np.ascontiguousarray(pixels[k], little_endian).tobytes()
        frame.filename = f"{source} (frame {k + 1} of {n})"  # error messages name the frame
        frames.append(frame)
    return frames
