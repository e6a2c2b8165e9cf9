"""The synthetic CT generator writes real, deterministic two-vendor DICOM with nodule centres."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import UID, CTImageStorage
from scipy.ndimage import gaussian_filter

from shiftlab.labels import read_label_table
from shiftlab.synth.common import seeded_rng
from shiftlab.synth.ct import (
    COVERAGE_MM,
    LABEL_COLUMNS,
    MATRIX,
    RESCALE_INTERCEPT,
    VENDORS,
    generate,
    render_series,
    vendor_acquisition,
)

UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
PATIENTS = 4


def read_series(root: Path) -> dict[str, list[pydicom.Dataset]]:
    """SeriesInstanceUID -> its slices in increasing z, for every series under ``root/dicom``."""
    series: dict[str, list[pydicom.Dataset]] = {}
    for path in sorted((root / "dicom").rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    return {
        uid: sorted(slices, key=lambda ds: float(ds.ImagePositionPatient[2]))
        for uid, slices in series.items()
    }


def volume_hu(slices: list[pydicom.Dataset]) -> np.ndarray:
    return np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices]
    )


def grain(slices: list[pydicom.Dataset]) -> float:
    """Typical in-plane high-pass amplitude in the lung (HU): noise level and kernel sharpness.

    A median, so the few edges of vessels, nodule and chest wall do not decide it.
    """
    hu = volume_hu(slices)
    high_pass = hu - gaussian_filter(hu, (0, 1.5, 1.5))
    return float(np.median(np.abs(high_pass[hu < -600])))


@pytest.fixture(scope="module")
def full_shift(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("ct-full"), patients_per_vendor=PATIENTS, severity=1.0)


@pytest.fixture(scope="module")
def no_shift(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("ct-none"), patients_per_vendor=PATIENTS, severity=0.0)


def test_same_arguments_same_files_other_settings_other_uids(tmp_path: Path) -> None:
    args = {"patients_per_vendor": 2, "severity": 1.0}
    runs = {
        "a": generate(tmp_path / "a", seed=5, **args),
        "b": generate(tmp_path / "b", seed=5, **args),
        "seed": generate(tmp_path / "seed", seed=6, **args),
        "contrast": generate(tmp_path / "contrast", seed=5, lesion_contrast=0.5, **args),
    }
    files = {
        name: {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted((root / "dicom").rglob("*.dcm"))
        }
        for name, root in runs.items()
    }
    assert files["a"] and files["a"] == files["b"]
    assert (runs["a"] / "labels.csv").read_bytes() == (runs["b"] / "labels.csv").read_bytes()
    uids = {
        name: {str(pydicom.dcmread(p).SOPInstanceUID) for p in (root / "dicom").rglob("*.dcm")}
        for name, root in runs.items()
    }
    # Every setting is part of the acquisition: change one and every UID is new.
    assert uids["a"].isdisjoint(uids["seed"])
    assert uids["a"].isdisjoint(uids["contrast"])
    assert files["seed"].keys() == files["a"].keys()
    assert all(files["seed"][p] != files["a"][p] for p in files["a"])


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_headers_describe_the_scanner_and_the_geometry(vendor: str, full_shift: Path) -> None:
    spec = VENDORS[vendor]
    thickness = spec.acquisition["slice_thickness"]
    patients = sorted((full_shift / "dicom").glob(f"SYN_{vendor.upper()}_*"))
    assert [p.name for p in patients] == [f"SYN_{vendor.upper()}_{i:04d}" for i in range(PATIENTS)]
    files = sorted(patients[0].rglob("*.dcm"))
    # TCIA layout: dicom/<PatientID>/<date-study>/<series>/1-NN.dcm, one file per slice.
    assert all(len(f.relative_to(patients[0]).parts) == 3 for f in files)
    n_slices = round(COVERAGE_MM / thickness)
    assert [f.name for f in files] == [f"1-{k:02d}.dcm" for k in range(1, n_slices + 1)]
    slices = [pydicom.dcmread(f) for f in files]
    for k, ds in enumerate(slices):
        assert ds.SOPClassUID == CTImageStorage == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        for keyword in UID_KEYWORDS:
            assert UID(str(ds[keyword].value)).is_valid, keyword
        assert ds.Modality == "CT"
        assert ds.Manufacturer == spec.manufacturer
        assert ds.ManufacturerModelName == spec.model_name
        assert ds.ConvolutionKernel == spec.kernel_name
        assert float(ds.KVP) == spec.kvp
        assert ds.PatientID == patients[0].name
        assert str(ds.PatientName) == "Synthetic^Patient"
        assert ds.InstanceNumber == k + 1
        assert (ds.Rows, ds.Columns) == (MATRIX, MATRIX)
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        spacing = [float(v) for v in ds.PixelSpacing]
        assert spacing[0] == spacing[1] and 0.7 <= spacing[0] <= 0.83
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == thickness
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, RESCALE_INTERCEPT)
        assert ds.BitsStored == spec.bits_stored
        assert ds.PixelRepresentation == spec.pixel_representation
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert ds.pixel_array.max() < 2**spec.bits_stored
        assert hu.min() >= RESCALE_INTERCEPT and -900 < np.median(hu) < -750  # mostly lung
    assert len({ds.SeriesInstanceUID for ds in slices}) == 1
    assert len({ds.SOPInstanceUID for ds in slices}) == n_slices
    # Contiguous slices in increasing z, one slice thickness apart, same in-plane position.
    z = [float(ds.ImagePositionPatient[2]) for ds in slices]
    assert np.diff(z) == pytest.approx([thickness] * (n_slices - 1))
    assert len({tuple(ds.ImagePositionPatient[:2]) for ds in slices}) == 1


def test_labels_give_each_nodule_a_centre_that_points_at_it(full_shift: Path) -> None:
    labels = pd.read_csv(full_shift / "labels.csv", dtype={"series_uid": str})
    assert tuple(labels.columns) == LABEL_COLUMNS
    assert len(labels) == 2 * PATIENTS and labels["series_uid"].is_unique
    assert set(labels["malignant"]) == {0, 1}
    series = read_series(full_shift)
    assert set(series) == set(labels["series_uid"])
    offsets = []
    for row in labels.itertuples():
        slices = series[row.series_uid]
        first = slices[0]
        x0, y0, z0 = (float(v) for v in first.ImagePositionPatient)
        dy, dx = (float(v) for v in first.PixelSpacing)
        # voxel = (centre - ImagePositionPatient of the first slice) / spacing
        voxel = np.array(
            [
                (row.center_z_mm - z0) / float(first.SpacingBetweenSlices),
                (row.center_y_mm - y0) / dy,
                (row.center_x_mm - x0) / dx,
            ]
        )
        hu = volume_hu(slices)
        assert np.all(voxel >= 0) and np.all(voxel <= np.array(hu.shape) - 1), voxel
        k, i, j = np.round(voxel).astype(int)
        lung = np.median(hu)
        assert hu[k, i, j] > -400 and hu[k, i, j] > lung + 400, (row.series_uid, hu[k, i, j])
        offsets.append(np.abs(voxel[1:] - (MATRIX - 1) / 2).max())
    # A crop must use the centre: the nodule is not simply in the middle of the series.
    assert np.median(offsets) > 1
    # The table is what ingest reads: one sample per (series, nodule) with its centre.
    table = read_label_table(
        full_shift / "labels.csv",
        key_column="series_uid",
        key_tag="SeriesInstanceUID",
        label_column="malignant",
        sample_column="nodule_id",
        extra_columns=["center_x_mm", "center_y_mm", "center_z_mm"],
    )
    assert sum(len(s) for s in table.samples.values()) == len(labels)


def test_severity_zero_makes_the_vendors_render_alike(no_shift: Path) -> None:
    at_zero = {v: vendor_acquisition(v, 0.0) for v in VENDORS}
    assert at_zero["ge"] == at_zero["siemens"]
    # The same patient scanned by both vendors at severity 0 gives the same HU volume.
    scans = [render_series(seeded_rng(0, "same", 1), at_zero[v], True, 1.0) for v in VENDORS]
    assert np.array_equal(scans[0].hu, scans[1].hu)
    # In the files: one geometry, and the same grain (noise and kernel) on both vendors.
    series = read_series(no_shift)
    by_vendor = {
        v: [s for s in series.values() if s[0].PatientID.startswith(f"SYN_{v.upper()}_")]
        for v in VENDORS
    }
    thickness = {float(s[0].SliceThickness) for group in by_vendor.values() for s in group}
    assert len(thickness) == 1
    assert len({len(s) for group in by_vendor.values() for s in group}) == 1
    grains = {v: np.median([grain(s) for s in group]) for v, group in by_vendor.items()}
    assert grains["ge"] == pytest.approx(grains["siemens"], rel=0.15)


def test_severity_one_keeps_each_vendor_slice_thickness_and_kernel(full_shift: Path) -> None:
    series = read_series(full_shift)
    by_vendor = {
        v: [s for s in series.values() if s[0].PatientID.startswith(f"SYN_{v.upper()}_")]
        for v in VENDORS
    }
    for vendor, group in by_vendor.items():
        thickness = VENDORS[vendor].acquisition["slice_thickness"]
        assert {float(s[0].SliceThickness) for s in group} == {thickness}
    grains = {v: np.median([grain(s) for s in group]) for v, group in by_vendor.items()}
    # GE: sharp kernel, thin slices, white noise; Siemens: smooth kernel, correlated noise.
    assert grains["ge"] > 2 * grains["siemens"]


def test_generator_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="patients_per_vendor"):
        generate(tmp_path, patients_per_vendor=0)
    with pytest.raises(ValueError, match="unknown vendors"):
        generate(tmp_path, patients_per_vendor=1, vendors=("ge", "acme"))
    with pytest.raises(ValueError, match="severity"):
        generate(tmp_path, patients_per_vendor=1, severity=-0.5)
    # Past full shift GE's white noise would need a negative correlation length.
    with pytest.raises(ValueError, match="extrapolates ge noise_corr"):
        generate(tmp_path, patients_per_vendor=1, severity=1.5)
    assert not (tmp_path / "labels.csv").exists()
