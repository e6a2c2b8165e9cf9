"""Images as public datasets ship them: NIfTI volumes and 16-bit PNG, written here by SimpleITK
(the reader shiftlab uses too), in a hand-written table and in a BIDS folder (dataset=bids and
its twin), through the same manifest, cache, DataModule and record as DICOM."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers.compose import compose_config, compose_train

from shiftlab.data.preprocess import (
    CTVolumePreprocessor,
    MRIPreprocessor,
    XRayPreprocessor,
    read_slices,
    slice_geometry,
    stack_slices,
)
from shiftlab.errors import ShiftlabError
from shiftlab.ingest.bids import sidecar
from shiftlab.ingest.image_files import read_image_info, read_image_slices
from shiftlab.ingest.run import ensure_twin, run_ingest
from shiftlab.manifest import load_manifest
from shiftlab.train import train

VENDORS = {"ge": "GE MEDICAL SYSTEMS", "siemens": "SIEMENS"}
PATIENTS_PER_VENDOR = 12
# NIfTI-1 header: scl_slope and scl_inter are the float32 pair at byte 112.
SCL_OFFSET = 112
ONE_EPOCH = ("trainer.max_epochs=1", "data.batch_size=4", "model=smallcnn")


def write_volume(
    path: Path,
    voxels: np.ndarray,
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
    spacing: tuple[float, float, float] = (0.8, 0.9, 2.5),
    origin: tuple[float, float, float] = (-30.0, 12.5, 40.0),
) -> sitk.Image:
    """Voxels (slices, rows, columns) as a NIfTI file with the given LPS geometry."""
    image = sitk.GetImageFromArray(voxels)
    image.SetDirection(direction)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return image


def position(ds) -> np.ndarray:
    return np.array([float(v) for v in ds.ImagePositionPatient])


@pytest.mark.parametrize(
    "direction",
    [
        (1, 0, 0, 0, 1, 0, 0, 0, 1),  # axial
        (0, 0, 1, 1, 0, 0, 0, -1, 0),  # sagittal, slice axis against column x row
        (0.8, -0.6, 0, 0.6, 0.8, 0, 0, 0, 1),  # oblique
    ],
)
def test_nifti_slices_keep_voxels_and_patient_geometry(tmp_path: Path, direction) -> None:
    voxels = np.random.default_rng(0).integers(-1024, 3000, (5, 6, 7)).astype(np.int16)
    image = write_volume(tmp_path / "v.nii.gz", voxels, direction)

    slices = read_slices([tmp_path / "v.nii.gz"])

    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    assert len(slices) == 5
    for ds in slices:
        k = int(ds.InstanceNumber) - 1  # the file's own slice index
        assert np.array_equal(ds.pixel_array, voxels[k])
        assert np.allclose(position(ds), image.TransformIndexToPhysicalPoint((0, 0, k)))
        assert np.allclose([float(v) for v in ds.ImageOrientationPatient], matrix.T[:2].ravel())
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.9, 0.8])
        assert (ds.Rows, ds.Columns) == (6, 7)
    # The row (0, 0) -> (0, 1) and column steps land where SimpleITK says they do.
    first = slices[0]
    k = int(first.InstanceNumber) - 1
    row_step = np.array([float(v) for v in first.ImageOrientationPatient[:3]]) * 0.8
    assert np.allclose(position(first) + row_step, image.TransformIndexToPhysicalPoint((1, 0, k)))
    # Ascending along the normal, as ingest orders a DICOM series (the preprocessors need it).
    _, _, positions = slice_geometry(slices)
    assert np.all(np.diff(positions) > 0)
    expected = voxels if np.linalg.det(matrix) > 0 else voxels[::-1]
    assert np.array_equal(stack_slices(slices), expected)
    assert MRIPreprocessor(slices=4, size=8)(slices, {}).shape == (4, 8, 8)


def test_scaled_and_float_nifti_keep_exact_values(tmp_path: Path) -> None:
    """A CT stored as int16 with scl_slope/scl_inter arrives in HU; a float volume bit for bit."""
    stored = np.arange(-40, 80, dtype=np.int16).reshape(2, 6, 10) * 25
    write_volume(tmp_path / "raw.nii", stored)
    data = bytearray((tmp_path / "raw.nii").read_bytes())
    data[SCL_OFFSET : SCL_OFFSET + 8] = struct.pack("<ff", 0.5, -1024.0)
    (tmp_path / "ct.nii").write_bytes(bytes(data))
    fractional = np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32)
    write_volume(tmp_path / "float.nii.gz", fractional)

    hu = stack_slices(read_image_slices(tmp_path / "ct.nii"))
    values = stack_slices(read_image_slices(tmp_path / "float.nii.gz"))

    assert np.array_equal(hu, stored * 0.5 - 1024.0)
    assert np.array_equal(values, fractional)
    windowed = CTVolumePreprocessor(depth=2, size=6, window=(-1100, -1000))(
        read_image_slices(tmp_path / "ct.nii"), {}
    )
    assert windowed.min() == 0.0 and windowed.max() == 1.0  # HU, not stored values


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_png_greys_are_read_exactly(tmp_path: Path, dtype) -> None:
    top = np.iinfo(dtype).max
    pixels = np.array([[0, 1, top], [top // 2, 7, top - 1]], dtype=dtype)
    sitk.WriteImage(sitk.GetImageFromArray(pixels), str(tmp_path / "cxr.png"))

    info = read_image_info(tmp_path / "cxr.png")
    (ds,) = read_image_slices(tmp_path / "cxr.png")

    assert (info.format, info.rows, info.columns, info.n_slices) == ("png", 2, 3, 1)
    assert ds.pixel_array.dtype == dtype and np.array_equal(ds.pixel_array, pixels)
    assert ds.BitsStored == 8 * np.dtype(dtype).itemsize
    shown = XRayPreprocessor(size=2)([ds], {})  # the full stored range: 0 black, max white
    assert shown.shape == (1, 2, 2) and 0.0 <= shown.min() < shown.max() <= 1.0


def test_unusable_image_files_are_reported_with_what_happened(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 4000, (4, 50, 60)).astype(np.int16)
    write_volume(tmp_path / "v.nii", noise)
    write_volume(tmp_path / "v.nii.gz", noise)
    full, packed = (tmp_path / "v.nii").read_bytes(), (tmp_path / "v.nii.gz").read_bytes()
    (tmp_path / "cut.nii").write_bytes(full[:4000])  # a download cut short
    (tmp_path / "cut.nii.gz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    (tmp_path / "text.nii.gz").write_bytes(gzip.compress(b"not an image"))
    series = sitk.JoinSeries([sitk.GetImageFromArray(np.ones((2, 3, 4), np.int16))] * 3)
    sitk.WriteImage(series, str(tmp_path / "bold.nii.gz"))
    colour = np.zeros((4, 4, 3), np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(colour, isVector=True), str(tmp_path / "rgb.png"))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8), np.uint16)), str(tmp_path / "g.png"))
    (tmp_path / "cut.png").write_bytes((tmp_path / "g.png").read_bytes()[:-12])

    reasons = {p.name: read_image_info(p) for p in sorted(tmp_path.iterdir())}

    assert reasons["cut.nii"].startswith("truncated: NIfTI holds 4000 of")
    assert reasons["cut.nii.gz"].startswith("corrupted: gzip stream")
    assert reasons["empty.nii.gz"] == "empty file"
    assert reasons["text.nii.gz"].startswith("not a readable NIfTI file")
    assert reasons["bold.nii.gz"].startswith("a 4D NIfTI image of size 4x3x2x3")
    assert reasons["rgb.png"].startswith("not greyscale")
    assert reasons["cut.png"] == "truncated: PNG has no IEND chunk"
    assert reasons["v.nii"].n_slices == reasons["v.nii.gz"].n_slices == 4
    assert reasons["g.png"].format == "png"


def nifti_table(root: Path) -> list[dict]:
    """12 patients per vendor, labels alternating, label 1 a bright blob; NIfTI volumes whose
    vendors differ in slice count, orientation and intensity scale."""
    rows = []
    for v, (vendor, manufacturer) in enumerate(VENDORS.items()):
        for i in range(PATIENTS_PER_VENDOR):
            rng = np.random.default_rng(100 * v + i)
            label = i % 2
            volume = rng.normal(200, 20, (6 + 2 * v, 16, 16))
            volume[:, 5:11, 5:11] += 150 * label
            path = root / "nifti" / vendor / f"p{i:02d}.nii.gz"
            direction = (1, 0, 0, 0, 1, 0, 0, 0, 1) if v else (0, 0, 1, 1, 0, 0, 0, -1, 0)
            write_volume(path, (volume * (1 + v)).astype(np.int16), direction)
            rows.append(
                {
                    "path": path.relative_to(root).as_posix(),
                    "patient_id": f"{vendor.upper()}-{i:02d}",
                    "manufacturer": manufacturer,
                    "label": label,
                }
            )
    return rows


def custom_config(tmp_path: Path, *overrides: str, train_config: bool = False):
    small = ("dataset=custom", "dataset.preprocess.slices=4", "dataset.preprocess.size=16")
    if train_config:
        return compose_train(tmp_path / "data", tmp_path / "out", *small, *overrides)
    return compose_config("ingest", tmp_path / "data", tmp_path / "out", *small, *overrides)


def test_hand_written_table_of_nifti_volumes_ingests_and_trains(tmp_path: Path) -> None:
    root = tmp_path / "data" / "custom"
    rows = nifti_table(root)
    pd.DataFrame(rows).to_csv(root / "samples.csv", index=False)
    cfg = custom_config(tmp_path)
    run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)

    manifest, meta = load_manifest(cfg.dataset.manifest_dir)
    assert len(manifest) == len(rows)
    assert manifest["vendor"].value_counts().to_dict() == dict.fromkeys(
        VENDORS, PATIENTS_PER_VENDOR
    )
    by_path = manifest.set_index("paths")
    assert by_path.loc[rows[0]["path"], "n_slices"] == 6  # slices of the one file, not 1
    assert by_path.loc[rows[-1]["path"], "n_slices"] == 8
    assert set(manifest["modality"]) == {"MR"}
    assert meta["vendor_source"] == {"table column": len(rows)}
    # Pseudonyms only: no patient id or file path in the id columns.
    ids = manifest[["sample_id", "patient_id", "study_id", "series_id"]].to_numpy().ravel()
    assert not any("nifti" in i or "-0" in i[3:] for i in ids)
    assert all(re.fullmatch(r"(s|p|st|se)-[0-9a-f]{16}", i) for i in ids)

    run_cfg = custom_config(tmp_path, *ONE_EPOCH, train_config=True)
    result = train(run_cfg, tmp_path / "run")
    assert (tmp_path / "run" / "done").exists()
    assert set(result["metrics"]) >= {"test/ge/auroc", "test/siemens/auroc", "test/delta_auroc"}
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert (predictions["split"] == "test").sum() == (manifest["split"] == "test").sum()


def test_hand_written_table_of_16_bit_png_radiographs_trains(tmp_path: Path) -> None:
    root = tmp_path / "data" / "custom"
    rows = []
    for v, (vendor, manufacturer) in enumerate({"philips": "Philips", "ge": "GE"}.items()):
        for i in range(PATIENTS_PER_VENDOR):
            rng = np.random.default_rng(10 * v + i)
            pixels = rng.normal(20000 + 15000 * v, 3000, (24, 20))
            pixels[8:16, 6:14] += 20000 * (i % 2)
            path = root / "png" / f"{vendor}{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = sitk.GetImageFromArray(np.clip(pixels, 0, 65535).astype(np.uint16))
            sitk.WriteImage(image, str(path))
            rows.append(
                {
                    "path": path.relative_to(root).as_posix(),
                    "patient_id": f"{vendor}{i}",
                    "manufacturer": manufacturer,
                    "label": i % 2,
                }
            )
    pd.DataFrame(rows).to_csv(root / "samples.csv", index=False)
    xray = (
        "dataset.modality=DX",
        "~dataset.preprocess.slices",
        "~dataset.preprocess.intensity",
        "dataset.preprocess._target_=shiftlab.data.preprocess.XRayPreprocessor",
        "dataset.input_channels=1",
        "dataset.domains.source=philips",
        "dataset.domains.target=ge",
    )
    cfg = custom_config(tmp_path, *xray)
    run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    result = train(custom_config(tmp_path, *xray, *ONE_EPOCH, train_config=True), tmp_path / "run")

    manifest, _ = load_manifest(cfg.dataset.manifest_dir)
    assert set(manifest["n_slices"]) == {1} and set(manifest["modality"]) == {"DX"}
    assert set(result["metrics"]) >= {"test/philips/auroc", "test/ge/auroc"}


def test_image_rows_without_a_manufacturer_are_refused_line_by_line(tmp_path: Path) -> None:
    root = tmp_path / "data" / "custom"
    rows = nifti_table(root)
    rows[3]["manufacturer"] = ""
    rows[5]["manufacturer"] = ""
    pd.DataFrame(rows).to_csv(root / "samples.csv", index=False)
    cfg = custom_config(tmp_path)
    with pytest.raises(ShiftlabError) as error:
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    message = str(error.value)
    for line in (5, 7):  # the header is line 1
        row = rows[line - 2]
        assert f"line {line}: empty manufacturer, and {row['path']} is a NIfTI file" in message
    assert "line 6" not in message


def test_sidecars_are_merged_by_the_inheritance_principle(tmp_path: Path) -> None:
    def write(relative: str, content: dict) -> None:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(json.dumps(content))

    image = tmp_path / "sub-01/ses-2/anat/sub-01_ses-2_acq-fast_T1w.nii.gz"
    write("T1w.json", {"Manufacturer": "Siemens", "MagneticFieldStrength": 3, "A": "top"})
    write("acq-fast_T1w.json", {"A": "top, more entities"})
    write("sub-01/sub-01_T1w.json", {"ManufacturersModelName": "Prisma"})
    write("sub-01/ses-2/anat/sub-01_ses-2_acq-fast_T1w.json", {"MagneticFieldStrength": 1.5})
    # Not applicable: another participant, another suffix, an entity the image lacks.
    write("sub-01/sub-02_T1w.json", {"Manufacturer": "GE"})
    write("sub-01/ses-2/anat/sub-01_ses-2_T2w.json", {"Manufacturer": "Philips"})
    write("run-1_T1w.json", {"Manufacturer": "Canon"})

    assert sidecar(image, tmp_path) == {
        "Manufacturer": "Siemens",
        "ManufacturersModelName": "Prisma",
        "MagneticFieldStrength": 1.5,
        "A": "top, more entities",
    }


@pytest.fixture(scope="module")
def bids_twin(tmp_path_factory: pytest.TempPathFactory):
    """The BIDS twin, generated and ingested once through the real config."""
    data = tmp_path_factory.mktemp("bids")
    cfg = compose_config("ingest", data, data / "out", "dataset=bids", "twin=true")
    ensure_twin(cfg.dataset)
    run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    return data, cfg


def test_bids_twin_takes_vendors_from_sidecars_and_labels_from_participants(bids_twin) -> None:
    _, cfg = bids_twin
    manifest, meta = load_manifest(cfg.dataset.manifest_dir)
    root = Path(cfg.dataset.dicom_root)
    participants = pd.read_csv(
        root / "participants.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    assert (participants["diagnosis"] == "n/a").any()  # the real missing-value code

    assert set(manifest["vendor"]) == {"ge", "siemens"}
    assert meta["vendor_source"] == {"BIDS sidecar": len(manifest)}
    strengths = manifest.groupby("vendor")["field_strength"].unique()
    assert list(strengths["ge"]) == [1.5]  # the image's sidecar overrides T1w.json
    assert list(strengths["siemens"]) == [3.0]  # inherited from the top-level T1w.json
    assert set(manifest["model_name"]) == {"DISCOVERY MR750", "Skyra"}
    paths = set(manifest["paths"])
    assert all(p.endswith("_T1w.nii.gz") for p in paths)  # the T2w images are not samples
    # Vendor given once in a participant-level sidecar, for both sessions.
    assert {"sub-13/ses-01/anat/sub-13_ses-01_T1w.nii.gz", "sub-14/anat/sub-14_T1w.nii.gz"} <= paths
    assert set(manifest["n_slices"]) == {10}
    # Every session and run of one participant is in one split.
    assert manifest.groupby("patient_id")["split"].nunique().max() == 1
    assert manifest.groupby("patient_id").size().max() == 2
    labels = dict(zip(participants["participant_id"], participants["diagnosis"], strict=True))
    for path, label in zip(manifest["paths"], manifest["label"], strict=True):
        assert {"AD": 1, "CN": 0}[labels[path.split("/")[0]]] == label
    skipped = pd.read_csv(Path(cfg.dataset.manifest_dir) / "skipped.csv")
    assert dict(zip(skipped["path"], skipped["reason"], strict=True)) == {
        "sub-08/anat/sub-08_T1w.nii.gz": "no Manufacturer in its JSON sidecars",
        "sub-21/anat/sub-21_T1w.nii.gz": "diagnosis is n/a (missing) in participants.tsv",
        "sub-22/anat/sub-22_T1w.nii.gz": (
            "diagnosis 'MCI' is neither positive ['AD'] nor negative ['CN']"
        ),
        "sub-23/anat/sub-23_T1w.nii.gz": "participant not in participants.tsv",
    }
    n_images = len(list(root.glob("sub-*/**/anat/*_T1w.nii.gz")))
    assert len(manifest) + len(skipped) == n_images  # every T1w image accounted for
    assert not manifest["patient_id"].str.startswith("sub-").any()


def test_bids_twin_run_finishes_with_a_record(bids_twin, tmp_path: Path) -> None:
    data, _ = bids_twin
    small = ("dataset.preprocess.slices=4", "dataset.preprocess.size=16", *ONE_EPOCH)
    cfg = compose_train(data, tmp_path / "out", "dataset=bids", "twin=true", *small)
    result = train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "done").exists()
    assert result["scenario"] == "bids/ge->siemens"
    assert set(result["metrics"]) >= {"test/ge/auroc", "test/siemens/auroc", "test/delta_auroc"}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_bids_images_not_fetched_or_with_a_broken_sidecar_are_skipped(
    bids_twin, tmp_path: Path
) -> None:
    """OpenNeuro's DataLad datasets hold git-annex links whose content comes with `datalad get`;
    a link not fetched, or a sidecar that is not JSON, leaves out that image, not the dataset."""
    _, twin = bids_twin
    root = tmp_path / "data" / "bids" / "rawdata"
    shutil.copytree(twin.dataset.dicom_root, root)
    image = root / "sub-01/anat/sub-01_T1w.nii.gz"
    image.unlink()
    image.symlink_to("../../.git/annex/objects/Xk/00/MD5E-s1--00.nii.gz")
    (root / "sub-02/anat/sub-02_T1w.json").write_text('{"Manufacturer": "GE",')
    cfg = compose_config("ingest", tmp_path / "data", tmp_path / "out", "dataset=bids")
    run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)

    manifest, _ = load_manifest(cfg.dataset.manifest_dir)
    skipped = pd.read_csv(Path(cfg.dataset.manifest_dir) / "skipped.csv").set_index("path")
    assert skipped.loc["sub-01/anat/sub-01_T1w.nii.gz", "reason"].startswith(
        "a link to a missing file (content not fetched?"
    )
    assert skipped.loc["sub-02/anat/sub-02_T1w.nii.gz", "reason"] == (
        "sidecar sub-02/anat/sub-02_T1w.json is not readable JSON (JSONDecodeError)"
    )
    assert len(manifest) == len(pd.read_csv(Path(twin.dataset.manifest_dir) / "manifest.csv")) - 2
