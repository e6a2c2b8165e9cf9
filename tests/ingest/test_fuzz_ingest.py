"""Fuzzing ingest: mutated DICOM files (headers cut, tags removed or garbled, bytes flipped) never
crash a scan or an ingest, every skipped file has a reason, and every file is accounted for."""

from __future__ import annotations

import contextlib
import io
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from helpers.compose import compose_config
from helpers.dicom_factory import write_series
from pydicom.datadict import tag_for_keyword
from pydicom.uid import RLELossless

from shiftlab.ingest.accounting import SKIPPED_NAME, UNUSED_NAME
from shiftlab.ingest.run import run_ingest
from shiftlab.ingest.series import scan_dicom_tree
from shiftlab.manifest import load_manifest

SEED = 20240611
N_MUTANTS = 160
# Tags a mutation may delete or garble: identity, grouping, geometry, pixel description.
KEYWORDS = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "MagneticFieldStrength",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PixelData",
)
GARBAGE = ("", "nan", "-1", "1e400", "\\".join(["x"] * 9), "0", "9" * 40, "Ω\x00é")


def cut(data: bytes, rng: random.Random) -> bytes:
    """The file ends early, most often inside its header."""
    end = rng.randrange(0, len(data))
    return data[: rng.randrange(0, min(end, 900) + 1)] if rng.random() < 0.6 else data[:end]


def flip(data: bytes, rng: random.Random) -> bytes:
    """A few bytes changed, most of them in the header (where parsing happens)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 12)):
        limit = min(len(out), 900) if rng.random() < 0.8 else len(out)
        out[rng.randrange(limit)] = rng.randrange(256)
    return bytes(out)


def drop_tag(path: Path, rng: random.Random) -> bytes:
    ds = pydicom.dcmread(path)
    for keyword in rng.sample(KEYWORDS, rng.randint(1, 3)):
        if keyword in ds:
            delattr(ds, keyword)
    return _saved(ds)


def garble_tag(path: Path, rng: random.Random) -> bytes:
    """The bytes of one value overwritten in place with text that does not fit its VR."""
    data = bytearray(path.read_bytes())
    ds = pydicom.dcmread(path, defer_size=64)
    keyword = rng.choice(KEYWORDS[:-1])
    if keyword not in ds:
        return bytes(data)
    raw = ds.get_item(tag_for_keyword(keyword))
    garbage = (rng.choice(GARBAGE).encode() * raw.length)[: raw.length]
    data[raw.value_tell : raw.value_tell + raw.length] = garbage.ljust(raw.length, b"\xff")
    return bytes(data)


def _saved(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds.save_as(buffer)
        except Exception:  # a garbled value pydicom refuses to write: write it without checks
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


MUTATIONS: dict[str, Callable[[Path, random.Random], bytes]] = {
    "cut": lambda path, rng: cut(path.read_bytes(), rng),
    "flip": lambda path, rng: flip(path.read_bytes(), rng),
    "drop_tag": drop_tag,
    "garble_tag": garble_tag,
    "drop_and_flip": lambda path, rng: flip(drop_tag(path, rng), rng),
}


def write_corpus(root: Path) -> tuple[list[Path], dict[str, int]]:
    """Six good series (two vendors, one RLE-compressed) and N_MUTANTS mutants of their files,
    filed beside the originals so that mutants and originals meet in one series."""
    originals, labels = [], {}
    for i in range(6):
        manufacturer = "GE MEDICAL SYSTEMS" if i % 2 else "SIEMENS"
        written = write_series(
            root / "dicom" / f"P{i}" / "series",
            patient_id=f"P{i}",
            manufacturer=manufacturer,
            n_slices=4,
        )
        if i == 5:
            for path in written.files:
                ds = pydicom.dcmread(path)
                ds.compress(RLELossless)
                ds.save_as(path)
        originals += written.files
        labels[written.series_uid] = i % 2
    rng = random.Random(SEED)
    names = sorted(MUTATIONS)
    for k in range(N_MUTANTS):
        source = rng.choice(originals)
        kind = names[k % len(names)]
        data = MUTATIONS[kind](source, rng)
        (source.parent / f"mutant{k:03d}-{kind}.dcm").write_bytes(data)
    return originals, labels


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("fuzz") / "dataset"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, labels = write_corpus(root)
    pd.DataFrame({"series_uid": list(labels), "lesion": list(labels.values())}).to_csv(
        root / "labels.csv", index=False
    )
    return root, labels


def all_files(dicom_root: Path) -> set[str]:
    return {p.relative_to(dicom_root).as_posix() for p in dicom_root.rglob("*") if p.is_file()}


def test_scan_accounts_for_every_mutant(corpus: tuple[Path, dict[str, int]]) -> None:
    root, _ = corpus
    dicom_root = root / "dicom"
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series, skipped = scan_dicom_tree(dicom_root)
    assert time.perf_counter() - started < 20
    in_series = [f for s in series for f in s.files]
    skipped_paths = [path for path, _ in skipped]
    # Every file is in exactly one series or skipped exactly once, never both.
    assert len(in_series) + len(skipped_paths) == len(all_files(dicom_root))
    assert set(in_series) | set(skipped_paths) == all_files(dicom_root)
    assert all(isinstance(reason, str) and reason.strip() for _, reason in skipped)
    assert not [r for _, r in skipped if "b'\\x" in r], "raw header bytes quoted in a reason"
    # The fuzzing did bite: many kinds of reason, and most mutants skipped.
    kinds = {reason.split(":")[0].split(" (")[0] for _, reason in skipped}
    assert len(kinds) >= 5, kinds
    assert len(skipped) >= N_MUTANTS // 2


def test_ingest_of_mutants_finishes_and_lists_every_file(
    corpus: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    root, labels = corpus
    cfg = compose_config(
        "ingest",
        tmp_path / "data",
        tmp_path / "out",
        "dataset=synthetic_mri",
        f"dataset.root='{root}'",
    )
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    manifest_dir = Path(cfg.dataset.manifest_dir)
    df, meta = load_manifest(manifest_dir)
    skipped = pd.read_csv(manifest_dir / SKIPPED_NAME, keep_default_na=False)
    unused = pd.read_csv(manifest_dir / UNUSED_NAME, keep_default_na=False)
    files = meta["files"]
    n_files = len(all_files(root / "dicom"))
    assert files["scanned"] == n_files
    assert files["in_samples"] + files["skipped"] + files["in_unused_series"] == n_files
    in_samples = {f for joined in df["paths"] for f in joined.split("|")}
    assert len(in_samples) == files["in_samples"]
    assert unused["n_files"].sum() == files["in_unused_series"]
    assert (skipped["reason"].str.strip() != "").all()
    assert in_samples.isdisjoint(skipped["path"])
    # Every labelled series still made its sample, from the files that survived.
    assert len(df) >= len(labels) and set(df["vendor"]) >= {"ge", "siemens"}
