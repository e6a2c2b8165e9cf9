"""Real-data quirks of CQ500 (ct_head) and VinDr-CXR (xray_chest_vindr), carried by their twins.

CQ500's scans hold contrast-enhanced, sharp-kernel and reformatted series beside the plain head
CT, with the descriptions of the real download; the preset must take the plain series and show
what it chose. VinDr-CXR's files are de-identified down to 25 attributes (no Manufacturer, no
UIDs); ingest must say that no vendor can be formed instead of failing on something else.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from helpers.compose import compose_config
from helpers.dicom_factory import write_series
from helpers.sets import PresetTwin
from omegaconf import OmegaConf

from shiftlab.errors import ShiftlabError
from shiftlab.ingest.headers import SeriesHeader
from shiftlab.ingest.run import ensure_twin, run_ingest
from shiftlab.ingest.selection import SeriesSelection
from shiftlab.manifest import PATH_SEPARATOR
from shiftlab.synth.twins import cq500 as cq500_twin
from shiftlab.synth.twins import vindr_cxr as cxr_twin

# Series descriptions of real CQ500 scans (muschellij2/cq500_code, R/checking_cq500_ss.csv).
REAL_CQ500_DESCRIPTIONS = {
    "4cc sec 150cc D3D on",
    "ORAL IV",
    "55mm Contrast",
    "POST CONTRAST",
    "I To S",
    "Thin Stnd",
    "Thin Details",
    "BONE THIN",
    "0.625mm",
    "PLAIN THIN",
    "PRE CONTRAST THIN",
}
# vinbigdata-medical/vindr-cxr, de-identification/tags.csv: the tags (as integers) that the
# release's anonymize.py keeps; every other data-set element was removed.
VINDR_RELEASE_TAGS = {
    1048640, 1052688, 1052704, 1052720, 2621444, 2621456, 2621457, 2621488, 2621492, 2621696,
    2621697, 2621698, 2621699, 2621702, 2621703, 2625616, 2625617, 2625618, 2625619, 2145386512,
    2629904, 2629906, 2629908, 2621442, 2621448,
}  # fmt: skip


def _ingest_twin(base: Path, preset: str, *overrides: str) -> tuple[object, str]:
    cfg = compose_config(
        "ingest", base / "data", base / "out", f"dataset={preset}", "twin=true", *overrides
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ensure_twin(cfg.dataset)
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    return cfg, out.getvalue()


# --- CQ500 -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cq500(preset_twin: Callable[[str], PresetTwin]) -> tuple[object, str]:
    twin = preset_twin("ct_head")
    return twin.cfg, twin.output


def test_cq500_twin_names_its_series_as_the_real_scans_do(cq500) -> None:
    cfg, _ = cq500
    folders = list(Path(cfg.dataset.dicom_root).glob("*/Unknown Study/CT *"))
    descriptions = {folder.name.removeprefix("CT ") for folder in folders}
    assert descriptions >= REAL_CQ500_DESCRIPTIONS
    for folder in folders[::7]:
        header = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
        assert f"CT {header.SeriesDescription}" == folder.name


def test_cq500_takes_the_plain_head_ct_of_every_scan(cq500) -> None:
    cfg, output = cq500
    manifest = pd.read_csv(Path(cfg.dataset.manifest_dir) / "manifest.csv")
    plan = {scan.patient_id: scan for scan in cq500_twin.plan(0)}
    assert len(manifest) == len(plan)
    chosen = {}
    for paths in manifest["paths"]:
        folder = Path(paths.split(PATH_SEPARATOR)[0]).parent
        chosen[folder.parts[0].split(" ")[0]] = folder.name.removeprefix("CT ")
    # The plain series (the thick one when there is one), never a contrast, sharp or reformat.
    assert chosen == {patient: scan.plain for patient, scan in plan.items()}
    # Scans whose only plain series is thin, beside a thick contrast or reformatted one.
    assert {"2.55mm", "PLAIN THIN", "0.625mm", "Thin Stnd", "Thin Plain"} <= set(chosen.values())
    assert "PRE CONTRAST 5MM STD" in chosen.values()  # "PRE CONTRAST" is plain
    # The choice is shown per description, and kept in manifest.json.
    expected: dict[str, dict[str, int]] = {}
    for scan in plan.values():
        for description in scan.series:
            row = expected.setdefault(description, {"chosen": 0, "dropped": 0})
            row["chosen" if description == scan.plain else "dropped"] += 1
    meta = json.loads((Path(cfg.dataset.manifest_dir) / "manifest.json").read_text())
    assert meta["series_by_description"] == expected
    assert "series by SeriesDescription (dataset.ingest):" in output
    for description in ("ORAL IV", "I To S", "4cc sec 150cc D3D on"):
        assert f"         0         2  {description}\n" in output


def _header(description: str, n_files: int, patient: str = "CQ500CT8") -> SeriesHeader:
    return SeriesHeader(
        patient_id=patient,
        study_uid="1.2",
        series_uid=f"1.2.{len(description)}.{n_files}",
        source_uid=f"1.2.{len(description)}.{n_files}",
        manufacturer="GE MEDICAL SYSTEMS",
        model_name="",
        field_strength=None,
        modality="CT",
        files=[f"{description}/{k}.dcm" for k in range(n_files)],
        extra={"SeriesDescription": description},
    )


def test_series_prefer_takes_the_series_that_says_plain_before_fewer_slices() -> None:
    ct_head = compose_config("ingest", Path("data"), Path("out"), "dataset=ct_head")
    selection = SeriesSelection.from_config(
        OmegaConf.to_container(ct_head.dataset.ingest, resolve=True)
    )
    # CQ500CT8: "HELICAL" (what it holds is not known) and "PLAIN THIN".
    helical, plain_thin = _header("HELICAL", 12), _header("PLAIN THIN", 24)
    assert selection.apply([helical, plain_thin], "PatientID") == [plain_thin]
    # Without a series that says it is plain, the others still count (CQ500CT2: 0.625mm, 5mm).
    thin, thick = _header("0.625mm", 24, "CQ500CT2"), _header("5mm", 12, "CQ500CT2")
    assert selection.apply([thin, thick, helical], "PatientID") == [thick, helical]
    assert selection.keywords == ("SeriesDescription",)
    with pytest.raises(ShiftlabError, match="expected a list of patterns"):
        SeriesSelection.from_config({"series_prefer": {"SeriesDescription": "plain"}})
    with pytest.raises(ShiftlabError, match=r"series_prefer: 'Description' is not a DICOM"):
        SeriesSelection.from_config({"series_prefer": {"Description": ["plain"]}})


# --- VinDr-CXR -------------------------------------------------------------------------------


def test_vindr_cxr_twin_is_de_identified_as_the_release(tmp_path: Path) -> None:
    release = cxr_twin.generate(tmp_path) / cxr_twin.RELEASE
    assert cxr_twin.RELEASE_TAGS == VINDR_RELEASE_TAGS
    files = sorted(release.rglob("*.dicom"))
    assert files
    for path in files:
        ds = pydicom.dcmread(path)
        assert set(ds.keys()) <= VINDR_RELEASE_TAGS, path.name
        for keyword in ("Manufacturer", "StudyInstanceUID", "SOPInstanceUID", "PatientID"):
            assert keyword not in ds
        # The file meta names the image by the MD5 that is its file name.
        with pydicom.config.disable_value_validation():  # an MD5 is not a valid UID
            assert ds.file_meta.MediaStorageSOPInstanceUID == path.stem
        assert ds.file_meta.ImplementationClassUID == "1.2.3.4"
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


def test_vindr_cxr_ingest_stops_saying_no_vendor_can_be_formed(tmp_path: Path) -> None:
    with pytest.raises(ShiftlabError) as error:
        _ingest_twin(tmp_path, "xray_chest_vindr")
    message = str(error.value)
    n_images = sum(cxr_twin.DEFAULT_IMAGES.values())
    assert message.startswith(
        f"no vendor could be formed: {n_images} of {n_images} labelled images have no Manufacturer"
    )
    assert f"{n_images} carry no Study/Series/SOP Instance UIDs" in message
    assert "vinbigdata-medical/vindr-cxr" in message and "dataset=xray_chest (PadChest" in message
    manifest_dir = tmp_path / "data" / "twins" / "xray_chest_vindr" / "manifest" / "split_seed0"
    assert not (manifest_dir / "manifest.csv").exists()
    notes = pd.read_csv(manifest_dir / "flagged.csv")["note"]
    assert notes.str.startswith("no StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID").sum() == (
        n_images
    )


@pytest.mark.parametrize(
    ("manufacturer", "cause"),
    [
        (None, "4 of 4 labelled series have no Manufacturer"),
        (
            "Acme Imaging",
            "4 of 4 have a Manufacturer that shiftlab/ingest/vendors.py does not know",
        ),
    ],
)
def test_ingest_without_any_known_vendor_says_why(
    tmp_path: Path, manufacturer: str | None, cause: str
) -> None:
    for i in range(4):
        write_series(tmp_path / "dicom" / f"p{i}", patient_id=f"p{i}", manufacturer=manufacturer)
    pd.DataFrame({"patient": [f"p{i}" for i in range(4)], "label": [0, 1, 0, 1]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    dataset = OmegaConf.create(
        {
            "name": "no_vendor",
            "dicom_root": str(tmp_path / "dicom"),
            "manifest_dir": str(tmp_path / "manifest"),
            "labels": {
                "_target_": "shiftlab.labels.read_label_table",
                "path": str(tmp_path / "labels.csv"),
                "key_column": "patient",
                "key_tag": "PatientID",
                "label_column": "label",
            },
            "split_fractions": {"train": 0.5, "val": 0.25, "test": 0.25},
            "domains": {"source": "ge", "target": "siemens", "groups": {}},
        }
    )
    paths = OmegaConf.create({"pseudonym_key": str(tmp_path / "key")})
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(ShiftlabError) as error:
        run_ingest(dataset, paths, 0)
    assert str(error.value).startswith(f"no vendor could be formed: {cause}")
    assert "UIDs" not in str(error.value)
    assert not (tmp_path / "manifest" / "manifest.csv").exists()
