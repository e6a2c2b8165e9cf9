"""Pixel decoding, preprocessing and the cache that spares a second decode."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.dicom_factory import write_series

from shiftlab.data import cache
from shiftlab.data.preprocess import (
    MRIPreprocessor,
    MRISlicePreprocessor,
    read_series,
    read_slices,
)
from shiftlab.errors import ShiftlabError
from shiftlab.manifest import PATH_SEPARATOR

MRI = "shiftlab.data.preprocess.MRIPreprocessor"


def test_read_series_applies_rescale_slope_and_intercept(tmp_path: Path) -> None:
    written = write_series(
        tmp_path / "s", patient_id="P1", extra={"RescaleSlope": 2, "RescaleIntercept": -1024}
    )
    volume = read_series(written.files)
    stored = np.stack([np.arange(64).reshape(8, 8) + 1000 * k for k in range(3)])
    np.testing.assert_array_equal(volume, stored * 2.0 - 1024)


def test_read_series_names_an_undecodable_file(tmp_path: Path) -> None:
    written = write_series(tmp_path / "s", patient_id="P1")
    broken = written.files[1]
    broken.write_bytes(broken.read_bytes()[:-40])  # pixel data cut short
    with pytest.raises(ShiftlabError, match=str(broken)):
        read_series(written.files)


@pytest.mark.parametrize("intensity", ["zscore", "percentile"])
def test_preprocessor_resamples_and_normalises(intensity: str) -> None:
    rng = np.random.default_rng(0)
    volume = rng.gamma(2.0, 300.0, size=(5, 40, 50)).astype(np.float32)
    out = MRIPreprocessor(slices=3, size=32, intensity=intensity).from_volume(volume)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    if intensity == "zscore":
        assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-3
    else:
        assert out.min() >= 0 and out.max() <= 1 and out.max() > 0.99


def test_preprocessor_rejects_unknown_intensity_method() -> None:
    with pytest.raises(ShiftlabError, match="zscore"):
        MRIPreprocessor(slices=3, size=32, intensity="minmax")


def test_cache_is_built_once_and_never_decodes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "dicom"
    paths = []
    for i in range(3):
        written = write_series(root / f"p{i}", patient_id=f"P{i}", shape=(16, 16))
        paths.append(PATH_SEPARATOR.join(str(f.relative_to(root)) for f in written.files))
    manifest = pd.DataFrame({"paths": paths})
    settings = {"_target_": MRI, "slices": 3, "size": 8, "intensity": "zscore"}
    first = np.array(
        cache.load_or_build(manifest, "sha-a", root, settings, tmp_path / "cache").arrays
    )
    assert first.shape == (3, 3, 8, 8)

    def no_decoding(files: object) -> None:
        raise AssertionError(f"decoded DICOM again: {files}")

    monkeypatch.setattr(cache, "read_slices", no_decoding)
    again = cache.load_or_build(manifest, "sha-a", root, settings, tmp_path / "cache").arrays
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, first)
    files = cache.files_fingerprint(manifest, root)
    key = cache.cache_key("sha-a", root, settings, files)
    assert list((tmp_path / "cache").iterdir()) == [tmp_path / "cache" / f"{key}.npy"]

    # Another manifest, other preprocessing or rewritten files: another entry, never stale.
    assert cache.cache_key("sha-b", root, settings, files) != key
    assert cache.cache_key("sha-a", root, {**settings, "size": 16}, files) != key
    first_file = root / paths[0].split(PATH_SEPARATOR)[0]
    os.utime(first_file, ns=(0, first_file.stat().st_mtime_ns + 1))
    assert cache.files_fingerprint(manifest, root) != files


def test_each_series_is_decoded_once_however_many_samples_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slice- or nodule-level samples share their series: decoding it per sample would cost
    40x on Duke's slice samples. Rows are interleaved, and each keeps its own array."""
    root = tmp_path / "dicom"
    series = []
    for i in range(2):
        written = write_series(root / f"p{i}", patient_id=f"P{i}", n_slices=4, shape=(16, 16))
        series.append(PATH_SEPARATOR.join(str(f.relative_to(root)) for f in written.files))
    manifest = pd.DataFrame(
        {"paths": [series[k % 2] for k in range(6)], "slice_index": [0, 0, 1, 1, 3, 3]}
    )
    decoded = []

    def counting(files):
        decoded.append(tuple(files))
        return read_slices(files)

    monkeypatch.setattr(cache, "read_slices", counting)
    settings = {"_target_": "shiftlab.data.preprocess.MRISlicePreprocessor", "size": 8}
    arrays = cache.load_or_build(manifest, "sha", root, settings, tmp_path / "cache").arrays
    assert len(decoded) == 2
    expected = MRISlicePreprocessor(size=8)
    for row, sample in manifest.iterrows():
        slices = read_slices([root / p for p in sample["paths"].split(PATH_SEPARATOR)])
        np.testing.assert_array_equal(arrays[row], expected(slices, sample.to_dict()))


def test_a_missing_file_is_named_before_any_decoding(tmp_path: Path) -> None:
    written = write_series(tmp_path / "dicom" / "p0", patient_id="P0")
    manifest = pd.DataFrame({"paths": [f"p0/{f.name}" for f in written.files[:1]]})
    written.files[0].unlink()
    with pytest.raises(ShiftlabError, match=r"1-01.dcm is listed in the manifest but missing"):
        cache.files_fingerprint(manifest, tmp_path / "dicom")


def test_same_manifest_over_another_dicom_tree_is_not_served_from_cache(tmp_path: Path) -> None:
    """Two trees with identical relative paths and UIDs but different pixels."""
    settings = {"_target_": MRI, "slices": 3, "size": 8, "intensity": "percentile"}
    arrays = []
    for name, step in (("a", 1), ("b", 7)):
        root = tmp_path / name
        written = write_series(
            root / "p0",
            patient_id="P0",
            series_uid="1.2.3.4",
            shape=(16, 16),
            pixels=lambda k, shape, step=step: (np.arange(256).reshape(shape) * step) % 200 + k,
        )
        joined = PATH_SEPARATOR.join(str(f.relative_to(root)) for f in written.files)
        manifest = pd.DataFrame({"paths": [joined]})
        arrays.append(
            np.array(cache.load_or_build(manifest, "sha", root, settings, tmp_path / "c").arrays)
        )
    assert not np.array_equal(arrays[0], arrays[1])


def test_failed_cache_build_leaves_no_partial_file(tmp_path: Path) -> None:
    root = tmp_path / "dicom"
    written = write_series(root / "p0", patient_id="P0")
    written.files[0].write_bytes(b"not dicom")
    manifest = pd.DataFrame(
        {"paths": [PATH_SEPARATOR.join(str(f.relative_to(root)) for f in written.files)]}
    )
    settings = {"_target_": MRI, "slices": 3, "size": 8, "intensity": "zscore"}
    with pytest.raises(ShiftlabError):
        cache.load_or_build(manifest, "sha", root, settings, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
