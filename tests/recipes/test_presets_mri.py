"""The MRI presets (mri_breast, mri_prostate, mri_brain): label recipes on hand-made label files,
the 2.5D slice preprocessor, and each miniature twin ingested through the real config.

Expected manifest counts are worked out from what a twin wrote (its label file read by the
recipe, its DICOM headers read here), not hard-coded.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from helpers.compose import compose_config
from helpers.dicom_factory import write_series
from helpers.sets import PresetTwin
from omegaconf import DictConfig, OmegaConf

from shiftlab.data.cache import build_preprocessor
from shiftlab.data.preprocess import MRISlicePreprocessor, read_slices
from shiftlab.domains import usable_domains
from shiftlab.errors import ShiftlabError, instantiate
from shiftlab.ingest.vendors import normalise_vendor
from shiftlab.manifest import PATH_SEPARATOR, SPLITS, load_manifest
from shiftlab.recipes import adni, duke_breast_mri, prostate_mri_us_biopsy

PRESETS = ("mri_breast", "mri_prostate", "mri_brain")


def samples_of(table) -> dict[str, list[tuple[str, int, dict]]]:
    return {k: [(s.name, s.label, s.extra) for s in v] for k, v in table.samples.items()}


# --- Duke-Breast-Cancer-MRI: Annotation_Boxes.xlsx -------------------------------------------

DUKE_COLUMNS = list(duke_breast_mri.BOX_COLUMNS)


def duke_boxes(path: Path, rows: list[tuple]) -> Path:
    table = pd.DataFrame(
        [(p, 10, 20, 30, 40, start, end) for p, start, end in rows],
        columns=["Patient ID", *DUKE_COLUMNS],
    )
    table.to_excel(path, index=False)
    return path


def test_duke_slices_in_the_box_are_positive_and_negatives_keep_their_distance(
    tmp_path: Path,
) -> None:
    path = duke_boxes(tmp_path / "Annotation_Boxes.xlsx", [("Breast_MRI_001", 10, 12)])
    table = duke_breast_mri.read_labels(path)
    assert table.key_tag == "PatientID"
    samples = samples_of(table)["Breast_MRI_001"]
    # Slices 10 and 11 (1-based; End Slice 12 is exclusive) are positive; negatives start 3
    # slices outside the box, every 2nd slice, alternately below and above, as many as
    # positives: 7, 15.
    expected = {9: 1, 10: 1, 6: 0, 14: 0}
    assert {e["slice_index"]: label for _, label, e in samples} == expected
    assert [name for name, _, _ in samples] == [f"slice{k:03d}" for k in sorted(expected)]


def test_duke_negative_count_margin_and_stride_are_settings(tmp_path: Path) -> None:
    path = duke_boxes(tmp_path / "boxes.xlsx", [("A", 10, 13), ("B", 2, 3)])
    table = duke_breast_mri.read_labels(
        path, margin=5, negatives_per_positive=0.5, negative_stride=1
    )
    negatives = {
        key: sorted(e["slice_index"] + 1 for _, label, e in v if label == 0)
        for key, v in samples_of(table).items()
    }
    # A: 3 positives (10-12) -> 2 negatives, at 5 (= 10 - 5) and 18 (= 13 + 5).
    # B: no room below slice 2, so all above: 8.
    assert negatives == {"A": [5, 18], "B": [8]}
    none = duke_breast_mri.read_labels(path, negatives_per_positive=0)
    assert all(label == 1 for v in samples_of(none).values() for _, label, _ in v)


def test_duke_patient_with_two_boxes_gets_their_union(tmp_path: Path) -> None:
    path = duke_boxes(tmp_path / "boxes.xlsx", [("A", 10, 12), ("A", 20, 21)])
    samples = samples_of(duke_breast_mri.read_labels(path, margin=3))["A"]
    labels = {e["slice_index"] + 1: label for _, label, e in samples}
    assert [s for s, label in labels.items() if label == 1] == [10, 11, 20]
    negatives = [s for s, label in labels.items() if label == 0]
    assert negatives and all(s <= 7 or 15 <= s <= 17 or s >= 24 for s in negatives)


def test_duke_label_file_errors_name_the_file_and_columns(tmp_path: Path) -> None:
    with pytest.raises(ShiftlabError, match=r"Annotation_Boxes\.xlsx from https://"):
        duke_breast_mri.read_labels(tmp_path / "absent.xlsx")
    wrong = tmp_path / "wrong.xlsx"
    pd.DataFrame({"Patient ID": ["A"], "Start Slice": [1]}).to_excel(wrong, index=False)
    with pytest.raises(ShiftlabError) as error:
        duke_breast_mri.read_labels(wrong)
    assert str(wrong) in str(error.value)
    assert "'End Slice'" in str(error.value) and "found ['Patient ID', 'Start Slice']" in str(
        error.value
    )
    backwards = duke_boxes(tmp_path / "backwards.xlsx", [("A", 1, 2), ("B", 9, 4)])
    with pytest.raises(ShiftlabError, match=r"line 3: Start Slice and End Slice"):
        duke_breast_mri.read_labels(backwards)


# --- Prostate-MRI-US-Biopsy: the biopsy spreadsheet ------------------------------------------


@pytest.mark.parametrize(
    ("primary", "secondary", "group"),
    [
        (np.nan, np.nan, 0),
        (0, 0, 0),
        (3, 3, 1),
        (3, 4, 2),
        (4, 3, 3),
        (4, 4, 4),
        (3, 5, 4),
        (5, 4, 5),
        (3, np.nan, None),
        (7, 3, None),
    ],
)
def test_gleason_patterns_give_isup_grade_groups(primary, secondary, group) -> None:
    assert prostate_mri_us_biopsy.grade_group(float(primary), float(secondary)) == group


def biopsy_table(path: Path, cores: list[tuple]) -> Path:
    """cores: (patient, MRI series UID, primary, secondary)."""
    pd.DataFrame(
        [
            {
                "Patient Number": p,
                "Series Instance UID (MRI)": s,
                "Core Label": f"C{i}",
                "Primary Gleason": a,
                "Secondary Gleason": b,
            }
            for i, (p, s, a, b) in enumerate(cores)
        ]
    ).to_excel(path, index=False)
    return path


def test_biopsy_label_is_any_core_of_grade_group_two_or_more(tmp_path: Path) -> None:
    nan = np.nan
    path = biopsy_table(
        tmp_path / "TCIA-Biopsy-Data_2020-07-14.xlsx",
        [
            ("P-1", "1.1", nan, nan),
            ("P-1", "1.1", 3, 4),  # significant
            ("P-2", "2.1", 3, 3),  # low grade only
            ("P-2", "2.1", nan, nan),
            ("P-3", "3.1", nan, nan),  # first MRI: benign
            ("P-3", "3.2", 4, 3),  # second MRI: significant
            ("P-3", None, 4, 4),  # systematic cores without an MRI: ignored per series
            ("P-4", "4.1", nan, nan),
            ("P-4", "4.1", 3, nan),  # unreadable core, nothing else significant: left out
            ("P-5", "5.1", 3, nan),
            ("P-5", "5.1", 4, 5),  # unreadable core, but another is significant
        ],
    )
    by_series = prostate_mri_us_biopsy.read_labels(path)
    assert by_series.key_tag == "SeriesInstanceUID"
    assert {k: v[0][1] for k, v in samples_of(by_series).items()} == {
        "1.1": 1,
        "2.1": 0,
        "3.1": 0,
        "3.2": 1,
        "5.1": 1,
    }
    by_patient = prostate_mri_us_biopsy.read_labels(path, key="patient")
    assert by_patient.key_tag == "PatientID"
    assert {k: v[0][1] for k, v in samples_of(by_patient).items()} == {
        "P-1": 1,
        "P-2": 0,
        "P-3": 1,
        "P-5": 1,
    }
    strict = prostate_mri_us_biopsy.read_labels(path, min_grade_group=3)
    assert {k: v[0][1] for k, v in samples_of(strict).items()}["1.1"] == 0


def test_biopsy_table_errors(tmp_path: Path) -> None:
    with pytest.raises(ShiftlabError, match="biopsy table not found"):
        prostate_mri_us_biopsy.read_labels(tmp_path / "absent.xlsx")
    path = biopsy_table(tmp_path / "t.xlsx", [("P-1", "1.1", 3, 4), ("P-2", "1.1", 3, 3)])
    with pytest.raises(ShiftlabError, match=r"'1.1' belongs to two patients"):
        prostate_mri_us_biopsy.read_labels(path)
    with pytest.raises(ShiftlabError) as error:
        prostate_mri_us_biopsy.read_labels(path, primary_column="Gleason Primary")
    message = str(error.value)
    assert "lacks column(s) ['Gleason Primary']" in message
    assert "'Primary Gleason'" in message and "primary_column" in message
    with pytest.raises(ShiftlabError, match="key='study'"):
        prostate_mri_us_biopsy.read_labels(path, key="study")


# --- ADNI: ADNIMERGE.csv ---------------------------------------------------------------------


def adnimerge(path: Path, visits: list[tuple[str, str, str, str]]) -> Path:
    """visits: (PTID, VISCODE, DX_bl, DX)."""
    rows = ["RID,PTID,VISCODE,EXAMDATE,DX_bl,AGE,DX"]
    for i, (ptid, viscode, dx_bl, dx) in enumerate(visits):
        rows.append(f"{i},{ptid},{viscode},2006-01-01,{dx_bl},75.0,{dx}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_adni_baseline_ad_vs_cn_without_converters(tmp_path: Path) -> None:
    path = adnimerge(
        tmp_path / "ADNIMERGE.csv",
        [
            ("002_S_0001", "bl", "AD", "Dementia"),
            ("002_S_0001", "m06", "AD", ""),
            ("002_S_0002", "bl", "CN", "CN"),
            ("002_S_0002", "m12", "CN", "CN"),
            ("002_S_0003", "bl", "LMCI", "MCI"),
            ("002_S_0004", "bl", "EMCI", "MCI"),
            ("002_S_0005", "bl", "SMC", "CN"),
            ("002_S_0006", "bl", "CN", "CN"),
            ("002_S_0006", "m24", "CN", "MCI"),  # converter
            ("002_S_0007", "bl", "AD", "Dementia"),
            ("002_S_0007", "m12", "AD", "MCI"),  # reverter
            ("002_S_0008", "bl", "CN", "NL"),  # an older release's spelling
            ("002_S_0009", "bl", "AD", "Dementia"),
            ("002_S_0009", "m06", "CN", "Dementia"),  # disagreeing baselines
        ],
    )
    table = adni.read_labels(path)
    assert table.key_tag == "PatientID"
    labels = {k: v[0][1] for k, v in samples_of(table).items()}
    assert labels == {"002_S_0001": 1, "002_S_0002": 0, "002_S_0008": 0}
    kept = adni.read_labels(path, exclude_converters=False)
    labels = {k: v[0][1] for k, v in samples_of(kept).items()}
    assert labels == {
        "002_S_0001": 1,
        "002_S_0002": 0,
        "002_S_0006": 0,
        "002_S_0007": 1,
        "002_S_0008": 0,
    }
    mci = adni.read_labels(path, positive=["LMCI", "EMCI"], exclude_converters=False)
    assert {k for k, v in mci.samples.items() if v[0].label == 1} == {"002_S_0003", "002_S_0004"}


def test_adni_table_errors(tmp_path: Path) -> None:
    with pytest.raises(ShiftlabError, match=r"ADNIMERGE\.csv from LONI IDA"):
        adni.read_labels(tmp_path / "absent.csv")
    path = tmp_path / "ADNIMERGE.csv"
    path.write_text("RID,PTID,DX_bl\n1,002_S_0001,AD\n")
    with pytest.raises(ShiftlabError, match=r"lacks column\(s\) \['DX'\]"):
        adni.read_labels(path)
    assert samples_of(adni.read_labels(path, exclude_converters=False)) == {
        "002_S_0001": [("", 1, {})]
    }
    with pytest.raises(ShiftlabError, match="both positive and negative"):
        adni.read_labels(path, positive=["AD"], negative=["AD", "CN"])


# --- MRISlicePreprocessor --------------------------------------------------------------------


def slice_series(tmp_path: Path, instance_numbers=None):
    """Five 8x8 slices; slice k (in position order) holds 1000 * k + a ramp."""
    written = write_series(
        tmp_path / "series",
        patient_id="P",
        n_slices=5,
        shuffle_file_names=True,
        instance_numbers=instance_numbers,
    )
    return read_slices(list(written.files))


def channel_means(volume: np.ndarray) -> list[float]:
    return [float(v) for v in volume.mean(axis=(1, 2))]


def test_slice_preprocessor_takes_the_slice_and_its_clamped_neighbours(tmp_path: Path) -> None:
    slices = slice_series(tmp_path)
    pre = MRISlicePreprocessor(size=8, context=1)
    assert pre.shape == (3, 8, 8)
    raw = np.stack([ds.pixel_array.astype(np.float64) for ds in slices])
    mean, std = raw.mean(), raw.std()

    def expected(indices: list[int]) -> list[float]:
        return [float((raw[k].mean() - mean) / std) for k in indices]

    middle = pre(slices, {"slice_index": 2})
    assert middle.dtype == np.float32
    # z-scored with the statistics of the whole series, not of the three slices.
    np.testing.assert_allclose(channel_means(middle), expected([1, 2, 3]), atol=1e-3)
    np.testing.assert_allclose(
        channel_means(pre(slices, {"slice_index": 0})), expected([0, 0, 1]), atol=1e-3
    )
    np.testing.assert_allclose(
        channel_means(pre(slices, {"slice_index": 4})), expected([3, 4, 4]), atol=1e-3
    )
    single = MRISlicePreprocessor(size=16, context=0, intensity="percentile")
    out = single(slices, {"slice_index": 3.0})
    assert out.shape == (1, 16, 16) and out.min() >= 0.0 and out.max() <= 1.0


def test_slice_numbering_by_instance_number(tmp_path: Path) -> None:
    # InstanceNumbers run top-down: the slice numbered 1 is the last one by position.
    slices = slice_series(tmp_path, instance_numbers=[5, 4, 3, 2, 1])
    by_position = MRISlicePreprocessor(size=8, context=0)
    by_instance = MRISlicePreprocessor(size=8, context=0, slice_numbering="instance")
    assert by_position.slice_position(slices, {"slice_index": 0}) == 0
    assert by_instance.slice_position(slices, {"slice_index": 0}) == 4
    assert by_instance.slice_position(slices, {"slice_index": 3}) == 1


def test_slice_preprocessor_errors(tmp_path: Path) -> None:
    slices = slice_series(tmp_path)
    pre = MRISlicePreprocessor(size=8)
    with pytest.raises(ShiftlabError, match="slice_index=5 is outside its series of 5 slices"):
        pre(slices, {"slice_index": 5})
    with pytest.raises(ShiftlabError, match="manifest column 'slice_index'"):
        pre(slices, {})
    with pytest.raises(ShiftlabError, match="slice_numbering='file'"):
        MRISlicePreprocessor(size=8, slice_numbering="file")
    with pytest.raises(ShiftlabError, match="intensity='minmax'"):
        MRISlicePreprocessor(size=8, intensity="minmax")


# --- The presets on their twins --------------------------------------------------------------


@dataclass
class Twin:
    cfg: DictConfig
    root: Path
    df: pd.DataFrame
    meta: dict
    output: str
    series: pd.DataFrame  # one row per series the twin wrote, from its headers


def scan_twin(dicom_root: Path) -> pd.DataFrame:
    """One row per series folder of a twin: its headers and file count."""
    rows = []
    for folder in sorted({p.parent for p in dicom_root.rglob("*.dcm")}):
        files = sorted(folder.glob("*.dcm"))
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        rows.append(
            {
                "folder": folder.relative_to(dicom_root).as_posix(),
                "PatientID": str(ds.PatientID),
                "SeriesInstanceUID": str(ds.SeriesInstanceUID),
                "SeriesDescription": str(ds.SeriesDescription),
                "vendor": normalise_vendor(str(ds.Manufacturer)),
                "n_files": len(files),
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def twins(preset_twin: Callable[[str], PresetTwin]) -> Callable[[str], Twin]:
    """The session's ingested twin of a preset (conftest.preset_twin), with its manifest and
    the series it holds."""
    made: dict[str, Twin] = {}

    def get(preset: str) -> Twin:
        if preset not in made:
            ingested = preset_twin(preset)
            cfg = ingested.cfg
            df, meta = load_manifest(cfg.dataset.manifest_dir)
            made[preset] = Twin(
                cfg=cfg,
                root=Path(cfg.dataset.root),
                df=df,
                meta=meta,
                output=ingested.output,
                series=scan_twin(Path(cfg.dataset.dicom_root)),
            )
        return made[preset]

    return get


def expected_counts(twin: Twin) -> Counter:
    """(vendor, label) -> samples, from the twin's label file and its DICOM headers."""
    labels = instantiate(twin.cfg.dataset.labels)
    selection = OmegaConf.to_container(twin.cfg.dataset.ingest, resolve=True)
    counts: Counter = Counter()
    chosen = twin.series
    for keyword, pattern in selection["series_filter"].items():
        chosen = chosen[chosen[keyword].map(lambda v, p=pattern: bool(re.search(p, v)))]
    if selection["series_per_key"] != "all":
        assert not chosen[labels.key_tag].duplicated().any()  # every twin key has one series
    for _, row in chosen.iterrows():
        for sample in labels.samples.get(row[labels.key_tag], []):
            counts[(row["vendor"], sample.label)] += 1
    return counts


@pytest.mark.parametrize("preset", PRESETS)
def test_twin_ingests_to_the_samples_its_label_file_and_headers_give(twins, preset: str) -> None:
    twin = twins(preset)
    assert twin.root == Path(twin.cfg.paths.data_dir) / "twins" / preset
    assert (twin.root / "TWIN.txt").read_text().startswith("Miniature synthetic twin of")
    got = Counter(dict(twin.df.groupby(["vendor", "label"]).size()))
    assert got == expected_counts(twin)
    assert "skipped files:      0" in twin.output
    # Both default domains hold both classes in train, val and test, so both directions train.
    domains = twin.cfg.dataset.domains
    usable = usable_domains(twin.df, OmegaConf.to_container(domains.groups))
    assert {domains.source, domains.target} <= set(usable)
    for split in SPLITS:
        assert twin.df.loc[twin.df["split"] == split, "label"].nunique() == 2


@pytest.mark.parametrize("preset", PRESETS)
def test_twin_series_filter_drops_the_other_sequences(twins, preset: str) -> None:
    twin = twins(preset)
    pattern = twin.cfg.dataset.ingest.series_filter.SeriesDescription
    used = {p.rsplit("/", 1)[0] for paths in twin.df["paths"] for p in paths.split(PATH_SEPARATOR)}
    descriptions = dict(zip(twin.series["folder"], twin.series["SeriesDescription"], strict=True))
    assert used and all(re.search(pattern, descriptions[folder]) for folder in used)
    dropped = [d for d in descriptions.values() if not re.search(pattern, d)]
    # Every patient's study also holds series that are not the input.
    assert len(dropped) >= twin.series["PatientID"].nunique()
    assert twin.meta["n_series_not_chosen"] >= len(dropped)


def test_breast_twin_gives_slice_samples_of_the_pre_contrast_series(twins) -> None:
    twin = twins("mri_breast")
    df = twin.df
    assert twin.meta["sample_unit"] == "slice"
    assert {"ge", "siemens"} == set(df["vendor"])
    assert set(df["manufacturer"]) == {"GE MEDICAL SYSTEMS", "SIEMENS"}
    # Every patient has both positive and negative slices of one series.
    per_series = df.groupby("series_id")["label"].agg(["min", "max"])
    assert (per_series["min"] == 0).all() and (per_series["max"] == 1).all()
    assert df.groupby("patient_id")["series_id"].nunique().eq(1).all()
    folders = {p.split(PATH_SEPARATOR)[0].split("/")[2] for p in df["paths"]}
    assert not any(re.search(r"1st|2nd|Ph\d|ax t1", f, re.IGNORECASE) for f in folders)
    # The tumour is bright on its slices: positives are brighter where the box is.
    pre = build_preprocessor(OmegaConf.to_container(twin.cfg.dataset.preprocess, resolve=True))
    assert pre.shape == (twin.cfg.dataset.input_channels, 256, 256)
    dicom_root = Path(twin.cfg.dataset.dicom_root)
    brightest = {0: [], 1: []}
    for row in df[df["vendor"] == "ge"].head(24).to_dict("records"):
        files = [dicom_root / p for p in row["paths"].split(PATH_SEPARATOR)]
        image = pre(read_slices(files), row)
        brightest[row["label"]].append(float(np.percentile(image[1], 99.5)))
    assert np.mean(brightest[1]) > np.mean(brightest[0])


def test_prostate_twin_has_three_vendors_and_splits_other_from_siemens(twins) -> None:
    twin = twins("mri_prostate")
    df = twin.df
    assert set(df["vendor"]) == {"siemens", "ge", "philips"}
    assert set(df["manufacturer"]) == {"SIEMENS", "GE MEDICAL SYSTEMS", "Philips Medical Systems"}
    # The patient biopsied after two MRIs gives two samples with their own labels.
    per_patient = df.groupby("patient_id")["label"].agg(["size", "nunique"])
    assert ((per_patient["size"] == 2) & (per_patient["nunique"] == 2)).sum() == 1
    assert twin.cfg.dataset.domains.groups.other.exclude == ["siemens"]
    assert "labels unmatched:   1 of" in twin.output  # the patient without images


def test_brain_twin_keeps_ad_and_cn_and_every_t1_of_a_participant(twins) -> None:
    twin = twins("mri_brain")
    df = twin.df
    assert set(df["vendor"]) == {"siemens", "ge", "philips"}
    table = pd.read_csv(twin.root / "ADNIMERGE.csv", dtype=str, keep_default_na=False)
    baseline = table.drop_duplicates("PTID").set_index("PTID")["DX_bl"]
    with_images = set(twin.series["PatientID"])
    left_out = {p for p in with_images if baseline[p] in ("LMCI", "EMCI", "SMC")}
    converters = set(table.loc[(table["DX_bl"] == "CN") & (table["DX"] == "MCI"), "PTID"])
    assert left_out and converters
    kept = with_images - left_out - converters
    assert df["patient_id"].nunique() == len(kept)
    assert twin.meta["n_series_unlabelled"] == len(left_out | converters)
    # Repeat scans and a second visit: some participants give two samples.
    assert df.groupby("patient_id").size().max() == 2


@pytest.mark.slow  # the whole twin generated again (docs/tests.md)
@pytest.mark.parametrize("preset", PRESETS)
def test_twin_is_deterministic_from_its_seed(twins, preset: str, tmp_path: Path) -> None:
    twin = twins(preset)

    def digest(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and "manifest" not in p.relative_to(root).parts
        }

    instantiate(twin.cfg.dataset.twin_generator, out_dir=str(tmp_path))
    assert digest(tmp_path) == digest(twin.root)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_config_is_consistent(preset: str, tmp_path: Path) -> None:
    cfg = compose_config("train", tmp_path / "data", tmp_path / "out", f"dataset={preset}")
    assert cfg.dataset.root == f"{tmp_path / 'data'}/{preset}"
    pre = build_preprocessor(OmegaConf.to_container(cfg.dataset.preprocess, resolve=True))
    assert pre.shape[0] == cfg.dataset.input_channels
    assert cfg.model.name == "mrnet2d"
    assert "https://" in cfg.dataset.download
