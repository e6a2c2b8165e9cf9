"""The DICOM reader's warnings reach the console and the logs once per kind, with no raw UID.

Real files carry UIDs whose components start with a zero (``…8.971.00.3788…`` in
rvbCMTS/PySkinDose#50; PS3.5 9.1 forbids it), and pixel data with excess padding (older writers,
pydicom/pydicom#796; PS3.5 8.1.1 asks readers to accept it). pydicom reads both and warns, once
through its logger and once as a Python warning, quoting the UID. Here a small tree whose Study,
Series and SOP Instance UIDs all have such a component, and whose pixel data is padded, is
ingested from the command line (Hydra's console and ``ingest.log``), then decoded into the
preprocessing cache in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from helpers.compose import REPO
from helpers.dicom_factory import write_series

from shiftlab.data.cache import load_or_build
from shiftlab.manifest import CSV_NAME, JSON_NAME

# A registry root as real files spell it, with a zero-led component after it.
ROOT = "1.2.826.0.1.3680043.8.971.00"
SLICES = 3
KIND = "Invalid value for VR UI: <value>."
PADDING = 4
PADDED = (
    f"The pixel data is {16 * 16 * 2 + PADDING} bytes long, which indicates it contains "
    f"{PADDING} bytes of excess padding to be removed"
)


def write_zero_led_tree(root: Path) -> list[str]:
    """4 patients per vendor, 2 of each class, 16 x 16 pixels padded; returns every UID written
    (all invalid)."""
    uids, labels = [], {}
    for vendor_index, manufacturer in enumerate(("GE MEDICAL SYSTEMS", "SIEMENS")):
        for i in range(4):
            study, series = f"{ROOT}.0{vendor_index}{i}1", f"{ROOT}.0{vendor_index}{i}2"
            written = write_series(
                root / "dicom" / f"PAT{vendor_index}{i}" / "study" / "series",
                patient_id=f"PAT{vendor_index}{i}",
                manufacturer=manufacturer,
                study_uid=study,
                series_uid=series,
                n_slices=SLICES,
                shape=(16, 16),
            )
            for k, path in enumerate(written.files):
                ds = pydicom.dcmread(path)
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{series}.0{k}"
                ds.PixelData += bytes(PADDING)
                ds.save_as(path)
                uids.append(ds.SOPInstanceUID)
            uids += [study, series]
            labels[series] = int(i >= 2)
    pd.DataFrame({"series_uid": list(labels), "lesion": list(labels.values())}).to_csv(
        root / "labels.csv", index=False
    )
    return sorted(set(uids))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("zero-led-uids")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when writing such UIDs too
        uids = write_zero_led_tree(base / "root")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "shiftlab.ingest",
            f"paths.data_dir='{base / 'data'}'",
            f"paths.output_dir='{base / 'out'}'",
            f"dataset.root='{base / 'root'}'",
        ],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    [log] = (base / "out").rglob("ingest.log")
    manifest_dir = base / "root" / "manifest" / "split_seed0"
    return {
        "base": base,
        "uids": uids,
        "console": run.stdout + run.stderr,
        "log": log.read_text(),
        "manifest_dir": manifest_dir,
    }


def raw_uids_in(text: str, uids: list[str]) -> list[str]:
    return [uid for uid in uids if uid in text]


def test_the_files_make_pydicom_warn_with_the_raw_uid(ingested: dict) -> None:
    """The check below is not vacuous: reading a header of the tree warns, quoting its UID."""
    path = next((ingested["base"] / "root" / "dicom").rglob("*.dcm"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        uid = pydicom.dcmread(path).SeriesInstanceUID
    assert any(uid in str(w.message) for w in caught)


def test_ingest_shows_each_reader_warning_once_without_raw_uids(ingested: dict) -> None:
    console, log, uids = ingested["console"], ingested["log"], ingested["uids"]
    assert raw_uids_in(console, uids) == [], "the console quotes raw UIDs"
    assert raw_uids_in(log, uids) == [], "ingest.log quotes raw UIDs"
    assert "UserWarning" not in console, "pydicom's warning was printed besides its log line"
    # Once in the console and once in the log, counted: 3 UIDs read per file.
    n_files = 8 * SLICES
    for text in (console, log):
        [line] = [line for line in text.splitlines() if "Invalid value for VR UI" in line]
        assert f"{3 * n_files}  {KIND}" in line
    # The examples are keyed pseudonyms: a study's or series' UID has the 16 hex digits of its
    # study_id / series_id in the manifest.
    [line] = [line for line in console.splitlines() if KIND in line]
    examples = line.split("(e.g. ")[1].rstrip(")").split(", ")
    assert examples and all(e.startswith("v-") and len(e) == 18 for e in examples)
    manifest = pd.read_csv(ingested["manifest_dir"] / CSV_NAME)
    known = {i[-16:] for i in (*manifest["study_id"], *manifest["series_id"])}
    assert any(e[2:] in known for e in examples)


def test_cache_build_shows_each_reader_warning_once_by_sample_id(
    ingested: dict, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    manifest_dir = ingested["manifest_dir"]
    manifest = pd.read_csv(manifest_dir / CSV_NAME, dtype={"split": str})
    sha256 = pd.read_json(manifest_dir / JSON_NAME, typ="series")["sha256"]
    preprocess = {
        "_target_": "shiftlab.data.preprocess.MRIPreprocessor",
        "slices": SLICES,
        "size": 16,
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = load_or_build(
            manifest,
            sha256,
            ingested["base"] / "root" / "dicom",
            preprocess,
            ingested["base"] / "cache",
        )
    assert built.arrays.shape == (len(manifest), SLICES, 16, 16) and built.excluded.empty
    captured = capfd.readouterr()
    shown = [captured.out, captured.err, caplog.text, *(str(w.message) for w in caught)]
    assert raw_uids_in("\n".join(shown), ingested["uids"]) == []
    # One line for all 24 files, counted, and named by the samples' pseudonymous ids.
    lines = [line for text in shown for line in text.splitlines() if "excess padding" in line]
    [line] = lines
    assert f"{8 * SLICES}  {PADDED}" in line
    examples = line.split("(e.g. ")[1].rstrip(")").split(", ")
    assert examples and set(examples) <= set(manifest["sample_id"])
