"""Decode one sample from DICOM and bring it to the network's fixed input, per modality.

Each modality has the preprocessing an imaging engineer expects, built from small functions that
are tested on DICOM attributes:

- MRI (`MRIPreprocessor`): intensities have no absolute scale, so each volume is scaled on its
  own (z-score or robust percentiles) after resampling to a fixed shape.
- CT (`CTPatchPreprocessor`): Hounsfield units from RescaleSlope/Intercept, a patch centred on a
  point given in patient coordinates, sampled at a fixed spacing (so thin and thick slices give
  the same geometry), then a fixed HU window. No per-image normalisation: HU are absolute.
  `CTVolumePreprocessor` keeps a whole scan instead (a head CT): HU window, then a fixed grid.
- X-ray (`XRayPreprocessor`): the display pipeline of the header (modality LUT, then VOI LUT or
  window, then MONOCHROME1 inverted, whatever the stored bit depth) to [0, 1], then resized.

MONAI transforms do the resizing and intensity scaling. Decoding is ours, because the file list
and slice order come from the manifest; so is the CT patch sampling, which interpolates only the
patch's own grid instead of resampling a whole 512x512x300 scan per nodule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pydicom
import torch
from monai.transforms import (
    NormalizeIntensity,
    Resize,
    ScaleIntensityRange,
    ScaleIntensityRangePercentiles,
)
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from scipy.ndimage import gaussian_filter, map_coordinates

from shiftlab.errors import ShiftlabError
from shiftlab.ingest.headers import instance_number
from shiftlab.ingest.image_files import image_format, read_image_slices
from shiftlab.ingest.multiframe import is_multiframe, split_frames

INTENSITY_METHODS = ("zscore", "percentile")
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
CENTER_UNITS = ("mm", "pixel_xy")


class Preprocessor(Protocol):
    """Decoded slices of one sample (and its manifest row) -> an array of shape ``shape``."""

    shape: tuple[int, ...]

    def __call__(self, slices: Sequence[Dataset], sample: Mapping) -> np.ndarray: ...


def read_slices(files: Sequence[Path]) -> list[Dataset]:
    """Read and decode every file of a sample, naming the file that fails. A NIfTI or PNG file
    gives its slices as Datasets (``shiftlab.ingest.image_files``), and so does a multi-frame
    DICOM file, one per frame (``shiftlab.ingest.multiframe``)."""
    slices = []
    for path in files:
        if image_format(path) != "dicom":  # NIfTI or PNG: one file, every slice
            slices.extend(read_image_slices(path))
            continue
        try:
            ds = pydicom.dcmread(path)
            _ = ds.pixel_array  # decode now, so that a failure names this file
            frames = split_frames(ds) if is_multiframe(ds) else [ds]
        except Exception as error:  # any decoder or file error: say which file, then stop
            raise ShiftlabError(f"cannot decode pixels of {path}: {error}") from error
        slices.extend(frames)
    return slices


def _source(ds: Dataset) -> str:
    """The file a dataset came from, for error messages."""
    return str(getattr(ds, "filename", None) or "<dataset in memory>")


def modality_values(ds: Dataset) -> np.ndarray:
    """Stored values -> modality values (RescaleSlope/Intercept or a Modality LUT): HU for CT."""
    return np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)


def stack_slices(slices: Sequence[Dataset]) -> np.ndarray:
    """Modality values of a series, shape (slices, rows, cols), in the given (slice) order."""
    planes = [modality_values(ds) for ds in slices]
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise ShiftlabError(
            f"slices of one series differ in size {sorted(shapes)}: {_source(slices[0])}"
        )
    return np.stack(planes)


def read_series(files: Sequence[Path]) -> np.ndarray:
    """Modality values of the files of one series, shape (slices, rows, cols)."""
    return stack_slices(read_slices(files))


def window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly to [0, 1], clipping outside (e.g. an HU window)."""
    scale = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
    return np.asarray(scale(np.asarray(values, dtype=np.float32)), dtype=np.float32)


def dicom_window(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """A DICOM VOI window (PS3.3 C.11.2.1.2) with output scaled to [0, 1]."""
    function = (function or "LINEAR").upper()
    x = np.asarray(values, dtype=np.float64)
    if function == "LINEAR":
        if width < 1:
            raise ShiftlabError(f"WindowWidth {width} < 1 is invalid for a LINEAR window")
        out = (x - (center - 0.5)) / (width - 1) + 0.5
    elif function == "LINEAR_EXACT":
        out = (x - center) / width + 0.5
    elif function == "SIGMOID":
        out = 1 / (1 + np.exp(-4 * (x - center) / width))
    else:
        raise ShiftlabError(f"VOILUTFunction {function!r}; expected one of {WINDOW_FUNCTIONS}")
    return np.clip(out, 0, 1).astype(np.float32)


def _first(value: object) -> float:
    """The first of a possibly multi-valued attribute (WindowCenter may list several)."""
    return float(value[0] if isinstance(value, MultiValue) else value)


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """Modality values of the smallest and largest storable pixel, from the bit depth."""
    bits = int(ds.BitsStored)
    signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    ends = apply_modality_lut(np.array([low, high]), ds).astype(np.float64)
    return float(ends.min()), float(ends.max())


def xray_display(ds: Dataset, no_window: str = "stored_range") -> np.ndarray:
    """One radiograph as displayed, in [0, 1] with 1 = bright (high attenuation, MONOCHROME2).

    The header's own display pipeline: modality LUT; then the first VOI LUT if present, else the
    first window (with its VOILUTFunction), else, by ``no_window``, the full stored range of
    BitsStored (``stored_range``, DICOM's rule) or the image's own 0.5-99.5 percentiles
    (``percentile``, for PNG files, whose bit depth need not be the data's); then
    inverted where the header says low values are bright: by PresentationLUTShape INVERSE when
    that attribute is present (it takes precedence, as in the DX and MG image modules, which pair
    INVERSE with MONOCHROME1), else by MONOCHROME1. Whatever the vendor's encoding, the result
    is on one scale.
    """
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ShiftlabError(
            f"PhotometricInterpretation {photometric!r} is not greyscale: {_source(ds)}"
        )
    values = modality_values(ds)
    if ds.get("VOILUTSequence"):
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        lut_max = 2 ** int(descriptor[2]) - 1
        # A LUT is indexed by whole modality values.
        indices = np.rint(values).astype(np.int64)
        shown = np.asarray(apply_voi_lut(indices, ds, prefer_lut=True), dtype=np.float64) / lut_max
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        function = str(ds.get("VOILUTFunction", "LINEAR"))
        shown = dicom_window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
    else:
        if no_window == "percentile":
            low, high = (float(v) for v in np.percentile(values, (0.5, 99.5)))
        else:
            low, high = _stored_range(ds)
        shown = (values - low) / (high - low if high > low else 1.0)
    shown = np.clip(shown, 0, 1)
    shape = str(ds.get("PresentationLUTShape", "")).strip().upper()
    if (shape == "INVERSE") if shape in ("INVERSE", "IDENTITY") else photometric == "MONOCHROME1":
        shown = 1 - shown
    return shown.astype(np.float32)


def slice_geometry(slices: Sequence[Dataset]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each voxel lies in patient coordinates (mm).

    Returns ``origin`` (position of the first slice's first pixel), ``axes`` (unit vectors of
    increasing column index, increasing row index, and the slice normal) and ``positions`` (each
    slice's position along the normal, ascending in the given order).
    """
    first = slices[0]
    try:
        orientation = np.asarray([float(v) for v in first.ImageOrientationPatient])
        positions_xyz = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    except AttributeError as missing:
        raise ShiftlabError(
            f"a CT patch needs ImagePositionPatient and ImageOrientationPatient: {missing} "
            f"({_source(first)})"
        ) from missing
    along_row, along_column = orientation[:3], orientation[3:]
    normal = np.cross(along_row, along_column)
    positions = positions_xyz @ normal
    if len(slices) > 1 and not np.all(np.diff(positions) > 0):
        raise ShiftlabError(
            f"slice positions are not strictly increasing along the normal: {_source(first)}"
        )
    return positions_xyz[0], np.stack([along_row, along_column, normal]), positions


def pixel_xy_to_patient(
    slices: Sequence[Dataset], column: float, row: float, z_mm: float
) -> np.ndarray:
    """A point given as (column, row) pixel indices on the slice at patient z ``z_mm`` -> patient
    coordinates (mm).

    LIDC-IDRI's XML reads locate outlines this way: xCoord/yCoord are pixel indices and
    imageZposition is the z of that slice's ImagePositionPatient. The slice origin is found by
    interpolating the slices' ImagePositionPatient over their z (a point between slices lies
    between them; beyond the scan the nearest slice's in-plane origin is used and z is kept), then
    the in-plane offset follows ImageOrientationPatient and PixelSpacing.
    """
    _, (along_row, along_column, _), _ = slice_geometry(slices)
    positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    order = np.argsort(positions[:, 2], kind="stable")
    z = positions[order, 2]
    slice_origin = np.array(
        [float(np.interp(z_mm, z, positions[order, axis])) for axis in (0, 1)] + [float(z_mm)]
    )
    dy, dx = (float(v) for v in slices[0].PixelSpacing)  # between rows, between columns
    return slice_origin + float(column) * dx * along_row + float(row) * dy * along_column


class MRIPreprocessor:
    """Resample a series to (slices, size, size) and normalise its intensities per volume.

    ``intensity``: ``zscore`` or ``percentile`` (robust 0.5-99.5 percentile scaling to [0, 1],
    clipped). MRI has no absolute intensity scale, so no fixed window can be right.
    """

    def __init__(self, slices: int, size: int, intensity: str = "zscore") -> None:
        if intensity not in INTENSITY_METHODS:
            raise ShiftlabError(
                f"dataset.preprocess.intensity={intensity!r}; choose one of {INTENSITY_METHODS}"
            )
        self.shape = (slices, size, size)
        self.resize = Resize(spatial_size=self.shape, mode="trilinear")
        self.normalise = (
            NormalizeIntensity()
            if intensity == "zscore"
            else ScaleIntensityRangePercentiles(
                lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True
            )
        )

    def from_volume(self, volume: np.ndarray) -> np.ndarray:
        # MONAI transforms take channel-first arrays: add a channel axis, drop it at the end.
        image = torch.as_tensor(volume, dtype=torch.float32)[None]
        return np.asarray(self.normalise(self.resize(image))[0], dtype=np.float32)

    def __call__(self, slices: Sequence[Dataset], sample: Mapping) -> np.ndarray:
        return self.from_volume(stack_slices(slices))


class CTPatchPreprocessor:
    """A patch of ``patch`` = (depth, height, width) voxels centred on a point, HU-windowed.

    ``spacing_mm`` (z, y, x) is the patch's voxel size; null keeps each scan's own spacing (as
    the original NoduleX did). ``window`` = (low, high) HU maps to [0, 1]. The centre comes from
    the sample's ``center_columns``: with ``center_units="mm"`` patient coordinates in mm (x, y,
    z, as in ImagePositionPatient); with ``"pixel_xy"`` a column index, a row index and the
    patient z in mm of the slice they lie on (as LIDC-IDRI's XML reads give them; see
    `pixel_xy_to_patient`). Outside the scan the patch is filled with ``pad_hu`` (air). Slices
    must be in ascending position along the normal (ingest orders them so).
    """

    def __init__(
        self,
        patch: Sequence[int],
        window: Sequence[float],
        spacing_mm: Sequence[float] | None = None,
        center_columns: Sequence[str] = ("center_x_mm", "center_y_mm", "center_z_mm"),
        pad_hu: float = -1000.0,
        center_units: str = "mm",
    ) -> None:
        if len(patch) != 3 or min(patch) < 1:
            raise ShiftlabError(f"dataset.preprocess.patch must be 3 positive sizes, got {patch}")
        if len(window) != 2 or window[0] >= window[1]:
            raise ShiftlabError(f"dataset.preprocess.window must be [low, high], got {window}")
        if spacing_mm is not None and (len(spacing_mm) != 3 or min(spacing_mm) <= 0):
            raise ShiftlabError(
                f"dataset.preprocess.spacing_mm must be 3 sizes > 0 or null, got {spacing_mm}"
            )
        self.shape = tuple(int(p) for p in patch)
        self.window = (float(window[0]), float(window[1]))
        self.spacing = None if spacing_mm is None else tuple(float(s) for s in spacing_mm)
        self.center_columns = tuple(center_columns)
        self.pad_hu = float(pad_hu)
        if center_units not in CENTER_UNITS:
            raise ShiftlabError(
                f"dataset.preprocess.center_units={center_units!r}; choose one of {CENTER_UNITS}"
            )
        self.center_units = center_units

    def center(self, sample: Mapping) -> np.ndarray:
        try:
            return np.asarray([float(sample[c]) for c in self.center_columns])
        except (KeyError, TypeError, ValueError) as error:
            raise ShiftlabError(
                f"a CT patch needs the centre columns {list(self.center_columns)} in the "
                f"manifest (from the label file's extra_columns); sample has: {error}"
            ) from error

    def sample_grid(
        self, slices: Sequence[Dataset], center: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fractional (slice, row, column) indices of every patch voxel."""
        origin, (along_row, along_column, normal), positions = slice_geometry(slices)
        dy, dx = (float(v) for v in slices[0].PixelSpacing)  # between rows, between columns
        dz = float(np.median(np.diff(positions))) if len(positions) > 1 else 1.0
        tz, ty, tx = self.spacing or (dz, dy, dx)
        offsets = [
            (np.arange(n) - (n - 1) / 2) * t for n, t in zip(self.shape, (tz, ty, tx), strict=True)
        ]
        z = center @ normal + offsets[0]
        # Outside the scan along z the index goes out of range, so map_coordinates pads it.
        k = np.interp(z, positions, np.arange(len(positions)), left=-1e6, right=1e6)
        relative = center - origin
        i = (relative @ along_column + offsets[1]) / dy
        j = (relative @ along_row + offsets[2]) / dx
        return np.meshgrid(k, i, j, indexing="ij")

    def from_volume(self, hu: np.ndarray, grid: tuple[np.ndarray, ...]) -> np.ndarray:
        patch = map_coordinates(hu, grid, order=1, mode="constant", cval=self.pad_hu)
        return window(patch, *self.window)

    def center_point(self, slices: Sequence[Dataset], sample: Mapping) -> np.ndarray:
        """The patch centre in patient coordinates (mm), whatever ``center_units`` is."""
        center = self.center(sample)
        if self.center_units == "pixel_xy":
            return pixel_xy_to_patient(slices, *center)
        return center

    def __call__(self, slices: Sequence[Dataset], sample: Mapping) -> np.ndarray:
        grid = self.sample_grid(slices, self.center_point(slices, sample))
        return self.from_volume(stack_slices(slices), grid)


X_RAY_NO_WINDOW = ("stored_range", "percentile")


class XRayPreprocessor:
    """One radiograph through its header's display pipeline, resized to (1, size, size).

    ``no_window`` says what to show of an image whose header has no VOI LUT and no window (see
    :func:`xray_display`): a PNG or NIfTI file never has one.
    """

    def __init__(self, size: int, no_window: str = "stored_range") -> None:
        if no_window not in X_RAY_NO_WINDOW:
            raise ShiftlabError(
                f"dataset.preprocess.no_window={no_window!r}; choose one of {X_RAY_NO_WINDOW}"
            )
        self.no_window = no_window
        self.shape = (1, size, size)
        # "area" averages when shrinking, so edge-enhancement and noise do not alias.
        self.resize = Resize(spatial_size=(size, size), mode="area")

    def __call__(self, slices: Sequence[Dataset], sample: Mapping) -> np.ndarray:
        if len(slices) != 1:
            raise ShiftlabError(
                f"an X-ray sample is one image, got {len(slices)} files: {_source(slices[0])}"
            )
        image = torch.as_tensor(xray_display(slices[0], self.no_window))[None]
        return np.asarray(self.resize(image), dtype=np.float32)


SLICE_NUMBERINGS = ("position", "instance")


class MRISlicePreprocessor:
    """One slice of a series with ``context`` neighbours each side (2.5D), shape
    (2 * context + 1, size, size): a slice-level MRI task (e.g. "this slice shows the tumour").

    The slice comes from the sample's ``slice_column`` (0-based). ``slice_numbering``:
    ``position`` counts in the manifest's slice order (ascending position along the slice
    normal, as ingest orders them); ``instance`` counts in InstanceNumber order, for label files
    that number slices as a viewer listing the files in acquisition order does (Duke's boxes,
    whose recipe writes ``slice_numbering`` into each sample: a sample whose value differs from
    this setting is refused rather than read at another slice). Either way the
    neighbours are the spatially adjacent slices; beyond the first or last slice the edge slice
    is repeated. Intensities are normalised over the whole series (``zscore``, or ``percentile``:
    its 0.5-99.5 percentiles to [0, 1], clipped), so the slices of one scan stay comparable with
    each other; then each slice is resized in-plane.
    """

    def __init__(
        self,
        size: int,
        context: int = 1,
        intensity: str = "zscore",
        slice_column: str = "slice_index",
        slice_numbering: str = "position",
    ) -> None:
        if intensity not in INTENSITY_METHODS:
            raise ShiftlabError(
                f"dataset.preprocess.intensity={intensity!r}; choose one of {INTENSITY_METHODS}"
            )
        if slice_numbering not in SLICE_NUMBERINGS:
            raise ShiftlabError(
                f"dataset.preprocess.slice_numbering={slice_numbering!r}; choose one of "
                f"{SLICE_NUMBERINGS}"
            )
        if context < 0:
            raise ShiftlabError(f"dataset.preprocess.context must be >= 0, got {context}")
        self.context = int(context)
        self.intensity = intensity
        self.slice_column = slice_column
        self.slice_numbering = slice_numbering
        self.shape = (2 * self.context + 1, int(size), int(size))
        # Anti-aliasing: a 512-pixel slice shrunk to 256 must not alias its noise and edges.
        self.resize = Resize(spatial_size=self.shape[1:], mode="bilinear", anti_aliasing=True)

    def slice_position(self, slices: Sequence[Dataset], sample: Mapping) -> int:
        """The index, in the given (spatial) order, of the sample's slice."""
        try:
            index = int(float(sample[self.slice_column]))
        except (KeyError, TypeError, ValueError) as error:
            raise ShiftlabError(
                f"a slice sample needs the manifest column {self.slice_column!r} (from the label "
                f"file's extra columns); sample has: {error}"
            ) from error
        if not 0 <= index < len(slices):
            raise ShiftlabError(
                f"{self.slice_column}={index} is outside its series of {len(slices)} slices "
                f"({_source(slices[0])}): the label file names a slice the series does not have."
            )
        # A recipe that knows how its label file counts slices says so per sample (Duke:
        # "instance"); reading it in another order would take another slice than the labelled one.
        declared = sample.get("slice_numbering")
        if isinstance(declared, str) and declared and declared != self.slice_numbering:
            raise ShiftlabError(
                f"the label recipe numbers this sample's slice in {declared} order (manifest "
                f"column slice_numbering) but dataset.preprocess.slice_numbering="
                f"{self.slice_numbering}: it would read another slice than the labelled one. "
                f"Set dataset.preprocess.slice_numbering={declared}."
            )
        if self.slice_numbering == "instance":
            numbers = [(instance_number(ds), k) for k, ds in enumerate(slices)]
            if any(n is None for n, _ in numbers):
                raise ShiftlabError(
                    f"slice_numbering=instance needs InstanceNumber on every slice: "
                    f"{_source(slices[0])}"
                )
            return sorted(numbers)[index][1]
        return index

    def normalise(self, volume: np.ndarray) -> NormalizeIntensity | ScaleIntensityRange:
        """The per-series intensity transform, with statistics of the whole series."""
        if self.intensity == "zscore":
            std = float(volume.std())
            return NormalizeIntensity(subtrahend=float(volume.mean()), divisor=std or 1.0)
        low, high = (float(v) for v in np.percentile(volume, (0.5, 99.5)))
        return ScaleIntensityRange(
            a_min=low, a_max=high if high > low else low + 1, b_min=0.0, b_max=1.0, clip=True
        )

    def from_volume(self, volume: np.ndarray, index: int) -> np.ndarray:
        picked = np.clip(np.arange(index - self.context, index + self.context + 1), 0, None)
        picked = np.minimum(picked, len(volume) - 1)
        stack = torch.as_tensor(volume[picked], dtype=torch.float32)
        normalised = self.normalise(volume)(self.resize(stack))
        return np.asarray(normalised, dtype=np.float32)

    def __call__(self, slices: Sequence[Dataset], sample: Mapping) -> np.ndarray:
        return self.from_volume(stack_slices(slices), self.slice_position(slices, sample))


MAMMO_ALIGNMENTS = ("chest_wall_left", "none")


class MammoPreprocessor:
    """A mammogram through its header's display pipeline, chest wall turned to the left, padded
    square with background and resized to (1, size, size).

    Mammograms are tall (1.25-1.4 rows per column, by detector) and show a left or a right
    breast. Squashing them square, as XRayPreprocessor does, stretches each detector's images by
    its own aspect ratio; padding keeps the breast's shape. ``align: chest_wall_left`` mirrors
    an image whose right half holds more signal (the breast hugs the chest wall, the background
    is dark once displayed), which works whatever the vendor's PatientOrientation; ``none``
    keeps the stored orientation.
    """

    def __init__(self, size: int, align: str = "chest_wall_left") -> None:
        if align not in MAMMO_ALIGNMENTS:
            raise ShiftlabError(
                f"dataset.preprocess.align={align!r}; choose one of {MAMMO_ALIGNMENTS}"
            )
        self.align = align
        self.shape = (1, int(size), int(size))
        self.resize = Resize(spatial_size=self.shape[1:], mode="area")

    def from_display(self, image: np.ndarray) -> np.ndarray:
        """A displayed mammogram (bright = dense, background dark) -> (1, size, size)."""
        if self.align == "chest_wall_left":
            half = image.shape[1] // 2
            if image[:, image.shape[1] - half :].sum() > image[:, :half].sum():
                image = image[:, ::-1]
        rows, cols = image.shape
        side = max(rows, cols)
        square = np.zeros((side, side), dtype=np.float32)
        top = (side - rows) // 2
        square[top : top + rows, :cols] = image
        return np.asarray(self.resize(torch.as_tensor(square)[None]), dtype=np.float32)

    def __call__(self, slices: Sequence[Dataset], sample: Mapping) -> np.ndarray:
        if len(slices) != 1:
            raise ShiftlabError(
                f"a mammography sample is one image, got {len(slices)} files: {_source(slices[0])}"
            )
        return self.from_display(xray_display(slices[0]))


class CTVolumePreprocessor:
    """A whole CT series (e.g. a head) in HU, windowed, resampled to (depth, size, size).

    ``window`` = (low, high) HU maps to [0, 1] with clipping (default the brain window, level
    40 / width 80); windowing comes before resampling so that bone far above the window cannot
    bleed into brain voxels through interpolation. The volume is then resized to a fixed grid
    with trilinear interpolation after a Gaussian anti-aliasing blur along each shrunk axis
    (sigma = (factor - 1) / 2 voxels, edges extended, so border slices keep their level): the
    whole scan fills the grid whatever its slice count or spacing (not a fixed mm spacing),
    slices in the order ingest gives them (ascending along the normal).
    """

    def __init__(self, depth: int, size: int, window: Sequence[float] = (0.0, 80.0)) -> None:
        if int(depth) < 1 or int(size) < 1:
            raise ShiftlabError(
                f"dataset.preprocess.depth and size must be positive, got {depth}, {size}"
            )
        if len(window) != 2 or window[0] >= window[1]:
            raise ShiftlabError(f"dataset.preprocess.window must be [low, high], got {window}")
        self.shape = (int(depth), int(size), int(size))
        self.window = (float(window[0]), float(window[1]))
        self.resize = Resize(spatial_size=self.shape, mode="trilinear")

    def from_volume(self, hu: np.ndarray) -> np.ndarray:
        windowed = window(hu, *self.window)
        sigma = [max(0.0, (n / m - 1) / 2) for n, m in zip(windowed.shape, self.shape, strict=True)]
        if any(sigma):
            windowed = gaussian_filter(windowed, sigma, mode="nearest")
        image = torch.as_tensor(windowed)[None]
        return np.asarray(self.resize(image)[0], dtype=np.float32)

    def __call__(self, slices: Sequence[Dataset], sample: Mapping) -> np.ndarray:
        return self.from_volume(stack_slices(slices))
