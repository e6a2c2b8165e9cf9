"""Bad input stops a run before training, with a message that says what to do."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from helpers.compose import compose_train
from helpers.dicom_factory import write_series
from helpers.sets import SyntheticSet

from shiftlab.data.prepare import ensure_manifest
from shiftlab.errors import ShiftlabError
from shiftlab.ingest.run import run_ingest
from shiftlab.train import train


def fails_before_training(cfg, run_dir: Path) -> str:
    """Run ``train`` expecting a ShiftlabError; check nothing was trained; return the message."""
    with pytest.raises(ShiftlabError) as caught, contextlib.redirect_stdout(io.StringIO()):
        train(cfg, run_dir)
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())
    for name in ("metrics.json", "predictions.csv", "done"):
        assert not (run_dir / name).exists(), name
    return str(caught.value)


def vendor_counts(data: SyntheticSet) -> dict[str, int]:
    return data.manifest()["vendor"].value_counts().to_dict()


def assert_lists_vendors(message: str, counts: dict[str, int]) -> None:
    for vendor, n in counts.items():
        assert f"{vendor} ({n} samples)" in message, message


def test_source_equal_to_target(small_set: SyntheticSet, tmp_path: Path) -> None:
    cfg = small_set.compose(tmp_path / "out", "source=siemens", "target=siemens")
    message = fails_before_training(cfg, tmp_path / "run")
    assert "source and target are both 'siemens'" in message
    assert_lists_vendors(message, vendor_counts(small_set))
    assert not (tmp_path / "run").exists(), "the run directory is made only for a valid run"


@pytest.mark.parametrize("role", ["source", "target"])
def test_domain_absent_from_the_manifest(
    role: str, small_set: SyntheticSet, tmp_path: Path
) -> None:
    valid = "target=siemens" if role == "source" else "source=ge"
    cfg = small_set.compose(tmp_path / "out", f"{role}=philips", valid)
    message = fails_before_training(cfg, tmp_path / "run")
    assert f"{role}='philips' is not a domain of this dataset" in message
    assert_lists_vendors(message, vendor_counts(small_set))


def test_another_split_seed_gets_its_own_manifest(small_set: SyntheticSet, tmp_path: Path) -> None:
    before = (small_set.manifest_dir / "manifest.csv").read_bytes()
    cfg = small_set.compose(tmp_path / "out", "split_seed=1")
    with contextlib.redirect_stdout(io.StringIO()):
        ensure_manifest(cfg)
    other = Path(cfg.dataset.manifest_dir)
    assert other != small_set.manifest_dir and other.name == "split_seed1"
    assert json.loads((other / "manifest.json").read_text())["split_seed"] == 1
    splits = pd.read_csv(other / "manifest.csv").set_index("sample_id")["split"]
    assert not splits.equals(small_set.manifest().set_index("sample_id")["split"])
    assert (small_set.manifest_dir / "manifest.csv").read_bytes() == before


def test_manifest_made_with_another_split_seed(small_set: SyntheticSet, tmp_path: Path) -> None:
    cfg = small_set.compose(
        tmp_path / "out", "split_seed=1", f"dataset.manifest_dir='{small_set.manifest_dir}'"
    )
    message = fails_before_training(cfg, tmp_path / "run")
    assert "split_seed=0" in message and "split_seed=1" in message
    assert "python -m shiftlab.ingest dataset=synthetic_mri split_seed=1" in message
    assert small_set.manifest_meta()["split_seed"] == 0, "the manifest must be left as it was"


def write_real_dataset(data_dir: Path, positives: dict[str, int], negatives: int = 4) -> None:
    """A tiny dataset of one's own (dataset=custom): one series folder per patient and the
    hand-written sample table naming them."""
    root = data_dir / "custom"
    rows = []
    for vendor, manufacturer in (("ge", "GE MEDICAL SYSTEMS"), ("siemens", "SIEMENS")):
        for i in range(negatives + positives[vendor]):
            patient = f"Breast_MRI_{vendor}_{i:03d}"
            folder = Path("scans") / patient / "ax dyn 1st pass"
            write_series(root / folder, patient_id=patient, manufacturer=manufacturer)
            rows.append(
                {
                    "path": folder.as_posix(),
                    "patient_id": patient,
                    "manufacturer": "",  # from the files' Manufacturer
                    "label": int(i >= negatives),
                }
            )
    pd.DataFrame(rows).to_csv(root / "samples.csv", index=False)


def test_real_dataset_without_manifest_names_the_ingest_command(tmp_path: Path) -> None:
    write_real_dataset(tmp_path / "data", positives={"ge": 4, "siemens": 4})
    cfg = compose_train(tmp_path / "data", tmp_path / "out", "dataset=custom")
    message = fails_before_training(cfg, tmp_path / "run")
    assert str(tmp_path / "data" / "custom") in message
    assert "python -m shiftlab.ingest dataset=custom split_seed=0" in message


def test_split_without_both_classes(tmp_path: Path) -> None:
    # One Siemens patient with a lesion: the split puts it in train, so Siemens test has none.
    write_real_dataset(tmp_path / "data", positives={"ge": 4, "siemens": 1})
    cfg = compose_train(tmp_path / "data", tmp_path / "out", "dataset=custom")
    with contextlib.redirect_stdout(io.StringIO()):
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    manifest = pd.read_csv(Path(cfg.dataset.manifest_dir) / "manifest.csv")
    siemens_test = manifest[(manifest["vendor"] == "siemens") & (manifest["split"] == "test")]
    assert set(siemens_test["label"]) == {0}, "the fixture must starve the target's test split"

    message = fails_before_training(cfg, tmp_path / "run")
    n_negative = len(siemens_test)
    assert f"domain 'siemens' split 'test' has {n_negative} negative, 0 positive" in message
    assert "both classes" in message
    # As the source, the same vendor lacks positives in its validation split too.
    reverse = compose_train(
        tmp_path / "data", tmp_path / "out", "dataset=custom", "source=siemens", "target=ge"
    )
    message = fails_before_training(reverse, tmp_path / "reverse")
    assert re.search(r"domain 'siemens' split '(val|test)' has \d+ negative, 0 positive", message)


def test_unreadable_pixels_are_named_when_no_sample_can_be_decoded(tmp_path: Path) -> None:
    """One undecodable sample is left out (tests/ingest/test_real_files.py); when none decodes, the
    run stops before training and names the first sample's files, relative to the DICOM root."""
    overrides = ("dataset.synthetic.patients_per_vendor=12", "trainer.max_epochs=1")
    cfg = compose_train(tmp_path / "data", tmp_path / "out", *overrides)
    with contextlib.redirect_stdout(io.StringIO()):
        ensure_manifest(cfg)
    manifest = pd.read_csv(Path(cfg.dataset.manifest_dir) / "manifest.csv")
    # Damage a file of every sample after ingest: as if a download were cut short later.
    for paths in manifest["paths"]:
        broken = Path(cfg.dataset.dicom_root) / paths.split("|")[1]
        data = broken.read_bytes()
        broken.write_bytes(data[: len(data) // 2])

    message = fails_before_training(cfg, tmp_path / "run")
    first = sorted(manifest["paths"])[0].split("|")
    assert "no sample of the manifest could be decoded" in message
    assert f"(files {first[0]} and {len(first) - 1} more)" in message
    assert f"cannot decode pixels of <file 2 of {len(first)}>" in message
    cache_dir = Path(cfg.paths.cache_dir)
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == [], "no partial cache is kept"


def test_target_validation_split_without_both_classes_is_not_reported_as_a_number(
    tmp_path: Path,
) -> None:
    # Two Siemens positives with 0.5/0.15/0.35 fractions: one in train, one in test, none in val.
    write_real_dataset(tmp_path / "data", positives={"ge": 4, "siemens": 2})
    cfg = compose_train(
        tmp_path / "data",
        tmp_path / "out",
        "dataset=custom",
        "dataset.split_fractions={train: 0.5, val: 0.15, test: 0.35}",
        "dataset.preprocess.slices=3",
        "dataset.preprocess.size=64",
        "dataset.mrnet_first_conv_stride=2",
        "trainer.max_epochs=1",
    )
    with contextlib.redirect_stdout(io.StringIO()):
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    manifest = pd.read_csv(Path(cfg.dataset.manifest_dir) / "manifest.csv")
    siemens_val = manifest[(manifest["vendor"] == "siemens") & (manifest["split"] == "val")]
    assert set(siemens_val["label"]) == {0}, "the fixture must starve the target's val split"

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            result = train(cfg, tmp_path / "run")
    except ShiftlabError as error:
        assert "'siemens' split 'val'" in str(error)
    else:
        assert "val/siemens/auroc" not in result["metrics"], result["metrics"]
