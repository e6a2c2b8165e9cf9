"""The CT presets: LIDC-IDRI (ct_lung_nodule) and CQ500 (ct_head).

Recipes are checked on hand-written label files in the published formats; the twins are
generated, ingested through the real preset configs and compared with what the twin planned.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from helpers.compose import compose_config
from helpers.dicom_factory import write_series
from helpers.sets import PresetTwin
from omegaconf import DictConfig

from shiftlab.data.preprocess import (
    CTPatchPreprocessor,
    CTVolumePreprocessor,
    pixel_xy_to_patient,
    read_slices,
)
from shiftlab.errors import ShiftlabError, instantiate
from shiftlab.ingest.run import ensure_twin, run_ingest
from shiftlab.manifest import PATH_SEPARATOR
from shiftlab.recipes import cq500, lidc
from shiftlab.synth.twins import cq500 as cq500_twin
from shiftlab.synth.twins import lidc as lidc_twin

NS = "http://www.nih.gov"

# ---------------------------------------------------------------- LIDC XML, written by hand


def _roi(z: float, x: float, y: float, r: int, include: bool = True) -> str:
    points = [(x - r, y), (x + r, y), (x, y - r), (x, y + r)]
    edges = "".join(
        f"<edgeMap><xCoord>{px:g}</xCoord><yCoord>{py:g}</yCoord></edgeMap>" for px, py in points
    )
    inclusion = "TRUE" if include else "FALSE"
    return (
        f"<roi><imageZposition>{z}</imageZposition><imageSOP_UID>1.2.3</imageSOP_UID>"
        f"<inclusion>{inclusion}</inclusion>{edges}</roi>"
    )


def _nodule(nodule_id: str, rating: int | None, x: float, y: float, zs=(10.0, 12.0), r=4) -> str:
    chars = (
        ""
        if rating is None
        else f"<characteristics><malignancy>{rating}</malignancy></characteristics>"
    )
    rois = "".join(_roi(z, x, y, r) for z in zs)
    return (
        f"<unblindedReadNodule><noduleID>{nodule_id}</noduleID>{chars}{rois}</unblindedReadNodule>"
    )


def _small(z: float, x: int, y: int) -> str:
    """A nodule < 3 mm: one point, no characteristics."""
    return (
        "<unblindedReadNodule><noduleID>small</noduleID><roi>"
        f"<imageZposition>{z}</imageZposition><imageSOP_UID>1.2.3</imageSOP_UID>"
        f"<inclusion>TRUE</inclusion><edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>"
        "</roi></unblindedReadNodule>"
    )


def _non_nodule(z: float, x: int, y: int) -> str:
    return (
        f"<nonNodule><nonNoduleID>nn</nonNoduleID><imageZposition>{z}</imageZposition>"
        f"<imageSOP_UID>1.2.3</imageSOP_UID><locus><xCoord>{x}</xCoord><yCoord>{y}</yCoord>"
        "</locus></nonNodule>"
    )


def _reads(series_uid: str, sessions: list[str], namespace: bool = True, root="LidcReadMessage"):
    xmlns = f' xmlns="{NS}"' if namespace else ""
    body = "".join(
        f"<readingSession><servicingRadiologistID>r</servicingRadiologistID>{s}</readingSession>"
        for s in sessions
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><{root}{xmlns}><ResponseHeader>'
        f"<SeriesInstanceUid>{series_uid}</SeriesInstanceUid><StudyInstanceUID>1.2</StudyInstanceUID>"
        f"</ResponseHeader>{body}</{root}>"
    )


def _four_readers() -> list[str]:
    """Nodule A (100, 100): 4 reads [4, 5, 4, 3] -> malignant. B (200, 150): 3 reads [2, 1, 3]
    -> benign. C (300, 300): 4 reads [3, 3, 4, 2] -> median 3, excluded. D (60, 400): one read
    [5] -> too few readers. Plus small nodules, non-nodules and a hole in A's outline."""
    a = [(4, 100, 100), (5, 101, 99), (4, 99, 101), (3, 100, 102)]
    b = [(2, 200, 150), (1, 201, 151), (3, 199, 150)]
    c = [(3, 300, 300), (3, 301, 300), (4, 300, 299), (2, 302, 301)]
    sessions = []
    for reader in range(4):
        reads = [_nodule(f"A{reader}", *a[reader])]
        if reader < 3:
            reads.append(_nodule(f"B{reader}", *b[reader]))
        reads.append(_nodule(f"C{reader}", *c[reader]))
        if reader == 2:
            reads.append(_nodule("D", 5, 60, 400))
            # A hole inside A's outline (inclusion FALSE) must not move its centre.
            reads[0] = reads[0].replace(
                "</unblindedReadNodule>", _roi(11.0, 60, 60, 1, False) + "</unblindedReadNodule>"
            )
        reads += [_small(10.0, 400, 20 + reader), _non_nodule(12.0, 20, 400)]
        sessions.append("".join(reads))
    return sessions


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_lidc_label_rule_matching_and_exclusions(tmp_path: Path) -> None:
    _write(tmp_path / "case" / "series" / "069.xml", _reads("1.2.840.1", _four_readers()))
    table = lidc.read_labels(tmp_path)
    assert table.key_tag == "SeriesInstanceUID"
    samples = {s.name: s for s in table.samples["1.2.840.1"]}
    # Nodules are numbered over every matched nodule in z, y, x order: A, B, C, D.
    assert {name: s.label for name, s in samples.items()} == {"nodule01": 1, "nodule02": 0}
    a, b = samples["nodule01"], samples["nodule02"]
    assert a.extra["n_readers"] == 4 and a.extra["malignancy_median"] == 4.0
    assert (a.extra["center_x_px"], a.extra["center_y_px"]) == (100.0, 100.5)
    assert a.extra["center_z_mm"] == pytest.approx(11.0)
    assert b.extra["n_readers"] == 3 and b.extra["malignancy_median"] == 2.0
    # With one reader enough, the single-reader nodule D (rated 5) counts; names do not move.
    everyone = lidc.read_labels(tmp_path, min_readers=1).samples["1.2.840.1"]
    assert {s.name: s.label for s in everyone} == {"nodule01": 1, "nodule02": 0, "nodule04": 1}


def test_lidc_even_reader_count_median_between_thresholds_is_excluded(tmp_path: Path) -> None:
    sessions = [_nodule("x", 3, 50, 50), _nodule("y", 4, 51, 50)]
    _write(tmp_path / "1.xml", _reads("9.9", sessions))
    assert lidc.read_labels(tmp_path, min_readers=2).samples == {}  # median 3.5
    relaxed = lidc.read_labels(tmp_path, min_readers=2, malignant_min=3.5)
    assert [s.label for s in relaxed.samples["9.9"]] == [1]


def test_lidc_reads_of_one_reader_never_merge_and_far_reads_stay_apart(tmp_path: Path) -> None:
    # Reader 0 outlines two touching nodules; reader 1 one of them; reader 2 a read 30 px away.
    sessions = [
        _nodule("a", 5, 100, 100) + _nodule("b", 1, 104, 100),
        _nodule("c", 5, 101, 100),
        _nodule("d", 5, 130, 100),
    ]
    _write(tmp_path / "1.xml", _reads("7.7", sessions))
    reads = lidc.parse_reads(tmp_path / "1.xml")[1]
    nodules = lidc.match_nodules(reads)
    assert sorted(len(n) for n in nodules) == [1, 1, 2]
    pair = next(n for n in nodules if len(n) == 2)
    assert {r.nodule_id for r in pair} == {"a", "c"}  # c joins the nearer of reader 0's reads


def test_lidc_without_namespace_and_xml_only_layout(tmp_path: Path) -> None:
    text = _reads("5.5", _four_readers())
    _write(tmp_path / "tcia" / "LIDC-IDRI" / "a" / "b" / "069.xml", text)
    _write(
        tmp_path / "xml-only" / "tcia-lidc-xml" / "185" / "069.xml",
        _reads("5.5", _four_readers(), namespace=False),
    )
    assert lidc.read_labels(tmp_path / "tcia") == lidc.read_labels(tmp_path / "xml-only")


def test_lidc_skips_radiograph_reads_and_duplicate_files(tmp_path: Path) -> None:
    _write(tmp_path / "cr" / "071.xml", _reads("3.3", [], root="IdriReadMessage"))
    _write(tmp_path / "a" / "069.xml", _reads("4.4", _four_readers()))
    _write(tmp_path / "b" / "069.xml", _reads("4.4", _four_readers()[:1]))
    with pytest.warns(UserWarning, match="two LIDC XML files read series 4.4"):
        table = lidc.read_labels(tmp_path)
    assert set(table.samples) == {"4.4"} and len(table.samples["4.4"]) == 2  # a/ wins
    with pytest.raises(ShiftlabError, match=r"Narrow dataset\.labels\.xml_glob"):
        lidc.read_labels(tmp_path, duplicates="error")


@pytest.mark.parametrize(
    ("files", "kwargs", "message"),
    [
        ({}, {"path": "missing"}, "LIDC XML folder not found"),
        ({"x.txt": "hello"}, {}, "no LIDC XML files under"),
        ({"1.xml": "<LidcReadMessage><oops>"}, {}, r"1\.xml is not well-formed XML"),
        (
            {"1.xml": "<LidcReadMessage><ResponseHeader/></LidcReadMessage>"},
            {},
            "no ResponseHeader/SeriesInstanceUid",
        ),
        ({"1.xml": "<IdriReadMessage/>"}, {}, "is a LIDC CT read"),
        ({"1.xml": _reads("1", [])}, {"benign_max": 4}, "must be below malignant_min"),
    ],
)
def test_lidc_errors_name_the_problem(
    tmp_path: Path, files: dict, kwargs: dict, message: str
) -> None:
    for name, text in files.items():
        _write(tmp_path / name, text)
    kwargs = {"path": tmp_path, **kwargs}
    if kwargs["path"] == "missing":
        kwargs["path"] = tmp_path / "missing"
    with pytest.raises(ShiftlabError, match=message):
        lidc.read_labels(**kwargs)


# ---------------------------------------------------------------- CQ500 reads.csv, by hand


def _reads_csv(path: Path, rows: list[tuple[str, int, int, int]], drop: str = "") -> Path:
    columns = ["name", "Category"] + [f"R{r}:{f}" for r in (1, 2, 3) for f in ("ICH", "IPH", "SAH")]
    table = pd.DataFrame(
        [[name, "B1"] + [v for vote in votes for v in (vote, vote, 0)] for name, *votes in rows],
        columns=columns,
    )
    table.drop(columns=[drop] if drop else []).to_csv(path, index=False)
    return path


def test_cq500_majority_of_three_readers(tmp_path: Path) -> None:
    path = _reads_csv(
        tmp_path / "reads.csv",
        [
            ("CQ500-CT-0", 0, 0, 0),
            ("CQ500-CT-1", 1, 0, 0),
            ("CQ500-CT-12", 0, 1, 1),
            ("CQ500-CT-490", 1, 1, 1),
        ],
    )
    table = cq500.read_labels(path)
    assert table.key_tag == "PatientID"
    assert {k: v[0].label for k, v in table.samples.items()} == {
        "CQ500CT0": 0,
        "CQ500CT1": 0,
        "CQ500CT12": 1,
        "CQ500CT490": 1,
    }
    assert table.samples["CQ500CT12"][0].extra == {"votes": 2}
    strict = cq500.read_labels(path, min_votes=3, key_template="{name}", key_tag="PatientName")
    assert strict.key_tag == "PatientName"
    assert {k: v[0].label for k, v in strict.samples.items()} == {
        "CQ500-CT-0": 0,
        "CQ500-CT-1": 0,
        "CQ500-CT-12": 0,
        "CQ500-CT-490": 1,
    }
    subtype = cq500.read_labels(path, finding="SAH")  # nobody marked SAH
    assert {v[0].label for v in subtype.samples.values()} == {0}


def test_cq500_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ShiftlabError, match="CQ500 reads file not found"):
        cq500.read_labels(tmp_path / "reads.csv")
    path = _reads_csv(tmp_path / "a.csv", [("CQ500-CT-0", 0, 0, 0)], drop="R2:ICH")
    with pytest.raises(ShiftlabError, match=r"lacks column\(s\) \['R2:ICH'\].*found \['name'"):
        cq500.read_labels(path)
    path = _reads_csv(tmp_path / "b.csv", [("CQ500-CT-0", 0, 2, 0)])
    with pytest.raises(ShiftlabError, match=r"'R2:ICH' must hold 0 or 1.*line 2: '2'"):
        cq500.read_labels(path)
    path = _reads_csv(tmp_path / "c.csv", [("patient7", 0, 0, 0)])
    with pytest.raises(ShiftlabError, match="not of the form CQ500-CT-<number>"):
        cq500.read_labels(path)
    path = _reads_csv(tmp_path / "d.csv", [("CQ500-CT-1", 0, 0, 0), ("CQ500-CT-1", 1, 1, 1)])
    with pytest.raises(ShiftlabError, match="appears twice"):
        cq500.read_labels(path)
    with pytest.raises(ShiftlabError, match="min_votes=4"):
        cq500.read_labels(path, min_votes=4)


# ---------------------------------------------------------------- preprocessing


def _bright_voxel_ct(tmp_path: Path, voxel: tuple[int, int, int]) -> list[pydicom.Dataset]:
    def pixels(k: int, shape: tuple[int, int]) -> np.ndarray:
        plane = np.full(shape, 24)  # -1000 HU
        if k == voxel[0]:
            plane[voxel[1], voxel[2]] = 2024
        return plane

    written = write_series(
        tmp_path / "ct",
        patient_id="P",
        modality="CT",
        n_slices=5,
        shape=(16, 20),
        pixel_spacing=(0.7, 0.8),
        slice_thickness=2.0,
        origin=(-100.0, -90.0, 20.0),
        pixels=pixels,
        extra={"RescaleSlope": 1, "RescaleIntercept": -1024},
    )
    return read_slices(written.files)


def test_pixel_centre_gives_the_same_patch_as_the_centre_in_mm(tmp_path: Path) -> None:
    k, i, j = 2, 6, 9
    slices = _bright_voxel_ct(tmp_path, (k, i, j))
    z = 20.0 + k * 2.0
    np.testing.assert_allclose(
        pixel_xy_to_patient(slices, j, i, z), [-100.0 + j * 0.8, -90.0 + i * 0.7, z]
    )
    # Between slices the point lies between them.
    assert pixel_xy_to_patient(slices, 0, 0, 21.0)[2] == pytest.approx(21.0)
    mm = CTPatchPreprocessor(patch=(3, 5, 7), window=(-1000, 4096))
    pixel = CTPatchPreprocessor(
        patch=(3, 5, 7),
        window=(-1000, 4096),
        center_columns=("center_x_px", "center_y_px", "center_z_mm"),
        center_units="pixel_xy",
    )
    in_mm = {"center_x_mm": -100.0 + j * 0.8, "center_y_mm": -90.0 + i * 0.7, "center_z_mm": z}
    in_px = {"center_x_px": j, "center_y_px": i, "center_z_mm": z}
    np.testing.assert_allclose(pixel(slices, in_px), mm(slices, in_mm), atol=1e-6)
    assert pixel(slices, in_px)[1, 2, 3] == pixel(slices, in_px).max()
    with pytest.raises(ShiftlabError, match="center_units"):
        CTPatchPreprocessor(patch=(3, 3, 3), window=(0, 1), center_units="cm")


def test_volume_preprocessor_windows_then_resizes_any_scan_to_one_shape(tmp_path: Path) -> None:
    pre = CTVolumePreprocessor(depth=6, size=10, window=(0, 80))
    assert pre.shape == (6, 10, 10)
    brain = np.full((12, 32, 32), 40.0)
    brain[:, 0, :] = 1500.0  # bone, far above the window
    out = pre.from_volume(brain)
    assert out.shape == (6, 10, 10) and out.dtype == np.float32
    assert out[:, 5, 5] == pytest.approx(np.full(6, 0.5), abs=1e-5)  # 40 HU is mid-window
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert pre.from_volume(np.full((30, 20, 20), -1000.0)).shape == (6, 10, 10)
    slices = _bright_voxel_ct(tmp_path, (0, 0, 0))
    volume = pre(slices, {})  # air everywhere but one 1000 HU voxel in the first corner
    assert volume.shape == (6, 10, 10) and volume.min() == 0.0
    assert np.unravel_index(volume.argmax(), volume.shape) == (0, 0, 0)
    with pytest.raises(ShiftlabError, match="window"):
        CTVolumePreprocessor(depth=4, size=4, window=(80, 0))


# ---------------------------------------------------------------- twins through the presets


def _manifest(cfg: DictConfig) -> tuple[pd.DataFrame, DictConfig]:
    manifest = pd.read_csv(Path(cfg.dataset.manifest_dir) / "manifest.csv", dtype={"split": str})
    return manifest, cfg


@pytest.fixture(scope="module")
def lidc_set(preset_twin: Callable[[str], PresetTwin]) -> tuple[pd.DataFrame, DictConfig]:
    return _manifest(preset_twin("ct_lung_nodule").cfg)


@pytest.fixture(scope="module")
def cq500_set(preset_twin: Callable[[str], PresetTwin]) -> tuple[pd.DataFrame, DictConfig]:
    return _manifest(preset_twin("ct_head").cfg)


def _both_classes_everywhere(manifest: pd.DataFrame, vendors: tuple[str, ...]) -> None:
    for vendor in vendors:
        for split in ("train", "val", "test"):
            rows = manifest[(manifest.vendor == vendor) & (manifest.split == split)]
            assert set(rows.label) == {0, 1}, (vendor, split)


def test_lidc_twin_ingests_to_the_planned_nodules(lidc_set) -> None:
    manifest, cfg = lidc_set
    root = Path(cfg.dataset.root)
    assert root == Path(cfg.paths.data_dir) / "twins" / "ct_lung_nodule"
    assert (root / "TWIN.txt").read_text().startswith("Miniature synthetic twin of LIDC-IDRI")
    plan = lidc_twin.plan(0)
    expected = Counter(
        (p.vendor, n.expected_label)
        for p in plan
        for n in p.nodules
        if n.expected_label is not None
    )
    # The twin holds every kind of read the rule must drop.
    kinds = Counter(n.kind for p in plan for n in p.nodules if n.expected_label is None)
    assert kinds["indeterminate"] > 0 and kinds["single"] > 0
    assert any(p.n_readers == 2 and p.nodules for p in plan)
    assert {p.vendor for p in plan} == {"ge", "siemens", "philips", "toshiba"}
    vendors = {"toshiba": "canon"}  # Toshiba Medical is Canon now (shiftlab.ingest.vendors)
    got = Counter(zip(manifest.vendor, manifest.label, strict=True))
    assert got == Counter({(vendors.get(v, v), label): n for (v, label), n in expected.items()})
    assert set(manifest.manufacturer) == {"GE MEDICAL SYSTEMS", "SIEMENS", "Philips", "TOSHIBA"}
    assert set(manifest.modality) == {"CT"}
    _both_classes_everywhere(manifest, ("ge", "siemens"))


def test_lidc_twin_patches_are_centred_on_the_nodules(lidc_set) -> None:
    manifest, cfg = lidc_set
    pre = instantiate(dict(cfg.dataset.preprocess))
    dicom_root = Path(cfg.dataset.dicom_root)
    for row in manifest.head(8).to_dict("records"):
        slices = read_slices([dicom_root / p for p in row["paths"].split(PATH_SEPARATOR)])
        patch = pre(slices, row)
        assert patch.shape == (5, 47, 47)
        # The centre is nodule (soft tissue, ~0 HU: 0.2), most of the patch lung (0.03) or air.
        assert np.median(patch) < 0.08
        assert patch[2, 22:25, 22:25].mean() > np.median(patch) + 0.1, row["paths"]


def test_lidc_xml_only_archive_gives_the_same_labels(lidc_set) -> None:
    _, cfg = lidc_set
    root = Path(cfg.dataset.root)
    beside_dicom = instantiate(cfg.dataset.labels)
    xml_only = lidc.read_labels(root / "LIDC-XML-only")
    assert beside_dicom == xml_only
    assert list((root / "LIDC-XML-only" / "tcia-lidc-xml").glob("*/*.xml"))


@pytest.mark.slow  # the whole twin generated again (docs/tests.md)
@pytest.mark.parametrize(
    ("twin", "preset"),
    [(lidc_twin, "ct_lung_nodule"), (cq500_twin, "ct_head")],
    ids=["lidc", "cq500"],
)
def test_twins_are_deterministic(
    preset_twin: Callable[[str], PresetTwin], tmp_path: Path, twin, preset: str
) -> None:
    # Generated again with seed 0, and by the session's preset (seed 0 too, beside its manifest).
    a, b = twin.generate(tmp_path / "a", seed=0), Path(preset_twin(preset).cfg.dataset.root)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    in_b = (p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files == sorted(p for p in in_b if "manifest" not in p.parts)
    for relative in files[:: max(1, len(files) // 40)]:
        assert (a / relative).read_bytes() == (b / relative).read_bytes(), relative
    assert twin.plan(1) != twin.plan(0)


def test_cq500_twin_ingests_one_plain_series_per_scan(cq500_set) -> None:
    manifest, cfg = cq500_set
    root = Path(cfg.dataset.root)
    assert (root / "TWIN.txt").exists() and (root / "reads.csv").exists()
    plan = {f"CQ500CT{s.number}": s for s in cq500_twin.plan(0)}
    reads = pd.read_csv(root / "reads.csv")
    assert list(reads.columns) == list(cq500_twin.COLUMNS)
    assert len(reads) == len(plan) + 1  # one read without its scan in the download
    assert len(manifest) == len(plan) and manifest.patient_id.is_unique
    expected = Counter((s.vendor, s.label) for s in plan.values())
    assert Counter(zip(manifest.vendor, manifest.label, strict=True)) == expected
    assert set(manifest.manufacturer) == {"GE MEDICAL SYSTEMS", "Philips"}
    # Readers disagree: some scans have 1 or 2 of 3 ICH votes.
    assert {1, 2} <= set(manifest.votes)
    assert (manifest.label == (manifest.votes >= 2)).all()
    for row in manifest.to_dict("records"):
        folder = Path(row["paths"].split(PATH_SEPARATOR)[0]).parent
        patient = folder.parts[0].split(" ")[0]
        scan = plan[patient]
        assert row["label"] == scan.label
        series = folder.name
        # The plain series (no contrast, bone kernel or reformat), the thick one if there is one.
        assert series == f"CT {scan.plain}"
        thick = cq500_twin.RECONSTRUCTIONS[scan.plain].thick
        assert row["n_slices"] == (12 if thick else 24), (patient, series)
        ds = pydicom.dcmread(root / "CQ500" / row["paths"].split(PATH_SEPARATOR)[0])
        assert ds.PatientID == patient and ds.SeriesDescription == series.removeprefix("CT ")
    _both_classes_everywhere(manifest, ("ge", "philips"))


def test_cq500_most_slices_takes_the_thin_series(
    preset_twin: Callable[[str], PresetTwin], tmp_path: Path
) -> None:
    # The session's twin, copied without its manifest, is ingested again with the other rule.
    twin = Path(preset_twin("ct_head").cfg.dataset.root)
    shutil.copytree(
        twin, tmp_path / "data" / "twins" / twin.name, ignore=shutil.ignore_patterns("manifest")
    )
    cfg = compose_config(
        "ingest",
        tmp_path / "data",
        tmp_path / "out",
        "dataset=ct_head",
        "twin=true",
        "dataset.ingest.series_per_key=most_slices",
    )
    with contextlib.redirect_stdout(io.StringIO()):
        ensure_twin(cfg.dataset)
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    manifest, _ = _manifest(cfg)
    assert set(manifest.n_slices) == {24, 12}  # 12: the scan without a thin plain series
    recons = cq500_twin.RECONSTRUCTIONS
    assert (manifest.n_slices == 12).sum() == sum(
        not any(recons[d].plain and not recons[d].thick for d in s.series)
        for s in cq500_twin.plan(0)
    )


def test_cq500_twin_volumes_show_the_haemorrhage(cq500_set) -> None:
    manifest, cfg = cq500_set
    pre = instantiate(dict(cfg.dataset.preprocess))
    dicom_root = Path(cfg.dataset.dicom_root)
    bright = {}
    for row in manifest.to_dict("records"):
        slices = read_slices([dicom_root / p for p in row["paths"].split(PATH_SEPARATOR)])
        volume = pre(slices, row)
        assert volume.shape == (
            cfg.dataset.preprocess.depth,
            cfg.dataset.preprocess.size,
            cfg.dataset.preprocess.size,
        )
        # Voxels of 56-76 HU in the middle of the head: haemorrhage (brain is ~32 HU, bone 1.0).
        size = volume.shape[1]
        middle = volume[:, size * 27 // 100 : size * 73 // 100, size * 30 // 100 : size * 70 // 100]
        bright[row["sample_id"]] = (row["label"], float(((middle > 0.7) & (middle < 0.95)).mean()))
    positives = [v for label, v in bright.values() if label == 1]
    negatives = [v for label, v in bright.values() if label == 0]
    assert np.median(positives) > np.median(negatives)


@pytest.mark.slow  # the whole twin generated again (docs/tests.md)
def test_twin_generators_write_the_marker_last(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cq500_twin.generate(tmp_path / "cq500", seed=3)
    newest = max(out.rglob("*"), key=lambda p: p.stat().st_mtime_ns)
    assert newest.name == "TWIN.txt"
    assert "not real data" in newest.read_text()
