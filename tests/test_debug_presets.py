"""The presets users of lightning-hydra-template expect: debug=fast_dev_run|overfit|limit, each a
whole run with its record kept apart and never taken for a result, and trainer=cpu|gpu|ddp."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.compose import REPO, compose_config, compose_train
from omegaconf import OmegaConf

from shiftlab import grid
from shiftlab.errors import ShiftlabError
from shiftlab.identity import settings_hash
from shiftlab.report.records import read_folder
from shiftlab.train import run, train

TINY = ("dataset.synthetic.patients_per_vendor=12", "model=smallcnn")
# What each preset sets in the trainer (conf/debug/), and its epochs.
DEBUG = {
    "fast_dev_run": {
        "max_epochs": 1,
        "limit_train_batches": 1,
        "limit_val_batches": 1,
        "limit_test_batches": 1,
    },
    "overfit": {"max_epochs": 30, "overfit_batches": 2},
    "limit": {
        "max_epochs": 3,
        "limit_train_batches": 5,
        "limit_val_batches": 2,
        "limit_test_batches": 2,
    },
}


def places(base: Path) -> list[str]:
    return [f"paths.data_dir='{base / 'data'}'", f"paths.output_dir='{base / 'out'}'"]


def with_hydra(base: Path, *overrides: str):
    """The composed config with Hydra's own node, to read the run and sweep folders."""
    from hydra import compose, initialize_config_dir

    from shiftlab.config import CONF_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", [*places(base), *overrides], return_hydra_config=True)


# --- debug= ------------------------------------------------------------------------------------


def test_without_debug_a_run_has_its_settings_as_before_the_debug_group(tmp_path: Path) -> None:
    """The defaults entry ``debug: null`` adds nothing: removing it (``~debug``, the defaults
    list as it was) leaves every run's settings hash as it is."""
    for overrides in (
        [],
        ["dataset=ct_head", "seed=3"],
        ["experiment=paper_grid", "hydra.mode=RUN"],
    ):
        cfg = with_hydra(tmp_path, *overrides)
        assert "debug" not in cfg and cfg.hydra.runtime.choices.debug is None
        assert settings_hash(cfg) == settings_hash(with_hydra(tmp_path, *overrides, "~debug"))


@pytest.mark.parametrize("preset", sorted(DEBUG))
def test_a_debug_preset_sets_its_trainer_options_and_keeps_its_record_apart(
    preset: str, tmp_path: Path
) -> None:
    plain = with_hydra(tmp_path, "experiment=paper_grid", "hydra.mode=RUN")
    cfg = with_hydra(tmp_path, "experiment=paper_grid", "hydra.mode=RUN", f"debug={preset}")
    assert cfg.debug == preset
    assert {k: cfg.trainer[k] for k in DEBUG[preset]} == DEBUG[preset]  # over the experiment's
    assert settings_hash(cfg) != settings_hash(plain)
    debug_dir = tmp_path / "out" / "debug"
    run_dir = Path(cfg.hydra.run.dir)
    assert run_dir.parent.parent.parent.parent == debug_dir
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d-{preset}", run_dir.parts[-4])
    assert run_dir.parts[-3:-1] == ("synthetic_mri", "ge-siemens")
    assert Path(cfg.hydra.sweep.dir).parent == debug_dir
    assert Path(plain.hydra.run.dir).is_relative_to(tmp_path / "out" / "runs")


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(DEBUG))
def test_a_debug_run_goes_to_the_end_and_is_never_taken_for_a_result(
    preset: str, tiny: Path, tmp_path: Path
) -> None:
    (tmp_path / "data").symlink_to(tiny / "data")
    overrides = [*TINY, *places(tmp_path), "trainer.enable_progress_bar=false"]
    done = subprocess.run(
        [sys.executable, "-m", "shiftlab.train", f"debug={preset}", *overrides],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [run_dir] = [p.parent for p in (tmp_path / "out" / "debug").rglob("done")]
    assert run_dir.parts[-4].endswith(f"-{preset}")
    assert not (tmp_path / "out" / "runs").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert metrics["debug"] == config["debug"] == preset
    assert (run_dir / "predictions.csv").is_file()
    assert list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))
    assert f"a debug run (debug={preset})" in done.stdout
    losses = [float(x) for x in re.findall(r"epoch \d+: train loss ([0-9.]+)", done.stdout)]
    assert len(losses) == DEBUG[preset]["max_epochs"]
    if preset == "overfit":  # the same two batches, thirty times: the loss falls
        assert sum(losses[-5:]) / 5 < 0.6 * losses[0], losses
    # The report leaves it out, saying why; the grid of the same run without debug= has no run.
    [record] = read_folder(tmp_path / "out")
    assert record.status == "debug" and f"debug={preset}" in record.reason
    [job] = grid.grid([*TINY, *places(tmp_path)])[1]
    assert job.state == "missing"


def test_lightnings_own_fast_dev_run_is_refused_naming_the_preset(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path / "data", tmp_path / "out", *TINY, "+trainer.fast_dev_run=true")
    with pytest.raises(ShiftlabError, match="debug=fast_dev_run") as refused:
        train(cfg, tmp_path / "run")
    assert "turns off the checkpoints and the logger" in str(refused.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


# --- trainer= ----------------------------------------------------------------------------------

TRAINERS = {
    "cpu": {"accelerator": "cpu", "devices": 1},
    "gpu": {"accelerator": "gpu", "devices": 1},
    "ddp": {"accelerator": "auto", "devices": 4, "strategy": "ddp"},
}


@pytest.mark.parametrize("preset", sorted(TRAINERS))
def test_a_trainer_preset_is_the_default_trainer_with_its_own_options(
    preset: str, tmp_path: Path
) -> None:
    default = OmegaConf.to_container(compose_train(tmp_path, tmp_path).trainer)
    trainer = OmegaConf.to_container(compose_train(tmp_path, tmp_path, f"trainer={preset}").trainer)
    assert trainer == {**default, **TRAINERS[preset]}


def test_the_default_trainer_keeps_its_runs_and_ddp_is_the_readmes_ddp_run(tmp_path: Path) -> None:
    def hash_of(*overrides: str) -> str:
        return settings_hash(compose_config("train", tmp_path, tmp_path, *overrides))

    assert hash_of("trainer=default") == hash_of()
    # docs/launchers.md, "One large run on several GPUs (DDP)": the same run, spelled either way.
    assert hash_of("trainer=ddp") == hash_of("trainer.devices=4", "+trainer.strategy=ddp")
    assert hash_of("trainer=cpu") != hash_of()  # the accelerator is named: another run


def test_the_cpu_preset_trains_a_run(tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(tiny / "data")
    cfg = compose_train(
        tmp_path / "data", tmp_path / "out", *TINY, "trainer=cpu", "trainer.max_epochs=1"
    )
    with contextlib.redirect_stdout(io.StringIO()):
        result = run(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "done").is_file() and result["checkpoint"]["epoch"] == 0
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["trainer"]["accelerator"] == "cpu" and "debug" not in result


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_the_gpu_preset_stops_at_once_where_there_is_no_gpu(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path / "data", tmp_path / "out", *TINY, "trainer=gpu")
    with pytest.raises(ShiftlabError, match="torch sees no GPU here"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_gpu_preset_trains_on_the_gpu(tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(tiny / "data")
    cfg = compose_train(
        tmp_path / "data", tmp_path / "out", *TINY, "trainer=gpu", "trainer.max_epochs=1"
    )
    with contextlib.redirect_stdout(io.StringIO()):
        result = run(cfg, tmp_path / "run")
    attempts = json.loads((tmp_path / "run" / "attempts.json").read_text())
    assert result["checkpoint"]["epoch"] == 0 and len(attempts) == 1
