"""Image files that are not DICOM (NIfTI volumes, PNG radiographs), read at the read boundary.

Public datasets often ship NIfTI (``.nii``, ``.nii.gz``: BIDS, most research releases) or 16-bit
PNG (PadChest) instead of DICOM. SimpleITK reads them; each slice then becomes an in-memory,
single-frame pydicom Dataset carrying the attributes the preprocessors read, so every
preprocessor in ``shiftlab.data.preprocess`` works on them unchanged.

What the Datasets hold, and why:

- Pixel values exactly as SimpleITK returns them. Integer images keep their stored integers
  (BitsAllocated 8/16/32, PixelRepresentation from the sign). Float images become
  FloatPixelData (float32) or DoubleFloatPixelData (float64), bit for bit: no integer-plus-
  RescaleSlope encoding could hold every float exactly. ITK's NIfTI reader already applies
  ``scl_slope``/``scl_inter`` and then returns float32 (``MustRescale`` and the float promotion
  in ``Read``, InsightSoftwareConsortium/ITK ``Modules/IO/NIFTI/src/itkNiftiImageIO.cxx``), so a
  CT stored as int16 with ``scl_inter = -1024`` arrives here in Hounsfield units, and pydicom's
  modality LUT passes float pixels through unchanged: CT keeps HU, MR z-scoring ignores scale.
  64-bit integers (no DICOM encoding) become float64, exact up to 2**53.
- Geometry in DICOM's patient coordinates (LPS, mm). NIfTI's qform/sform are RAS+; ITK negates
  their x and y rows when reading (``SetImageIOOrientationFromNIfTI`` in the same file), so
  SimpleITK's origin and direction are LPS already, and they map directly: ImageOrientationPatient
  = the direction's first two columns (along a row, down a column), PixelSpacing = (between
  rows, between columns), ImagePositionPatient = the position of each slice's first voxel. The
  slices come in ascending position along the normal (row x column), the order ingest gives a
  DICOM series; a volume stored the other way round is reversed. SliceThickness is the slice
  spacing (NIfTI records no thickness).
- PNG has no patient geometry: no position, orientation or spacing is invented for it.

Only greyscale images are read: colour, vector and complex images, and 4D series (fMRI, DWI)
are refused with the reason.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DSfloat

from shiftlab.errors import ShiftlabError

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
# PNG ends with an IEND chunk: length 0, type, CRC (PNG spec 11.2.5); a cut file lacks it.
_PNG_END = bytes.fromhex("0000000049454e44ae426082")
# Integer pixel types DICOM can store as they are: (bits allocated, signed).
_INTEGER_TYPES = {
    np.dtype(np.uint8): (8, False),
    np.dtype(np.int8): (8, True),
    np.dtype(np.uint16): (16, False),
    np.dtype(np.int16): (16, True),
    np.dtype(np.uint32): (32, False),
    np.dtype(np.int32): (32, True),
}
_EXACT_FLOAT64_INT = 2**53
# How each format is named in messages.
FORMAT_NAMES = {"nifti": "NIfTI", "png": "PNG", "dicom": "DICOM"}


def image_format(path: str | Path) -> str:
    """``nifti`` for .nii / .nii.gz, ``png`` for .png (any case), else ``dicom``."""
    name = Path(path).name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(".png"):
        return "png"
    return "dicom"


@dataclass(frozen=True)
class ImageInfo:
    """What ingest needs from an image file's header, without decoding its pixels."""

    format: str
    columns: int
    rows: int
    n_slices: int
    # Between columns, between rows, between slices (mm); PNG has none.
    spacing_mm: tuple[float, float, float] | None
    pixel_type: str


def _reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _volume_size(size: tuple[int, ...], kind: str) -> tuple[int, int, int] | str:
    """(columns, rows, slices) of a 2D or 3D image (trailing sizes of 1 allowed), or why not."""
    if len(size) > 3 and any(n != 1 for n in size[3:]):
        return (
            f"a {len(size)}D {FORMAT_NAMES[kind]} image of size {'x'.join(map(str, size))} (a "
            "series of volumes, e.g. fMRI or diffusion): shiftlab reads one 2D or 3D image a file"
        )
    columns, rows, *rest = size
    return columns, rows, rest[0] if rest else 1


def _data_problem(path: Path, reader: sitk.ImageFileReader) -> str | None:
    """A file cut short, checked without decoding: NIfTI's voxel bytes are all there (a
    gzip stream is decompressed to count them); a PNG ends with its IEND chunk."""
    kind = image_format(path)
    if kind == "png":
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - len(_PNG_END)))
            return None if handle.read() == _PNG_END else "truncated: PNG has no IEND chunk"
    if not (reader.HasMetaDataKey("vox_offset") and reader.HasMetaDataKey("bitpix")):
        return None  # nothing to check against; a short file then fails when decoded
    offset = int(float(reader.GetMetaData("vox_offset")))
    bits = int(reader.GetMetaData("bitpix"))
    needed = offset + math.prod(reader.GetSize()) * bits // 8
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as stream:
                have = sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 20), b""))
        except (OSError, EOFError, zlib.error) as error:
            return f"corrupted: gzip stream of a NIfTI file: {type(error).__name__}"
    else:
        have = path.stat().st_size
    if have < needed:
        return f"truncated: NIfTI holds {have} of {needed} bytes (header and voxels)"
    return None


def read_image_info(path: str | Path) -> ImageInfo | str:
    """The header of a NIfTI or PNG file, or the reason it cannot be used (for skipped.csv).

    Reads the header only (SimpleITK's ReadImageInformation), plus a check that no pixel bytes
    are missing, so a bad file is reported at ingest rather than while building the cache.
    """
    path = Path(path)
    kind = image_format(path)
    if kind == "dicom":
        return f"not a NIfTI or PNG file name (expected one of {_NIFTI_SUFFIXES} or .png)"
    try:
        if path.stat().st_size == 0:
            return "empty file"
        reader = _reader(path)
    except OSError as error:
        return f"unreadable file: {type(error).__name__}"
    except RuntimeError:  # SimpleITK's only exception type; its text holds the full path
        return f"not a readable {FORMAT_NAMES[kind]} file (SimpleITK cannot read its header)"
    components = reader.GetNumberOfComponents()
    pixel_type = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if components != 1 or "complex" in pixel_type:
        return f"not greyscale: {pixel_type} pixels ({components} components)"
    size = _volume_size(tuple(reader.GetSize()), kind)
    if isinstance(size, str):
        return size
    problem = _data_problem(path, reader)
    if problem:
        return problem
    spacing = None
    if kind == "nifti":
        values = [*reader.GetSpacing()[:3], 1.0, 1.0][:3]
        spacing = (float(values[0]), float(values[1]), float(values[2]))
    return ImageInfo(kind, size[0], size[1], size[2], spacing, pixel_type)


def _ds(value: float) -> DSfloat:
    """A decimal string of at most 16 characters (DICOM's DS limit)."""
    return DSfloat(float(value), auto_format=True)


def _geometry(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origin, 3x3 direction with axes as columns, spacing) as 3D, LPS, mm."""
    dimension = image.GetDimension()
    n = min(dimension, 3)
    direction = np.eye(3)
    direction[:n, :n] = np.asarray(image.GetDirection()).reshape(dimension, dimension)[:n, :n]
    origin, spacing = np.zeros(3), np.ones(3)
    origin[:n] = image.GetOrigin()[:n]
    spacing[:n] = image.GetSpacing()[:n]
    if dimension == 2:  # a single slice: its normal completes a right-handed frame
        direction[:, 2] = np.cross(direction[:, 0], direction[:, 1])
    return origin, direction, spacing


def _pixels(voxels: np.ndarray, path: Path) -> tuple[np.ndarray, dict]:
    """Voxels in a DICOM-storable type, and the Image Pixel attributes that describe it."""
    if voxels.dtype in (np.int64, np.uint64):
        if voxels.size and np.abs(voxels).max() >= _EXACT_FLOAT64_INT:
            raise ShiftlabError(f"64-bit integer values beyond 2**53 cannot be kept: {path}")
        voxels = voxels.astype(np.float64)
    if voxels.dtype in _INTEGER_TYPES:
        bits, signed = _INTEGER_TYPES[voxels.dtype]
        attributes = {
            "BitsAllocated": bits,
            "BitsStored": bits,
            "HighBit": bits - 1,
            "PixelRepresentation": int(signed),
        }
        return voxels, attributes
    if voxels.dtype in (np.float32, np.float64):
        return voxels, {"BitsAllocated": voxels.dtype.itemsize * 8}
    raise ShiftlabError(f"pixel type {voxels.dtype} has no DICOM encoding here: {path}")


def _slice_dataset(plane: np.ndarray, attributes: dict, path: Path) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in plane.shape)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    data = np.ascontiguousarray(plane, dtype=plane.dtype.newbyteorder("<")).tobytes()
    if plane.dtype == np.float32:
        ds.FloatPixelData = data
    elif plane.dtype == np.float64:
        ds.DoubleFloatPixelData = data
    else:
        ds.PixelData = data
    ds.filename = str(path)  # error messages name the file, as for a DICOM file
    return ds


def read_image_slices(path: str | Path) -> list[Dataset]:
    """A NIfTI or PNG file as single-frame Datasets, one per slice (see the module docstring).

    Slices come in ascending position along the normal. Raises ShiftlabError naming the file
    when it cannot be read or is not a greyscale 2D/3D image.
    """
    path = Path(path)
    kind = image_format(path)
    if kind == "dicom":
        raise ShiftlabError(f"not a NIfTI or PNG file name: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:  # SimpleITK's only exception type
        raise ShiftlabError(f"cannot decode pixels of {path}: {error}") from error
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ShiftlabError(
            f"not greyscale: {image.GetPixelIDTypeAsString()} pixels in {path}; shiftlab reads "
            "one greyscale value per pixel"
        )
    size = _volume_size(tuple(image.GetSize()), kind)
    if isinstance(size, str):
        raise ShiftlabError(f"{size}: {path}")
    columns, rows, n_slices = size
    array = sitk.GetArrayFromImage(image).reshape(n_slices, rows, columns)
    voxels, attributes = _pixels(array, path)
    if kind == "png":
        return [_slice_dataset(plane, attributes, path) for plane in voxels]
    origin, direction, spacing = _geometry(image)
    along_row, along_column, along_slices = direction.T
    normal = np.cross(along_row, along_column)
    order = range(n_slices) if along_slices @ normal >= 0 else range(n_slices - 1, -1, -1)
    orientation = [_ds(v) for v in (*along_row, *along_column)]
    slices = []
    for k in order:
        ds = _slice_dataset(voxels[k], attributes, path)
        ds.ImageOrientationPatient = orientation
        position = origin + k * spacing[2] * along_slices
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.SliceThickness = _ds(spacing[2])
        ds.InstanceNumber = k + 1  # the file's own slice order
        slices.append(ds)
    return slices
