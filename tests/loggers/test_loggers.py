"""Loggers compose: the run record keeps its CSV curves whatever else logs the run, logger=wandb
adds W&B beside them, and a resumed run continues its W&B run (same id, from the settings hash)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers.compose import REPO, compose_train
from helpers.killed_runs import KILLER, places
from helpers.wandb_files import wandb_log

from shiftlab import grid
from shiftlab.loggers.wandb import wandb_run_id
from shiftlab.train import train

TINY = (
    "dataset.synthetic.patients_per_vendor=12",
    "model=smallcnn",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
    "logger=wandb",
)


def launch(moment: str, *overrides: str) -> subprocess.CompletedProcess:
    """shiftlab.train's command line in a process of its own that is killed at ``moment``
    (tests/runs/test_reliability_faults.py). Without this process's W&B service: each command starts
    its own, as a user's commands do (a shared service would hold the killed run's id in use)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return subprocess.run(
        [sys.executable, "-c", KILLER, moment, *overrides],
        cwd=REPO,
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def validation_epochs(curves: Path) -> list[int]:
    """The epochs whose source validation AUROC a CSV of curves holds. After the fit, the
    selected checkpoint's evaluation is logged at epoch max_epochs."""
    table = pd.read_csv(curves)
    return sorted(table.loc[table["val/ge/auroc"].notna(), "epoch"].astype(int))


def wandb_attempts(run_dir: Path) -> list[str]:
    """The W&B run id of each offline attempt folder (offline-run-<time>-<id>), oldest first."""
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    return [folder.name.split("-", 3)[3] for folder in folders]


def test_the_logger_group_adds_to_the_csv_curves(tmp_path: Path) -> None:
    for choice in ("logger=wandb", "logger=[wandb]", "logger=[csv,wandb]"):
        cfg = compose_train(tmp_path / "data", tmp_path / "out", choice)
        assert set(cfg.logger) == {"csv", "wandb"}, choice
        assert cfg.logger.csv._target_.endswith("CSVLogger")
        assert cfg.logger.wandb._target_ == "shiftlab.loggers.wandb.MaskedWandbLogger"
    assert set(compose_train(tmp_path / "data", tmp_path / "out").logger) == {"csv"}


def test_a_wandb_run_keeps_its_csv_curves(tiny: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = compose_train(tiny / "data", tmp_path / "out", *TINY, "trainer.max_epochs=2")
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg, run_dir)
    assert (run_dir / "done").is_file()
    assert validation_epochs(run_dir / "csv" / "metrics.csv") == [0, 1, 2]
    [attempt] = wandb_attempts(run_dir)
    [log] = (run_dir / "wandb").glob(f"offline-run-*-{attempt}/run-{attempt}.wandb")
    assert b"val/ge/auroc" in wandb_log(log, b"val/ge/auroc"), "the curves reached W&B too"


@pytest.mark.slow
def test_a_resumed_run_continues_its_wandb_run(tiny: Path, tmp_path: Path) -> None:
    """Killed in epoch 1 and relaunched: both attempts log to one W&B run, whose id starts with
    the run's settings hash; the CSV curves of the killed attempt are kept beside the new ones."""
    (tmp_path / "data").symlink_to(tiny / "data")
    overrides = [*TINY, *places(tmp_path)]
    killed = launch("epoch1", *overrides)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    finished = launch("none", *overrides)
    assert finished.returncode == 0, finished.stderr[-2000:]

    [job] = grid.grid(overrides)[1]
    run_dir = job.run_dir
    attempts = json.loads((run_dir / "attempts.json").read_text())
    assert [a["resumed_from_epoch"] for a in attempts] == [None, 0]
    first, resumed = wandb_attempts(run_dir)
    assert first == resumed, "the resumed attempt started another W&B run"
    settings_hash = run_dir.name.rsplit("-", 1)[1]
    assert first.startswith(f"{settings_hash}-")
    # The CSV curves: epoch 0 from the killed attempt, epochs 1-2 from the resumed one.
    assert validation_epochs(run_dir / "csv" / "metrics.attempt0.csv") == [0]
    assert validation_epochs(run_dir / "csv" / "metrics.csv") == [1, 2, 3]


def test_a_run_trained_from_scratch_again_gets_a_new_wandb_run() -> None:
    """W&B never reuses the id of a deleted run nor erases a run's history: a new training of
    the same settings (its folder deleted, or killed before its first checkpoint) is a new run."""
    begun = {"resumed_from_epoch": None, "started_at": 1_700_000_000.0}
    resumed = {"resumed_from_epoch": 3, "started_at": 1_700_000_900.0}
    again = {"resumed_from_epoch": None, "started_at": 1_700_086_400.0}
    one = wandb_run_id("0123456789ab", [begun])
    assert one == "0123456789ab-20231114T221320Z"
    assert wandb_run_id("0123456789ab", [begun, resumed, resumed]) == one
    other = wandb_run_id("0123456789ab", [begun, resumed, again])
    assert other != one and other.startswith("0123456789ab-")
