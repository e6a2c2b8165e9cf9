"""The xray_chest preset on PadChest: the label-table recipe with the table's real quirks, the
vendors formed from its Manufacturer_DICOM column, the 16-bit PNGs shown whatever bits they use,
and the miniature twin ingested and trained through the real config."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers.compose import compose_config, compose_train
from omegaconf import DictConfig

from shiftlab.data.preprocess import XRayPreprocessor, read_slices
from shiftlab.errors import ShiftlabError, instantiate
from shiftlab.ingest.run import ensure_twin, run_ingest
from shiftlab.ingest.vendors import normalise_vendor
from shiftlab.manifest import SPLITS, load_manifest
from shiftlab.recipes import padchest
from shiftlab.synth.twins import padchest as twin
from shiftlab.train import train

VENDORS = ("philips", "imaging_dynamics")

# --- the recipe on a table written as the authors write it -----------------------------------

HEADER = ",ImageID,ImageDir,PatientID,Projection,Manufacturer_DICOM,BitsStored_DICOM,Labels\n"


def write_table(path: Path, rows: list[str], packed: bool = True) -> Path:
    text = HEADER + "".join(f"{i * 7},{row}\n" for i, row in enumerate(rows))
    if packed:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


ROWS = [
    # A study's PA and lateral share their labels; only the PA is kept.
    "s1_a.png,0,p1,PA,PhilipsMedicalSystems,12,['normal']",
    "s1_b.png,0,p1,L,PhilipsMedicalSystems,12,['normal']",
    # A finding with a leading space; ImageDir written as a float.
    "s2_a.png,13.0,p2,PA,ImagingDynamicsCompanyLtd,12,\"['pneumonia', ' alveolar pattern']\"",
    # unchanged is a radiological finding in the authors' taxonomy.
    "s3_a.png,54,p2,PA,ImagingDynamicsCompanyLtd,12,['unchanged']",
    # Unusable labels: excluded, suboptimal, nothing extracted, no labels at all.
    "s4_a.png,1,p3,PA,PhilipsMedicalSystems,10,['exclude']",
    "s5_a.png,1,p3,PA,PhilipsMedicalSystems,10,\"['normal', 'suboptimal study']\"",
    "s6_a.png,1,p4,PA,PhilipsMedicalSystems,12,[]",
    "s7_a.png,1,p4,PA,PhilipsMedicalSystems,12,",
    "s8_a.png,1,p4,PA,PhilipsMedicalSystems,12,nan",
    # Supine bedside image; no manufacturer; no patient; the same image listed twice.
    "s9_a.png,2,p5,AP_horizontal,PhilipsMedicalSystems,12,['cardiomegaly']",
    "s10_a.png,2,p5,PA,None,12,['cardiomegaly']",
    "s11_a.png,2,nan,PA,PhilipsMedicalSystems,12,['normal']",
    "s1_a.png,0,p1,PA,PhilipsMedicalSystems,12,['normal']",
]


def rows_of(table) -> dict[str, tuple[str, str, str]]:
    return {
        row.path: (row.patient_id, row.manufacturer, row.label)
        for row in table.rows.itertuples(index=False)
    }


def test_recipe_labels_pa_images_finding_vs_normal_and_counts_every_dropped_row(
    tmp_path: Path,
) -> None:
    path = write_table(tmp_path / padchest.TABLE_NAME, ROWS)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        table = padchest.sample_table(path)
    assert rows_of(table) == {
        "0/s1_a.png": ("p1", "PhilipsMedicalSystems", "0"),
        "13/s2_a.png": ("p2", "ImagingDynamicsCompanyLtd", "1"),
        "54/s3_a.png": ("p2", "ImagingDynamicsCompanyLtd", "1"),
    }
    assert table.source == padchest.TABLE_NAME
    reasons = dict(table.skipped)
    assert reasons == {
        "0/s1_b.png": "label table: projection L (kept: PA)",
        "1/s4_a.png": "label table: labelled 'exclude'",
        "1/s5_a.png": "label table: labelled 'suboptimal study'",
        "1/s6_a.png": "label table: Labels is [] (nothing extracted)",
        "1/s7_a.png": "label table: Labels empty",
        "1/s8_a.png": "label table: Labels empty",
        "2/s9_a.png": "label table: projection AP_horizontal (kept: PA)",
        "2/s10_a.png": "label table: Manufacturer_DICOM empty",
        "2/s11_a.png": "label table: PatientID empty",
        "0/s1_a.png": "label table: ImageID listed again",
    }
    printed = out.getvalue()
    assert "rows kept:          3 (2 with a finding, 1 normal)" in printed
    assert "rows dropped:       10" in printed
    assert "       2  Labels empty" in printed


def test_recipe_options_follow_the_authors_rule_and_other_projections(tmp_path: Path) -> None:
    path = write_table(tmp_path / "labels.csv", ROWS, packed=False)
    with contextlib.redirect_stdout(io.StringIO()):
        # The authors' own rule: exclude and suboptimal study are no findings, normal stays 0.
        authors = rows_of(padchest.sample_table(path, drop_labels=[]))
        # unchanged set aside: a study labelled only unchanged has no usable label.
        strict = padchest.sample_table(path, ignored_labels=["unchanged"])
        wider = rows_of(padchest.sample_table(path, projections=["PA", "AP_horizontal"]))
    assert authors["1/s5_a.png"][2] == "0" and "1/s4_a.png" not in authors
    assert "54/s3_a.png" not in rows_of(strict)
    assert dict(strict.skipped)["54/s3_a.png"] == "label table: no finding and no 'normal' label"
    assert wider["2/s9_a.png"] == ("p5", "PhilipsMedicalSystems", "1")


def test_recipe_finds_the_unpacked_table_and_says_what_is_missing(tmp_path: Path) -> None:
    write_table(tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", ROWS, False)
    with contextlib.redirect_stdout(io.StringIO()):
        table = padchest.sample_table(tmp_path / padchest.TABLE_NAME)  # the .csv.gz is absent
    assert len(table.rows) == 3
    with pytest.raises(ShiftlabError, match=r"not found: .*\.csv\.gz.*dataset.sample_table.path"):
        padchest.sample_table(tmp_path / "other" / padchest.TABLE_NAME)
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageID,Labels\na.png,['normal']\n")
    with pytest.raises(ShiftlabError, match=r"lacks column\(s\) \['ImageDir', 'PatientID'"):
        padchest.sample_table(bad)
    lateral_only = write_table(tmp_path / "lateral.csv", [ROWS[1]], packed=False)
    with (
        contextlib.redirect_stdout(io.StringIO()),
        pytest.raises(ShiftlabError, match=r"no row is usable.*projection L"),
    ):
        padchest.sample_table(lateral_only)


@pytest.mark.parametrize(
    ("manufacturer", "vendor"),
    [
        ("PhilipsMedicalSystems", "philips"),
        ("ImagingDynamicsCompanyLtd", "imaging_dynamics"),
        ("Imaging Dynamics Company Ltd.", "imaging_dynamics"),
        ("PhilipsHealthcare", "philips"),
        ("Philipsburg Imaging", "unknown"),
    ],
)
def test_padchest_manufacturer_spellings_name_their_vendor(manufacturer: str, vendor: str) -> None:
    assert normalise_vendor(manufacturer) == vendor


# --- display of 16-bit PNGs ---------------------------------------------------------------------


def chest_png(path: Path, top: int) -> Path:
    """A bright spine column on dark lungs, stored with values up to ``top``."""
    image = np.full((64, 64), 0.2)
    image[:, 28:36] = 0.9
    sitk.WriteImage(sitk.GetImageFromArray(np.round(image * top).astype(np.uint16)), str(path))
    return path


def test_png_radiographs_are_shown_by_their_own_range_whatever_bits_they_use(
    tmp_path: Path,
) -> None:
    twelve = read_slices([chest_png(tmp_path / "a.png", 4095)])
    sixteen = read_slices([chest_png(tmp_path / "b.png", 65535)])
    shown = XRayPreprocessor(size=32, no_window="percentile")
    for slices in (twelve, sixteen):
        image = shown(slices, {})[0]
        assert image[:, 15:17].mean() > 0.95 and image[:, :8].mean() < 0.05
    # DICOM's rule (the full range of the 16 stored bits) leaves 12-bit data nearly black.
    assert XRayPreprocessor(size=32)(twelve, {})[0].max() < 0.07
    with pytest.raises(ShiftlabError, match="no_window='auto'"):
        XRayPreprocessor(size=32, no_window="auto")


# --- the twin through the real config ---------------------------------------------------------


@dataclass
class IngestedTwin:
    cfg: DictConfig
    release: Path
    table: pd.DataFrame
    df: pd.DataFrame
    meta: dict
    output: str


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory) -> IngestedTwin:
    base = tmp_path_factory.mktemp("padchest")
    cfg = compose_config("ingest", base / "data", base / "out", "dataset=xray_chest", "twin=true")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ensure_twin(cfg.dataset)
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    df, _ = load_manifest(cfg.dataset.manifest_dir)
    meta = json.loads((Path(cfg.dataset.manifest_dir) / "manifest.json").read_text())
    release = Path(cfg.dataset.root) / twin.RELEASE
    table = pd.read_csv(release / padchest.TABLE_NAME, dtype=str, keep_default_na=False)
    return IngestedTwin(cfg, release, table, df, meta, out.getvalue())


def test_twin_has_the_release_layout_and_the_tables_quirks(chest: IngestedTwin) -> None:
    assert Path(chest.cfg.dataset.dicom_root) == chest.release
    assert (chest.release.parent / "TWIN.txt").read_text().startswith("Miniature synthetic twin")
    assert sorted(p.name for p in chest.release.iterdir() if p.is_dir()) == ["0", "1", "54"]
    table = chest.table
    assert table.columns[0] == "Unnamed: 0" and tuple(table.columns[1:]) == twin.COLUMNS
    assert set(table["Manufacturer_DICOM"]) == set(twin.MANUFACTURERS.values())
    assert {"PA", "L", "AP_horizontal"} == set(table["Projection"])
    assert {"['exclude']", "['normal', 'suboptimal study']", "[]", ""} <= set(table["Labels"])
    assert table["Labels"].str.contains("' alveolar pattern'").any()
    # A study's images share labels; some patients have several studies.
    assert table.groupby("StudyID")["Labels"].nunique().eq(1).all()
    assert table.groupby("PatientID")["StudyID"].nunique().max() > 1
    # 16-bit PNGs: Philips keeps its 10 or 12 stored bits, Imaging Dynamics spans 16.
    where = table["ImageDir"] + "/" + table["ImageID"]
    maker = dict(zip(where, table["Manufacturer_DICOM"], strict=True))
    tops: dict[str, set[bool]] = {}
    for path in chest.df["paths"]:
        pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(chest.release / path)))
        assert pixels.dtype == np.uint16
        tops.setdefault(maker[path], set()).add(int(pixels.max()) < 2**12)
    assert tops == {"PhilipsMedicalSystems": {True}, "ImagingDynamicsCompanyLtd": {False}}


def test_twin_ingests_with_vendors_from_the_table_column(chest: IngestedTwin) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        table = padchest.sample_table(chest.release / padchest.TABLE_NAME)
    skipped = pd.read_csv(Path(chest.cfg.dataset.manifest_dir) / "skipped.csv")
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    # One PA image is listed but missing, one is cut short: both skipped with the reason.
    unreadable = {p: r for p, r in reasons.items() if not r.startswith("label table:")}
    assert sorted(unreadable.values()) == [
        "no such file or folder",
        "truncated: PNG has no IEND chunk",
    ]
    assert all(r.startswith("label table:") for p, r in reasons.items() if p not in unreadable)
    kept = table.rows[~table.rows["path"].isin(unreadable)]
    vendors = kept["manufacturer"].map(normalise_vendor)
    expected = kept.assign(vendor=vendors, label=kept["label"].astype(int))
    assert chest.df.groupby(["vendor", "label"]).size().to_dict() == (
        expected.groupby(["vendor", "label"]).size().to_dict()
    )
    assert set(chest.df["vendor"]) == set(VENDORS)
    assert sorted(chest.df["paths"]) == sorted(kept["path"])
    assert chest.meta["vendor_source"] == {padchest.VENDOR_SOURCE: len(chest.df)}
    # A patient's studies share one pseudonym and one split.
    raw = kept.set_index("path")["patient_id"]
    patients = chest.df.assign(raw=chest.df["paths"].map(raw))
    assert patients.groupby("raw")["patient_id"].nunique().eq(1).all()
    assert patients.groupby("raw")["split"].nunique().eq(1).all()
    assert patients.groupby("raw").size().max() > 1
    for vendor in VENDORS:
        rows = chest.df[chest.df["vendor"] == vendor]
        for split in SPLITS:
            assert set(rows.loc[rows["split"] == split, "label"]) == {0, 1}, (vendor, split)
    assert (
        "usable pairs:       imaging_dynamics->philips, philips->imaging_dynamics" in chest.output
    )
    assert "       2  labelled 'exclude'" in chest.output


def test_twin_images_show_bright_spine_on_dark_lungs_for_both_vendors(
    chest: IngestedTwin,
) -> None:
    preprocess = instantiate(chest.cfg.dataset.preprocess)
    assert preprocess.no_window == "percentile" and preprocess.shape == (1, 224, 224)
    for paths in chest.df["paths"]:
        image = preprocess(read_slices([chest.release / paths]), {})[0]
        spine, lungs = image[56:160, 104:120].mean(), image[56:160, 40:72].mean()
        assert spine > lungs + 0.3, paths


@pytest.mark.slow  # the whole twin generated again (docs/tests.md)
def test_twin_is_deterministic_from_the_seed(tmp_path: Path) -> None:
    def digest(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    first = digest(twin.generate(tmp_path / "a", seed=0))
    assert first == digest(twin.generate(tmp_path / "b", seed=0))
    assert first != digest(twin.generate(tmp_path / "c", seed=1))


@pytest.mark.slow
def test_preset_trains_philips_to_imaging_dynamics_on_its_twin(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path / "data",
        tmp_path / "out",
        "dataset=xray_chest",
        "twin=true",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "dataset.preprocess.size=64",  # the preset's network, on a smaller input: seconds on a CPU
        "data.batch_size=4",
        "data.eval_batch_size=16",
    )
    assert cfg.model.name == "densenet121" and cfg.dataset.input_channels == 1
    assert (cfg.source, cfg.target) == VENDORS
    with contextlib.redirect_stdout(io.StringIO()):
        result = train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "done").exists()
    assert result["scenario"] == "xray_chest/philips->imaging_dynamics"
    for vendor in VENDORS:
        assert 0.0 <= result["metrics"][f"test/{vendor}/auroc"] <= 1.0


def test_missing_padchest_says_where_to_get_it(tmp_path: Path) -> None:
    from shiftlab.data.prepare import ensure_manifest

    cfg = compose_train(tmp_path / "empty", tmp_path / "out", "dataset=xray_chest")
    with pytest.raises(ShiftlabError) as error:
        ensure_manifest(cfg)
    message = str(error.value)
    assert "b2drop.bsc.es/index.php/s/BIMCV-PadChest-FULL" in message
    assert f"{cfg.dataset.dicom_root}/<ImageDir>/<ImageID>.png" in message
    assert "python -m shiftlab.ingest dataset=xray_chest" in message
    assert "twin=true" in message
