"""CT, X-ray and MRI preprocessing checked against values computed by hand from DICOM attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers.dicom_factory import write_series
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from shiftlab.data.preprocess import (
    CTPatchPreprocessor,
    XRayPreprocessor,
    dicom_window,
    modality_values,
    read_slices,
    window,
    xray_display,
)
from shiftlab.errors import ShiftlabError

SPACING, THICKNESS, ORIGIN = (0.7, 0.8), 2.0, (-100.0, -90.0, 20.0)


def test_hounsfield_units_from_rescale_slope_and_intercept(tmp_path: Path) -> None:
    written = write_series(
        tmp_path / "ct",
        patient_id="P",
        modality="CT",
        pixels=lambda k, shape: np.full(shape, [0, 24, 1064][k]),
        extra={"RescaleSlope": 1, "RescaleIntercept": -1024},
    )
    hu = [float(modality_values(ds).mean()) for ds in read_slices(written.files)]
    assert hu == [-1024.0, -1000.0, 40.0]  # below air, air, soft tissue


def test_hu_window_of_nodulex() -> None:
    hu = np.array([-2000, -1000, 1548, 4096, 5000], dtype=np.float32)
    np.testing.assert_allclose(window(hu, -1000, 4096), [0, 0, 0.5, 1, 1], atol=1e-6)


@pytest.mark.parametrize(
    ("function", "x", "expected"),
    [
        ("LINEAR", [-160.0, 39.5, 139.25, 239.0, 500.0], [0, 0.5, 0.75, 1, 1]),
        ("LINEAR_EXACT", [-160.0, 40.0, 140.0, 240.0], [0, 0.5, 0.75, 1]),
        ("SIGMOID", [40.0, 140.0], [0.5, 1 / (1 + np.exp(-1))]),
    ],
)
def test_dicom_window_functions(function: str, x: list[float], expected: list[float]) -> None:
    # Centre 40, width 400: the soft-tissue window, by the formulas of DICOM PS3.3 C.11.2.1.2.
    np.testing.assert_allclose(dicom_window(np.array(x), 40, 400, function), expected, atol=1e-6)


def _radiograph(
    stored: np.ndarray, photometric: str, bits_stored: int, **attributes: object
) -> Dataset:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.set_pixel_data(
        stored.astype(np.uint16), photometric_interpretation=photometric, bits_stored=bits_stored
    )
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_monochrome1_is_inverted_over_the_stored_bit_depth(tmp_path: Path) -> None:
    stored = np.array([[0, 1024], [2048, 4095]])
    ds = _radiograph(stored, "MONOCHROME1", bits_stored=12)
    ds.save_as(tmp_path / "cr.dcm", enforce_file_format=True)  # through a real file
    shown = xray_display(pydicom.dcmread(tmp_path / "cr.dcm"))
    np.testing.assert_allclose(shown, 1 - stored / 4095, atol=1e-6)
    assert shown[0, 0] == 1.0  # stored 0 is white in MONOCHROME1


def test_same_image_in_monochrome1_and_monochrome2_displays_identically() -> None:
    image = np.array([[0.0, 0.25], [0.5, 1.0]])
    mono2 = _radiograph(np.round(image * 4095), "MONOCHROME2", bits_stored=12)
    mono1 = _radiograph(np.round((1 - image) * 16383), "MONOCHROME1", bits_stored=14)
    np.testing.assert_allclose(xray_display(mono2), xray_display(mono1), atol=1e-3)


@pytest.mark.parametrize(
    ("photometric", "shape", "inverted"),
    [
        ("MONOCHROME1", "INVERSE", True),  # the DX/MG pairing: one inversion, not two
        ("MONOCHROME2", "IDENTITY", False),
        ("MONOCHROME2", "INVERSE", True),  # found in mammography archives
        ("MONOCHROME1", "IDENTITY", False),  # the Presentation LUT Shape takes precedence
    ],
)
def test_presentation_lut_shape_decides_the_inversion(
    photometric: str, shape: str, inverted: bool
) -> None:
    stored = np.array([[0, 1024], [2048, 4095]])
    ds = _radiograph(stored, photometric, bits_stored=12, PresentationLUTShape=shape)
    expected = 1 - stored / 4095 if inverted else stored / 4095
    np.testing.assert_allclose(xray_display(ds), expected, atol=1e-6)


def test_window_centre_and_width_are_applied_before_inversion() -> None:
    stored = np.array([[0, 1000], [1499, 3000]])
    ds = _radiograph(stored, "MONOCHROME1", 12, WindowCenter=[1500, 2048], WindowWidth=[1001, 4096])
    # First window only: (x - 1499.5) / 1000 + 0.5, clipped, then inverted.
    expected = 1 - np.clip((stored - 1499.5) / 1000 + 0.5, 0, 1)
    np.testing.assert_allclose(xray_display(ds), expected, atol=1e-6)


def test_voi_lut_sequence_is_preferred_and_scaled_by_its_bit_depth() -> None:
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 8]  # 4 entries, first maps stored 0, 8 bits per entry
    lut.LUTData = [0, 10, 200, 255]
    ds = _radiograph(np.array([[0, 1], [2, 3]]), "MONOCHROME2", 12, WindowCenter=0, WindowWidth=2)
    ds.VOILUTSequence = [lut]
    np.testing.assert_allclose(xray_display(ds), [[0, 10 / 255], [200 / 255, 1]], atol=1e-6)


def test_colour_radiograph_is_refused() -> None:
    ds = _radiograph(np.zeros((2, 2)), "MONOCHROME2", 12)
    ds.PhotometricInterpretation = "RGB"
    with pytest.raises(ShiftlabError, match="not greyscale"):
        xray_display(ds)


def test_xray_preprocessor_resizes_to_the_network_input(tmp_path: Path) -> None:
    stored = np.tile(np.arange(40), (30, 1)) * 100
    ds = _radiograph(stored, "MONOCHROME2", 12)
    out = XRayPreprocessor(size=16)([ds], {})
    assert out.shape == (1, 16, 16) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert np.all(np.diff(out[0], axis=1) > 0)  # the left-to-right ramp survives resizing


def _ct_with_bright_voxel(tmp_path: Path, voxel: tuple[int, int, int]) -> tuple[Path, ...]:
    """A 5-slice CT series of -1000 HU air with one 1000 HU voxel at (slice, row, column)."""

    def pixels(k: int, shape: tuple[int, int]) -> np.ndarray:
        plane = np.full(shape, 24)  # stored 24 = -1000 HU
        plane += np.arange(shape[1])[None, :]  # a column ramp, to check the orientation
        if k == voxel[0]:
            plane[voxel[1], voxel[2]] = 2024
        return plane

    written = write_series(
        tmp_path / "ct",
        patient_id="P",
        modality="CT",
        n_slices=5,
        shape=(16, 20),
        pixel_spacing=SPACING,
        slice_thickness=THICKNESS,
        origin=ORIGIN,
        shuffle_file_names=True,
        pixels=pixels,
        extra={"RescaleSlope": 1, "RescaleIntercept": -1024},
    )
    return written.files


def _centre_mm(voxel: tuple[int, int, int]) -> dict[str, float]:
    k, i, j = voxel
    # Axial: column index runs along +x (column spacing SPACING[1]), row index along +y.
    return {
        "center_x_mm": ORIGIN[0] + j * SPACING[1],
        "center_y_mm": ORIGIN[1] + i * SPACING[0],
        "center_z_mm": ORIGIN[2] + k * THICKNESS,
    }


def test_ct_patch_at_native_spacing_is_the_voxels_around_the_centre(tmp_path: Path) -> None:
    voxel = (2, 6, 9)
    slices = read_slices(_ct_with_bright_voxel(tmp_path, voxel))
    hu = np.stack([modality_values(ds) for ds in slices])
    patch = CTPatchPreprocessor(patch=(3, 5, 7), window=(-1000, 4096))(slices, _centre_mm(voxel))
    expected = window(hu[1:4, 4:9, 6:13], -1000, 4096)
    np.testing.assert_allclose(patch, expected, atol=1e-6)
    assert patch[1, 2, 3] == patch.max()  # the bright voxel is the centre


def test_ct_patch_resampled_to_a_finer_spacing_keeps_the_centre(tmp_path: Path) -> None:
    voxel = (2, 6, 9)
    slices = read_slices(_ct_with_bright_voxel(tmp_path, voxel))
    half = CTPatchPreprocessor(
        patch=(5, 9, 9), window=(-1000, 1000), spacing_mm=(THICKNESS / 2, 0.35, 0.4)
    )(slices, _centre_mm(voxel))
    assert half[2, 4, 4] == pytest.approx(1.0)  # 1000 HU at the top of the window
    # Half a native voxel away along z, linear interpolation halves the way to air.
    assert half[1, 4, 4] == pytest.approx(
        (1.0 + window(np.array([-1000.0 + 9]), -1000, 1000)[0]) / 2
    )
    assert half[2, 4, 5] < half[2, 4, 4]


def test_ct_patch_outside_the_scan_is_air(tmp_path: Path) -> None:
    voxel = (0, 0, 0)
    slices = read_slices(_ct_with_bright_voxel(tmp_path, voxel))
    patch = CTPatchPreprocessor(patch=(3, 3, 3), window=(-1000, 4096))(slices, _centre_mm(voxel))
    assert patch[1, 1, 1] == patch.max()
    np.testing.assert_array_equal(patch[0], 0)  # the slice before the first is padding (air)
    np.testing.assert_array_equal(patch[:, 0, :], 0)


def test_ct_patch_needs_the_centre_columns(tmp_path: Path) -> None:
    slices = read_slices(_ct_with_bright_voxel(tmp_path, (1, 1, 1)))
    with pytest.raises(ShiftlabError, match="center_x_mm"):
        CTPatchPreprocessor(patch=(3, 3, 3), window=(-1000, 4096))(slices, {"paths": "x"})
