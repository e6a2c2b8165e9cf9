"""The study as one command: presets expand to their documented grids, a multirun of the smoke
grid runs one job per (simulated) GPU, a relaunch starts nothing, an interrupted run resumes
from its last checkpoint, runs in flight are locked, and the SLURM array renders."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.compose import REPO, compose_train
from omegaconf import OmegaConf

from shiftlab import grid
from shiftlab.config import CONF_DIR
from shiftlab.errors import ShiftlabError
from shiftlab.identity import settings_hash
from shiftlab.runs import states as runs
from shiftlab.runs.slurm import Node, check_sizes, gpu_count
from shiftlab.runs.slurm_launcher import sbatch_script
from shiftlab.train import run, wandb_summary

PAPER_DATASETS = [
    "mri_breast",
    "mri_prostate",
    "mri_brain",
    "ct_lung_nodule",
    "ct_head",
    "xray_chest",
    "xray_mammo",
]
# Documented in each preset: datasets x directions x seeds (x fractions or strengths).
JOB_COUNTS = {
    "paper_grid": 7 * 2 * 10,
    "injection": 7 * 2 * 10 * 6,
    "noise": 7 * 2 * 10 * 7,
    "smoke_paper_grid": 3 * 2 * 2,
    "smoke_injection": 3 * 2 * 2 * 6,
    "smoke_noise": 3 * 2 * 2 * 7,
    # The five methods of conf/mitigation/ (none, augment, histogram, adabn, mixstyle).
    "mitigations": 7 * 2 * 10 * 5,
    "smoke_mitigations": 3 * 2 * 2 * 5,
    # The synthetic sets at their severity and at 0 (tests/report/test_calibration.py checks each
    # run).
    "calibration": 3 * 2 * 2 * 5,
    # The calibration's sets at their severity x the five methods, seeds 0-2.
    "cpu_mitigations": 3 * 2 * 3 * 5,
}


def places(tmp_path: Path) -> list[str]:
    return [f"paths.data_dir='{tmp_path / 'data'}'", f"paths.output_dir='{tmp_path / 'out'}'"]


def expand(*overrides: str) -> tuple[object, list[list[str]]]:
    with grid.config_loader() as loader:
        return grid.expand(loader, overrides)


def test_every_preset_is_checked() -> None:
    presets = {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")}
    assert presets == set(JOB_COUNTS)


@pytest.mark.parametrize("preset", sorted(JOB_COUNTS))
def test_presets_expand_to_their_documented_job_counts(preset: str, tmp_path: Path) -> None:
    master, jobs = expand(f"experiment={preset}", *places(tmp_path))
    assert len(jobs) == JOB_COUNTS[preset]
    assert len({tuple(job) for job in jobs}) == len(jobs)
    assert master.hydra.mode.name == "MULTIRUN", "the preset alone launches a multirun"
    # The study's protocol, with the documented choices for what it leaves open.
    if not preset.startswith("smoke") and preset not in ("calibration", "cpu_mitigations"):
        assert (master.trainer.max_epochs, master.data.batch_size) == (60, 50)
        assert (master.optim._target_, master.optim.lr) == ("torch.optim.Adam", 1e-4)
        assert master.scheduler._target_ is None, "a constant learning rate"


def test_overrides_reach_the_jobs_as_given(tmp_path: Path) -> None:
    """An interpolation on the command line reaches each job as written, as the sweeper hands it
    to the launcher: each job resolves it, not the grid's own config (whose dataset is the
    default)."""
    _, jobs = grid.grid(
        ["experiment=smoke_paper_grid", "seed=0", "+tag=${dataset.name}", *places(tmp_path)]
    )
    assert [job.config.tag for job in jobs] == [job.config.dataset.name for job in jobs]
    assert len({job.config.tag for job in jobs}) == 3


def sweep(preset: str) -> dict[str, str]:
    return dict(expand(f"experiment={preset}")[0].hydra.sweeper.params)


@pytest.mark.parametrize("ablation", ["paper_grid", "injection", "noise", "mitigations"])
def test_smoke_presets_have_the_shape_of_the_real_ones(ablation: str) -> None:
    real, smoke = sweep(ablation), sweep(f"smoke_{ablation}")
    assert real["dataset"].split(",") == PAPER_DATASETS
    assert smoke["dataset"].split(",") == ["synthetic_mri", "synthetic_ct", "synthetic_xray"]
    assert real["direction"] == smoke["direction"] == "forward,reverse"
    assert (real["seed"], smoke["seed"]) == ("range(0,10)", "range(0,2)")
    shift_keys = {key for key in real if key.startswith(("shift.", "mitigation"))}
    assert shift_keys == {key for key in smoke if key.startswith(("shift.", "mitigation"))}
    assert all(real[key] == smoke[key] for key in shift_keys)


def test_paper_grid_jobs_compose_without_data(tmp_path: Path) -> None:
    """Every dataset and direction of the study composes, and no data is needed to plan it."""
    _, jobs = grid.grid(["experiment=paper_grid", "seed=0", *places(tmp_path)])
    assert len(jobs) == 14 and {job.state for job in jobs} == {"missing"}
    assert len({job.run_dir for job in jobs}) == 14
    assert not (tmp_path / "data").exists()
    directions: dict[str, list[tuple[str, str]]] = {}
    for job in jobs:
        cfg = job.config
        assert job.run_dir.is_relative_to(tmp_path / "out" / "runs" / cfg.dataset.name)
        assert job.run_dir.name.endswith(settings_hash(cfg))
        assert (cfg.trainer.max_epochs, cfg.data.batch_size, cfg.optim.lr) == (60, 50, 1e-4)
        directions.setdefault(cfg.dataset.name, []).append((cfg.source, cfg.target))
    assert sorted(directions) == sorted(PAPER_DATASETS)
    for dataset, (forward, reverse) in directions.items():
        assert forward != reverse and forward == reverse[::-1], dataset


@pytest.mark.slow
def test_paper_grid_dry_run_lists_140_jobs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shiftlab.grid", "dry-run", "experiment=paper_grid"],
        cwd=tmp_path,
        env={**os.environ, "SHIFTLAB_OUTPUT_DIR": str(tmp_path / "out"), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert (
        lines[-1]
        == "paper_grid: 140 jobs would start (0 done, 0 running, 0 incomplete, 140 missing)"
    )
    assert len({line.split()[-1] for line in lines[:-1]}) == 140


@pytest.mark.parametrize(
    ("preset", "key", "values"),
    [
        ("injection", "fraction", [0, 0.1, 0.2, 0.3, 0.4, 0.5]),
        ("noise", "alpha", [0, 1, 2, 5, 10, 20, 50]),
    ],
)
def test_ablation_jobs_differ_only_in_the_shift(
    preset: str, key: str, values: list[float], tmp_path: Path
) -> None:
    one_scenario = ["dataset=mri_breast", "direction=forward", "seed=0", *places(tmp_path)]
    _, jobs = grid.grid([f"experiment={preset}", *one_scenario])
    assert [job.config.shift[key] for job in jobs] == values
    assert {job.config.shift.name for job in jobs} == {preset}
    assert len({job.run_dir for job in jobs}) == len(values)
    [baseline] = grid.grid(["experiment=paper_grid", *one_scenario])[1]
    assert baseline.config.shift.name == "none"
    assert baseline.run_dir not in {job.run_dir for job in jobs}


@pytest.mark.parametrize("preset", ["mitigations", "smoke_mitigations"])
def test_mitigation_grids_reuse_the_study_runs_of_none(preset: str, tmp_path: Path) -> None:
    """A method per job, and the `none` job is the very run of the grid without mitigations (same
    directory): a relaunch after paper_grid trains only the four methods."""
    one_scenario = ["dataset=synthetic_ct", "direction=reverse", "seed=1", *places(tmp_path)]
    _, jobs = grid.grid([f"experiment={preset}", *one_scenario])
    methods = [job.config.mitigation.name for job in jobs]
    assert methods == ["none", "augment", "histogram", "adabn", "mixstyle"]
    assert len({job.run_dir for job in jobs}) == 5
    plain = preset.replace("mitigations", "paper_grid")
    [study] = grid.grid([f"experiment={plain}", *one_scenario])[1]
    assert jobs[0].run_dir == study.run_dir


def test_the_cpu_mitigation_grid_reuses_the_calibration_runs(tmp_path: Path) -> None:
    """experiment=cpu_mitigations' `none` jobs are the calibration grid's runs at the preset
    severity (same directories): one grid's runs are found by the other and not trained again."""
    one_set = ["calibration/set=synthetic_xray", "seed=0", *places(tmp_path)]
    _, jobs = grid.grid(["experiment=cpu_mitigations", *one_set])
    assert [job.config.mitigation.name for job in jobs] == [
        method for _ in ("forward", "reverse") for method in grid_methods()
    ]
    _, calibration = grid.grid(["experiment=calibration", *one_set])
    preset = [job.run_dir for job in calibration if job.config.dataset.synthetic.severity > 0]
    assert [job.run_dir for job in jobs if job.config.mitigation.name == "none"] == preset
    assert {job.config.trainer.max_epochs for job in jobs} == {
        job.config.trainer.max_epochs for job in calibration
    }


def grid_methods() -> list[str]:
    return sweep("mitigations")["mitigation"].split(",")


def test_display_options_and_launcher_do_not_change_the_run(tmp_path: Path) -> None:
    base = compose_train(tmp_path / "data", tmp_path / "out")
    same = compose_train(
        tmp_path / "data",
        tmp_path / "out",
        "trainer.enable_progress_bar=true",
        "trainer.log_every_n_steps=1",
        "trainer.enable_model_summary=true",
        "launcher=local_gpus",
        "launcher.gpus=3",
    )
    assert settings_hash(same) == settings_hash(base)
    for change in ("trainer.max_epochs=3", "shift=noise", "shift=injection", "direction=reverse"):
        assert settings_hash(compose_train(tmp_path, tmp_path, change)) != settings_hash(base)
    # direction=reverse is the very run that source=/target= name.
    reverse = compose_train(tmp_path / "data", tmp_path / "out", "direction=reverse")
    named = compose_train(tmp_path / "data", tmp_path / "out", "source=siemens", "target=ge")
    assert settings_hash(reverse) == settings_hash(named)


def test_wandb_groups_by_scenario_and_tags_the_shift(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path, tmp_path, "logger=wandb", "shift=injection", "shift.fraction=0.3", "seed=4"
    )
    logger = OmegaConf.to_container(cfg.logger.wandb, resolve=True)  # beside logger.csv
    assert logger["group"] == "synthetic_mri/ge->siemens"
    assert set(logger["tags"]) >= {
        "dataset:synthetic_mri",
        "modality:MR",
        "direction:ge->siemens",
        "shift:injection-replace-0.3",
        "seed:4",
    }
    result = {
        "source": "ge",
        "target": "siemens",
        "metrics": {"test/ge/auroc": 0.9, "test/siemens/auroc": 0.7, "test/delta_auroc": -0.2},
        "shift": {"name": "injection", "fraction": 0.3},
    }
    summary = wandb_summary(result)
    assert summary["test/in_domain_auroc"] == 0.9 and summary["test/cross_domain_auroc"] == 0.7
    assert summary["test/delta_auroc"] == -0.2 and summary["shift/fraction"] == 0.3


# --- locks of runs in flight -------------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(run_dir: Path, **holder: object) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / runs.LOCK).write_text(json.dumps(holder))
    return run_dir / runs.LOCK


def test_a_run_held_by_a_live_process_is_running_and_not_taken(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = runs.RunLock(run_dir)
    assert first.acquire()
    assert runs.run_state(run_dir) == "running"
    second = runs.RunLock(run_dir)
    assert not second.acquire()
    assert second.holder["pid"] == os.getpid()
    assert "pid" in runs.describe(second.holder)
    first.release()
    assert runs.run_state(run_dir) == "missing"
    assert second.acquire(), "a released lock can be taken"
    second.release()


def test_stale_locks_are_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = os.uname().nodename
    here = write_lock(tmp_path / "dead", pid=dead_pid(), host=host)
    assert runs.lock_holder(here.parent) is None, "a dead process on this host"
    lock = runs.RunLock(here.parent)
    assert lock.acquire() and json.loads(here.read_text())["pid"] == os.getpid()
    lock.release()

    elsewhere = write_lock(tmp_path / "remote", pid=1, host="another-host")
    assert runs.lock_holder(elsewhere.parent) is not None, "fresh heartbeat on another host"
    old = time.time() - runs.STALE_AFTER_S - 60
    os.utime(elsewhere, (old, old))
    assert runs.lock_holder(elsewhere.parent) is None, "no heartbeat for too long"

    requeued = write_lock(tmp_path / "requeued", pid=1, host="another-host", slurm_job="77_3")
    assert runs.lock_holder(requeued.parent) is not None
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert runs.lock_holder(requeued.parent) is None, "our own task before its requeue"


def test_the_lock_has_a_heartbeat(tmp_path: Path) -> None:
    lock = runs.RunLock(tmp_path, heartbeat_s=0.05)
    assert lock.acquire()
    old = time.time() - 3600
    os.utime(lock.path, (old, old))
    time.sleep(0.5)
    assert lock.path.stat().st_mtime > old + 3000
    lock.release()
    assert not lock.path.exists()


def test_a_locked_run_is_skipped_by_train_and_by_the_sweep(tmp_path: Path) -> None:
    overrides = [
        "experiment=smoke_paper_grid",
        "dataset=synthetic_mri",
        "seed=0",
        *places(tmp_path),
    ]
    _, jobs = grid.grid(overrides)
    held = runs.RunLock(jobs[0].run_dir)
    assert held.acquire()
    try:
        _, again = grid.grid(overrides)
        assert [job.state for job in again] == ["running", "missing"]
        assert grid.to_start(again) == [again[1]]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert run(jobs[0].config, jobs[0].run_dir) is None
        assert "running elsewhere" in out.getvalue() and f"pid {os.getpid()}" in out.getvalue()
    finally:
        held.release()


def test_gpu_slots_give_concurrent_processes_distinct_devices(tmp_path: Path) -> None:
    """Simulated on CPU: three worker processes ask for one of two GPUs (visible as 3 and 5)."""
    script = (
        "import sys, time; from shiftlab.runs.gpu_slots import pin_gpu; "
        "print(pin_gpu(2, sys.argv[1], poll_s=0.1), flush=True); time.sleep(600)"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "3,5", "PYTHONPATH": str(REPO)}

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "slots")],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )

    workers = [start()]
    try:
        first = workers[0].stdout.readline().strip()
        workers.append(start())
        second = workers[1].stdout.readline().strip()
        assert {first, second} == {"3", "5"}
        workers.append(start())  # both GPUs are held: it waits
        assert "waiting" in workers[2].stdout.readline()
        workers[0].kill()  # the operating system releases the slot of a killed worker
        workers[0].wait()
        assert workers[2].stdout.readline().strip() == first
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


# --- the smoke grid as a user runs it -----------------------------------------------------------


def launch(tmp_path: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "shiftlab.train", *overrides, *places(tmp_path)],
        cwd=REPO,
        env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


SMOKE_SUBSET = ("experiment=smoke_paper_grid", "dataset=synthetic_mri", "seed=0")


def attempts(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "attempts.json").read_text())


@pytest.mark.slow
def test_smoke_grid_runs_one_job_per_gpu_relaunches_nothing_and_resumes(tmp_path: Path) -> None:
    _, planned = grid.grid([*SMOKE_SUBSET, *places(tmp_path)])
    assert [job.state for job in planned] == ["missing", "missing"]

    # Both directions at once on two simulated GPUs (hydra-joblib-launcher, one worker each).
    first = launch(
        tmp_path,
        *SMOKE_SUBSET,
        "launcher=local_gpus",
        "launcher.gpus=2",
        f"launcher.slot_dir={tmp_path / 'slots'}",
    )
    output = first.stdout + first.stderr
    assert "2 runs: 0 done, 0 running, 0 incomplete, 2 missing; starting 2" in output
    runs = [job.run_dir for job in planned]
    assert all((run_dir / "done").is_file() for run_dir in runs), "the dry run's directories"
    spans = []
    for run_dir in runs:
        [attempt] = attempts(run_dir)
        total = json.loads((run_dir / "metrics.json").read_text())["timings_s"]["total"]
        spans.append((attempt["started_at"], attempt["started_at"] + total, attempt))
    for (start_a, end_a, a), (start_b, end_b, b) in itertools.combinations(spans, 2):
        assert {a["cuda_visible_devices"], b["cuda_visible_devices"]} <= {"0", "1"}
        if start_a < end_b and start_b < end_a:  # ran at the same time: never the same GPU
            assert a["cuda_visible_devices"] != b["cuda_visible_devices"]
            assert a["pid"] != b["pid"]

    # The same command (here with the default launcher) finds both runs done.
    stamps = [(run_dir / "done").stat().st_mtime_ns for run_dir in runs]
    again = launch(tmp_path, *SMOKE_SUBSET)
    assert "2 runs: 2 done, 0 running, 0 incomplete, 0 missing; starting 0" in again.stdout
    assert "run record:" not in again.stdout
    assert [(run_dir / "done").stat().st_mtime_ns for run_dir in runs] == stamps

    # A run killed after its last checkpoint and before its record: incomplete, then resumed.
    killed = runs[0]
    for name in ("done", "metrics.json", "predictions.csv"):
        (killed / name).unlink()
    assert [job.state for job in grid.grid([*SMOKE_SUBSET, *places(tmp_path)])[1]] == [
        "incomplete",
        "done",
    ]
    resumed = launch(tmp_path, *SMOKE_SUBSET)
    assert "1 done, 0 running, 1 incomplete, 0 missing; starting 1" in resumed.stdout
    assert "Restored all states from the checkpoint" in resumed.stdout + resumed.stderr
    assert (killed / "done").is_file()
    last_epoch = 1  # two epochs: 0 and 1
    assert [a["resumed_from_epoch"] for a in attempts(killed)] == [None, last_epoch]
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == last_epoch
    assert (killed / "csv" / "metrics.attempt0.csv").is_file(), "the first curves are kept"


@pytest.mark.slow
def test_a_run_killed_mid_training_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    chosen = [*SMOKE_SUBSET, "direction=forward", "trainer.max_epochs=60"]
    overrides = [*chosen, *places(tmp_path)]
    [job] = grid.grid(overrides)[1]
    last = job.run_dir / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        [sys.executable, "-m", "shiftlab.train", *overrides],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    epoch = -1
    while epoch < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
        with contextlib.suppress(Exception):  # absent, or being replaced
            epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert epoch >= 2, "the run ended before it could be killed"
    assert runs.run_state(job.run_dir) == "incomplete", "a dead process's lock is stale"

    launch(tmp_path, *chosen)
    assert (job.run_dir / "done").is_file()
    resumed_from = attempts(job.run_dir)[-1]["resumed_from_epoch"]
    assert resumed_from is not None and resumed_from >= 2


@pytest.mark.slow
def test_a_grid_that_cannot_start_says_why_before_launching(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shiftlab.train",
            "experiment=paper_grid",
            "dataset=mri_breast",
            *places(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "20 runs: 0 done, 0 running, 0 incomplete, 20 missing" in result.stdout
    assert "error: no data for dataset 'mri_breast'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "out").rglob("config.yaml")), "no run started"


# --- SLURM ----------------------------------------------------------------------------------------


def test_slurm_launcher_is_an_array_with_one_gpu_per_task(tmp_path: Path) -> None:
    overrides = ["experiment=smoke_paper_grid", "launcher=slurm", *places(tmp_path)]
    master, jobs = grid.grid(overrides)
    launcher = OmegaConf.to_container(master.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.shiftlab_plugins.launchers.SlurmLauncher"
    assert launcher["max_num_timeout"] > 0, "a task that reaches its time limit is requeued"
    runs_ = [(job.overrides, job.run_dir) for job in jobs]
    script = sbatch_script(launcher, runs_, tmp_path / "logs", "smoke_paper_grid")
    lines = script.splitlines()
    assert {
        "#SBATCH --array=0-11%12",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --nodes=1",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR2@120",
        "#SBATCH --time=720",
        "#SBATCH --job-name=train",
    } <= set(lines), script
    # Each task is one run, trained in the batch step: no launcher inside, no submitit.
    tasks = [line for line in lines if line.lstrip().split(")")[0].isdigit()]
    assert len(tasks) == 12 and "submitit" not in script
    for task, job in zip(tasks, jobs, strict=True):
        assert " ".join(job.overrides[:3]) in task and str(job.run_dir) in task
        assert "launcher=slurm" not in task and "hydra.mode=RUN launcher=basic" in task


@pytest.mark.slow
def test_the_sbatch_script_runs_as_written(tmp_path: Path) -> None:
    """Its array task 0, run by bash as sbatch would (outside SLURM here), trains its run: the
    script does not depend on files a launcher writes (submitit's _submitted.pkl)."""
    overrides = [
        *SMOKE_SUBSET,
        "direction=forward",
        "launcher=slurm",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        *places(tmp_path),
    ]
    script = grid.write_sbatch(overrides, str(tmp_path / "grid.sbatch"))
    text = script.read_text()
    assert "#SBATCH --gpus-per-node" not in text and "#SBATCH --mem=2G" in text
    assert "#SBATCH --array=0-0%1" in text
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(
        ["bash", str(script)],
        env={**env, "SLURM_ARRAY_TASK_ID": "0", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    [job] = grid.grid([o for o in overrides if not o.startswith("hydra.")])[1]
    assert job.state == "done" and "run record:" in result.stdout


def test_slurm_task_sizes_are_checked_against_the_partition() -> None:
    """Node sizes as sinfo reports them (GRES strings: see shiftlab.runs.slurm.gpu_count)."""
    cpu_node = Node("cpu1", cpus=2, memory_mb=21694, gpus=gpu_count("(null)"))
    defaults = {"cpus_per_task": 10, "tasks_per_node": 1, "mem_gb": 64, "gpus_per_node": 1}
    with pytest.raises(ShiftlabError) as refused:
        check_sizes(defaults, [cpu_node], "debug")
    message = str(refused.value)
    assert "set hydra.launcher.cpus_per_task=2 or less" in message
    assert "set hydra.launcher.mem_gb=21 or less" in message
    assert "has no GPUs: set hydra.launcher.gpus_per_node=null" in message
    small = {"cpus_per_task": 1, "mem_gb": 2, "gpus_per_node": None}
    check_sizes(small, [cpu_node], "debug")

    gpu_node = Node("gpu1", cpus=64, memory_mb=515000, gpus=gpu_count("gpu:a100:4(S:0-1)"))
    check_sizes(defaults, [cpu_node, gpu_node], "mixed")
    with pytest.raises(ShiftlabError, match=r"gpus_per_node=8, but its nodes have at most 4"):
        check_sizes({**defaults, "gpus_per_node": 8}, [gpu_node], "gpu")
    # Each size fits some node, but no node holds them all.
    big_cpu = Node("cpu2", cpus=128, memory_mb=1024 * 1024, gpus=0)
    with pytest.raises(ShiftlabError, match="no node has 100 CPUs, 64 GB and 1 GPUs at once"):
        check_sizes({**defaults, "cpus_per_task": 100}, [gpu_node, big_cpu], "mixed")
