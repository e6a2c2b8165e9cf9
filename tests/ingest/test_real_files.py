"""Real scanner files as they come: multi-frame volumes (Enhanced CT and MR), files damaged in
transit, a file that breaks after ingest, the same image listed twice in a hand-written table.

The files are pydicom's and pydicom-data's own test files, written by scanners and toolkits
nobody here wrote (eCT_Supplemental.dcm: an Enhanced CT with per-frame functional groups;
emri_small*.dcm: a 10-frame Enhanced MR, uncompressed, RLE, big endian and JPEG 2000), changed
only where a case needs it: a copy given UIDs of its own, a file cut short or with bytes flipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from helpers.compose import compose_config, compose_train
from helpers.dicom_factory import copy_as_new_scan, write_series
from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword

from shiftlab.data import cache
from shiftlab.data.prepare import ensure_manifest
from shiftlab.data.preprocess import modality_values, read_slices, slice_geometry
from shiftlab.ingest.accounting import FLAGGED_NAME, SKIPPED_NAME, reason_kind
from shiftlab.ingest.headers import read_slice
from shiftlab.ingest.run import run_ingest
from shiftlab.ingest.series import scan_dicom_tree
from shiftlab.manifest import JSON_NAME, PATH_SEPARATOR, load_manifest
from shiftlab.train import train

VENDORS = {"ge": "GE MEDICAL SYSTEMS", "siemens": "SIEMENS"}
# One Enhanced MR in four encodings: every decoder path a multi-frame file can take.
ENHANCED_MR = (
    "emri_small.dcm",
    "emri_small_RLE.dcm",
    "emri_small_big_endian.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
)


def real(name: str) -> Path:
    """A test file shipped by pydicom or pydicom-data (the dev extra installs both)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.fail(f"{name} is in pydicom-data: install the dev extra (pip install -e .[dev])")
    return Path(path)


def quietly(function, *args):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = function(*args)
    return result, out.getvalue()


# --- Multi-frame files: frames are slices ------------------------------------------------------


def test_enhanced_ct_frames_are_slices_in_position_order_with_their_own_geometry(
    tmp_path: Path,
) -> None:
    root = tmp_path / "dicom"
    path = root / "ct" / "enhanced.dcm"
    path.parent.mkdir(parents=True)
    shutil.copy(real("eCT_Supplemental.dcm"), path)

    series, skipped = scan_dicom_tree(root)
    assert skipped == []
    (header,) = series
    assert (header.files, header.n_slices) == (["ct/enhanced.dcm"], 2)

    slices = read_slices([path])
    source = pydicom.dcmread(path)
    per_frame = source.PerFrameFunctionalGroupsSequence
    shared = source.SharedFunctionalGroupsSequence[0]
    # Stored frame 1 lies at z -159, frame 2 at z -149; the normal of (-1,0,0) x (0,1,0) is -z,
    # so ascending along it puts frame 2 first.
    assert [int(ds.InstanceNumber) for ds in slices] == [2, 1]
    rescale = shared.PixelValueTransformationSequence[0]
    for ds in slices:
        frame = int(ds.InstanceNumber) - 1
        position = per_frame[frame].PlanePositionSequence[0].ImagePositionPatient
        assert [float(v) for v in ds.ImagePositionPatient] == [float(v) for v in position]
        assert ds.PixelSpacing == shared.PixelMeasuresSequence[0].PixelSpacing
        expected = source.pixel_array[frame] * float(rescale.RescaleSlope) + float(
            rescale.RescaleIntercept
        )
        np.testing.assert_array_equal(modality_values(ds), expected)
    _, _, positions = slice_geometry(slices)  # what a CT patch needs: ascending positions
    assert list(positions) == [149.0, 159.0]

    manifest = pd.DataFrame({"sample_id": ["s-ct"], "paths": header.files})
    settings = {"_target_": "shiftlab.data.preprocess.CTVolumePreprocessor", "depth": 4, "size": 16}
    built = cache.load_or_build(manifest, "sha", root, settings, tmp_path / "cache")
    assert built.arrays.shape == (1, 4, 16, 16) and np.isfinite(built.arrays).all()
    assert built.excluded.empty


def test_enhanced_mr_in_a_hand_written_table_is_ingested_cached_and_trained(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data" / "custom"
    rows = []
    for v, manufacturer in enumerate(VENDORS.values()):
        for i in range(12):
            name = ENHANCED_MR[(i + v) % len(ENHANCED_MR)]
            target = root / "scans" / f"v{v}p{i:02d}" / name
            copy_as_new_scan(real(name), target, Manufacturer=manufacturer, PatientID=f"P{v}{i}")
            path = target.parent if i % 3 == 0 else target  # a folder row, or a file row
            rows.append(
                {
                    "path": path.relative_to(root).as_posix(),
                    "patient_id": f"P{v}{i:02d}",
                    "manufacturer": "",  # from the file's Manufacturer
                    "label": i % 2,
                }
            )
    pd.DataFrame(rows).to_csv(root / "samples.csv", index=False)
    overrides = ("dataset=custom", "dataset.preprocess.slices=4", "dataset.preprocess.size=32")
    cfg = compose_train(
        tmp_path / "data", tmp_path / "out", *overrides, "model=smallcnn", "trainer.max_epochs=1"
    )
    quietly(run_ingest, cfg.dataset, cfg.paths, cfg.split_seed)
    manifest, _ = load_manifest(cfg.dataset.manifest_dir)
    assert len(manifest) == len(rows)
    assert set(manifest["n_slices"]) == {10}, "each frame of the Enhanced MR is a slice"

    result, output = quietly(train, cfg, tmp_path / "run")
    assert (tmp_path / "run" / "done").exists()
    assert "samples excluded" not in output, output
    assert np.isfinite(result["metrics"]["test/delta_auroc"])


def test_multi_frame_files_whose_frames_are_not_one_volume_are_skipped_with_the_reason(
    tmp_path: Path,
) -> None:
    root = tmp_path / "dicom"
    for folder in ("sc", "mixed"):
        (root / folder).mkdir(parents=True)
    # Two frames of a secondary capture: views, not slices.
    shutil.copy(real("SC_rgb_rle_2frame.dcm"), root / "sc")
    # An Enhanced MR filed in one series with a single-frame image: a volume cannot be stacked.
    enhanced = pydicom.dcmread(real("emri_small.dcm"))
    shutil.copy(real("emri_small.dcm"), root / "mixed" / "e.dcm")
    copy_as_new_scan(
        real("MR_small.dcm"),
        root / "mixed" / "single.dcm",
        StudyInstanceUID=enhanced.StudyInstanceUID,
        SeriesInstanceUID=enhanced.SeriesInstanceUID,
        PatientID=enhanced.PatientID,
    )
    series, skipped = scan_dicom_tree(root)
    reasons = dict(skipped)
    assert reasons["sc/SC_rgb_rle_2frame.dcm"].startswith(
        "multi-frame Secondary Capture Image Storage (2 frames): its frames are not the slices"
    )
    assert reasons["mixed/e.dcm"].startswith("multi-frame file in a series of 2 files")
    assert [s.files for s in series] == [["mixed/single.dcm"]]

    # Radiographs are one image a sample: a multi-frame image there is refused, not flattened.
    _, images = scan_dicom_tree(root / "mixed", group_by="SOPInstanceUID")
    assert dict(images)["e.dcm"] == (
        "multi-frame image (10 frames) where each image is one sample "
        "(dataset.ingest.group_by=SOPInstanceUID)"
    )


# --- A file that breaks after ingest -------------------------------------------------------------


def test_a_file_damaged_after_ingest_is_left_out_by_sample_id_and_the_run_finishes(
    tmp_path: Path,
) -> None:
    overrides = ("dataset.synthetic.patients_per_vendor=12", "trainer.max_epochs=1")
    cfg = compose_train(tmp_path / "data", tmp_path / "out", *overrides)
    quietly(ensure_manifest, cfg)
    manifest, _ = load_manifest(cfg.dataset.manifest_dir)
    source_train = manifest[(manifest["vendor"] == "ge") & (manifest["split"] == "train")]
    sample = source_train.iloc[0]
    relative = sample["paths"].split(PATH_SEPARATOR)[1]
    broken = Path(cfg.dataset.dicom_root) / relative
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # a download cut short, after ingest

    result, output = quietly(train, cfg, tmp_path / "run")
    assert (tmp_path / "run" / "done").exists()
    assert "samples excluded:   1 whose pixels cannot be decoded" in output
    n_files = len(sample["paths"].split(PATH_SEPARATOR))
    reason = f"ShiftlabError: cannot decode pixels of <file 2 of {n_files}>: "
    assert f"  {sample['sample_id']}: {reason}" in output
    assert result["samples"]["ge"]["train"] == len(source_train) - 1
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["samples_excluded"]
    assert [r["sample_id"] for r in recorded] == [sample["sample_id"]]
    assert recorded[0]["reason"].startswith(reason)
    (listed,) = Path(cfg.paths.cache_dir).glob(f"*{cache.EXCLUDED_SUFFIX}")
    excluded = pd.read_csv(listed)
    assert excluded["sample_id"].tolist() == [sample["sample_id"]]
    assert excluded["reason"][0].startswith(reason)
    assert relative not in output, "the file is named by its rank, not its path (a patient name?)"

    # The next run finds the same samples left out without decoding anything again.
    again, output = quietly(train, cfg, tmp_path / "again")
    assert "samples excluded:   1" in output
    assert again["samples"] == result["samples"]


# --- Damaged files say what happened -------------------------------------------------------------


def _flipped(data: bytes, start: int, n: int) -> bytes:
    out = bytearray(data)
    for i in range(start, start + n):
        out[i] ^= 0xFF
    return bytes(out)


def _value_at(path: Path, keyword: str) -> int:
    return pydicom.dcmread(path, defer_size=64).get_item(tag_for_keyword(keyword)).value_tell


def _without_series_uid(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    del ds.SeriesInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


CT = real("CT_small.dcm")  # a GE CT slice, explicit VR little endian, 39206 bytes
DAMAGED = {
    "empty": (b"", "empty file"),
    "cut to 300 bytes": (
        CT.read_bytes()[:300],
        "truncated header: the file ends at byte 300, inside its file meta information",
    ),
    "cut inside an element of the header": (
        CT.read_bytes()[:1000],
        "truncated header: the file ends at byte 1000, inside OtherPatientIDsSequence",
    ),
    "cut between two elements, before StudyInstanceUID": (
        CT.read_bytes()[: _value_at(CT, "StudyInstanceUID") - 8],
        "truncated header: the file ends at byte 2200, after (0019,10DE) and before "
        "StudyInstanceUID",
    ),
    "32 bytes flipped from a tag on": (
        _flipped(CT.read_bytes(), _value_at(CT, "ImageType") - 8, 32),
        "corrupted element: (FFF7,FFF7) is not a DICOM tag",
    ),
    "a flipped byte in the length of InstitutionName": (
        _flipped(CT.read_bytes(), _value_at(CT, "InstitutionName") - 1, 1),
        "corrupted element: InstitutionName (0008,0080) declares 65298 bytes, past the end",
    ),
    "the tag of StudyInstanceUID flipped": (
        _flipped(CT.read_bytes(), _value_at(CT, "StudyInstanceUID") - 8, 4),
        "corrupted element: (FFDF,FFF2) is not a DICOM tag",
    ),
    "the DICM prefix flipped": (
        _flipped(CT.read_bytes(), 128, 4),
        "corrupted element: the DICM prefix at byte 128 is damaged",
    ),
    "a whole file without SeriesInstanceUID": (
        _without_series_uid(real("MR_small.dcm")),
        "missing tag SeriesInstanceUID",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_file_is_skipped_with_what_happened_to_it(tmp_path: Path, case: str) -> None:
    data, expected = DAMAGED[case]
    path = tmp_path / "x.dcm"
    path.write_bytes(data)
    reason = read_slice(path, "x.dcm", (), "SeriesInstanceUID")
    assert isinstance(reason, str) and reason.startswith(expected), reason


def test_folder_scan_counts_reasons_by_kind_and_says_why_labels_did_not_match(
    tmp_path: Path,
) -> None:
    dataset = tmp_path / "dataset"
    dicom = dataset / "dicom"
    labels = {}
    for v, manufacturer in enumerate(VENDORS.values()):
        for i in range(6):
            written = write_series(
                dicom / f"v{v}p{i}" / "t1",
                patient_id=f"P{v}{i}",
                manufacturer=manufacturer,
                extra={"SeriesDescription": "T1 AX"},
            )
            labels[written.series_uid] = i % 2
    # A labelled T2 series, which the series filter does not choose.
    labels[write_series(dicom / "v0p0" / "t2", patient_id="P00").series_uid] = 1
    # A labelled series whose only file was cut inside its pixel data.
    cut = write_series(dicom / "v0p1" / "cut", patient_id="P01", n_slices=1)
    cut.files[0].write_bytes(cut.files[0].read_bytes()[:-30])
    labels[cut.series_uid] = 0
    labels["1.2.3.4.5.6.7.8.9"] = 1  # a key that names nothing scanned
    for name, (data, _) in DAMAGED.items():
        (dicom / "bad" / f"{name}.dcm").parent.mkdir(exist_ok=True)
        (dicom / "bad" / f"{name}.dcm").write_bytes(data)
    pd.DataFrame({"series_uid": list(labels), "lesion": list(labels.values())}).to_csv(
        dataset / "labels.csv", index=False
    )
    cfg = compose_config(
        "ingest",
        tmp_path / "data",
        tmp_path / "out",
        "dataset=synthetic_mri",
        f"dataset.root='{dataset}'",
        "+dataset.ingest={series_filter: {SeriesDescription: '(?i)^t1'}}",
    )
    _, output = quietly(run_ingest, cfg.dataset, cfg.paths, cfg.split_seed)

    for count, kind in (
        (3, "truncated header"),
        (4, "corrupted element"),
        (1, "empty file"),
        (1, "missing tag SeriesInstanceUID"),
        (1, "truncated"),
    ):
        assert f"  {count:>8}  {kind}\n" in output, output
    assert "labels unmatched:   3 of 15\n" in output
    assert "         1  match only series not chosen by dataset.ingest\n" in output
    assert "         1  match only skipped files (reasons in skipped.csv)\n" in output
    assert "         1  name no scanned file (by SeriesInstanceUID)\n" in output
    meta = json.loads((Path(cfg.dataset.manifest_dir) / JSON_NAME).read_text())
    assert meta["labels_unmatched"] == {
        "series_not_chosen": 1,
        "only_skipped_files": 1,
        "no_scanned_file": 1,
    }
    skipped = pd.read_csv(Path(cfg.dataset.manifest_dir) / SKIPPED_NAME)
    assert {reason_kind(r) for r in skipped["reason"]} == {
        "empty file",
        "truncated header",
        "corrupted element",
        "missing tag SeriesInstanceUID",
        "truncated",
    }


# --- The same image twice in a hand-written table -------------------------------------------------


def test_hand_written_table_skips_a_repeated_sop_instance_and_accounts_for_every_file(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data" / "custom"
    rows = []
    for v, manufacturer in enumerate([*VENDORS.values(), "ACME Imaging Works"]):
        for i in range(12 if v < 2 else 1):
            target = root / "scans" / f"v{v}p{i:02d}" / "MR_small.dcm"
            copy_as_new_scan(real("MR_small.dcm"), target)
            rows.append(
                {
                    "path": target.relative_to(root).as_posix(),
                    "patient_id": f"P{v}{i:02d}",
                    "manufacturer": manufacturer,
                    "label": i % 2,
                }
            )
    # The first scan again, byte for byte, under another name and another patient.
    shutil.copy(root / rows[0]["path"], root / "scans" / "again.dcm")
    rows.append({**rows[0], "path": "scans/again.dcm", "patient_id": "P999"})
    # An empty file, and a folder row whose folder also holds a text file.
    (root / "scans" / "empty.dcm").write_bytes(b"")
    rows.append({**rows[1], "path": "scans/empty.dcm", "patient_id": "P998"})
    (root / rows[2]["path"]).with_name("README.txt").write_text("exported by a viewer\n")
    rows[2]["path"] = Path(rows[2]["path"]).parent.as_posix()
    pd.DataFrame(rows).to_csv(root / "samples.csv", index=False)
    cfg = compose_config("ingest", tmp_path / "data", tmp_path / "out", "dataset=custom")
    _, output = quietly(run_ingest, cfg.dataset, cfg.paths, cfg.split_seed)

    manifest_dir = Path(cfg.dataset.manifest_dir)
    manifest, meta = load_manifest(manifest_dir)
    assert len(manifest) == 25
    skipped = pd.read_csv(manifest_dir / SKIPPED_NAME)
    assert dict(zip(skipped["path"], skipped["reason"], strict=True)) == {
        "scans/again.dcm": f"duplicate SOPInstanceUID of {rows[0]['path']} (in an earlier row)",
        "scans/empty.dcm": "empty file",
        "scans/v0p02/README.txt": "not a DICOM file (no DICM prefix or file meta information)",
    }
    flagged = pd.read_csv(manifest_dir / FLAGGED_NAME)
    assert flagged.to_dict("records") == [
        {
            "path": "scans/v2p00/MR_small.dcm",
            "note": "vendor unknown: Manufacturer 'ACME Imaging Works' is not in "
            "shiftlab/ingest/vendors.py",
        }
    ]
    assert "rows skipped:       2 " in output
    for line in (
        "         1  duplicate SOPInstanceUID\n",
        "         1  empty file\n",
        "         1  not a DICOM file\n",
        "files accounted:    28 = 25 in samples + 3 skipped",
        "vendor unknown:     1 samples",
    ):
        assert line in output, output
    assert meta["files"] == {"scanned": 28, "in_samples": 25, "skipped": 3}
    assert meta["skipped_by_kind"] == {
        "duplicate SOPInstanceUID": 1,
        "empty file": 1,
        "not a DICOM file": 1,
    }
    assert (meta["n_samples_vendor_unknown"], meta["n_flagged"]) == (1, 1)
