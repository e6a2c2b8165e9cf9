"""The synthetic chest radiographs are real DX DICOM that a correct reader turns into images.

The vendors encode their pixels differently on purpose (MONOCHROME1 vs MONOCHROME2, 14 vs 12
bits, VOI LUT Sequence vs window), so these tests decode every file the way the preprocessing
does and check that the result is a sensible radiograph, identical in rendering at severity 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.pixels import apply_voi_lut
from pydicom.uid import UID, DigitalXRayImageStorageForPresentation

from shiftlab.ingest.vendors import normalise_vendor
from shiftlab.synth import common, xray
from shiftlab.synth.severity import interpolate_vendor
from shiftlab.synth.xray import VENDORS, generate

PATIENTS = 6
SEVERITY = 0.45
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@pytest.fixture(scope="module")
def xray_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(
        tmp_path_factory.mktemp("xray"), patients_per_vendor=PATIENTS, seed=1, severity=SEVERITY
    )


def decode(ds: pydicom.Dataset) -> np.ndarray:
    """Stored values -> display image in [0, 1], bright = dense: what the preprocessing does."""
    values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    if "VOILUTSequence" in ds:
        lut_bits = ds.VOILUTSequence[0].LUTDescriptor[2]
        image = apply_voi_lut(np.round(values).astype(np.int64), ds) / (2**lut_bits - 1)
    elif "WindowCenter" in ds:
        centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
        image = np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0, 1)
    else:
        image = values / (2**ds.BitsStored - 1)
    return 1 - image if ds.PhotometricInterpretation == "MONOCHROME1" else image


def patient_file(root: Path, vendor: str, index: int) -> Path:
    (path,) = (root / "dicom" / f"SYN_{vendor.upper()}_{index:04d}").rglob("*.dcm")
    return path


def read_tree(root: Path) -> dict[str, tuple]:
    """Relative path -> (pixel bytes, UIDs) of every file under ``root/dicom``."""
    return {
        f.relative_to(root).as_posix(): (
            (ds := pydicom.dcmread(f)).PixelData,
            tuple(str(ds[k].value) for k in UID_KEYWORDS),
        )
        for f in sorted((root / "dicom").rglob("*.dcm"))
    }


def test_one_file_per_patient_in_the_tcia_layout_and_a_label_for_each(xray_set: Path) -> None:
    files = sorted((xray_set / "dicom").rglob("*.dcm"))
    assert len(files) == 2 * PATIENTS
    for f in files:
        parts = f.relative_to(xray_set / "dicom").parts
        assert len(parts) == 4 and parts[-1] == "1-1.dcm", parts
    labels = pd.read_csv(xray_set / "labels.csv", dtype={"series_uid": str})
    assert list(labels.columns) == ["series_uid", "finding"]
    assert set(labels["finding"]) == {0, 1}
    series = {str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in files}
    assert series == set(labels["series_uid"])


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_headers_describe_the_detector_and_its_encoding(vendor: str, xray_set: Path) -> None:
    spec = VENDORS[vendor]
    ds = pydicom.dcmread(patient_file(xray_set, vendor, 0))
    assert normalise_vendor(ds.Manufacturer) == vendor
    assert ds.ManufacturerModelName == spec.model_name
    assert ds.SOPClassUID == DigitalXRayImageStorageForPresentation
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    for keyword in UID_KEYWORDS:
        assert UID(str(ds[keyword].value)).is_valid, keyword
    assert (ds.Modality, ds.PresentationIntentType) == ("DX", "FOR PRESENTATION")
    assert (ds.BodyPartExamined, ds.ViewPosition) == ("CHEST", "PA")
    other = next(v for k, v in VENDORS.items() if k != vendor)
    # The matrix moves with severity (the set is at the default) like every rendering setting.
    matrix = round(interpolate_vendor(spec.acquisition, other.acquisition, SEVERITY)["matrix"])
    assert (ds.Rows, ds.Columns) == (matrix, matrix)
    assert ds.PhotometricInterpretation == spec.photometric
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (
        16,
        spec.bits_stored,
        spec.bits_stored - 1,
    )
    assert 0 < ds.pixel_array.max() <= 2**spec.bits_stored - 1
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1, 0)
    # High stored values mean less X-ray intensity exactly when high values are shown bright.
    assert ds.PixelIntensityRelationshipSign == (1 if spec.photometric == "MONOCHROME1" else -1)
    if spec.voi == "lut":
        (item,) = ds.VOILUTSequence
        assert list(item.LUTDescriptor) == [2**spec.bits_stored, 0, xray.LUT_BITS]
        assert "WindowCenter" not in ds
    else:
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (
            2 ** (spec.bits_stored - 1),
            2**spec.bits_stored,
        )
        assert "VOILUTSequence" not in ds


def region(image: np.ndarray, x: tuple[float, float], y: tuple[float, float]) -> np.ndarray:
    """Pixels between ``x`` (columns) and ``y`` (rows) given in the generator's [-1, 1] frame."""
    rows, cols = (
        slice(*(round((v + 1) / 2 * (n - 1)) for v in span))
        for n, span in zip(image.shape, (y, x), strict=True)
    )
    return image[rows, cols]


def test_a_correct_reader_gets_a_chest_radiograph_from_every_file(xray_set: Path) -> None:
    """Outside the body black, lungs dark, spine bright: each encoding is consistent."""
    for path in sorted((xray_set / "dicom").rglob("*.dcm")):
        image = decode(pydicom.dcmread(path))
        assert image.min() >= 0 and image.max() <= 1
        assert region(image, (-1, -0.9), (-1, -0.9)).mean() < 0.05, path
        left, right = (region(image, x, (-0.25, 0.05)) for x in ((-0.5, -0.35), (0.35, 0.5)))
        lungs = np.median(np.r_[left.ravel(), right.ravel()])
        spine = np.median(region(image, (-0.04, 0.04), (0, 0.3)))
        assert 0.02 < lungs < 0.6 and spine > 0.75, (path, lungs, spine)


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    first = read_tree(generate(tmp_path / "a", patients_per_vendor=2, seed=7))
    again = read_tree(generate(tmp_path / "b", patients_per_vendor=2, seed=7))
    other = read_tree(generate(tmp_path / "c", patients_per_vendor=2, seed=8))
    assert again == first
    labels = [(tmp_path / run / "labels.csv").read_bytes() for run in "abc"]
    assert labels[0] == labels[1] != labels[2]
    assert other.keys() == first.keys()
    for path, (pixels, uids) in first.items():
        assert other[path][0] != pixels, path
        assert set(other[path][1]).isdisjoint(uids), path


def image_statistics(root: Path, vendor: str, index: int) -> np.ndarray:
    image = decode(pydicom.dcmread(patient_file(root, vendor, index)))
    return np.r_[image.mean(), image.std(), np.percentile(image, [5, 25, 50, 75, 95])]


def test_severity_zero_renders_one_patient_alike_on_both_vendors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the encodings differ at severity 0, and correct decoding undoes them.

    The same random patient goes to both vendors (the generator normally draws each vendor its
    own patients). The matrices differ, so the comparison is by image statistics.
    """
    vendor_specific = common.seeded_rng
    monkeypatch.setattr(common, "seeded_rng", lambda seed, _vendor, i: vendor_specific(seed, i))
    for severity, low, high in ((0.0, 0.0, 0.02), (1.0, 0.1, 1.0)):
        root = generate(tmp_path / str(severity), patients_per_vendor=3, severity=severity)
        for i in range(3):
            gap = np.abs(image_statistics(root, "ge", i) - image_statistics(root, "philips", i))
            assert low <= gap.max() < high, (severity, i, gap)


def test_generator_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="patients_per_vendor"):
        generate(tmp_path, patients_per_vendor=0)
    with pytest.raises(ValueError, match="unknown vendors"):
        generate(tmp_path, patients_per_vendor=1, vendors=("ge", "acme"))
