"""Bring your own dataset: a sample table written by hand, over DICOM files nobody here wrote
(pydicom's own test files), imported and trained through the same DataModule."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from helpers.compose import compose_config, compose_train
from helpers.dicom_factory import copy_as_new_scan
from pydicom.data import get_testdata_file

from shiftlab.errors import ShiftlabError
from shiftlab.ingest.run import run_ingest
from shiftlab.manifest import load_manifest
from shiftlab.train import train

# pydicom's sample MR images in several encodings (explicit/implicit VR, big endian, RLE,
# JPEG 2000): real files from a Toshiba and a Siemens scanner, not written by shiftlab.
PYDICOM_FILES = (
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "examples_overlay.dcm",
)
PATIENTS_PER_VENDOR = 12
VENDORS = {"ge": "GE MEDICAL SYSTEMS", "siemens": "Siemens Healthineers"}
SMALL = ("dataset.preprocess.slices=1", "dataset.preprocess.size=32")


def write_table(root: Path, rows: list[dict]) -> Path:
    path = root / "samples.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def byo_rows(root: Path) -> list[dict]:
    """12 patients per vendor, labels alternating; every fourth sample is a folder."""
    rows = []
    for vendor_index, manufacturer in enumerate(VENDORS.values()):
        for i in range(PATIENTS_PER_VENDOR):
            name = PYDICOM_FILES[(i + vendor_index) % len(PYDICOM_FILES)]
            folder = root / "scans" / f"v{vendor_index}p{i:02d}"
            folder.mkdir(parents=True)
            copy_as_new_scan(get_testdata_file(name), folder / name)
            path = folder.relative_to(root) if i % 4 == 0 else (folder / name).relative_to(root)
            rows.append(
                {
                    "path": path.as_posix(),
                    "patient_id": f"P{vendor_index}{i:02d}",
                    "manufacturer": manufacturer,
                    "label": i % 2,
                }
            )
    return rows


def custom_config(tmp_path: Path, config_name: str = "ingest", *overrides: str):
    compose = compose_train if config_name == "train" else compose_config
    args = ("dataset=custom", *SMALL, *overrides)
    if config_name == "train":
        return compose(tmp_path / "data", tmp_path / "out", *args)
    return compose(config_name, tmp_path / "data", tmp_path / "out", *args)


def test_hand_written_table_imports_and_trains(tmp_path: Path) -> None:
    root = tmp_path / "data" / "custom"
    rows = byo_rows(root)
    write_table(root, rows)
    cfg = custom_config(tmp_path)
    run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)

    manifest, _ = load_manifest(cfg.dataset.manifest_dir)
    assert len(manifest) == len(rows)
    assert manifest["vendor"].value_counts().to_dict() == dict.fromkeys(
        VENDORS, PATIENTS_PER_VENDOR
    )
    assert not manifest["patient_id"].isin([r["patient_id"] for r in rows]).any()
    for vendor in VENDORS:
        for split in ("train", "val", "test"):
            part = manifest[(manifest["vendor"] == vendor) & (manifest["split"] == split)]
            assert set(part["label"]) == {0, 1}, (vendor, split)

    run_cfg = custom_config(
        tmp_path, "train", "trainer.max_epochs=1", "data.batch_size=4", "model=smallcnn"
    )
    result = train(run_cfg, tmp_path / "run")
    assert (tmp_path / "run" / "done").exists()
    assert set(result["metrics"]) >= {"test/ge/auroc", "test/siemens/auroc", "test/delta_auroc"}
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert (predictions["split"] == "test").sum() == (manifest["split"] == "test").sum()


def test_given_splits_are_kept_and_bad_rows_are_skipped_with_a_reason(tmp_path: Path) -> None:
    root = tmp_path / "data" / "custom"
    rows = byo_rows(root)
    for i, row in enumerate(rows):
        row["split"] = ("train", "train", "val", "test")[i // 2 % 4]
    rows.append({**rows[0], "path": "scans/not-there.dcm", "patient_id": "PX"})
    (root / "scans" / "notes.txt").write_text("not a DICOM file")
    rows.append({**rows[0], "path": "scans/notes.txt", "patient_id": "PY"})
    write_table(root, rows)
    cfg = custom_config(tmp_path)
    run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    manifest, _ = load_manifest(cfg.dataset.manifest_dir)
    assert len(manifest) == len(rows) - 2
    expected = {r["patient_id"]: r["split"] for r in rows[:-2]}
    skipped = pd.read_csv(Path(cfg.dataset.manifest_dir) / "skipped.csv")
    assert dict(zip(skipped["path"], skipped["reason"], strict=True)) == {
        "scans/not-there.dcm": "no such file or folder",
        "scans/notes.txt": "not a DICOM file (no DICM prefix or file meta information)",
    }
    assert sorted(manifest["split"].value_counts().items()) == sorted(
        pd.Series(expected).value_counts().items()
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: df.drop(columns="manufacturer"), "lacks column(s) ['manufacturer']"),
        (lambda df: df.assign(label=["yes"] * len(df)), "label 'yes' is not 0 or 1"),
        (lambda df: pd.concat([df, df.iloc[:1]]), "paths listed twice"),
        (
            lambda df: df.assign(path=["../../elsewhere.dcm", *df["path"][1:]]),
            "outside dataset.dicom_root",
        ),
        (
            lambda df: df.assign(patient_id="same", split=["train", "test"] * (len(df) // 2)),
            "more than one split",
        ),
    ],
)
def test_bad_tables_are_refused_with_the_reason(tmp_path: Path, change, message: str) -> None:
    root = tmp_path / "data" / "custom"
    write_table(root, change(pd.DataFrame(byo_rows(root))).to_dict("records"))
    cfg = custom_config(tmp_path)
    with pytest.raises(ShiftlabError, match=re.escape(message)):
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
