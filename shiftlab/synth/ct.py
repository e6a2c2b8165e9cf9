"""Synthetic two-vendor chest-CT lung-nodule series, written as real DICOM files.

Each patient is one axial CT series of a small region of lung around one nodule: parenchyma with
texture and a density gradient, vessels, sometimes a bronchus and the chest wall (pleura, rib,
fat, muscle), all in Hounsfield units. Malignant nodules (label 1) differ from benign ones by
shape and texture only: lobulated, spiculated and heterogeneous rather than smooth, round and
homogeneous. Both classes draw sizes from the same range, so size alone tells nothing.

The nodule is the same object in HU on both vendors. The vendors differ only as two CT scanners
do: reconstruction kernel (sharp with edge overshoot on GE, smooth on Siemens), noise level and
texture (white on the sharp kernel, correlated on the smooth one), slice thickness (thin slices
on GE, thick ones that average more of z on Siemens) and a few HU of calibration offset. The
malignant cues are fine structures (spicules, texture), so the two renderings of one cue differ,
which is what makes a shift rather than one vendor merely being harder (docs/study.md).

Every acquisition parameter moves with one severity knob (``shiftlab.synth.severity``); severity
0 gives identical vendors, slice thickness included. Header names (manufacturer, model, kernel)
stay each vendor's own. The magnitudes are set by design, not produced by physics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset
from pydicom.uid import CTImageStorage
from scipy.ndimage import gaussian_filter

from shiftlab.files import write_files_via_temporary
from shiftlab.synth.common import (
    PatientWriter,
    SyntheticPatient,
    image_dataset,
    instance_uid,
    patient_elements,
    synthetic_patients,
    write_labels_csv,
    write_patients,
)
from shiftlab.synth.severity import interpolate_vendors


@dataclass(frozen=True)
class CTVendor:
    """What a scanner writes in its headers, and how it reconstructs at full shift."""

    manufacturer: str
    model_name: str
    kernel_name: str  # the vendor's name for its kernel; the render follows `acquisition`
    kvp: float
    bits_stored: int
    pixel_representation: int  # 1: signed stored values (GE), 0: unsigned
    acquisition: dict[str, float]


VENDORS: dict[str, CTVendor] = {
    "ge": CTVendor(
        manufacturer="GE MEDICAL SYSTEMS",
        model_name="LightSpeed VCT",
        kernel_name="LUNG",
        kvp=120.0,
        bits_stored=16,
        pixel_representation=1,
        acquisition={
            "slice_thickness": 1.25,  # mm; slices are contiguous
            "kernel_blur": 0.3,  # mm, Gaussian sigma of the in-plane point spread
            "kernel_overshoot": 0.7,  # edge enhancement (ringing) of a sharp kernel
            "noise": 50.0,  # HU, standard deviation
            "noise_corr": 0.0,  # mm, extra correlation length of the noise grain
            "hu_offset": -3.0,  # HU, calibration offset (water is not exactly 0)
        },
    ),
    "siemens": CTVendor(
        manufacturer="SIEMENS",
        model_name="SOMATOM Definition AS+",
        kernel_name="B30f",
        kvp=120.0,
        bits_stored=12,
        pixel_representation=0,
        acquisition={
            "slice_thickness": 2.5,
            "kernel_blur": 0.9,
            "kernel_overshoot": 0.0,
            "noise": 15.0,
            "noise_corr": 1.2,
            "hu_offset": 4.0,
        },
    ),
}

MATRIX = 64  # rows and columns: a crop of the lung around the nodule
COVERAGE_MM = 30.0  # extent along z; the number of slices follows from the slice thickness
FOV_RANGE_MM = (360.0, 420.0)  # display field of view of the full 512 image, per patient
JITTER_MM = 4.0  # nodule centre offset from the series centre, per axis
SUBSTEP_MM = 0.625  # z sampling of the phantom inside a slice before it is integrated
OVERSHOOT_MM = 1.0  # width of the edge enhancement of a sharp kernel
RESCALE_INTERCEPT = -1024.0
MALIGNANT_PREVALENCE = 0.5
LABEL_COLUMNS = (
    "series_uid",
    "nodule_id",
    "malignant",
    "center_x_mm",
    "center_y_mm",
    "center_z_mm",
)

AIR, LUNG, FAT, SOFT_TISSUE, BONE = -1000.0, -860.0, -100.0, 40.0, 600.0


@dataclass(frozen=True)
class CTSeries:
    """One reconstructed series in HU and where it lies in patient coordinates (mm)."""

    hu: np.ndarray  # (slices, rows, cols), slices in increasing z
    origin: tuple[float, float, float]  # ImagePositionPatient (x, y, z) of the first slice
    pixel_spacing: float
    slice_thickness: float  # also the spacing between slices
    nodule_centre: tuple[float, float, float]  # (x, y, z), patient coordinates


def _soft_step(distance: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume occupancy of a boundary: 1 inside (distance > 0), 0 outside.

    A linear ramp ``2 * width`` wide: as smooth as a voxel can tell, and cheap.
    """
    ramp = distance * (0.5 / width)
    ramp += 0.5
    return np.clip(ramp, 0, 1, out=ramp)


def _blend(hu: np.ndarray, occupancy: np.ndarray, value: float | np.ndarray) -> None:
    """Replace the occupied fraction of each voxel by ``value`` (in place): partial volume."""
    hu += occupancy * (value - hu)


def _unit_vectors(rng: np.random.Generator, n: int, z_weight: float = 1.0) -> list[list[float]]:
    """``n`` random directions (z, y, x), tilted towards the axial plane when ``z_weight`` < 1.

    Python floats, not NumPy scalars: those would turn the float32 grids into float64.
    """
    v = rng.standard_normal((n, 3)) * [z_weight, 1.0, 1.0]
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).tolist()


def _near_line(
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    point: list[float],
    direction: list[float],
    reach: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A block of a grid that holds every voxel within ``reach`` mm of a line, as index arrays.

    ``axes`` are the grid's increasing (z, y, x) coordinates; the line passes through ``point``
    along the unit ``direction``. The block is cut in slabs across the axis the line runs most
    along: in each, the box around the line's elliptic cross-section, one voxel wider on each
    side, every slab's box the same size. The index arrays (z, y, x) broadcast to the block's
    shape and never name a voxel twice.
    """
    a = int(np.argmax(np.abs(direction)))
    b, c = (i for i in range(3) if i != a)
    da = direction[a]
    slabs = np.arange(axes[a].size)
    t = (axes[a].astype(np.float64) - point[a]) / da  # where the line crosses each slab
    index = {a: slabs[:, None, None]}
    for axis, other, shape in ((b, c, (-1, 1)), (c, b, (1, -1))):
        half = reach * math.sqrt(max(1 - direction[other] ** 2, 0.0)) / abs(da)
        centre = point[axis] + t * direction[axis]
        lo, hi = _index_range(axes[axis], centre - half, centre + half)
        size = min(int((hi - lo).max()), axes[axis].size)
        lo = np.clip(lo, 0, axes[axis].size - size)
        index[axis] = (lo[:, None] + np.arange(size)).reshape(len(slabs), *shape)
    return index[0], index[1], index[2]


def _near_segment(
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    direction: list[float],
    reach: float,
    along: tuple[float, float],
) -> tuple[slice, slice, slice]:
    """The box of a grid (slices of its increasing (z, y, x) ``axes``) that holds every voxel
    within ``reach`` mm of the segment from ``along[0]`` to ``along[1]`` mm along the unit
    ``direction`` from the origin, and one voxel more on each side."""
    box = []
    for axis, component in zip(axes, direction, strict=True):
        side = reach * math.sqrt(max(1 - component * component, 0.0))  # an end disc's reach
        low, high = sorted((along[0] * component, along[1] * component))
        first, stop = _index_range(axis, low - side, high + side)
        box.append(slice(int(first), int(stop)))
    return box[0], box[1], box[2]


def _index_range(axis: np.ndarray, low: float | np.ndarray, high: float | np.ndarray):
    """The indices of an increasing ``axis`` from ``low`` to ``high`` and one more on each side:
    ``(first, stop)``, each clipped to the axis."""
    first = np.maximum(np.searchsorted(axis, low) - 1, 0)
    stop = np.minimum(np.searchsorted(axis, high, side="right") + 1, axis.size)
    return first, stop


def _blend_tube(
    hu: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    point: list[float],
    direction: list[float],
    radius: float,
    value: float,
    edge: float = 0.25,
) -> None:
    """``_blend`` an infinite cylinder of ``radius`` mm around a line, filled with ``value``.

    Its occupancy (a ``_soft_step`` of ``radius`` minus the distance to the line) is exactly 0
    beyond ``radius + edge``, and blending 0 leaves a voxel as it was: only the block of voxels
    near the line (``_near_line``) is computed, each as it would be in the whole grid.
    """
    block = _near_line((z.ravel(), y.ravel(), x.ravel()), point, direction, radius + edge + 0.1)
    dz = z.ravel()[block[0]] - point[0]
    dy = y.ravel()[block[1]] - point[1]
    dx = x.ravel()[block[2]] - point[2]
    along = (dz * direction[0] + dy * direction[1]) + dx * direction[2]
    across = (dz * dz + dy * dy) + dx * dx
    across -= np.multiply(along, along, out=along)
    np.sqrt(np.maximum(across, 0, out=across), out=across)
    occupancy = _soft_step(np.subtract(radius, across, out=across), edge)
    region = hu[block]
    _blend(region, occupancy, value)
    hu[block] = region


def _lung(
    rng: np.random.Generator,
    z: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    steps: tuple[float, float],
) -> np.ndarray:
    """Parenchyma: fine texture and a dependent (posterior) density gradient."""
    shape = (z.shape[0], y.shape[1], x.shape[2])
    texture = gaussian_filter(
        rng.standard_normal(shape, dtype=np.float32),
        1.5 / np.array([steps[0], steps[1], steps[1]]),
        truncate=3.0,
    )
    texture /= texture.std()
    gradient = rng.uniform(10, 30) * y / 25
    return (LUNG + 20 * texture + gradient).astype(np.float32, copy=False)


def _airways_and_vessels(
    rng: np.random.Generator, hu: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray
) -> None:
    """Vessels on every patient (bright tubes that can touch the nodule) and maybe a bronchus."""
    for direction in _unit_vectors(rng, int(rng.integers(4, 8))):
        point = rng.uniform(-20, 20, 3).tolist()
        _blend_tube(hu, z, y, x, point, direction, rng.uniform(0.4, 1.8), SOFT_TISSUE)
    if rng.random() < 0.5:
        point, direction = rng.uniform(-18, 18, 3).tolist(), _unit_vectors(rng, 1)[0]
        lumen = rng.uniform(1.0, 2.5)
        _blend_tube(hu, z, y, x, point, direction, lumen + rng.uniform(0.5, 0.9), 0.0)
        _blend_tube(hu, z, y, x, point, direction, lumen, AIR)


def _fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` nearly evenly spread unit directions, shape (3, n) as (z, y, x)."""
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    r = np.sqrt(1 - z * z)
    phi = np.pi * (1 + 5**0.5) * k
    return np.stack([z, r * np.sin(phi), r * np.cos(phi)])


_SPHERE = _fibonacci_sphere(512)  # where a nodule's largest radius is looked for
# exp(-110) is below half the smallest float32: a spicule's Gaussian profile, exp(-r^2 / 2w^2),
# is 0 from r = sqrt(220) w on.
SPICULE_REACH = math.sqrt(220)


def _nodule(
    rng: np.random.Generator,
    hu: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    malignant: bool,
    lesion_contrast: float,
    steps: tuple[float, float],
) -> float:
    """Draw one nodule centred at (0, 0, 0) into ``hu``; return its extent (mm) for the wall.

    ``lesion_contrast`` scales every malignant cue (lobulation, spicule length, heterogeneity):
    at 0 both classes draw from the same shapes.
    """
    radius = rng.uniform(2.5, 8.0)
    elongation, axis = rng.uniform(-0.15, 0.25), _unit_vectors(rng, 1)[0]
    lobes = _unit_vectors(rng, int(rng.integers(4, 9)))
    lobe_amp = (
        (lesion_contrast * rng.uniform(0.1, 0.25, len(lobes))).tolist()
        if malignant
        else rng.uniform(0.0, 0.05, len(lobes)).tolist()
    )
    # Spicules radiate mostly in-plane, as the strands seen on axial slices do.
    spicules = _unit_vectors(rng, int(rng.integers(6, 16)) if malignant else 0, z_weight=0.6)
    spicule_len = (lesion_contrast * radius * rng.uniform(0.4, 1.2, len(spicules))).tolist()
    spicule_width = rng.uniform(0.35, 0.6, len(spicules)).tolist()
    solid = rng.uniform(0.0, 60.0)
    heterogeneity = lesion_contrast * rng.uniform(20.0, 70.0) if malignant else 0.0

    def surface(uz: np.ndarray, uy: np.ndarray, ux: np.ndarray) -> np.ndarray:
        """Radius (mm) of the nodule's solid part along unit directions."""
        along_axis = uz * axis[0] + uy * axis[1] + ux * axis[2]
        lobulation = sum(
            a * np.exp(((uz * n[0] + uy * n[1] + ux * n[2]) - 1) / 0.12)
            for a, n in zip(lobe_amp, lobes, strict=True)
        )
        return radius * (1 + elongation * (along_axis * along_axis - 1 / 3)) * (1 + lobulation)

    extent = max(1.05 * float(surface(*_SPHERE).max()), 1.1 * radius + max(spicule_len, default=0))
    # Work in the box that holds the nodule: most of the series never sees it.
    box = [
        slice(*np.searchsorted(axis_mm.ravel(), (-extent - 2, extent + 2))) for axis_mm in (z, y, x)
    ]
    bz, by, bx = z[box[0]], y[:, box[1]], x[:, :, box[2]]
    d = np.sqrt(bz * bz + by * by + bx * bx) + 1e-6
    box_axes = (bz.ravel(), by.ravel(), bx.ravel())
    # The solid part's occupancy is 0 beyond its largest radius (exp <= 1 in the lobulation):
    # the surface is computed only in the cube around that sphere, with margins for rounding.
    largest = radius * (1 + abs(elongation) * 2 / 3) * (1 + sum(lobe_amp)) * 1.01 + 0.3
    solid_box = tuple(slice(*_index_range(a, -largest, largest)) for a in box_axes)
    sz, sy, sx, near = bz[solid_box[0]], by[:, solid_box[1]], bx[:, :, solid_box[2]], d[solid_box]
    occupancy = np.zeros(d.shape, np.float32)
    occupancy[solid_box] = _soft_step(surface(sz / near, sy / near, sx / near) - near, 0.25)
    for direction, length, width in zip(spicules, spicule_len, spicule_width, strict=True):
        # A spicule is 0 behind the centre and past its tip, and its profile underflows to 0
        # (float32) beyond 14.8 widths: elsewhere its maximum with the occupancy changes nothing.
        tip = radius * 1.1 + length
        near = _near_segment(box_axes, direction, SPICULE_REACH * width + 0.1, (-0.1, tip + 0.1))
        sz, sy, sx = bz[near[0]], by[:, near[1]], bx[:, :, near[2]]
        along = sz * direction[0] + sy * direction[1] + sx * direction[2]
        across2 = np.maximum(d[near] * d[near] - along * along, 0)
        taper = np.clip((tip - along) / (length + 1e-3), 0, 1) * (along > 0)
        spicule = taper * np.exp(-across2 / (2 * width * width))
        occupancy[near] = np.maximum(occupancy[near], spicule)
    density = np.full(d.shape, solid, dtype=np.float32)
    if heterogeneity > 0:
        sigma = 0.7 / np.array([steps[0], steps[1], steps[1]])
        texture = gaussian_filter(rng.standard_normal(d.shape, dtype=np.float32), sigma)
        density += heterogeneity * texture / texture.std()
    region = hu[tuple(box)]
    _blend(region, occupancy, density)
    return extent


def _chest_wall(
    rng: np.random.Generator,
    hu: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    clearance: float,
) -> None:
    """Pleura, rib, fat and muscle beyond a gently curved pleural surface, clear of the nodule."""
    angle = rng.uniform(0, 2 * math.pi)
    ny, nx = math.sin(angle), math.cos(angle)
    distance = max(rng.uniform(12, 26), clearance)
    tangent = -x * ny + y * nx
    depth = y * ny + x * nx + tangent * tangent / rng.uniform(200, 400) - distance  # > 0: wall
    _blend(hu, _soft_step(depth, 0.3), SOFT_TISSUE)
    fat = _soft_step(depth - 9, 0.4) - _soft_step(depth - 13, 0.4)
    _blend(hu, fat, FAT)
    first_rib = rng.uniform(-15, 15)
    for rib_z in (first_rib - 22, first_rib, first_rib + 22):
        # 0 beyond 6.43 mm from the rib's centre in z (ellipse > 1.15): blended in that slab.
        slab = slice(*_index_range(z.ravel(), rib_z - 6.5, rib_z + 6.5))
        ellipse = ((depth - 5.5) / 3.5) ** 2 + ((z[slab] - rib_z) / 6.0) ** 2
        _blend(hu[slab], _soft_step(1 - ellipse, 0.15), BONE)


def _kernel(images: np.ndarray, acquisition: dict[str, float], pixel_spacing: float) -> np.ndarray:
    """In-plane reconstruction kernel: Gaussian blur, then edge overshoot (unsharp mask)."""
    blur = acquisition["kernel_blur"] / pixel_spacing
    out = gaussian_filter(images, (0, blur, blur)) if blur > 0 else images
    overshoot = acquisition["kernel_overshoot"]
    if overshoot > 0:
        wide = OVERSHOOT_MM / pixel_spacing
        out = out + overshoot * (out - gaussian_filter(out, (0, wide, wide)))
    return out


def render_series(
    rng: np.random.Generator,
    acquisition: dict[str, float],
    malignant: bool,
    lesion_contrast: float,
) -> CTSeries:
    """Draw a patient's anatomy and nodule, then scan it with ``acquisition``.

    The phantom is sampled every ``SUBSTEP_MM`` or finer along z and averaged over each slice's
    thickness (partial volume), then the kernel and noise act in-plane, as in a reconstruction.
    """
    thickness = round(acquisition["slice_thickness"], 3)
    n_slices = max(1, round(COVERAGE_MM / thickness))
    pixel_spacing = float(round(rng.uniform(*FOV_RANGE_MM))) / 512
    side = rng.choice([-1.0, 1.0])
    centre = np.array([side * rng.uniform(50, 110), rng.uniform(-40, 60), rng.uniform(-220, -80)])
    origin = np.round(centre - [31.5 * pixel_spacing, 31.5 * pixel_spacing, 0], 3)
    origin[2] = round(centre[2] - (n_slices - 1) / 2 * thickness, 3)
    nodule_centre = np.round(centre + rng.uniform(-JITTER_MM, JITTER_MM, 3), 3)

    # Phantom grid, in mm relative to the nodule centre: (slices * sub, 1, 1), (1, rows, 1), ...
    sub = math.ceil(thickness / SUBSTEP_MM - 1e-9)
    slice_z = origin[2] + thickness * np.arange(n_slices)
    offsets = thickness * ((np.arange(sub) + 0.5) / sub - 0.5)
    z = (slice_z[:, None] + offsets[None, :]).ravel() - nodule_centre[2]
    cols = origin[0] + pixel_spacing * np.arange(MATRIX) - nodule_centre[0]
    rows = origin[1] + pixel_spacing * np.arange(MATRIX) - nodule_centre[1]
    z, y, x = (
        a.astype(np.float32) for a in (z[:, None, None], rows[None, :, None], cols[None, None, :])
    )
    steps = (thickness / sub, pixel_spacing)

    hu = _lung(rng, z, y, x, steps)
    _airways_and_vessels(rng, hu, z, y, x)
    extent = _nodule(rng, hu, z, y, x, malignant, lesion_contrast, steps)
    if rng.random() < 0.4:
        _chest_wall(rng, hu, z, y, x, clearance=extent + 2.0)

    slices = hu.reshape(n_slices, sub, MATRIX, MATRIX).mean(axis=1)
    image = _kernel(slices, acquisition, pixel_spacing)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    if acquisition["noise_corr"] > 0:
        corr = acquisition["noise_corr"] / pixel_spacing
        noise = gaussian_filter(noise, (0, corr, corr))
    noise = _kernel(noise, acquisition, pixel_spacing)
    image = image + acquisition["noise"] * noise / noise.std() + acquisition["hu_offset"]
    return CTSeries(
        hu=image.astype(np.float32),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        pixel_spacing=pixel_spacing,
        slice_thickness=thickness,
        nodule_centre=(float(nodule_centre[0]), float(nodule_centre[1]), float(nodule_centre[2])),
    )


def _file_elements(
    patient: SyntheticPatient, series: CTSeries, pixels: np.ndarray, slice_index: int
) -> dict[str, object]:
    """The header elements of one slice's file that differ from file to file."""
    z = round(series.origin[2] + slice_index * series.slice_thickness, 3)
    return {
        **patient_elements(patient),
        "PixelSpacing": [series.pixel_spacing, series.pixel_spacing],
        "SOPInstanceUID": instance_uid(patient.series_uid, slice_index),
        "InstanceNumber": slice_index + 1,
        "ImagePositionPatient": [series.origin[0], series.origin[1], z],
        "SliceLocation": z,
        "PixelData": pixels.tobytes(),
    }


def _dataset(
    vendor: CTVendor,
    patient: SyntheticPatient,
    series: CTSeries,
    pixels: np.ndarray,
    slice_index: int,
) -> FileDataset:
    ds = image_dataset(CTImageStorage, "CT", patient, vendor.manufacturer, vendor.model_name)
    ds.ConvolutionKernel = vendor.kernel_name
    ds.KVP = vendor.kvp
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = "chest ax lung"
    ds.SeriesNumber = 2
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = series.slice_thickness
    ds.SpacingBetweenSlices = series.slice_thickness
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = -600  # lung window
    ds.WindowWidth = 1500
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = vendor.bits_stored
    ds.HighBit = vendor.bits_stored - 1
    ds.PixelRepresentation = vendor.pixel_representation
    for keyword, value in _file_elements(patient, series, pixels, slice_index).items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def stored_values(hu: np.ndarray, vendor: CTVendor) -> np.ndarray:
    """HU -> the integers a vendor stores (intercept -1024), clipped to its stored bit depth."""
    top = 2 ** (vendor.bits_stored - vendor.pixel_representation) - 1
    values = np.clip(np.round(hu) - RESCALE_INTERCEPT, 0, top)
    return values.astype(np.int16 if vendor.pixel_representation else np.uint16)


def vendor_acquisition(vendor_name: str, severity: float) -> dict[str, float]:
    """A vendor's acquisition at ``severity``; refuses settings no scanner could have."""
    table = {name: vendor.acquisition for name, vendor in VENDORS.items()}
    acquisition = interpolate_vendors(table, severity)[vendor_name]
    for name, value in acquisition.items():
        too_small = value <= 0 if name == "slice_thickness" else value < 0
        if name != "hu_offset" and too_small:
            raise ValueError(
                f"severity {severity} extrapolates {vendor_name} {name} to {value:g}; "
                "choose a smaller severity"
            )
    return acquisition


@dataclass(frozen=True)
class _PatientWriter(PatientWriter):
    """Renders one patient's series, writes its files and returns its row of ``labels.csv``."""

    def __call__(self, patient: SyntheticPatient) -> dict[str, object]:
        vendor = VENDORS[patient.vendor]
        malignant = bool(patient.rng.random() < MALIGNANT_PREVALENCE)
        series = render_series(
            patient.rng, self.acquisitions[patient.vendor], malignant, self.lesion_contrast
        )
        stored = stored_values(series.hu, vendor)
        template = self.template(
            patient.vendor,
            lambda: (
                _dataset(vendor, patient, series, stored[0], 0),
                list(_file_elements(patient, series, stored[0], 0)),
            ),
        )
        folder = (
            self.out / "dicom" / patient.patient_id / "01-01-2000-CT CHEST" / "2.000-chest ax lung"
        )
        write_files_via_temporary(
            (
                folder / f"1-{k + 1:02d}.dcm",
                template.encode(_file_elements(patient, series, pixels, k)),
            )
            for k, pixels in enumerate(stored)
        )
        x, y, z = series.nodule_centre
        return {
            "series_uid": patient.series_uid,
            "nodule_id": "1",
            "malignant": int(malignant),
            "center_x_mm": x,
            "center_y_mm": y,
            "center_z_mm": z,
        }


def generate(
    out_dir: str | Path,
    patients_per_vendor: int = 600,
    severity: float = 0.25,
    seed: int = 0,
    lesion_contrast: float = 1.25,
    vendors: tuple[str, ...] = ("ge", "siemens"),
    workers: int | None = None,
) -> Path:
    """Write ``out_dir/dicom/<PatientID>/<study>/<series>/1-NN.dcm`` and ``out_dir/labels.csv``.

    ``severity`` runs from 0 (identical vendors) to 1 (full shift); beyond 1 a vendor would need
    a negative noise correlation or overshoot, which is refused. ``lesion_contrast`` scales how
    far malignant nodules depart from benign ones. The defaults were calibrated with a small CNN
    on 5 x 47 x 47 patches (NoduleX preprocessing): in-domain AUROC about 0.91, mean ΔAUC about
    -0.03 over both directions, near the study's CT mean (-0.026); severity 0 gave about 0.
    Deterministic from the arguments: the same arguments give the same pixels and UIDs, with any
    number of ``workers`` (processes; default: every usable CPU).
    ``labels.csv`` has one row per nodule: its series, id, label and centre in patient
    coordinates (mm, the frame of ImagePositionPatient), which a patch crop must use because the
    nodule is not at the centre of the series.
    """
    out = Path(out_dir)
    acquisitions = {name: vendor_acquisition(name, severity) for name in VENDORS}
    patients = synthetic_patients(
        VENDORS, vendors, patients_per_vendor, seed, severity, lesion_contrast
    )
    writer = _PatientWriter(out, acquisitions, lesion_contrast)
    rows = write_patients(writer, patients, "synthetic CT", workers)
    write_labels_csv(out, rows, LABEL_COLUMNS)
    return out
