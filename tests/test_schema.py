"""The optimiser and its schedule come from the config (optim, the scheduler group), run
directories of shiftlab 0.1.0 keep their settings hash, and a setting of the wrong type stops the
command line at once, naming the key and the type expected."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.compose import REPO, compose_train
from hydra.errors import MissingConfigException

from shiftlab.errors import ShiftlabError
from shiftlab.identity import settings_hash
from shiftlab.schema import check_train_config
from shiftlab.train import train

TINY = (
    "dataset.synthetic.patients_per_vendor=12",
    "model=smallcnn",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
)

# Settings hashes computed with shiftlab 0.1.0 (commit fdc8e57, before optim named its class),
# each with the overrides that say the same thing today (optim.scheduler=none is scheduler=none).
# Locations do not count (paths are masked), so any data and output folders give these.
HASHES_OF_0_1_0 = {
    "ae9f379d5d40": (),
    "1a303afd48fe": ("scheduler=none",),
    "908b602cbc9d": ("optim.lr=1e-4", "scheduler=none"),
    "3f70c2e7bcd7": ("dataset=synthetic_ct", "seed=3"),
    "03bad4ba6864": ("dataset=mri_breast", "source=siemens", "target=ge", "seed=7"),
    "ac7a5d7fd04d": ("optim.lr=0.01",),
    "36c1bc7c2acf": ("optim.weight_decay=0",),
    "dcdc50c555ef": (
        "model=smallcnn",
        "trainer.max_epochs=1",
        "dataset.synthetic.patients_per_vendor=12",
    ),
    "2ea994c0ce67": ("experiment=paper_grid", "dataset=mri_breast", "seed=0"),
}


@pytest.mark.parametrize(("expected", "overrides"), HASHES_OF_0_1_0.items())
def test_runs_of_0_1_0_keep_their_settings_hash(
    expected: str, overrides: tuple[str, ...], tmp_path: Path
) -> None:
    """A relaunch finds the run directories that 0.1.0 made (they are named by this hash)."""
    cfg = compose_train(tmp_path / "data", tmp_path / "out", *overrides)
    assert settings_hash(cfg) == expected


def test_another_optimiser_or_schedule_is_another_run(tmp_path: Path) -> None:
    def hashed(*overrides: str) -> str:
        return settings_hash(compose_train(tmp_path / "data", tmp_path / "out", *overrides))

    default = hashed()
    others = [
        hashed("optim._target_=torch.optim.AdamW"),
        hashed("optim._target_=torch.optim.SGD", "+optim.momentum=0.9"),
        hashed("+optim.amsgrad=true"),
        hashed("+scheduler.eta_min=1e-6"),
        hashed("scheduler.interval=epoch"),
        hashed("scheduler=none"),
    ]
    assert len({default, *others}) == len(others) + 1


def shiftlab_train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shiftlab.train", *overrides],
        cwd=REPO,
        env={
            **os.environ,
            "SHIFTLAB_DATA_DIR": str(tmp_path / "data"),
            "SHIFTLAB_OUTPUT_DIR": str(tmp_path / "out"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("seed=abc", ["seed='abc'", "expected an int"]),
        ("optim.lr=fast", ["optim.lr='fast'", "expected a number > 0"]),
    ],
)
def test_a_setting_of_the_wrong_type_stops_the_command_line_at_once(
    override: str, expected: list[str], tmp_path: Path
) -> None:
    """Before Hydra makes the run's folder and before any data is generated: exit status 2."""
    result = shiftlab_train(tmp_path, override)
    assert result.returncode == 2, result.stderr[-2000:]
    for fragment in expected:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists(), "data was generated"
    assert not (tmp_path / "out").exists(), "a run folder was made"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["split_seed=1.5"], "split_seed=1.5 (float): expected an int"),
        (["seed=-1"], "seed=-1: expected an int from 0 to 4294967295"),
        (["twin=maybe"], "twin='maybe' (str): expected a bool"),
        (["runtime.compile=1"], "runtime.compile=1 (int): expected a bool"),
        (["optim.lr=-0.1"], "optim.lr=-0.1 (float): expected a number > 0"),
        (["optim.weight_decay=lots"], "optim.weight_decay='lots' (str): expected a number >= 0"),
        (["optim._target_=torch.optim.Adamm"], "optim._target_='torch.optim.Adamm': no class"),
        (["optim._partial_=false"], "optim._partial_=False: expected true"),
        (["+optim.momentum=0.9"], "Adam takes no argument 'momentum' (it takes lr, betas"),
        (["+optim.scheduler=none"], "the schedule is now its own group, scheduler=none"),
        (["scheduler.interval=hour"], "scheduler.interval='hour': expected one of ['step'"),
        (["+scheduler.gamma=0.5"], "CosineAnnealingLR takes no argument 'gamma'"),
        (["~logger.csv"], "logger.csv is missing: the run record's curves"),
    ],
)
def test_every_checked_setting_names_its_key_and_what_it_expects(
    overrides: list[str], expected: str, tmp_path: Path
) -> None:
    cfg = compose_train(tmp_path / "data", tmp_path / "out", *overrides)
    with pytest.raises(ShiftlabError) as caught:
        check_train_config(cfg)
    assert expected in str(caught.value)
    assert str(caught.value).endswith("Nothing was generated or trained.")


def test_all_problems_are_named_at_once_and_the_defaults_pass(tmp_path: Path) -> None:
    check_train_config(compose_train(tmp_path / "data", tmp_path / "out"))
    check_train_config(compose_train(tmp_path / "data", tmp_path / "out", "experiment=paper_grid"))
    cfg = compose_train(tmp_path / "data", tmp_path / "out", "seed=abc", "optim.lr=fast")
    with pytest.raises(ShiftlabError, match=r"seed='abc'.*; optim.lr='fast'"):
        check_train_config(cfg)


def test_an_unknown_scheduler_lists_the_group(tmp_path: Path) -> None:
    with pytest.raises(MissingConfigException) as caught:
        compose_train(tmp_path / "data", tmp_path / "out", "scheduler=linear")
    message = str(caught.value)
    assert "Could not find 'scheduler/linear'" in message
    assert "cosine" in message and "none" in message


def trained_optimiser(tiny: Path, tmp_path: Path, *overrides: str) -> dict:
    """The optimiser state (and schedules) that a one-epoch run left in its last checkpoint."""
    cfg = compose_train(tiny / "data", tmp_path / "out", *TINY, *overrides)
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "done").is_file()
    state = torch.load(
        tmp_path / "run/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    return {
        "groups": state["optimizer_states"][0]["param_groups"],
        "schedules": state["lr_schedulers"],
    }


def test_a_custom_optimiser_trains(tiny: Path, tmp_path: Path) -> None:
    trained = trained_optimiser(
        tiny, tmp_path, "optim._target_=torch.optim.SGD", "+optim.momentum=0.9"
    )
    [group] = trained["groups"]
    assert group["momentum"] == 0.9 and "betas" not in group  # SGD's state, not Adam's
    assert group["weight_decay"] == 1e-4


@pytest.mark.parametrize(("scheduler", "final_lr"), [("cosine", 0.0), ("none", 1e-3)])
def test_the_scheduler_group_sets_the_learning_rate_over_the_run(
    scheduler: str, final_lr: float, tiny: Path, tmp_path: Path
) -> None:
    """cosine: decays to zero over the run's optimiser steps (its T_max); none: constant."""
    trained = trained_optimiser(tiny, tmp_path, f"scheduler={scheduler}")
    [group] = trained["groups"]
    assert "betas" in group  # Adam, the default
    assert group["lr"] == pytest.approx(final_lr, abs=1e-12)
    if scheduler == "cosine":
        [schedule] = trained["schedules"]
        assert schedule["T_max"] == schedule["last_epoch"] > 0  # one step of it per batch
    else:
        assert trained["schedules"] == []
