"""Bad configurations stop a run before anything is trained, with a message that names the
valid choices: unknown dataset or model, source == target, a domain absent from the manifest,
too few patients for the splits, a split with one class, an injection fraction outside [0, 1),
a negative or non-numeric noise strength."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers.compose import REPO, compose_train
from helpers.dicom_factory import write_series
from hydra.errors import MissingConfigException

from shiftlab.config import CONF_DIR
from shiftlab.errors import ShiftlabError
from shiftlab.ingest.run import run_ingest
from shiftlab.train import train

TINY = ("dataset.synthetic.patients_per_vendor=12", "model=smallcnn", "trainer.max_epochs=1")


def refused(cfg, run_dir: Path) -> str:
    """The message of the ShiftlabError ``train`` raises; nothing may have been trained."""
    with pytest.raises(ShiftlabError) as caught, contextlib.redirect_stdout(io.StringIO()):
        train(cfg, run_dir)
    for name in ("checkpoints", "metrics.json", "predictions.csv", "done", "config.yaml"):
        assert not (run_dir / name).exists(), name
    return str(caught.value)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["dataset", "model"])
def test_an_unknown_name_lists_the_choices(group: str, tmp_path: Path) -> None:
    with pytest.raises(MissingConfigException) as caught:
        compose_train(tmp_path / "data", tmp_path / "out", f"{group}=nonesuch")
    message = str(caught.value)
    assert f"Could not find '{group}/nonesuch'" in message
    for name in options(group):
        assert name in message, (name, message)


@pytest.mark.slow
def test_an_unknown_model_on_the_command_line_is_one_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shiftlab.train", "model=resnet9000"],
        cwd=REPO,
        env={**os.environ, "SHIFTLAB_OUTPUT_DIR": str(tmp_path / "out")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Could not find 'model/resnet9000'" in result.stderr
    assert all(name in result.stderr for name in options("model"))
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["source=ge", "target=ge"], ["source and target are both 'ge'", "ge (12 samples)"]),
        (["source=philips"], ["source='philips' is not a domain", "siemens (12 samples)"]),
        (["target=philips"], ["target='philips' is not a domain", "usable pairs: ge->siemens"]),
        (
            ["shift=injection", "shift.fraction=1.5"],
            ["shift.fraction=1.5", "must be in [0, 1)", "shift.fraction=0.3"],
        ),
        (["shift=injection", "shift.fraction=-0.1"], ["shift.fraction=-0.1", "[0, 1)"]),
        (["shift=injection", "shift.fraction=lots"], ["shift.fraction='lots'", "a number"]),
        (["shift=injection", "shift.mode=swap"], ["shift.mode='swap'", "['replace', 'add']"]),
        (["shift=noise", "shift.alpha=-5"], ["shift.alpha=-5", "noise strength is >= 0"]),
        (["shift=noise", "shift.alpha=loud"], ["shift.alpha='loud'", "a number"]),
        (["shift=noise", "shift.reference=max"], ["['train_std', 'unit']"]),
    ],
)
def test_bad_settings_are_refused_before_training(
    overrides: list[str], expected: list[str], tiny: Path, tmp_path: Path
) -> None:
    cfg = compose_train(tiny / "data", tmp_path / "out", *TINY, *overrides)
    message = refused(cfg, tmp_path / "run")
    for fragment in expected:
        assert fragment in message, (fragment, message)


def write_custom(root: Path, patients: dict[str, tuple[int, int]]) -> None:
    """dataset=custom with (negatives, positives) patients per vendor, one series each."""
    rows = []
    makers = {"ge": "GE MEDICAL SYSTEMS", "siemens": "SIEMENS", "philips": "Philips"}
    for vendor, (negatives, positives) in patients.items():
        for i in range(negatives + positives):
            folder = Path("scans") / f"{vendor}{i:02d}"
            write_series(root / folder, patient_id=f"{vendor}{i:02d}", manufacturer=makers[vendor])
            rows.append(
                {
                    "path": folder.as_posix(),
                    "patient_id": f"{vendor}{i:02d}",
                    "manufacturer": "",
                    "label": int(i >= negatives),
                }
            )
    pd.DataFrame(rows).to_csv(root / "samples.csv", index=False)


@pytest.fixture(scope="module")
def lopsided(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GE and Philips with enough patients; Siemens with one patient of each class."""
    data_dir = tmp_path_factory.mktemp("lopsided")
    write_custom(data_dir / "custom", {"ge": (4, 4), "philips": (4, 4), "siemens": (1, 1)})
    cfg = compose_train(data_dir, data_dir / "out", "dataset=custom")
    with contextlib.redirect_stdout(io.StringIO()):
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
    return data_dir


@pytest.mark.parametrize(
    ("overrides", "domain_split"),
    [
        (["source=siemens", "target=ge"], "domain 'siemens' split 'val'"),  # too few to split
        (["source=ge", "target=siemens"], "domain 'siemens' split 'test'"),  # one class there
    ],
)
def test_too_few_patients_or_one_class_names_the_usable_pairs(
    overrides: list[str], domain_split: str, lopsided: Path, tmp_path: Path
) -> None:
    cfg = compose_train(lopsided, tmp_path / "out", "dataset=custom", *overrides)
    message = refused(cfg, tmp_path / "run")
    assert domain_split in message and "need both classes" in message, message
    assert "patients of 'siemens': train 2 (1 negative, 1 positive), val 0" in message
    assert "usable domains (both classes in train, val and test): ge, philips" in message
    assert "usable pairs: ge->philips, philips->ge" in message
    assert "dataset.split_fractions" in message
