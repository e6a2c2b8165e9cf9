"""Bad files at ingest: each one is skipped or kept with a reason, counted, and listed beside the
manifest; no bad file stops an ingest, and every scanned file is accounted for."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pydicom
import pytest
from helpers.compose import compose_config
from helpers.dicom_factory import AXIAL, CORONAL, SAGITTAL, write_series
from omegaconf import DictConfig
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import MPEG2MPML, RLELossless

from shiftlab.ingest import headers
from shiftlab.ingest.accounting import FLAGGED_NAME, SKIPPED_NAME, UNUSED_NAME
from shiftlab.ingest.run import run_ingest
from shiftlab.ingest.series import scan_dicom_tree
from shiftlab.manifest import load_manifest

N_SLICES = 4


def rewrite(path: Path, **changes: object) -> None:
    """Change attributes of one written file in place (None deletes the attribute)."""
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


def build_messy_tree(root: Path) -> dict[str, object]:
    """Six good patients per vendor and one of each kind of trouble; returns what to expect."""
    dicom = root / "dicom"
    labels: dict[str, int] = {}
    expected: dict[str, object] = {"skipped": {}, "unknown_vendor": {}}

    def series(folder: str, label: int | None = 0, **kwargs: object):
        kwargs.setdefault("patient_id", folder.split("/")[0])
        kwargs.setdefault("n_slices", N_SLICES)
        written = write_series(dicom / folder, **kwargs)
        if label is not None:
            labels[written.series_uid] = label
        return written

    for vendor, manufacturer in (("ge", "GE MEDICAL SYSTEMS"), ("siemens", "SIEMENS")):
        for i in range(6):
            series(f"{vendor}{i}/s1", label=i % 2, manufacturer=manufacturer)
    skipped = expected["skipped"]

    # Not DICOM, truncated, no PixelData.
    (dicom / "notes.txt").write_text("downloaded with the NBIA Data Retriever\n")
    cut = series("cut/s1", n_slices=1).files[0]
    cut.write_bytes(cut.read_bytes()[:-30])
    skipped["cut/s1/1-01.dcm"] = "truncated"
    no_pixels = series("nopix/s1", n_slices=2).files[1]
    rewrite(no_pixels, PixelData=None)
    skipped["nopix/s1/1-02.dcm"] = "no PixelData"
    skipped["notes.txt"] = "not a DICOM file"

    # Manufacturer missing, empty, or a company not in the alias table: kept, vendor unknown.
    series("nomaker/s1", manufacturer=None)
    series("emptymaker/s1", manufacturer="")
    series("acme/s1", manufacturer="ACME Imaging Works")
    expected["unknown_vendor"] = {
        "nomaker/s1/1-01.dcm": "Manufacturer missing or empty",
        "emptymaker/s1/1-01.dcm": "Manufacturer missing or empty",
        "acme/s1/1-01.dcm": "'ACME Imaging Works' is not in shiftlab/ingest/vendors.py",
    }

    # A secondary capture filed in the MR series: the odd modality out is skipped.
    mixed = series("mixed/s1")
    rewrite(mixed.files[2], Modality="OT")
    skipped["mixed/s1/1-03.dcm"] = "Modality differs from its series: 'OT' vs 'MR'"

    # Geometry: one slice of another size, one of another pixel spacing, one reoriented, and a
    # three-plane localiser (no majority: skipped whole, and its series is then absent).
    sized = series("size/s1")
    ds = pydicom.dcmread(sized.files[1])
    ds.set_pixel_data(
        np.zeros((16, 16), np.uint16), photometric_interpretation="MONOCHROME2", bits_stored=16
    )
    ds.save_as(sized.files[1])
    skipped["size/s1/1-02.dcm"] = "slice geometry differs from its series: Rows x Columns 16x16"
    spaced = series("spacing/s1")
    rewrite(spaced.files[3], PixelSpacing=[0.9, 0.9])
    skipped["spacing/s1/1-04.dcm"] = "PixelSpacing 0.9x0.9 vs 0.7x0.7"
    turned = series("orient/s1")
    rewrite(turned.files[0], ImageOrientationPatient=list(SAGITTAL))
    skipped["orient/s1/1-01.dcm"] = "orientation 0x1x0x0x0x-1 vs 1x0x0x0x1x0"
    localiser = series("loc/s1", n_slices=3)
    for path, orientation in zip(localiser.files, (AXIAL, SAGITTAL, CORONAL), strict=True):
        rewrite(path, ImageOrientationPatient=list(orientation))
        skipped[path.relative_to(dicom).as_posix()] = "inconsistent slice geometry"

    # Compressed pixel data: RLE decodes here and is kept; MPEG-2 has no decoder in pydicom.
    rle = series("rle/s1", n_slices=2)
    for path in rle.files:
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    mpeg = series("mpeg/s1", n_slices=1).files[0]
    ds = pydicom.dcmread(mpeg)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    ds.save_as(mpeg)
    skipped["mpeg/s1/1-01.dcm"] = "no decoder: pydicom cannot decode MPEG2"

    # The same SOP instance twice in its folder, and once more filed under another series.
    good = dicom / "ge0" / "s1"
    shutil.copy(good / "1-02.dcm", good / "copy.dcm")
    skipped["ge0/s1/copy.dcm"] = "duplicate SOPInstanceUID of ge0/s1/1-02.dcm"
    elsewhere = dicom / "ge1" / "s2" / "x.dcm"
    elsewhere.parent.mkdir(parents=True)
    shutil.copy(dicom / "ge1" / "s1" / "1-01.dcm", elsewhere)
    # Series are visited in SeriesInstanceUID order and the first file seen keeps the instance:
    # "2.25.1" sorts after every UID under pydicom's root ("1.2.826..."), so the copy is the one
    # seen second (a random UID made this test pass or fail by chance).
    rewrite(elsewhere, SeriesInstanceUID="2.25.1")
    skipped["ge1/s2/x.dcm"] = "duplicate SOPInstanceUID of ge1/s1/1-01.dcm"

    # A slice of another patient in the series.
    stray = series("stray/s1")
    rewrite(stray.files[3], PatientID="someone-else")
    skipped["stray/s1/1-04.dcm"] = "PatientID differs from the rest of its series"

    # A series without a label: used by nobody, but accounted for.
    series("unlabelled/s1", label=None)

    pd.DataFrame({"series_uid": list(labels), "lesion": list(labels.values())}).to_csv(
        root / "labels.csv", index=False
    )
    expected["n_files"] = sum(1 for p in dicom.rglob("*") if p.is_file())
    return expected


def ingest(tmp_path: Path, root: Path):
    cfg = compose_config(
        "ingest",
        tmp_path / "data",
        tmp_path / "out",
        "dataset=synthetic_mri",
        f"dataset.root='{root}'",
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    return cfg, out.getvalue()


class Messy(NamedTuple):
    expected: dict[str, Any]
    cfg: DictConfig
    output: str
    df: pd.DataFrame
    meta: dict[str, Any]
    manifest_dir: Path


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Messy:
    tmp_path = tmp_path_factory.mktemp("messy")
    expected = build_messy_tree(tmp_path / "dataset")
    cfg, output = ingest(tmp_path, tmp_path / "dataset")
    manifest_dir = Path(cfg.dataset.manifest_dir)
    df, meta = load_manifest(manifest_dir)
    return Messy(expected, cfg, output, df, meta, manifest_dir)


def test_every_bad_file_is_skipped_with_its_reason(messy: Messy) -> None:
    skipped = pd.read_csv(messy.manifest_dir / SKIPPED_NAME)
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert set(reasons) == set(messy.expected["skipped"]), reasons
    for path, fragment in messy.expected["skipped"].items():
        assert fragment in reasons[path], (path, reasons[path])
    assert skipped["reason"].str.len().gt(0).all()


def test_skipped_files_are_counted_by_kind(messy: Messy) -> None:
    kinds = messy.meta["skipped_by_kind"]
    assert kinds["inconsistent slice geometry"] == 3
    assert kinds["slice geometry differs from its series"] == 3
    assert kinds["duplicate SOPInstanceUID"] == 2
    assert kinds["no decoder"] == 1
    assert kinds["Modality differs from its series"] == 1
    assert (
        sum(kinds.values())
        == messy.meta["files"]["skipped"]
        == len(messy.expected["skipped"])
        == 14
    )
    assert "skipped files:      14" in messy.output
    assert "       3  inconsistent slice geometry" in messy.output


def test_every_scanned_file_is_accounted_for(messy: Messy) -> None:
    files = messy.meta["files"]
    assert files["scanned"] == messy.expected["n_files"]
    assert files["scanned"] == files["in_samples"] + files["skipped"] + files["in_unused_series"]
    assert files["in_samples"] == sum(len(p.split("|")) for p in messy.df["paths"])
    unused = pd.read_csv(messy.manifest_dir / UNUSED_NAME)
    assert unused["n_files"].sum() == files["in_unused_series"]
    assert unused.set_index("path")["reason"].to_dict() == {
        "unlabelled/s1/1-01.dcm": "no label: its SeriesInstanceUID is not in the label file"
    }
    assert f"files accounted:    {files['scanned']} = " in messy.output


def test_unknown_vendors_are_kept_counted_and_flagged(messy: Messy) -> None:
    assert (messy.df["vendor"] == "unknown").sum() == messy.meta["n_samples_vendor_unknown"] == 3
    flagged = pd.read_csv(messy.manifest_dir / FLAGGED_NAME, keep_default_na=False)
    notes = dict(zip(flagged["path"], flagged["note"], strict=True))
    assert set(notes) == set(messy.expected["unknown_vendor"])
    for path, fragment in messy.expected["unknown_vendor"].items():
        assert notes[path].startswith("vendor unknown: ") and fragment in notes[path]
    assert "vendor unknown:     3 samples" in messy.output


def test_what_is_kept_decodes(messy: Messy) -> None:
    """Everything in the manifest decodes, RLE included: a decoder problem shows at ingest."""
    dicom_root = Path(messy.cfg.dataset.dicom_root)
    files = [f for joined in messy.df["paths"] for f in joined.split("|")]
    assert "rle/s1/1-01.dcm" in files
    for name in files:
        assert pydicom.dcmread(dicom_root / name).pixel_array.shape == (8, 8), name
    mixed = messy.df.loc[messy.df["paths"].str.startswith("mixed/"), "paths"].item()
    assert mixed.split("|") == ["mixed/s1/1-01.dcm", "mixed/s1/1-02.dcm", "mixed/s1/1-04.dcm"]


def test_a_compressed_file_whose_decoder_is_not_installed_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = write_series(tmp_path / "rle", patient_id="P1", n_slices=2)
    for path in written.files:
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    # As on a machine without the plugin: pydicom's own RLE decoder is not there.
    decoder = get_decoder(RLELossless)
    monkeypatch.setattr(decoder, "_available", {})
    headers.decoder_problem.cache_clear()
    try:
        series, skipped = scan_dicom_tree(tmp_path)
    finally:
        headers.decoder_problem.cache_clear()
    assert series == []
    assert [path for path, _ in skipped] == ["rle/1-01.dcm", "rle/1-02.dcm"]
    reason = skipped[0][1]
    assert reason.startswith("no decoder: RLE Lossless (1.2.840.10008.1.2.5)"), reason
    assert "pylibjpeg" in reason, "the reason names what to install"


def test_uneven_slice_spacing_is_flagged_not_dropped(tmp_path: Path) -> None:
    written = write_series(tmp_path / "gap", patient_id="P1", n_slices=5)
    rewrite(written.files[4], ImagePositionPatient=[-100.0, -100.0, 20.0 + 2.0 * 6])
    [series], skipped = scan_dicom_tree(tmp_path)
    assert skipped == [] and len(series.files) == 5
    assert series.notes == [
        "uneven slice spacing: gaps up to 6 mm, typically 2 mm (a missing slice?)"
    ]


def test_manifest_json_counts_are_stable(messy: Messy) -> None:
    """A second ingest of the same tree writes the same bytes (counts included)."""
    before = {p.name: p.read_bytes() for p in messy.manifest_dir.iterdir()}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_ingest(messy.cfg.dataset, messy.cfg.paths, messy.cfg.split_seed)
    assert {p.name: p.read_bytes() for p in messy.manifest_dir.iterdir()} == before
    assert (
        json.loads((messy.manifest_dir / "manifest.json").read_text())["files"]
        == messy.meta["files"]
    )
