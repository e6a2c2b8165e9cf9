"""W&B mirrors a run offline, is always finished, and never receives paths or patient ids."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import wandb
from conftest import SyntheticSet
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
    logged = log.read_bytes()
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
