"""Ingest options the real presets need: series filters, one series per key, one sample per
image, label keys from file names, patients named by the label file, usable domain pairs."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pandas as pd
import pytest
from helpers.dicom_factory import write_series
from omegaconf import OmegaConf

from shiftlab.errors import ShiftlabError
from shiftlab.ingest.run import run_ingest
from shiftlab.ingest.selection import SeriesSelection
from shiftlab.labels import FILE_STEM, LabelledSample, LabelTable
from shiftlab.manifest import load_manifest

VENDORS = {"ge": "GE MEDICAL SYSTEMS", "siemens": "SIEMENS"}


def dataset_cfg(root: Path, labels: dict, ingest: dict | None = None, groups: dict | None = None):
    return OmegaConf.create(
        {
            "name": "selection_test",
            "dicom_root": str(root / "dicom"),
            "manifest_dir": str(root / "manifest"),
            "labels": labels,
            "ingest": ingest,
            "split_fractions": {"train": 0.5, "val": 0.25, "test": 0.25},
            "domains": {"source": "ge", "target": "siemens", "groups": groups or {}},
        }
    )


def paths_cfg(root: Path):
    return OmegaConf.create({"pseudonym_key": str(root / "key")})


def ingest(root: Path, cfg) -> tuple[pd.DataFrame, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_ingest(cfg, paths_cfg(root), 0)
    return load_manifest(cfg.manifest_dir)[0], out.getvalue()


def multi_sequence_tree(root: Path) -> pd.DataFrame:
    """Per patient: a 'T2 AX' series (4 slices), a thin 'T2 AX' reconstruction (6 slices) and a
    'DWI' series; labels are keyed by PatientID."""
    rows = []
    for vendor, manufacturer in VENDORS.items():
        for i in range(8):
            patient = f"{vendor}{i}"
            for description, n_slices in (("T2 AX", 4), ("T2 AX thin", 6), ("DWI", 3)):
                write_series(
                    root / "dicom" / patient / description,
                    patient_id=patient,
                    manufacturer=manufacturer,
                    n_slices=n_slices,
                    extra={"SeriesDescription": description},
                )
            rows.append({"patient": patient, "label": i % 2})
    table = pd.DataFrame(rows)
    table.to_csv(root / "labels.csv", index=False)
    return table


def patient_labels(root: Path) -> dict:
    return {
        "_target_": "shiftlab.labels.read_label_table",
        "path": str(root / "labels.csv"),
        "key_column": "patient",
        "key_tag": "PatientID",
        "label_column": "label",
    }


@pytest.mark.parametrize(
    ("ingest_options", "slices"),
    [
        ({"series_filter": {"SeriesDescription": "^T2"}, "series_per_key": "fewest_slices"}, 4),
        ({"series_filter": {"SeriesDescription": "^T2"}, "series_per_key": "most_slices"}, 6),
        ({"series_filter": {"SeriesDescription": "DWI"}}, 3),
    ],
)
def test_series_filter_and_one_series_per_key(tmp_path: Path, ingest_options, slices) -> None:
    table = multi_sequence_tree(tmp_path)
    df, output = ingest(tmp_path, dataset_cfg(tmp_path, patient_labels(tmp_path), ingest_options))
    assert len(df) == len(table)
    assert set(df["n_slices"]) == {slices}
    assert f"series not chosen: {3 * len(table) - len(table)}" in " ".join(output.split())


def test_without_selection_every_series_of_a_key_is_a_sample(tmp_path: Path) -> None:
    table = multi_sequence_tree(tmp_path)
    df, _ = ingest(tmp_path, dataset_cfg(tmp_path, patient_labels(tmp_path)))
    assert len(df) == 3 * len(table)
    # A patient's series share its split.
    assert df.groupby("patient_id")["split"].nunique().max() == 1


def test_bad_selection_options_are_refused() -> None:
    with pytest.raises(ShiftlabError, match="unknown option"):
        SeriesSelection.from_config({"series_filters": {}})
    with pytest.raises(ShiftlabError, match="not a DICOM keyword"):
        SeriesSelection.from_config({"series_filter": {"Description": "x"}})
    with pytest.raises(ShiftlabError, match="bad regular expression"):
        SeriesSelection.from_config({"series_filter": {"SeriesDescription": "("}})
    with pytest.raises(ShiftlabError, match="choose one of"):
        SeriesSelection.from_config({"series_per_key": "newest"})


def test_one_sample_per_image_keyed_by_file_name_with_patients_from_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four views per study share one series and carry no PatientID; the label file names the
    images by file name and the study each belongs to."""
    samples = {}
    for vendor, manufacturer in VENDORS.items():
        for study in range(8):
            names = [f"{vendor}{study}view{v}.dicom" for v in range(4)]
            write_series(
                tmp_path / "dicom" / f"{vendor}study{study}",
                patient_id="",
                manufacturer=manufacturer,
                n_slices=4,
                file_names=names,
            )
            for view, name in enumerate(names):
                samples[name.split(".")[0]] = LabelledSample(
                    name="", label=(study + view // 2) % 2, patient=f"{vendor}study{study}"
                )
    # The last image's label row names no patient: it is skipped with a reason.
    last = next(reversed(samples))
    samples[last] = LabelledSample(name="", label=1)
    monkeypatch.setitem(globals(), "_SAMPLES", samples)
    labels = {"_target_": f"{__name__}.recipe_from_globals"}
    cfg = dataset_cfg(tmp_path, labels, {"group_by": "SOPInstanceUID"})
    df, output = ingest(tmp_path, cfg)
    assert len(df) == len(samples) - 1
    assert df["n_slices"].eq(1).all()
    assert "images found:       64" in output
    # The four views of a study are one patient, in one split.
    assert df.groupby("patient_id").size().value_counts().to_dict() == {4: 15, 3: 1}
    assert df.groupby("patient_id")["split"].nunique().max() == 1
    skipped = pd.read_csv(Path(cfg.manifest_dir) / "skipped.csv")
    assert skipped["reason"].tolist() == ["no PatientID, and the label file names no patient"]


_SAMPLES: dict[str, LabelledSample] = {}


def recipe_from_globals() -> LabelTable:
    """A label recipe keyed by file stem whose samples name their patient (VinDr-style)."""
    return LabelTable(key_tag=FILE_STEM, samples={stem: [s] for stem, s in _SAMPLES.items()})


def test_usable_domains_and_pairs_are_printed(tmp_path: Path) -> None:
    multi_sequence_tree(tmp_path)
    # A third vendor with one class only: present, but not usable.
    for i in range(4):
        write_series(
            tmp_path / "dicom" / f"philips{i}" / "T2 AX",
            patient_id=f"philips{i}",
            manufacturer="Philips Medical Systems",
            extra={"SeriesDescription": "T2 AX"},
        )
    table = pd.read_csv(tmp_path / "labels.csv")
    extra = pd.DataFrame({"patient": [f"philips{i}" for i in range(4)], "label": 0})
    pd.concat([table, extra]).to_csv(tmp_path / "labels.csv", index=False)
    cfg = dataset_cfg(
        tmp_path,
        patient_labels(tmp_path),
        {"series_filter": {"SeriesDescription": "^T2 AX$"}},
        groups={"other": {"exclude": ["siemens"]}},
    )
    _, output = ingest(tmp_path, cfg)
    lines = dict(line.split(":", 1) for line in output.splitlines() if ":" in line)
    lines = {name.strip(): value.strip() for name, value in lines.items()}
    assert lines["usable domains"].startswith("ge, siemens, other ")
    assert lines["not usable"].startswith("philips ")
    pairs = "ge->siemens, siemens->ge, siemens->other, other->siemens "
    assert lines["usable pairs"].startswith(pairs)


def slice_labels() -> LabelTable:
    """Slice-level samples of each series (Duke style), one of them past the series' end."""
    samples = {}
    for vendor in VENDORS:
        for i in range(8):
            samples[f"{vendor}{i}"] = [
                LabelledSample(name=f"slice{k}", label=int(k == 1), extra={"slice_index": k})
                for k in (0, 1, 9 if i == 0 else 2)
            ]
    return LabelTable(key_tag="PatientID", samples=samples)


def test_slices_outside_their_series_are_dropped_with_a_reason(tmp_path: Path) -> None:
    multi_sequence_tree(tmp_path)
    cfg = dataset_cfg(
        tmp_path,
        {"_target_": f"{__name__}.slice_labels"},
        {"series_filter": {"SeriesDescription": "^T2 AX$"}},
    )
    df, output = ingest(tmp_path, cfg)
    assert len(df) == 16 * 3 - 2
    assert "samples dropped:    2" in output
    skipped = pd.read_csv(Path(cfg.manifest_dir) / "skipped.csv")
    assert (
        skipped["reason"].tolist()
        == ["sample slice9: slice_index 9 outside the series' 4 slices"] * 2
    )
