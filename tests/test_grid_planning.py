"""Planning a grid fast (shiftlab/planning.py) names every job's run directory, and its settings
hash, exactly as Hydra's composition of the whole job does, for every experiment preset and for
overrides that could trip it; and it composes one configuration per combination of config
groups, not one per job."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from shiftlab import grid, planning
from shiftlab.config import CONF_DIR
from shiftlab.identity import settings, settings_hash
from shiftlab.runs.states import job_run_dir

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
SMOKE = [preset for preset in PRESETS if preset.startswith("smoke_")]


def places(tmp_path: Path) -> list[str]:
    return [f"paths.data_dir='{tmp_path / 'data'}'", f"paths.output_dir='{tmp_path / 'out'}'"]


def assert_planned_as_composed(*overrides: str, jobs: list[list[str]] | None = None) -> int:
    """Every job of the grid (or ``jobs`` of its master config): the fast planner's run
    directory and settings are those of the job's whole composition. Returns how many
    configurations the planner composed."""
    with grid.config_loader() as loader:
        master, grid_jobs = grid.expand(loader, overrides)
        jobs = grid_jobs if jobs is None else jobs
        load, composed = loader.load_sweep_config, []

        def counted(config: DictConfig, job: list[str]) -> DictConfig:
            composed.append(job)
            return load(config, job)

        loader.load_sweep_config = counted  # type: ignore[method-assign]
        planned = planning.plan(loader, master, jobs)
        for job, fast in zip(jobs, planned, strict=True):
            whole = load(master, job)
            assert (fast.run_dir, fast.settings) == (job_run_dir(whole), settings(whole)), job
    return len(composed)


@pytest.mark.parametrize("preset", SMOKE)
def test_smoke_presets_plan_as_composed(preset: str, tmp_path: Path) -> None:
    """smoke_paper_grid whole; of the others, both seeds and every shift value or method of one
    scenario (test_every_preset_plans_as_composed, marked slow, takes every job)."""
    narrowed = [] if preset == "smoke_paper_grid" else ["dataset=synthetic_ct", "direction=reverse"]
    assert_planned_as_composed(f"experiment={preset}", *narrowed, *places(tmp_path))


# Overrides the fast path must get right or leave to the whole composition, on the 2 seeds of
# one scenario of smoke_paper_grid, and how many configurations Hydra composes for them: one per
# combination of the overrides that are not plain values (groups, Hydra's, +, ++, ~, values with
# a $), or one per job where a plain value is also forced in.
TRICKY = {
    "a new key": (["+new_key=1,2"], 2),
    "a new key in a group's node": (["+trainer.detect_anomaly=true"], 1),
    "a key forced in": (["++trainer.max_epochs=3,4"], 2),
    "a deleted key": (["~evaluation"], 1),
    "a value set twice, plain and forced": (["trainer.max_epochs=3", "++trainer.max_epochs=4"], 2),
    "values that interpolations read": (["split_seed=0,1", "dataset.name=renamed,other"], 1),
    "an interpolation replaced by a value": (["source=siemens,ge", "target=ge"], 1),
    "a value read by a resolver of the root": (["dataset=mri_breast", "twin=true,false"], 1),
    "a value as an interpolation": (["seed=${split_seed}"], 1),
    "a value as a quoted string": (["dataset.name='a b','5$ or more'"], 2),
    "numbers that compare equal": (["shift=noise", "shift.alpha=1,1.0,true"], 1),
    "a value made null": (["model.net.dropout=null,0.5"], 1),
    "a group and values in it": (["shift=injection", "shift.fraction=0.1,0.3"], 1),
    "seed ranges": (["seed=range(0,5)"], 1),
    "groups swept": (["model=smallcnn,mrnet2d", "direction=forward,reverse"], 4),
    "display options": (["trainer.enable_progress_bar=true,false"], 1),
    "the output folder": (["paths.output_dir=/tmp/a,/tmp/b"], 1),
    "Hydra's folders": (
        ["hydra.sweep.dir=/tmp/sweep", "hydra.sweep.subdir=${seed}-${run_hash:}"],
        1,
    ),
    "Hydra's record of the overrides in the folder": (
        ["hydra.sweep.subdir=${hydra.job.override_dirname}-${run_hash:}", "dataset.name=x,y"],
        1 + 4,
    ),
    "a new key reading swept values": (["+tag=run-${seed}-${.source}", "seed=0,1,2"], 1),
}
ONE_SCENARIO = ["experiment=smoke_paper_grid", "dataset=synthetic_mri", "direction=forward"]


@pytest.mark.parametrize(("overrides", "compositions"), TRICKY.values(), ids=TRICKY.keys())
def test_tricky_overrides_plan_as_composed(
    overrides: list[str], compositions: int, tmp_path: Path
) -> None:
    assert assert_planned_as_composed(*ONE_SCENARIO, *overrides, *places(tmp_path)) == compositions


def test_jobs_that_set_different_values_plan_as_composed(tmp_path: Path) -> None:
    """Jobs of one combination that set different keys, one after another: each is planned with
    the composed values of the keys it leaves alone."""
    jobs = [
        ["seed=3", "split_seed=1"],
        ["split_seed=2"],
        [],
        ["seed=3", "source=siemens"],
        ["target=siemens", "seed=1", "seed=2"],
        ["seed=3"],
    ]
    experiment = ["experiment=smoke_paper_grid", "dataset=synthetic_mri", "model=smallcnn"]
    jobs = [[*experiment, *job] for job in jobs]
    assert assert_planned_as_composed(*experiment, *places(tmp_path), jobs=jobs) == 1


def test_planning_composes_once_per_combination_of_groups(tmp_path: Path) -> None:
    """smoke_noise: 84 jobs over 3 datasets x 2 directions; seeds and noise strengths are plain
    values applied to the 6 compositions."""
    composed = []
    with grid.config_loader() as loader:
        master, jobs = grid.expand(loader, ["experiment=smoke_noise", *places(tmp_path)])
        load = loader.load_sweep_config

        def counted(config: object, overrides: list[str]) -> object:
            composed.append(overrides)
            return load(config, overrides)

        loader.load_sweep_config = counted  # type: ignore[method-assign]
        planned = grid.plan(loader, master, jobs)
    assert len(planned) == 84 and len({job.run_dir for job in planned}) == 84
    assert len(composed) == 6


def test_run_hash_is_computed_again_after_planning(tmp_path: Path) -> None:
    """The planner answers ${run_hash:} of its own configurations only while it plans."""
    _, [job] = grid.grid(
        [
            "experiment=smoke_paper_grid",
            "seed=0",
            "dataset=synthetic_ct",
            "direction=forward",
            *places(tmp_path),
        ]
    )
    config = job.config
    assert job_run_dir(config) == job.run_dir
    assert OmegaConf.select(config, "hydra.sweep.subdir").endswith(settings_hash(config))


def test_grid_says_what_it_plans_before_it_plans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid.status(["experiment=smoke_noise", *places(tmp_path)])
    err = capsys.readouterr().err
    assert err.startswith("planning smoke_noise (paths.data_dir=")
    assert err.splitlines()[0].endswith(": 84 runs")


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_plans_as_composed(preset: str, tmp_path: Path) -> None:
    """Every job of every experiment preset (about 3,000 compositions: minutes)."""
    assert_planned_as_composed(f"experiment={preset}", *places(tmp_path))
