"""The VinDr X-ray presets (xray_chest_vindr: VinDr-CXR, xray_mammo: VinDr-Mammo): label recipes
on hand-made label files, and each miniature twin through the real config (VinDr-CXR's files
carry no vendor, so its twin is read, not ingested: tests/recipes/test_real_quirks_ct_xray.py)."""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from helpers.compose import compose_config
from omegaconf import DictConfig

from shiftlab.data.preprocess import MammoPreprocessor, XRayPreprocessor, read_slices
from shiftlab.errors import ShiftlabError, instantiate
from shiftlab.ingest.run import ensure_twin, run_ingest
from shiftlab.ingest.vendors import normalise_vendor
from shiftlab.labels import FILE_STEM
from shiftlab.manifest import SPLITS, load_manifest
from shiftlab.recipes import vindr_cxr, vindr_mammo
from shiftlab.synth.twins import vindr_cxr as cxr_twin
from shiftlab.synth.twins import vindr_mammo as mammo_twin

FINDING_COLUMNS = "Aortic enlargement,Nodule/Mass,Other diseases,No finding"


def labels_of(table) -> dict[str, int]:
    return {key: samples[0].label for key, samples in table.samples.items()}


# --- VinDr-CXR recipe ------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_cxr_majority_of_readers_decides_and_test_file_is_consensus(tmp_path: Path) -> None:
    train = write(
        tmp_path / "image_labels_train.csv",
        f"image_id,rad_id,{FINDING_COLUMNS}\n"
        # 3 of 3 readers: no finding -> 0
        "a,R1,0,0,0,1\na,R2,0,0,0,1\na,R3,0,0,0,1\n"
        # 2 of 3: no finding -> 0 (the dissenting reader is outvoted)
        "b,R1,0,0,0,1\nb,R4,0,1,0,0\nb,R5,0,0,0,1\n"
        # 1 of 3: no finding -> 1
        "c,R2,1,0,0,0\nc,R3,0,0,0,1\nc,R9,0,1,0,0\n"
        # 0 of 3 -> 1, even when a reader ticked nothing but a global label
        "d,R1,0,0,1,0\nd,R2,1,0,0,0\nd,R3,0,1,0,0\n",
    )
    test = write(
        tmp_path / "image_labels_test.csv",
        "image_id,Aortic enlargement,Nodule/Mass,Other disease,No finding\ne,0,0,0,1\nf,0,1,0,0\n",
    )
    table = vindr_cxr.read_labels(train, test)
    assert table.key_tag == FILE_STEM
    assert labels_of(table) == {"a": 0, "b": 0, "c": 1, "d": 1, "e": 0, "f": 1}
    # No patient ids in VinDr-CXR: each image is its own patient.
    assert {k: s[0].patient for k, s in table.samples.items()} == {k: k for k in "abcdef"}
    assert all(s[0].name == "" and s[0].extra == {} for s in table.samples.values())
    # A stricter rule: negative only when every reader saw nothing.
    strict = vindr_cxr.read_labels(train, test, negative_majority=0.9)
    assert labels_of(strict)["b"] == 1 and labels_of(strict)["a"] == 0
    # The training file alone, or a file without reader column.
    assert set(vindr_cxr.read_labels(train).samples) == set("abcd")
    assert labels_of(vindr_cxr.read_labels(test, reader_column=None)) == {"e": 0, "f": 1}


def test_cxr_label_file_errors_say_what_to_fix(tmp_path: Path) -> None:
    missing = tmp_path / "image_labels_train.csv"
    with pytest.raises(ShiftlabError, match=f"not found: {missing}.*annotations/"):
        vindr_cxr.read_labels(missing)
    write(missing, "image_id,No finding\na,1\n")
    with pytest.raises(ShiftlabError, match=r"lacks column\(s\) \['rad_id'\].*found \['image_id'"):
        vindr_cxr.read_labels(missing)
    bad = write(tmp_path / "bad.csv", "image_id,rad_id,No finding\na,R1,1\na,R2,yes\n")
    with pytest.raises(ShiftlabError, match=r"'No finding' must hold 0 or 1.*line 3: 'yes'"):
        vindr_cxr.read_labels(bad)
    twice = write(tmp_path / "twice.csv", "image_id,rad_id,No finding\na,R1,1\na,R1,0\n")
    with pytest.raises(ShiftlabError, match=r"line 3 repeats a reading"):
        vindr_cxr.read_labels(twice)
    train = write(tmp_path / "train.csv", "image_id,rad_id,No finding\na,R1,1\n")
    test = write(tmp_path / "test.csv", "image_id,No finding\na,1\n")
    with pytest.raises(ShiftlabError, match=r"'a' is listed in both"):
        vindr_cxr.read_labels(train, test)
    empty = write(tmp_path / "empty.csv", "image_id,rad_id,No finding\n,R1,1\n")
    with pytest.raises(ShiftlabError, match=r"empty 'image_id' on line 2"):
        vindr_cxr.read_labels(empty)
    with pytest.raises(ShiftlabError, match="negative_majority=1"):
        vindr_cxr.read_labels(train, negative_majority=1)


# --- VinDr-Mammo recipe ----------------------------------------------------------------------

BREAST_HEADER = (
    "study_id,series_id,image_id,laterality,view_position,height,width,"
    "breast_birads,breast_density,split\n"
)


def breast_row(study: str, image: str, laterality: str, view: str, birads: str) -> str:
    return f"{study},se,{image},{laterality},{view},3518,2800,{birads},DENSITY C,training\n"


def test_mammo_birads_rule_excludes_2_and_3_and_names_the_exam(tmp_path: Path) -> None:
    rows = [
        breast_row("s1", "i1", "L", "CC", "BI-RADS 1"),
        breast_row("s1", "i2", "L", "MLO", "BI-RADS 1"),
        breast_row("s1", "i3", "R", "CC", "BI-RADS 4"),
        breast_row("s1", "i4", "R", "MLO", "BI-RADS 4"),
        breast_row("s2", "i5", "L", "CC", "BI-RADS 2"),
        breast_row("s2", "i6", "L", "MLO", "BI-RADS 3"),
        breast_row("s2", "i7", "R", "CC", "BI-RADS 5"),
        breast_row("s2", "i8", "R", "MLO", " BI-RADS 5 "),
    ]
    path = write(tmp_path / "breast-level_annotations.csv", BREAST_HEADER + "".join(rows))
    table = vindr_mammo.read_labels(path)
    assert table.key_tag == FILE_STEM
    assert labels_of(table) == {"i1": 0, "i2": 0, "i3": 1, "i4": 1, "i7": 1, "i8": 1}
    assert {k: s[0].patient for k, s in table.samples.items()} == {
        "i1": "s1",
        "i2": "s1",
        "i3": "s1",
        "i4": "s1",
        "i7": "s2",
        "i8": "s2",
    }
    assert table.samples["i4"][0].extra == {"laterality": "R", "view_position": "MLO"}
    assert table.extra_columns == ["laterality", "view_position"]
    # BI-RADS 2 and 3 as negatives, on request.
    wide = vindr_mammo.read_labels(path, negative_max=3, extra_columns=[])
    assert labels_of(wide)["i5"] == 0 and labels_of(wide)["i6"] == 0
    assert wide.samples["i5"][0].extra == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("BI-RADS 4", 4), ("bi-rads 1", 1), ("BIRADS 5", 5), ("3", 3), ("BI-RADS 4A", 4)],
)
def test_parse_birads_accepts_the_usual_spellings(text: str, expected: int) -> None:
    assert vindr_mammo.parse_birads(text) == expected


def test_mammo_label_file_errors_say_what_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "breast-level_annotations.csv"
    with pytest.raises(ShiftlabError, match=f"not found: {path}"):
        vindr_mammo.read_labels(path)
    write(path, "study_id,image_id,birads\ns,i,BI-RADS 1\n")
    with pytest.raises(ShiftlabError, match=r"lacks column\(s\) \['breast_birads', 'laterality'"):
        vindr_mammo.read_labels(path)
    write(
        path,
        BREAST_HEADER
        + breast_row("s", "i1", "L", "CC", "BI-RADS 1")
        + breast_row("s", "i2", "L", "MLO", "unknown"),
    )
    with pytest.raises(ShiftlabError, match=r"BI-RADS categories.*line 3: 'unknown'"):
        vindr_mammo.read_labels(path)
    write(path, BREAST_HEADER + breast_row("s", "i1", "L", "CC", "BI-RADS 1") * 2)
    with pytest.raises(ShiftlabError, match=r"'i1' appears twice \(lines 2 and 3\)"):
        vindr_mammo.read_labels(path)
    with pytest.raises(ShiftlabError, match="negative_max=4 must be below positive_min=4"):
        vindr_mammo.read_labels(path, negative_max=4)


# --- MammoPreprocessor -----------------------------------------------------------------------


def test_mammo_preprocessor_turns_the_chest_wall_left_and_keeps_the_aspect() -> None:
    image = np.zeros((120, 60), dtype=np.float32)
    image[:, 40:] = 1.0  # a right breast stored with its chest wall on the right
    out = MammoPreprocessor(size=40).from_display(image)
    assert out.shape == (1, 40, 40)
    # Mirrored (tissue on the left), padded on the far side instead of stretched: the tissue
    # spans 20 of 120 rows' worth of columns -> 1/6 of the width.
    columns = out[0].mean(axis=0)
    assert columns[:6].min() > 0.99 and columns[8:].max() < 0.01
    unaligned = MammoPreprocessor(size=40, align="none").from_display(image)
    assert unaligned[0, :, :10].max() == 0 and unaligned[0, :, 14:20].min() > 0.99
    with pytest.raises(ShiftlabError, match="align='sideways'"):
        MammoPreprocessor(size=40, align="sideways")


# --- twins through the real config -----------------------------------------------------------


@dataclass
class IngestedTwin:
    cfg: DictConfig
    release: Path
    df: pd.DataFrame
    output: str


def ingest_twin(base: Path, preset: str) -> IngestedTwin:
    cfg = compose_config("ingest", base / "data", base / "out", f"dataset={preset}", "twin=true")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ensure_twin(cfg.dataset)
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    df, _ = load_manifest(cfg.dataset.manifest_dir)
    return IngestedTwin(cfg, Path(cfg.dataset.root) / mammo_twin.RELEASE, df, out.getvalue())


@dataclass
class ChestTwin:
    cfg: DictConfig
    release: Path


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory) -> ChestTwin:
    base = tmp_path_factory.mktemp("xray_chest_vindr")
    cfg = compose_config(
        "ingest", base / "data", base / "out", "dataset=xray_chest_vindr", "twin=true"
    )
    with contextlib.redirect_stdout(io.StringIO()):
        ensure_twin(cfg.dataset)
    return ChestTwin(cfg, Path(cfg.dataset.root) / cxr_twin.RELEASE)


@pytest.fixture(scope="module")
def mammo(tmp_path_factory: pytest.TempPathFactory) -> IngestedTwin:
    return ingest_twin(tmp_path_factory.mktemp("xray_mammo"), "xray_mammo")


def vendor_of_files(root: Path) -> dict[str, str]:
    """image_id (file stem) -> vendor, from each twin file's own Manufacturer."""
    return {
        path.stem: normalise_vendor(pydicom.dcmread(path, stop_before_pixels=True).Manufacturer)
        for path in sorted(root.rglob("*.dicom"))
    }


def expected_counts(labels: dict[str, int], vendors: dict[str, str]) -> dict[tuple[str, int], int]:
    pairs = [(vendors[image], label) for image, label in labels.items()]
    return {pair: pairs.count(pair) for pair in set(pairs)}


def assert_both_classes_everywhere(df: pd.DataFrame, vendors: tuple[str, str]) -> None:
    for vendor in vendors:
        rows = df[df["vendor"] == vendor]
        for split in SPLITS:
            assert set(rows.loc[rows["split"] == split, "label"]) == {0, 1}, (vendor, split)


def test_chest_twin_has_the_release_layout(chest: ChestTwin) -> None:
    root = Path(chest.cfg.dataset.root)
    assert (root / "TWIN.txt").read_text().startswith("Miniature synthetic twin of VinDr-CXR")
    assert Path(chest.cfg.dataset.dicom_root) == chest.release
    assert sorted(p.name for p in chest.release.iterdir()) == ["annotations", "test", "train"]
    train = pd.read_csv(chest.release / "annotations" / "image_labels_train.csv")
    test = pd.read_csv(chest.release / "annotations" / "image_labels_test.csv")
    assert list(train.columns[:3]) == ["image_id", "rad_id", "Aortic enlargement"]
    assert train.columns[-1] == "No finding" and "Other diseases" in train.columns
    assert "rad_id" not in test.columns and "Other disease" in test.columns
    assert train.groupby("image_id").size().eq(3).all()
    assert train["image_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    # Readers disagree on some images.
    assert (train.groupby("image_id")["No finding"].nunique() == 2).any()
    stems = {p.stem: p.parent.name for p in chest.release.rglob("*.dicom")}
    assert {stems[i] for i in train["image_id"]} == {"train"}
    assert {stems[i] for i in test["image_id"]} == {"test"}


def test_chest_twin_mixes_the_encodings_preprocessing_must_undo(chest: ChestTwin) -> None:
    files = sorted(chest.release.rglob("*.dicom"))
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    assert {h.PhotometricInterpretation for h in headers} == {"MONOCHROME1", "MONOCHROME2"}
    assert {int(h.BitsStored) for h in headers} == {12, 14, 16}
    # The release keeps a window but no VOI LUT Sequence (its de-identification drops it).
    voi = {("VOILUTSequence" in h, "WindowCenter" in h) for h in headers}
    assert voi == {(False, True), (False, False)}
    assert max(max(h.Rows, h.Columns) for h in headers) <= 128
    assert all("PatientID" not in h for h in headers)
    # Whatever the encoding, the displayed image has bright spine and dark lungs.
    preprocess = XRayPreprocessor(size=64)
    for path in files:
        image = preprocess(read_slices([path]), {})[0]
        spine, lungs = image[16:40, 30:34].mean(), image[16:40, 12:20].mean()
        assert spine > lungs + 0.2, path.name


def test_chest_twin_labels_are_the_readers_majority_of_every_image(chest: ChestTwin) -> None:
    annotations = chest.release / "annotations"
    train = pd.read_csv(annotations / "image_labels_train.csv")
    test = pd.read_csv(annotations / "image_labels_test.csv")
    expected = (train.groupby("image_id")["No finding"].mean() <= 0.5).astype(int).to_dict()
    expected |= dict(zip(test["image_id"], 1 - test["No finding"], strict=True))
    table = instantiate(chest.cfg.dataset.labels)
    assert labels_of(table) == expected
    assert set(expected) == {p.stem for p in chest.release.rglob("*.dicom")}
    assert set(expected.values()) == {0, 1}


def test_mammo_twin_has_the_release_layout(mammo: IngestedTwin) -> None:
    root = Path(mammo.cfg.dataset.root)
    assert (root / "TWIN.txt").read_text().startswith("Miniature synthetic twin of VinDr-Mammo")
    breast = pd.read_csv(mammo.release / "breast-level_annotations.csv", dtype=str)
    findings = pd.read_csv(mammo.release / "finding_annotations.csv", dtype=str)
    assert tuple(breast.columns) == mammo_twin.BREAST_COLUMNS
    assert {"finding_categories", "finding_birads", "xmin", "ymax"} <= set(findings.columns)
    assert set(breast["split"]) == {"training", "test"}
    assert set(breast["breast_birads"]) == {f"BI-RADS {i}" for i in range(1, 6)}
    assert breast.groupby("study_id").size().eq(4).all()
    for row in breast.itertuples():
        path = mammo.release / "images" / row.study_id / f"{row.image_id}.dicom"
        header = pydicom.dcmread(path, stop_before_pixels=True)
        assert (header.ImageLaterality, header.ViewPosition) == (row.laterality, row.view_position)
        assert (header.Rows, header.Columns) == (int(row.height), int(row.width))
        assert header.Rows > header.Columns and header.Rows <= 128  # tall, small
        assert "PatientID" not in header
    manufacturers = {
        pydicom.dcmread(p, stop_before_pixels=True).Manufacturer
        for p in mammo.release.rglob("*.dicom")
    }
    assert manufacturers == {"SIEMENS", "Planmed", "IMS GIOTTO S.p.A.", "IMS s.r.l."}


def test_mammo_twin_ingests_bi_rads_by_image_with_exams_kept_together(
    mammo: IngestedTwin,
) -> None:
    breast = pd.read_csv(mammo.release / "breast-level_annotations.csv", dtype=str)
    category = breast["breast_birads"].str[-1].astype(int)
    kept = breast[(category >= 4) | (category == 1)]
    labels = dict(zip(kept["image_id"], (category[kept.index] >= 4).astype(int), strict=True))
    vendors = vendor_of_files(mammo.release)
    counts = mammo.df.groupby(["vendor", "label"]).size().to_dict()
    assert counts == expected_counts(labels, vendors)
    assert f"unlabelled images:  {len(breast) - len(kept)} (dropped)" in mammo.output
    assert_both_classes_everywhere(mammo.df, ("siemens", "planmed"))
    # One patient per exam (study_id), and all images of an exam in one split.
    study = mammo.df["paths"].str.split("/").str[0]
    assert mammo.df.groupby(study)["patient_id"].nunique().eq(1).all()
    assert mammo.df.groupby(study)["split"].nunique().eq(1).all()
    assert mammo.df["patient_id"].nunique() == study.nunique() == kept["study_id"].nunique()
    assert set(mammo.df["laterality"]) == {"L", "R"}
    assert set(mammo.df["view_position"]) == {"CC", "MLO"}
    # Planmed puts an exam's four views in one series: each is still its own sample.
    planmed = mammo.df[mammo.df["vendor"] == "planmed"]
    assert planmed.groupby("series_id").size().max() > 1
    assert planmed["sample_id"].is_unique


def test_mammo_twin_preprocesses_with_the_chest_wall_left(mammo: IngestedTwin) -> None:
    preprocess = MammoPreprocessor(size=64)
    root = Path(mammo.cfg.dataset.dicom_root)
    for paths in mammo.df["paths"]:
        image = preprocess(read_slices([root / paths]), {})[0]
        assert image[:, :16].mean() > image[:, 40:].mean() + 0.1, paths


@pytest.mark.slow  # the whole twin generated again (docs/tests.md)
@pytest.mark.parametrize("twin", [cxr_twin, mammo_twin])
def test_twins_are_deterministic_from_the_seed(twin, tmp_path: Path) -> None:
    def digest(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    first = digest(twin.generate(tmp_path / "a", seed=0))
    assert first == digest(twin.generate(tmp_path / "b", seed=0))
    assert first != digest(twin.generate(tmp_path / "c", seed=1))
    assert "TWIN.txt" in first


def test_presets_name_densenet_and_the_twin_root(tmp_path: Path) -> None:
    for preset, preprocess in (
        ("xray_chest_vindr", "XRayPreprocessor"),
        ("xray_mammo", "MammoPreprocessor"),
    ):
        cfg = compose_config("ingest", tmp_path, tmp_path / "out", f"dataset={preset}", "twin=true")
        assert cfg.model.name == "densenet121" and cfg.dataset.input_channels == 1
        assert cfg.dataset.preprocess._target_.endswith(preprocess)
        assert cfg.dataset.preprocess.size == 224
        assert cfg.dataset.root == f"{tmp_path}/twins/{preset}"
        assert cfg.dataset.ingest.group_by == "SOPInstanceUID"
        assert cfg.dataset.labels.key_tag == FILE_STEM
        real = compose_config("ingest", tmp_path, tmp_path / "out", f"dataset={preset}")
        assert real.dataset.root == f"{tmp_path}/{preset}"
        assert "physionet.org" in real.dataset.download
