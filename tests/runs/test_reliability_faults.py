"""Faults in a run or a grid: a run killed at any moment leaves no record the report would use
and is finished by a relaunch; a diverging run stops with its reason recorded; an unwritable
output folder is refused before anything starts; a failed run does not stop its grid."""

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

from shiftlab import grid
from shiftlab.errors import ShiftlabError
from shiftlab.runs import states as runs
from shiftlab.runs.failure import TrainingDiverged, mask
from shiftlab.runs.record import FAILURE, check_writable
from shiftlab.train import run, train

TINY = (
    "dataset.synthetic.patients_per_vendor=12",
    "model=smallcnn",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
)


def command_line(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fresh_outputs(tiny: Path, tmp_path: Path) -> Path:
    """tmp_path with the tiny set's data folder linked in and its own outputs."""
    (tmp_path / "data").symlink_to(tiny / "data")
    return tmp_path


def report_statuses(runs_dir: Path) -> dict[Path, str]:
    records = pytest.importorskip("shiftlab.report.records")
    return {r.run_dir: r.status for r in records.read_folder(runs_dir)}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("moment", "resumed_from"),
    [
        ("setup", None),
        ("epoch1", 0),
        ("record", 2),
    ],
)
def test_a_run_killed_at_any_moment_is_never_read_and_a_relaunch_finishes_it(
    moment: str, resumed_from: int | None, tiny: Path, tmp_path: Path
) -> None:
    base = fresh_outputs(tiny, tmp_path)
    overrides = [*TINY, *places(base)]
    [job] = grid.grid(overrides)[1]
    killed = command_line(base, sys.executable, "-c", KILLER, moment, *overrides)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    run_dir = job.run_dir
    assert runs.run_state(run_dir) == "incomplete", "a dead process's lock is not live"
    assert not (run_dir / "done").exists() and not (run_dir / "metrics.json").exists()
    if moment == "record":
        assert (run_dir / "predictions.csv").is_file(), "written whole before metrics.json"
        assert list(run_dir.glob("metrics.json.*.tmp")), "the half-written temporary file"
    # The report does not use the run (and does not stumble on the half-written file).
    assert report_statuses(base / "out" / "runs") == {run_dir: "incomplete"}

    cfg = compose_train(base / "data", base / "out", *TINY)
    with contextlib.redirect_stdout(io.StringIO()):
        result = run(cfg, run_dir)
    assert result is not None and (run_dir / "done").is_file()
    assert not list(run_dir.glob("*.tmp")), "stale temporary files are cleared on restart"
    attempts = json.loads((run_dir / "attempts.json").read_text())
    assert [a["resumed_from_epoch"] for a in attempts] == [None, resumed_from]
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_from_epoch"] == resumed_from
    assert report_statuses(base / "out" / "runs") == {run_dir: "used"}


@pytest.mark.slow
def test_a_run_killed_and_resumed_predicts_exactly_as_one_left_alone(
    tiny: Path, tmp_path: Path
) -> None:
    """Data order, flips and dropout follow (seed, epoch, step), not the process's history: a
    run killed in epoch 1 or in epoch 2 and relaunched from last.ckpt writes the same bytes.
    Every attempt runs the command line with the same thread count (float sums differ across
    thread counts)."""
    overrides = [*TINY, "trainer.max_epochs=4", "data.batch_size=2", "seed=1"]
    predictions = {}
    for moment in ("alone", "epoch1", "epoch2"):
        (tmp_path / moment).mkdir()
        base = fresh_outputs(tiny, tmp_path / moment)
        launch = [sys.executable, "-c", KILLER, moment, *overrides, *places(base)]
        if moment != "alone":
            killed = command_line(base, *launch)
            assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        finished = command_line(base, *launch[:3], "none", *launch[4:])
        assert finished.returncode == 0, finished.stderr[-2000:]
        [job] = grid.grid([*overrides, *places(base)])[1]
        attempts = json.loads((job.run_dir / "attempts.json").read_text())
        expected = {"alone": [None], "epoch1": [None, 0], "epoch2": [None, 1]}[moment]
        assert [a["resumed_from_epoch"] for a in attempts] == expected
        predictions[moment] = (job.run_dir / "predictions.csv").read_bytes()
    assert predictions["epoch1"] == predictions["alone"]
    assert predictions["epoch2"] == predictions["alone"]


@pytest.mark.slow
def test_a_diverging_run_stops_with_its_reason_recorded(tiny: Path, tmp_path: Path) -> None:
    base = fresh_outputs(tiny, tmp_path)
    overrides = [*TINY, "optim.lr=1e30", *places(base)]
    [job] = grid.grid(overrides)[1]
    result = command_line(base, sys.executable, "-m", "shiftlab.train", *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    [message] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "training loss became nan or inf" in message and "optim.lr" in message
    assert str(job.run_dir / FAILURE) in message
    assert "Traceback" not in result.stderr

    failure = json.loads((job.run_dir / FAILURE).read_text())
    assert failure["kind"] == "diverged" and "nan or inf" in failure["reason"]
    assert "\n" not in failure["reason"]
    [attempt] = json.loads((job.run_dir / "attempts.json").read_text())
    assert attempt["failure"] == failure["reason"]
    assert not (job.run_dir / "metrics.json").exists(), "no number is recorded"
    assert runs.run_state(job.run_dir) == "incomplete"
    # No checkpoint holds the broken weights: last.ckpt is from before the loss went bad.
    status = io.StringIO()
    with contextlib.redirect_stdout(status):
        grid.status(overrides)
    assert f"(failed: {failure['reason']})" in status.getvalue()


@pytest.mark.slow
def test_a_failed_run_does_not_stop_its_grid(tiny: Path, tmp_path: Path) -> None:
    base = fresh_outputs(tiny, tmp_path)
    overrides = [*TINY, *places(base)]
    result = command_line(
        base, sys.executable, "-m", "shiftlab.train", "-m", "optim.lr=1e30,1e-3", *overrides
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "error: 1 of 2 runs failed" in result.stderr
    assert "training loss became nan or inf" in result.stderr
    assert "Traceback" not in result.stderr
    done = sorted((base / "out" / "runs").rglob("done"))
    failed = sorted((base / "out" / "runs").rglob(FAILURE))
    assert len(done) == 1 and len(failed) == 1, "the second run trained after the first failed"
    assert done[0].parent != failed[0].parent


@pytest.mark.slow
def test_an_unwritable_output_folder_is_refused_before_anything_starts(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    outputs = blocker / "outputs"
    for args in ([], ["-m", "seed=0,1"]):
        result = command_line(
            tmp_path,
            sys.executable,
            "-m",
            "shiftlab.train",
            *args,
            f"paths.data_dir='{tmp_path / 'data'}'",
            f"paths.output_dir='{outputs}'",
        )
        assert result.returncode in (1, 2), result.stderr[-2000:]
        assert "error: cannot write the run record to" in result.stderr, result.stderr[-2000:]
        assert "paths.output_dir" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists(), "nothing was generated, nothing was trained"

    with pytest.raises(ShiftlabError, match="cannot write the run record"):
        check_writable(outputs / "runs" / "x")
    check_writable(tmp_path / "new" / "deeper")  # a folder still to be made is fine
    assert not (tmp_path / "new").exists(), "checking does not create it"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_output_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(ShiftlabError, match="Permission denied"):
            check_writable(locked / "runs")
    finally:
        locked.chmod(0o700)


def test_a_nan_metric_is_a_failure_not_a_result(tiny: Path, tmp_path: Path) -> None:
    """Whatever makes the network's outputs nan, the record holds no nan AUROC."""
    cfg = compose_train(tiny / "data", tmp_path / "out", *TINY, "trainer.max_epochs=1")
    import shiftlab.train as train_module

    original = train_module.run_result

    def nan_result(*args, **kwargs):
        result = original(*args, **kwargs)
        result["metrics"]["test/siemens/auroc"] = float("nan")
        return result

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
        patch.setattr(train_module, "run_result", nan_result)
        with pytest.raises(TrainingDiverged, match="test/siemens/auroc is not a finite number"):
            train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert json.loads((tmp_path / "run" / FAILURE).read_text())["kind"] == "diverged"


def test_recorded_reasons_mask_dicom_paths(tiny: Path, tmp_path: Path) -> None:
    cfg = compose_train(tiny / "data", tmp_path / "out", *TINY)
    dicom_root = str(cfg.dataset.dicom_root)
    text = f"cannot decode pixels of {dicom_root}/PAT0042/study/1-01.dcm: bad\nsecond line"
    masked = mask(text, cfg)
    assert "PAT0042" not in masked and dicom_root not in masked
    assert masked == "cannot decode pixels of <dataset.dicom_root>/…: bad second line"
    # TCIA folder names hold spaces and commas: the whole path goes, up to the colon.
    spaced = f"no pixels in {dicom_root}/PAT0042/01-01-2000-NA-MRI BREAST, BILAT-123/1.dcm: x"
    assert mask(spaced, cfg) == "no pixels in <dataset.dicom_root>/…: x"
    # A path of the manifest quoted relative to the root loses every folder and file name.
    relative = pd.read_csv(Path(cfg.dataset.manifest_dir) / "manifest.csv")["paths"][0]
    relative = relative.split("|")[0]
    masked = mask(f"slice {relative} differs", cfg)
    assert not [name for name in relative.split("/") if name in masked], masked
