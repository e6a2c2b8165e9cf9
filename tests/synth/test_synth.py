"""The synthetic generator writes real, deterministic two-vendor DICOM that ingest accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from helpers.sets import SyntheticSet
from pydicom.uid import UID

from shiftlab.synth.mri import FIELD_OF_VIEW_MM, SLICE_THICKNESS_MM, SLICES, VENDORS, generate
from shiftlab.synth.severity import interpolate_vendor

UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def read_tree(root: Path) -> dict[str, tuple]:
    """Relative path -> (pixel bytes, UIDs, PatientID) of every file under ``root/dicom``."""
    files = sorted((root / "dicom").rglob("*.dcm"))
    assert files, f"no DICOM files under {root}"
    return {
        f.relative_to(root).as_posix(): (
            (ds := pydicom.dcmread(f)).PixelData,
            tuple(str(ds[k].value) for k in UID_KEYWORDS),
            ds.PatientID,
        )
        for f in files
    }


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    args = {"patients_per_vendor": 3, "severity": 1.0}
    first = read_tree(generate(tmp_path / "a", seed=11, **args))
    again = read_tree(generate(tmp_path / "b", seed=11, **args))
    other = read_tree(generate(tmp_path / "c", seed=12, **args))

    assert len(first) == 2 * 3 * SLICES
    assert again == first
    labels = [(tmp_path / run / "labels.csv").read_bytes() for run in "abc"]
    assert labels[0] == labels[1] != labels[2]
    # Same patients and files, but every image and every UID is new.
    assert other.keys() == first.keys()
    for path, (pixels, uids, _) in first.items():
        assert other[path][0] != pixels, path
        assert set(other[path][1]).isdisjoint(uids), path


def test_severity_knob_reaches_the_pixels(tmp_path: Path) -> None:
    full = read_tree(generate(tmp_path / "full", patients_per_vendor=2, severity=1.0, seed=3))
    none = read_tree(generate(tmp_path / "none", patients_per_vendor=2, severity=0.0, seed=3))
    assert full.keys() == none.keys()
    assert all(full[p][0] != none[p][0] for p in full)
    # Same patients and files, but other acquisitions: new UIDs, so the two sets' manifests
    # (and everything keyed by them) can never be mistaken for each other.
    assert all(full[p][2] == none[p][2] for p in full)
    assert all(set(full[p][1]).isdisjoint(none[p][1]) for p in full)


def test_severity_zero_makes_the_vendors_identical_and_one_keeps_their_own() -> None:
    ge, siemens = VENDORS["ge"].acquisition, VENDORS["siemens"].acquisition
    assert ge != siemens
    at_zero = interpolate_vendor(ge, siemens, 0.0)
    assert at_zero == pytest.approx(interpolate_vendor(siemens, ge, 0.0))
    assert interpolate_vendor(ge, siemens, 1.0) == pytest.approx(ge)
    assert interpolate_vendor(siemens, ge, 1.0) == pytest.approx(siemens)
    # In between, every parameter moves monotonically from the midpoint to the vendor's own.
    half = interpolate_vendor(ge, siemens, 0.5)
    for name in ge:
        low, high = sorted((at_zero[name], ge[name]))
        assert low <= half[name] <= high, name
    with pytest.raises(ValueError, match="severity"):
        interpolate_vendor(ge, siemens, -0.1)


def test_generator_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="patients_per_vendor"):
        generate(tmp_path, patients_per_vendor=0)
    with pytest.raises(ValueError, match="unknown vendors"):
        generate(tmp_path, patients_per_vendor=1, vendors=("ge", "acme"))


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_headers_describe_the_scanner_and_the_geometry(
    vendor: str, small_set: SyntheticSet
) -> None:
    spec = VENDORS[vendor]
    patients = sorted(small_set.dicom_root.glob(f"SYN_{vendor.upper()}_*"))
    assert len(patients) == small_set.patients_per_vendor
    files = sorted(patients[0].rglob("*.dcm"))
    assert len(files) == SLICES
    slices = [pydicom.dcmread(f) for f in files]
    for ds in slices:
        assert ds.Manufacturer == spec.manufacturer
        assert ds.ManufacturerModelName == spec.model_name
        assert float(ds.MagneticFieldStrength) == spec.field_strength
        assert ds.Modality == "MR"
        assert ds.PatientID == patients[0].name
        for keyword in UID_KEYWORDS:
            assert UID(str(ds[keyword].value)).is_valid, keyword
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert (ds.Rows, ds.Columns) == (spec.matrix, spec.matrix)
        spacing = FIELD_OF_VIEW_MM / spec.matrix
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([spacing, spacing])
        assert len(ds.ImagePositionPatient) == 3
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        pixels = ds.pixel_array
        assert pixels.shape == (spec.matrix, spec.matrix) and 0 < pixels.max() <= 65535
    # One study and one series per patient; distinct slices, one slice thickness apart.
    assert len({ds.StudyInstanceUID for ds in slices}) == 1
    assert len({ds.SeriesInstanceUID for ds in slices}) == 1
    assert len({ds.SOPInstanceUID for ds in slices}) == SLICES
    z = sorted(float(ds.ImagePositionPatient[2]) for ds in slices)
    assert np.diff(z) == pytest.approx([SLICE_THICKNESS_MM] * (SLICES - 1))


def test_labels_cover_every_series_with_both_classes(small_set: SyntheticSet) -> None:
    labels = pd.read_csv(small_set.root / "labels.csv", dtype={"series_uid": str})
    assert list(labels.columns) == ["series_uid", "lesion"]
    assert len(labels) == 2 * small_set.patients_per_vendor
    assert labels["series_uid"].is_unique
    assert set(labels["lesion"]) == {0, 1}
    series = {
        str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID)
        for f in small_set.dicom_root.rglob("1-01.dcm")
    }
    assert series == set(labels["series_uid"])


def test_ingested_set_has_both_vendors_and_both_labels_in_every_split(
    small_set: SyntheticSet,
) -> None:
    manifest = small_set.manifest()
    assert len(manifest) == 2 * small_set.patients_per_vendor
    assert set(manifest["vendor"]) == {"ge", "siemens"}
    assert set(manifest["manufacturer"]) == {VENDORS[v].manufacturer for v in ("ge", "siemens")}
    cells = manifest.groupby(["vendor", "split"])["label"].agg(lambda s: sorted(set(s)))
    assert len(cells) == 2 * 3
    assert all(labels == [0, 1] for labels in cells), cells
    assert (manifest["n_slices"] == SLICES).all()
    # Identifiers are pseudonyms; only the file paths (the download's own folder names) are raw.
    for column in ("sample_id", "patient_id", "study_id", "series_id"):
        assert not manifest[column].str.contains("SYN_").any(), column
    assert manifest["patient_id"].str.startswith("p-").all()
    assert manifest["patient_id"].nunique() == len(manifest)
