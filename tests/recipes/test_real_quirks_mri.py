"""The MRI presets against what the real datasets are: Duke's boxes counted as the dataset's
authors count them, ADNIMERGE's literal NA cells. Each twin carries the real quirk, so a reader
that assumes otherwise fails here.

Evidence (see the recipes' docstrings): the Duke authors' own code
(mazurowski-lab/MRI-parameter-prediction data/dbc/png_extractor.py) reads Annotation_Boxes.xlsx
against the fat-saturated pre-contrast series with Start Slice <= slice < End Slice; LangDaniel/
MAEMI (utils/bboxes/bboxes_ROI.py) counts the slices in InstanceNumber order and lists the
collection's pre-contrast SeriesDescriptions (utils/download_MRI_data.py). R's write.csv, which
the ADNIMERGE R package's tables go through, writes a missing value as NA.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.sets import PresetTwin
from omegaconf import DictConfig, OmegaConf

from shiftlab.data.cache import build_preprocessor
from shiftlab.data.preprocess import MRISlicePreprocessor, read_slices
from shiftlab.errors import ShiftlabError
from shiftlab.manifest import PATH_SEPARATOR, load_manifest
from shiftlab.recipes import adni, duke_breast_mri

# The fat-saturated pre-contrast series of Duke-Breast-Cancer-MRI as TCIA spells them ("t1_FS"
# in LangDaniel/MAEMI, utils/download_MRI_data.py).
PRE_CONTRAST = {
    "Ax Vibrant MultiPhase",
    "ax 3d dyn",
    "ax 3d dyn MP",
    "ax 3d dyn pre",
    "ax 3d pre",
    "ax dyn",
    "ax dyn pre",
    "ax dynamic",
    "t1_fl3d_tra_dynVIEWS_spair_ pre",
}


@dataclass
class Ingested:
    cfg: DictConfig
    root: Path
    dicom_root: Path
    df: pd.DataFrame


def ingested(twin: PresetTwin) -> Ingested:
    """The session's ingested twin (conftest.preset_twin) with its manifest."""
    cfg = twin.cfg
    df, _ = load_manifest(cfg.dataset.manifest_dir)
    return Ingested(cfg, Path(cfg.dataset.root), Path(cfg.dataset.dicom_root), df)


def files_of(twin: Ingested, row: dict) -> list[Path]:
    return [twin.dicom_root / p for p in row["paths"].split(PATH_SEPARATOR)]


# --- Duke-Breast-Cancer-MRI ------------------------------------------------------------------


def duke_boxes(path: Path, rows: list[tuple[str, int, int]]) -> Path:
    columns = ["Patient ID", *duke_breast_mri.BOX_COLUMNS]
    pd.DataFrame([(p, 10, 20, 30, 40, a, b) for p, a, b in rows], columns=columns).to_excel(
        path, index=False
    )
    return path


def test_duke_end_slice_is_outside_the_box_and_samples_say_how_they_count(tmp_path: Path) -> None:
    table = duke_breast_mri.read_labels(duke_boxes(tmp_path / "b.xlsx", [("P", 10, 13)]))
    samples = table.samples["P"]
    numbers = {s.extra["slice_index"] + 1: s.label for s in samples}
    # Slices 10, 11, 12 are in the box, End Slice 13 is not; negatives >= 3 slices outside
    # [10, 13], alternately below and above, every 2nd: 7, 16, 5.
    assert numbers == {5: 0, 7: 0, 10: 1, 11: 1, 12: 1, 16: 0}
    assert {s.extra["slice_numbering"] for s in samples} == {"instance"}


def test_duke_box_without_an_inside_slice_gives_no_samples_and_says_so(tmp_path: Path) -> None:
    path = duke_boxes(tmp_path / "b.xlsx", [("A", 7, 7), ("B", 10, 12)])
    with pytest.warns(UserWarning, match=r"1 patient\(s\) have Start Slice = End Slice"):
        table = duke_breast_mri.read_labels(path)
    assert set(table.samples) == {"B"}


@pytest.fixture(scope="module")
def duke(preset_twin: Callable[[str], PresetTwin]) -> Ingested:
    return ingested(preset_twin("mri_breast"))


def test_duke_twin_samples_come_from_the_fat_saturated_pre_contrast_series(duke) -> None:
    used = {
        str(read_slices(files_of(duke, row)[:1])[0].SeriesDescription)
        for row in duke.df.drop_duplicates("series_id").to_dict("records")
    }
    assert used <= PRE_CONTRAST and len(used) >= 4
    # The download also holds the passes after contrast and a T1 that says "pre" but is not
    # fat-saturated; none of them is read.
    names = {p.parent.name for p in duke.dicom_root.rglob("1-001.dcm")}
    assert any("1st pass" in n for n in names) and any("ax t1 pre" in n for n in names)


def test_duke_twin_labels_name_the_slices_the_authors_count(duke) -> None:
    """Per patient, the slices the labels name (read back through the preset's own slice
    preprocessor) are, in InstanceNumber order, Start Slice <= slice < End Slice for the
    positives and >= margin slices outside the box for the negatives; and the tumour the twin
    planted on the authors' slices is what the label-1 inputs show under the box."""
    boxes = pd.read_excel(duke.root / "Annotation_Boxes.xlsx").set_index("Patient ID")
    margin = duke.cfg.dataset.labels.margin
    pre = build_preprocessor(OmegaConf.to_container(duke.cfg.dataset.preprocess, resolve=True))
    size = pre.shape[-1]
    numbered_top_down = set()
    for _, group in duke.df.groupby("series_id"):
        rows = group.to_dict("records")
        slices = read_slices(files_of(duke, rows[0]))  # in ingest's order: by position
        instance = [int(ds.InstanceNumber) for ds in slices]
        number = {k: rank + 1 for rank, k in enumerate(np.argsort(instance))}
        patient = str(slices[0].PatientID)
        if instance[0] > instance[-1]:
            numbered_top_down.add(str(slices[0].Manufacturer))
        start, end = (int(boxes.loc[patient, c]) for c in duke_breast_mri.SLICE_COLUMNS)
        read = {number[pre.slice_position(slices, row)]: row["label"] for row in rows}
        assert {n for n, label in read.items() if label == 1} == set(range(start, end))
        negatives = [n for n, label in read.items() if label == 0]
        assert negatives and all(n <= start - margin or n >= end + margin for n in negatives)
        # The box's rows and columns (1-based, in the stored matrix) on the resized input.
        scale = size / slices[0].Rows
        box = boxes.loc[patient]
        r0, r1 = (int((box[c] - 1) * scale) for c in ("Start Row", "End Row"))
        c0, c1 = (int((box[c] - 1) * scale) for c in ("Start Column", "End Column"))
        under_box = {0: [], 1: []}
        for row in rows:
            centre = pre(slices, row)[pre.context]
            under_box[row["label"]].append(float(centre[r0 : r1 + 1, c0 : c1 + 1].mean()))
        assert min(under_box[1]) > max(under_box[0]), patient
    # Both vendors have volumes whose InstanceNumber runs against their position.
    assert numbered_top_down == {"GE MEDICAL SYSTEMS", "SIEMENS"}


def test_duke_sample_is_refused_by_a_preprocessor_counting_another_way(duke) -> None:
    row = duke.df.iloc[0].to_dict()
    slices = read_slices(files_of(duke, row))
    by_position = MRISlicePreprocessor(size=16, slice_numbering="position")
    with pytest.raises(ShiftlabError, match=r"Set dataset\.preprocess\.slice_numbering=instance"):
        by_position(slices, row)


# --- ADNI: ADNIMERGE.csv ---------------------------------------------------------------------


def r_csv(path: Path, rows: list[tuple]) -> Path:
    """ADNIMERGE rows (PTID, VISCODE, DX_bl, DX) as R's write.csv writes them: NA for missing."""

    def cell(value: str | None) -> str:
        return "NA" if value is None else f'"{value}"'

    lines = ['"RID","PTID","VISCODE","DX_bl","MMSE","DX"']
    for i, (ptid, viscode, dx_bl, dx) in enumerate(rows):
        mmse = "NA" if dx is None else "28"
        lines.append(f"{i},{cell(ptid)},{cell(viscode)},{cell(dx_bl)},{mmse},{cell(dx)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_adni_na_cells_are_missing_not_a_diagnosis(tmp_path: Path) -> None:
    path = r_csv(
        tmp_path / "ADNIMERGE.csv",
        [
            ("002_S_0001", "bl", "CN", "CN"),
            ("002_S_0001", "m06", "CN", None),  # NA: not assessed
            ("002_S_0001", "m12", "CN", "CN"),
            ("002_S_0002", "bl", "AD", "Dementia"),
            ("002_S_0002", "m06", "AD", "N/A"),
            ("002_S_0002", "m12", "AD", "n/a"),  # BIDS's spelling
            ("002_S_0003", "bl", "CN", "CN"),
            ("002_S_0003", "m06", "CN", None),
            ("002_S_0003", "m12", "CN", "MCI"),  # a converter all the same
            ("002_S_0004", "bl", None, None),  # no baseline diagnosis
        ],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = adni.read_labels(path)
    assert {k: v[0].label for k, v in table.samples.items()} == {"002_S_0001": 0, "002_S_0002": 1}


def test_adni_twin_writes_na_cells_and_keeps_its_stable_participants(
    preset_twin: Callable[[str], PresetTwin],
) -> None:
    twin = ingested(preset_twin("mri_brain"))
    table = pd.read_csv(twin.root / "ADNIMERGE.csv", dtype=str, keep_default_na=False)
    na = table.loc[table["DX"] == "NA"]
    assert not na.empty and (table.loc[na.index, "MMSE"] == "NA").all()
    stable = {"AD": {"Dementia", "NA"}, "CN": {"CN", "NA"}}
    dx = table.groupby("PTID")["DX"].agg(set)
    baseline = table.groupby("PTID")["DX_bl"].first()
    with_na = {p for p in set(na["PTID"]) if baseline[p] in stable and dx[p] <= stable[baseline[p]]}
    kept = {
        str(read_slices(files_of(twin, row)[:1])[0].PatientID) for row in twin.df.to_dict("records")
    }
    with_images = {p.name for p in twin.dicom_root.iterdir()}
    assert {baseline[p] for p in with_na & with_images} == {"AD", "CN"}
    assert with_na & with_images <= kept
