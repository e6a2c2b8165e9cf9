"""Ingest end to end on real DICOM files, through the real Hydra config."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from helpers.dicom_factory import AXIAL, SAGITTAL, WrittenSeries, write_series
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from shiftlab.config import CONF_DIR
from shiftlab.errors import ShiftlabError
from shiftlab.ingest.pseudonym import load_or_create_key, pseudonym
from shiftlab.ingest.run import run_ingest
from shiftlab.ingest.series import scan_dicom_tree
from shiftlab.labels import read_label_table
from shiftlab.manifest import COLUMNS, assign_splits, load_manifest

N_PATIENTS = 20
N_SLICES = 4
# (raw Manufacturer, vendor, orientation, model, field strength)
VENDORS = (
    ("GE MEDICAL SYSTEMS", "ge", AXIAL, "SIGNA HDxt", 1.5),
    ("SIEMENS", "siemens", SAGITTAL, "Avanto", 1.494),
)


@dataclass
class Tree:
    root: Path
    series: list[WrittenSeries]
    labels: dict[str, int]  # raw SeriesInstanceUID -> label


def build_tree(root: Path) -> Tree:
    """2 vendors x 20 patients, TCIA-like <case>/<study>/<series>/1-NN.dcm, file names shuffled.

    Patient i has one series labelled i % 2, whose InstanceNumbers run backwards when i is odd.
    Patients 0 and 1 have a second, oppositely labelled series (so both count as positive);
    patient 2 has a series missing from labels.csv. Folder names do not contain the PatientID.
    Two bad files are added: a text file and a DICOM file cut short inside its pixel data.
    """
    dicom_root = root / "dicom"
    series: list[WrittenSeries] = []
    labels: dict[str, int] = {}
    for code, (manufacturer, vendor, orientation, model, tesla) in enumerate(VENDORS):
        for i in range(N_PATIENTS):
            patient_id = f"{vendor.upper()}PAT{i:04d}"
            case = dicom_root / f"case{code}{i:02d}"
            wanted = [(f"1.000000-{vendor} pre-{i}", i % 2)]
            if i in (0, 1):
                wanted.append((f"2.000000-{vendor} post-{i}", 1 - i % 2))
            if i == 2:
                wanted.append((f"3.000000-{vendor} localiser-{i}", None))
            for study, (folder, label) in enumerate(wanted):
                written = write_series(
                    case / f"01-01-2000-study{study}" / folder,
                    patient_id=patient_id,
                    manufacturer=manufacturer,
                    model_name=model,
                    field_strength=tesla,
                    orientation=orientation,
                    n_slices=N_SLICES,
                    shuffle_file_names=i + 1,
                    # Odd patients number slices backwards: position must win over it.
                    instance_numbers=range(N_SLICES, 0, -1) if i % 2 else None,
                )
                series.append(written)
                if label is not None:
                    labels[written.series_uid] = label
    (dicom_root / "README.txt").write_text("Downloaded with the NBIA Data Retriever.\n")
    partial = write_series(
        dicom_root / "case_partial" / "study" / "series",
        patient_id="PARTIALPAT",
        manufacturer="SIEMENS",
        n_slices=1,
    )
    data = partial.files[0].read_bytes()
    partial.files[0].write_bytes(data[: len(data) - 40])
    labels[partial.series_uid] = 1
    pd.DataFrame({"series_uid": list(labels), "lesion": list(labels.values())}).to_csv(
        root / "labels.csv", index=False
    )
    return Tree(root=root, series=series, labels=labels)


def compose_cfg(data_dir: Path, dataset_root: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="ingest",
            overrides=[
                "dataset=synthetic_mri",
                f"paths.data_dir='{data_dir}'",
                f"dataset.root='{dataset_root}'",
                # The fractions the rounding expectations below are worked out for.
                "dataset.split_fractions={train:0.5,val:0.15,test:0.35}",
                *overrides,
            ],
        )


def ingest(cfg: DictConfig) -> tuple[object, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        info = run_ingest(cfg.dataset, cfg.paths, cfg.split_seed).manifest
    return info, out.getvalue()


@dataclass
class Run:
    tree: Tree
    cfg: DictConfig
    info: object
    output: str
    df: pd.DataFrame
    meta: dict
    key: bytes


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    base = tmp_path_factory.mktemp("ingest")
    tree = build_tree(base / "dataset")
    cfg = compose_cfg(base / "data", tree.root)
    info, output = ingest(cfg)
    df, meta = load_manifest(cfg.dataset.manifest_dir)
    key = load_or_create_key(cfg.paths.pseudonym_key)
    return Run(tree, cfg, info, output, df, meta, key)


def patient_splits(df: pd.DataFrame) -> pd.Series:
    return df.groupby("patient_id")["split"].agg(lambda s: sorted(set(s)))


def test_manifest_has_the_contract_columns(run: Run) -> None:
    assert tuple(run.df.columns) == COLUMNS
    assert run.meta["n_samples"] == len(run.df) == 44
    assert run.df["sample_id"].str.match(r"^s-[0-9a-f]{16}$").all()
    assert run.df["patient_id"].str.match(r"^p-[0-9a-f]{16}$").all()
    assert run.df["study_id"].str.match(r"^st-[0-9a-f]{16}$").all()
    assert run.df["series_id"].str.match(r"^se-[0-9a-f]{16}$").all()
    assert (run.df["n_slices"] == N_SLICES).all()
    assert (run.df["modality"] == "MR").all()
    ge = run.df[run.df["vendor"] == "ge"]
    assert set(ge["manufacturer"]) == {"GE MEDICAL SYSTEMS"}
    assert set(ge["model_name"]) == {"SIGNA HDxt"}
    assert set(run.df.loc[run.df["vendor"] == "siemens", "field_strength"]) == {1.494}


def test_counts_per_vendor_and_label(run: Run) -> None:
    counts = run.df.groupby(["vendor", "label"]).size().to_dict()
    assert counts == {("ge", 0): 11, ("ge", 1): 11, ("siemens", 0): 11, ("siemens", 1): 11}
    assert "unlabelled series:  2" in run.output
    assert run.df["patient_id"].nunique() == 2 * N_PATIENTS


def test_splits_are_by_patient_stratified_and_rounded(run: Run) -> None:
    per_patient = patient_splits(run.df)
    assert per_patient.map(len).eq(1).all(), "a patient is in two splits"
    sets = {
        s: set(run.df.loc[run.df["split"] == s, "patient_id"]) for s in ("train", "val", "test")
    }
    assert not (
        sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"]
    )
    for vendor, group in run.df.groupby("vendor"):
        for split in ("train", "val", "test"):
            assert set(group.loc[group["split"] == split, "label"]) == {0, 1}, (vendor, split)
    patients = run.df.groupby("patient_id").agg(
        vendor=("vendor", "first"), label=("label", "max"), split=("split", "first")
    )
    counts = patients.groupby(["vendor", "label", "split"]).size().to_dict()
    # 11 positive patients (odd ones plus patient 0): quotas 5.5/1.65/3.85 -> 5/2/4.
    # 9 negative patients: quotas 4.5/1.35/3.15 -> 5/1/3.
    for vendor in ("ge", "siemens"):
        assert [counts[(vendor, 1, s)] for s in ("train", "val", "test")] == [5, 2, 4]
        assert [counts[(vendor, 0, s)] for s in ("train", "val", "test")] == [5, 1, 3]


def test_slice_order_follows_position_not_file_name(run: Run) -> None:
    dicom_root = Path(run.cfg.dataset.dicom_root)
    not_by_name = 0
    for paths in run.df["paths"]:
        files = paths.split("|")
        first_pixels = [int(pydicom.dcmread(dicom_root / f).pixel_array[0, 0]) for f in files]
        # dicom_factory writes slice k with pixel[0, 0] == 1000 * k.
        assert first_pixels == [1000 * k for k in range(N_SLICES)], files
        not_by_name += files != sorted(files)
    assert not_by_name == len(run.df), "every series was written with shuffled file names"


def test_skipped_csv_lists_the_bad_files(run: Run) -> None:
    skipped = pd.read_csv(Path(run.cfg.dataset.manifest_dir) / "skipped.csv")
    assert list(skipped.columns) == ["path", "reason"]
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert set(reasons) == {"README.txt", "case_partial/study/series/1-01.dcm"}
    assert reasons["README.txt"].startswith("not a DICOM file")
    assert reasons["case_partial/study/series/1-01.dcm"].startswith("truncated: PixelData")
    assert "skipped files:      2" in run.output


def test_no_raw_identifier_reaches_the_manifest(run: Run) -> None:
    manifest_dir = Path(run.cfg.dataset.manifest_dir)
    text = (manifest_dir / "manifest.csv").read_text() + (
        manifest_dir / "manifest.json"
    ).read_text()
    raw = {s.patient_id for s in run.tree.series}
    raw |= {s.study_uid for s in run.tree.series} | {s.series_uid for s in run.tree.series}
    assert [value for value in raw if value in text] == []
    assert set(run.df["series_id"]) <= {pseudonym(run.key, u, "se-") for u in run.tree.labels}


def test_key_file_is_private(run: Run) -> None:
    mode = stat.S_IMODE(os.stat(run.cfg.paths.pseudonym_key).st_mode)
    assert mode == 0o600


def test_second_run_changes_nothing(run: Run) -> None:
    manifest_dir = Path(run.cfg.dataset.manifest_dir)
    names = ("manifest.csv", "manifest.json", "skipped.csv", "unused.csv", "flagged.csv")

    def snapshot() -> dict[str, tuple[bytes, int, int]]:
        return {
            n: (
                (manifest_dir / n).read_bytes(),
                (manifest_dir / n).stat().st_mtime_ns,
                (manifest_dir / n).stat().st_ino,
            )
            for n in names
        }

    before = snapshot()
    info, output = ingest(run.cfg)
    assert snapshot() == before
    assert not info.changed
    assert "changed:            no" in output
    assert sorted(p.name for p in manifest_dir.iterdir()) == sorted(names)


def test_split_seed_alone_decides_the_splits(run: Run, tmp_path: Path) -> None:
    base = split_of_raw_series(run.df, run.key, run.tree)

    other_seed = compose_cfg(
        Path(run.cfg.paths.data_dir),
        run.tree.root,
        "split_seed=1",
        f"dataset.manifest_dir='{tmp_path / 'seed1'}'",
    )
    ingest(other_seed)
    df_seed1, _ = load_manifest(other_seed.dataset.manifest_dir)
    assert split_of_raw_series(df_seed1, run.key, run.tree) != base

    # A fresh copy of the data elsewhere, with a fresh pseudonym key: same seed, same splits.
    fresh_tree = build_tree(tmp_path / "fresh")
    fresh = compose_cfg(tmp_path / "fresh-data", fresh_tree.root)
    ingest(fresh)
    df_fresh, _ = load_manifest(fresh.dataset.manifest_dir)
    fresh_key = load_or_create_key(fresh.paths.pseudonym_key)
    assert fresh_key != run.key
    assert set(df_fresh["sample_id"]).isdisjoint(run.df["sample_id"])
    assert split_of_raw_series(df_fresh, fresh_key, fresh_tree) == base


def split_of_raw_series(df: pd.DataFrame, key: bytes, tree: Tree) -> dict[str, str]:
    by_series_id = dict(zip(df["series_id"], df["split"], strict=True))
    ids = {uid: pseudonym(key, uid, "se-") for uid in tree.labels}
    return {uid: by_series_id[i] for uid, i in ids.items() if i in by_series_id}


def test_hand_edited_manifest_is_refused(run: Run, tmp_path: Path) -> None:
    copy = tmp_path / "manifest"
    shutil.copytree(run.cfg.dataset.manifest_dir, copy)
    csv = copy / "manifest.csv"
    csv.write_text(csv.read_text().replace(",train", ",test", 1))
    with pytest.raises(ShiftlabError, match="does not match the sha256"):
        load_manifest(copy)
    with pytest.raises(ShiftlabError, match=r"python -m shiftlab\.ingest dataset=synthetic_mri"):
        load_manifest(tmp_path / "nowhere", dataset_name="synthetic_mri")


def test_missing_dicom_root_is_a_clear_error(tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path / "data", tmp_path / "absent")
    with pytest.raises(ShiftlabError, match="DICOM folder not found") as caught:
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    assert str(tmp_path / "absent" / "dicom") in str(caught.value)
    assert "python -m shiftlab.synth" in str(caught.value)


def test_command_line_error_exits_2_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "SHIFTLAB_OUTPUT_DIR": str(tmp_path / "outputs")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shiftlab.ingest",
            "dataset=synthetic_mri",
            f"paths.data_dir='{tmp_path / 'data'}'",
            f"dataset.root='{tmp_path / 'data' / 'missing'}'",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: DICOM folder not found")
    assert str(tmp_path / "data" / "missing" / "dicom") in result.stderr
    assert "python -m shiftlab.synth" in result.stderr
    assert "Traceback" not in result.stderr


def test_scan_skips_damaged_headers_and_falls_back_to_instance_number(tmp_path: Path) -> None:
    root = tmp_path / "dicom"
    good = write_series(root / "good", patient_id="P1", n_slices=3, shuffle_file_names=True)
    no_position = write_series(
        root / "noposition",
        patient_id="P2",
        n_slices=3,
        with_position=False,
        instance_numbers=[3, 1, 2],
    )
    cut = root / "cut" / "x.dcm"
    cut.parent.mkdir()
    cut.write_bytes(good.files[0].read_bytes()[:400])
    no_uid = write_series(root / "nouid", patient_id="P3", n_slices=1).files[0]
    ds = pydicom.dcmread(no_uid)
    del ds.SeriesInstanceUID
    ds.save_as(no_uid)
    (root / "good" / "copy.dcm").write_bytes(good.files[1].read_bytes())
    legacy = write_series(root / "legacy", patient_id="P4", n_slices=2)
    for path in legacy.files:  # rewrite as old archives have them: no preamble, no file meta
        ds = pydicom.dcmread(path)
        del ds.file_meta
        ds.preamble = None
        ds.save_as(path, implicit_vr=True, little_endian=True)
        assert path.read_bytes()[128:132] != b"DICM"

    series, skipped = scan_dicom_tree(root)
    reasons = dict(skipped)
    assert reasons["cut/x.dcm"].startswith("truncated")
    assert reasons["nouid/1-01.dcm"] == "missing tag SeriesInstanceUID"
    assert reasons["good/copy.dcm"].startswith("duplicate SOPInstanceUID")
    found = {s.series_uid: s.files for s in series}
    assert found[legacy.series_uid] == ["legacy/1-01.dcm", "legacy/1-02.dcm"]
    assert found[good.series_uid] == [f.relative_to(root).as_posix() for f in good.files]
    # InstanceNumbers 3, 1, 2 were given to slices 0, 1, 2.
    expected = ["noposition/1-02.dcm", "noposition/1-03.dcm", "noposition/1-01.dcm"]
    assert found[no_position.series_uid] == expected


def test_small_groups_still_fill_val_and_test() -> None:
    rows = [
        {"patient_id": f"{vendor}{label}{i}", "vendor": vendor, "label": label}
        for vendor, per_label in (("ge", 3), ("philips", 4))
        for label in (0, 1)
        for i in range(per_label)
    ]
    df = pd.DataFrame(rows)
    for seed in range(5):
        split = assign_splits(df, {"train": 0.7, "val": 0.1, "test": 0.2}, seed)
        table = pd.crosstab([df["vendor"], df["label"]], split)
        assert (table[["val", "test"]] >= 1).all().all(), table
        assert table.sum(axis=1).tolist() == [3, 3, 4, 4]


def test_assign_splits_rejects_bad_fractions() -> None:
    df = pd.DataFrame({"patient_id": ["a"], "vendor": ["ge"], "label": [0]})
    with pytest.raises(ShiftlabError, match="sum to 1"):
        assign_splits(df, {"train": 0.5, "val": 0.2, "test": 0.2}, 0)
    with pytest.raises(ShiftlabError, match="unknown split"):
        assign_splits(df, {"train": 0.8, "valid": 0.2}, 0)


def test_label_file_errors_say_what_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    with pytest.raises(ShiftlabError, match=f"not found: {path}.*dataset.labels.path"):
        read_label_table(path, "series_uid", "SeriesInstanceUID", "lesion")
    path.write_text("uid,lesion\n1.2.3,1\n")
    with pytest.raises(ShiftlabError, match=r"lacks column\(s\) \['series_uid'\].*'uid', 'lesion'"):
        read_label_table(path, "series_uid", "SeriesInstanceUID", "lesion")
    path.write_text("series_uid,lesion\n1.2.3,1\n1.2.4,2\n")
    with pytest.raises(ShiftlabError, match=r"0 or 1.*line 3: '2'"):
        read_label_table(path, "series_uid", "SeriesInstanceUID", "lesion")
    path.write_text("series_uid,lesion\n1.2.30,1\n1.2.4,0\n")
    table = read_label_table(path, "series_uid", "SeriesInstanceUID", "lesion")
    assert {k: [s.label for s in v] for k, v in table.samples.items()} == {
        "1.2.30": [1],
        "1.2.4": [0],
    }
    assert table.key_tag == "SeriesInstanceUID"


def test_pseudonym_is_keyed_hmac(tmp_path: Path) -> None:
    key_path = tmp_path / "deep" / "er" / "pseudonym.key"
    key = load_or_create_key(key_path)
    assert load_or_create_key(key_path) == key
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    value = pseudonym(key, "PAT001", "p-")
    assert value.startswith("p-") and len(value) == 18
    assert pseudonym(key, "PAT001", "p-") == value
    assert pseudonym(os.urandom(32), "PAT001", "p-") != value
    assert set(value[2:]) <= set("0123456789abcdef")


def test_several_samples_per_series_carry_their_own_label_and_columns(tmp_path: Path) -> None:
    """A nodule-level label file: two nodules in one scan are two samples of one patient."""
    root = tmp_path / "dataset"
    rows = ["series_uid,nodule,malignant,center_z_mm"]
    for vendor, manufacturer in (("ge", "GE MEDICAL SYSTEMS"), ("siemens", "SIEMENS")):
        for i in range(12):
            written = write_series(
                root / "dicom" / f"{vendor}{i}",
                patient_id=f"{vendor}-{i}",
                manufacturer=manufacturer,
            )
            rows.append(f"{written.series_uid},n1,{i % 2},{10.0 + i}")
            rows.append(f"{written.series_uid},n2,{(i + 1) % 2},{-5.5}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = compose_cfg(
        tmp_path / "data",
        root,
        "dataset.labels.label_column=malignant",
        "+dataset.labels.sample_column=nodule",
        "+dataset.labels.extra_columns=[center_z_mm]",
        "+dataset.sample_unit=nodule",
    )
    ingest(cfg)
    df, meta = load_manifest(cfg.dataset.manifest_dir)
    assert list(df.columns) == [*COLUMNS, "center_z_mm"]
    assert len(df) == 48 and df["sample_id"].is_unique
    assert df.groupby("series_id").size().eq(2).all()
    assert df.groupby("series_id")["label"].sum().eq(1).all()  # one malignant nodule per scan
    assert sorted(df["center_z_mm"].unique())[:2] == [-5.5, 10.0]
    assert meta["sample_unit"] == "nodule"
    assert patient_splits(df).map(len).eq(1).all()  # both nodules of a patient in one split


def test_label_file_repeating_a_sample_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("uid,nodule,malignant\n1.2.3,a,1\n1.2.3,b,0\n1.2.3,a,0\n")
    with pytest.raises(ShiftlabError, match=r"'1.2.3' nodule 'a' appears twice \(lines 2 and 4\)"):
        read_label_table(path, "uid", "SeriesInstanceUID", "malignant", sample_column="nodule")
