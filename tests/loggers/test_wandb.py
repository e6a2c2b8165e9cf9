"""W&B mirrors a run offline, is always finished, and never receives paths or patient ids."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import wandb
from helpers.sets import SyntheticSet
from helpers.wandb_files import wandb_log
from hydra.errors import InstantiationException

from shiftlab.train import train


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_offline_run_is_written_under_the_run_dir_and_finished(
    small_set: SyntheticSet, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    cfg = small_set.compose(tmp_path / "out", "logger=wandb", "trainer.max_epochs=1")
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg, run_dir)

    assert wandb.run is None, "the W&B run was left open"
    assert (run_dir / "done").is_file(), "W&B is a mirror; the run record is still written"
    runs = offline_runs(run_dir)
    assert len(runs) == 1, list((run_dir / "wandb").iterdir())
    [log] = runs[0].glob("run-*.wandb")
    logged = wandb_log(log, b"synthetic_mri/ge->siemens")
    # The settings did reach W&B (so the checks below are not vacuous) ...
    assert b"shiftlab.data.datamodule.ShiftDataModule" in logged
    assert b"synthetic_mri/ge->siemens" in logged  # the group
    # ... without the data folder or any raw patient id, in the log or the config file.
    config = runs[0] / "files" / "config.yaml"
    texts = {log.name: logged} | ({config.name: config.read_bytes()} if config.exists() else {})
    for name, data in texts.items():
        assert str(small_set.data_dir).encode() not in data, name
        assert b"SYN_" not in data, name


def test_failed_training_still_finishes_the_run(small_set: SyntheticSet, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "done").write_text("")  # left by an earlier attempt: must not survive a rerun
    cfg = small_set.compose(tmp_path / "out", "logger=wandb", "trainer.precision=bogus")
    with pytest.raises(InstantiationException, match="bogus"):
        train(cfg, run_dir)

    assert offline_runs(run_dir), "the logger had started before the failure"
    assert wandb.run is None, "a failed run left W&B open"
    assert not (run_dir / "done").exists()
    assert not (run_dir / "metrics.json").exists()


# A folder named as TCIA names a patient's: it must not reach W&B in any form.
PLANTED = "Breast_MRI_042_John_Doe"


@pytest.mark.slow
def test_no_local_path_and_no_command_line_reach_wandb(
    small_set: SyntheticSet, tmp_path: Path
) -> None:
    """The planted folder name is given on the command line in each way a path reaches a run:
    the data folder, the DICOM folder (relative to the working directory), the manifest folder,
    a table's path under a key shiftlab does not know (masking goes by what a value is), and text
    that interpolates a path (a preset's ``download``). Every file W&B writes is searched."""
    site = tmp_path / PLANTED
    site.mkdir()
    (site / "dicom").symlink_to(small_set.dicom_root, target_is_directory=True)
    (site / "manifest").symlink_to(small_set.manifest_dir, target_is_directory=True)
    out = tmp_path / "out"
    overrides = [
        *small_set.overrides,
        "logger=wandb",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"paths.data_dir='{tmp_path / (PLANTED + '_data')}'",
        f"paths.cache_dir='{small_set.data_dir / 'cache'}'",
        f"paths.output_dir='{out}'",
        f"dataset.root='{site}'",
        f"dataset.dicom_root={PLANTED}/dicom",
        f"dataset.manifest_dir='{site / 'manifest'}'",
        f"+dataset.user_manifest='{site / 'samples.csv'}'",
        "dataset.download='Expected:  ${dataset.dicom_root}/<PatientID>/<study>/<series>/1-01.dcm'",
    ]
    trained = subprocess.run(
        [sys.executable, "-m", "shiftlab.train", *overrides],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    [run] = out.rglob("offline-run-*")
    files = [path for path in run.rglob("*") if path.is_file()]
    [log] = run.glob("run-*.wandb")
    logged = log.read_bytes()
    # W&B did receive the settings, the scenario as the group and the download text's words.
    assert b"shiftlab.data.datamodule.ShiftDataModule" in logged
    assert b"synthetic_mri/ge->siemens" in logged
    assert b"/<PatientID>/<study>/<series>/1-01.dcm" in logged
    assert {p.name for p in files} >= {log.name, "debug.log", "debug-internal.log"}
    for path in files:
        data = path.read_bytes()
        for needle in (PLANTED, PLANTED.lower(), "John_Doe", "trainer.max_epochs=1"):
            assert needle.encode() not in data, (path.relative_to(run), needle)
            assert needle.encode("utf-16-le") not in data, (path.relative_to(run), needle)
    assert b"Expected:  <local path>/<PatientID>/<study>/<series>/1-01.dcm" in logged
