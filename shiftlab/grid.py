"""Grids of runs: which a multirun starts (the resumable sweeper), and the grid command line.

    python -m shiftlab.grid status experiment=paper_grid     # done / running / incomplete / missing
    python -m shiftlab.grid dry-run experiment=paper_grid    # the runs a multirun would start
    python -m shiftlab.grid sbatch experiment=paper_grid launcher=slurm   # a SLURM array script

A grid is a Hydra multirun (``python -m shiftlab.train experiment=paper_grid``). Its run
directories are named by the settings hash, so a relaunch finds the runs of earlier launches:
the resumable sweeper (a Hydra plugin: hydra_plugins/shiftlab_plugins/resumable_sweeper.py)
expands the grid as Hydra's basic sweeper does, leaves out runs that are done or held by a live
process, and hands the rest to the launcher; an incomplete run resumes from its last checkpoint
(``shiftlab.train``). Its planning is here (``launch_plan``); the same planning, without
launching, is what ``status`` and ``dry-run`` print. Each job's run directory comes from
``shiftlab.planning``, which composes one configuration per combination of config groups rather
than one per job. Run states and the lock of a run in flight
are ``shiftlab.runs.states``; one GPU per worker is ``shiftlab.runs.gpu_slots``; the SLURM
launcher and script are ``shiftlab.runs.slurm_launcher``, checked against the cluster by
``shiftlab.runs.slurm``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import logging
import shlex
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from shiftlab import planning
from shiftlab.config import CONF_DIR
from shiftlab.errors import ShiftlabError, exit_on_user_error
from shiftlab.extras import require_launcher
from shiftlab.runs.gpu_slots import NO_GPU
from shiftlab.runs.record import check_writable
from shiftlab.runs.slurm import answers, check_launcher
from shiftlab.runs.states import (
    STATES,
    describe,
    failures,
    lock_holder,
    run_state,
    slurm_job,
)

log = logging.getLogger(__name__)


# --- planning: which runs a multirun would start ---------------------------------------------


@dataclass(frozen=True)
class Job:
    overrides: tuple[str, ...]
    run_dir: Path
    state: str
    # The run's settings as its hash reads them (shiftlab.identity.settings: paths masked).
    settings: dict[str, Any] = field(compare=False, repr=False)
    compose: Callable[[], DictConfig] = field(compare=False, repr=False)

    @functools.cached_property
    def config(self) -> DictConfig:
        """The job's whole configuration, composed by Hydra as the launcher will compose it:
        0.1 s, which planning does not spend."""
        return self.compose()

    def describe(self) -> str:
        shown = [o for o in self.overrides if not o.startswith(("paths.", "hydra.", "experiment="))]
        return " ".join(shown)


def plan(loader: ConfigLoader, master: DictConfig, jobs: Sequence[Sequence[str]]) -> list[Job]:
    """Each job's run directory (as the launcher will compose it) and its state.

    A progress bar on the terminal (stderr) when planning takes more than a second."""
    bar = tqdm(jobs, "planning", unit=" runs", file=sys.stderr, delay=1, leave=False, disable=None)
    found = planning.plan(loader, master, bar)
    bar.close()
    return [
        Job(tuple(overrides), job.run_dir, run_state(job.run_dir), job.settings, job.compose)
        for overrides, job in zip(jobs, found, strict=True)
    ]


def _paths_overrides(job: Job) -> tuple[str, ...]:
    return tuple(o for o in job.overrides if o.lstrip("+~").startswith("paths"))


def prepare_data(jobs: Sequence[Job]) -> None:
    """Make sure every dataset of these jobs has its manifest, once, before any job starts.

    Synthetic sets are generated here rather than by several jobs at once in parallel workers
    or array tasks; a missing real dataset is one clear error instead of one failed job each.
    """
    from shiftlab.data.prepare import ensure_manifest

    seen: set[tuple[Any, ...]] = set()
    for job in jobs:
        # Jobs with the same manifest folder in their settings (paths masked) and the same paths
        # overrides share it: a run's paths come from the paths group, its overrides and the
        # environment. A paths override that interpolates may differ by job.
        paths = _paths_overrides(job)
        where = (str((job.settings.get("dataset") or {}).get("manifest_dir")), paths)
        if any("$" in o for o in paths):
            where = (where, job.overrides)
        if where not in seen:
            seen.add(where)
            ensure_manifest(job.config)


# Shown in the counts only when some run is in that state (SLURM's queue).
WHEN_PRESENT = ("requeued", "queued")


def counts(jobs: Sequence[Job]) -> str:
    found = Counter(job.state for job in jobs)
    shown = [state for state in STATES if found[state] or state not in WHEN_PRESENT]
    return ", ".join(f"{found[state]} {state}" for state in shown)


def waiting(job: Job) -> str:
    """Why a requeued or queued run is not started again: its SLURM job waits in the queue."""
    again = ", to resume from its last checkpoint" if job.state == "requeued" else ""
    return f"SLURM job {slurm_job(job.run_dir)} waits in the queue{again}"


def to_start(jobs: Sequence[Job]) -> list[Job]:
    return [job for job in jobs if job.state in ("incomplete", "missing")]


class GridError(CompactHydraException):
    """A ShiftlabError met by a multirun: Hydra prints its message alone and exits with 1."""


@contextlib.contextmanager
def grid_errors() -> Iterator[None]:
    """Inside a multirun, a ShiftlabError (a mistake the user can fix) as a GridError."""
    try:
        yield
    except ShiftlabError as error:
        raise GridError(f"error: {error}") from None


def sweep_jobs(overrides: Sequence[Override]) -> list[list[str]]:
    """Every job of a sweep: the cartesian product of the overrides' values (``a=1,2 b=x,y``
    gives four jobs), as Hydra's basic sweeper makes it, in its order.

    A key given again keeps its first place and takes the last value (the command line's
    ``seed=3`` replaces a preset's ``seed: range(0,10)``).
    """
    choices: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise GridError(
                f"error: {key}: a grid's values are a list (a,b,c) or range(start,stop[,step]); "
                "interval(...) is for sweepers that search"
            )
    return [list(job) for job in itertools.product(*choices.values())]


def launch_plan(
    loader: ConfigLoader, master: DictConfig, overrides: Sequence[Override]
) -> list[Job]:
    """The jobs a multirun of ``overrides`` starts: the grid's runs that are missing or incomplete.

    What it finds is logged (counts, runs held elsewhere or waiting in SLURM's queue); before
    anything starts, the output folder, the launcher's sizes and every dataset of the jobs are
    checked (and synthetic sets generated). Mistakes are a GridError.
    """
    with grid_errors():
        check_writable(master.hydra.sweep.dir)
    jobs = sweep_jobs(overrides)
    log.info(f"planning {len(jobs)} runs")
    planned = plan(loader, master, jobs)
    starting = to_start(planned)
    log.info(f"{len(planned)} runs: {counts(planned)}; starting {len(starting)}")
    for job in planned:
        if job.state == "running":
            holder = lock_holder(job.run_dir)
            where = describe(holder) if holder else f"SLURM job {slurm_job(job.run_dir)}"
            log.info(f"\trunning elsewhere ({where}): {job.describe()}")
        elif job.state in WHEN_PRESENT:
            log.info(f"\t{job.state} ({waiting(job)}): {job.describe()}")
    if not starting:
        return []
    launcher = master.get("launcher", {})
    with grid_errors():
        if launcher.get("name") == "local_gpus" and int(launcher.gpus) < 1:
            raise ShiftlabError(NO_GPU)
        if launcher.get("name") == "slurm":
            # Sizes no node can hold: sbatch refuses them, or the tasks pend for good.
            check_launcher(OmegaConf.to_container(master.hydra.launcher, resolve=True))
        prepare_data(starting)
    return starting


def check_failures(started: Sequence[Path], since: float) -> None:
    """The runs of a launch that failed since ``since``, if any, as a GridError: one line each
    (from their failure.json), and exit status 1. A failed run does not stop the others."""
    failed = failures(started, since)
    if failed:
        lines = [f"  {_relative(run_dir)}: {reason}" for run_dir, reason in failed]
        raise GridError(
            f"error: {len(failed)} of {len(started)} runs failed (failure.json in each; a "
            "relaunch tries them again):\n" + "\n".join(lines)
        )


# --- the command line -------------------------------------------------------------------------


@contextlib.contextmanager
def config_loader() -> Iterator[ConfigLoader]:
    from hydra import initialize_config_dir

    from shiftlab.config import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), job_name="train", version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


def expand(loader: ConfigLoader, overrides: Sequence[str]) -> tuple[DictConfig, list[list[str]]]:
    """The master config and every job's overrides, exactly as ``-m`` would sweep them."""
    master = loader.load_configuration(
        config_name="train", overrides=list(overrides), run_mode=RunMode.MULTIRUN
    )
    params = master.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    # Not resolved: an override's value may be an interpolation, which each job resolves.
    arguments += OmegaConf.to_container(master.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    return master, sweep_jobs(parsed)


def grid(overrides: Sequence[str]) -> tuple[DictConfig, list[Job]]:
    """The grid's master config and its jobs, planned; says on stderr what it plans."""
    with config_loader() as loader:
        master, jobs = expand(loader, overrides)
        print(f"planning {_title(master, overrides)}: {len(jobs)} runs", file=sys.stderr)
        return master, plan(loader, master, jobs)


def grid_name(master: DictConfig) -> str:
    """The grid preset's name (``experiment=``), or ``grid``."""
    return str(master.hydra.runtime.choices.get("experiment") or "grid")


def _title(master: DictConfig, overrides: Sequence[str]) -> str:
    """The grid's name and the other overrides it was given, e.g. ``noise (dataset=ct_head)``:
    a summary line says which part of the grid it counts."""
    others = [o for o in overrides if not o.lstrip("+~").startswith("experiment=")]
    return grid_name(master) + (f" ({' '.join(others)})" if others else "")


def _relative(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def status(overrides: Sequence[str], show_all: bool = False) -> list[Job]:
    master, jobs = grid(overrides)
    failed = dict(failures([job.run_dir for job in jobs if job.state == "incomplete"]))
    for job in jobs:
        if show_all or job.state != "done":
            why = f"  (failed: {failed[job.run_dir]})" if job.run_dir in failed else ""
            why = f"  ({waiting(job)})" if job.state in WHEN_PRESENT else why
            print(f"{job.state:<11} {job.describe()}  {_relative(job.run_dir)}{why}")
    print(f"{_title(master, overrides)}: {len(jobs)} runs: {counts(jobs)}")
    return jobs


def dry_run(overrides: Sequence[str]) -> list[Job]:
    master, jobs = grid(overrides)
    starting = to_start(jobs)
    for job in starting:
        print(f"{job.state:<11} {job.describe()}  {_relative(job.run_dir)}")
    print(f"{_title(master, overrides)}: {len(starting)} jobs would start ({counts(jobs)})")
    return starting


def write_sbatch(overrides: Sequence[str], output: str | None = None) -> Path:
    """Write the sbatch script of the grid's runs that are not done
    (``shiftlab.runs.slurm_launcher``).

    As a launch would: every dataset is prepared first, and the task sizes are checked against
    the partition when this machine can ask SLURM (sinfo). Returns the script's path.
    """
    master, jobs = grid(overrides)
    if master.get("launcher", {}).get("name") != "slurm":
        raise ShiftlabError("the sbatch script is for launcher=slurm; add it to the overrides.")
    require_launcher("slurm")
    from shiftlab.runs.slurm_launcher import sbatch_script

    starting = to_start(jobs)
    if not starting:
        raise ShiftlabError(f"nothing to submit: {counts(jobs)}")
    launcher = OmegaConf.to_container(master.hydra.launcher, resolve=True)
    if answers():
        check_launcher(launcher)
    else:
        print("sinfo does not answer here: task sizes not checked against a partition")
    _check_task_run_dir(starting[0])
    prepare_data(starting)
    sweep_dir = Path(str(master.hydra.sweep.dir))
    log_dir = sweep_dir / ".slurm"
    name = grid_name(master)
    script = sbatch_script(
        launcher, [(job.overrides, job.run_dir) for job in starting], log_dir, name
    )
    path = Path(output) if output else sweep_dir / f"{name}.sbatch"
    log_dir.mkdir(parents=True, exist_ok=True)  # SLURM does not create the log's folder
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    print(f"{_title(master, overrides)}: {len(starting)} runs ({counts(jobs)}) in {path}")
    print(f"submit with: sbatch {shlex.quote(str(path))}")
    return path


def _check_task_run_dir(job: Job) -> None:
    """An array task, started as one run, must compose the run directory the grid planned."""
    from shiftlab.runs.slurm_launcher import task_arguments

    with config_loader() as loader:
        single = loader.load_configuration(
            config_name="train",
            overrides=task_arguments(job.overrides),
            run_mode=RunMode.RUN,
        )
        if Path(str(single.hydra.run.dir)) != job.run_dir:
            raise ShiftlabError(
                f"a task of the script would train in {single.hydra.run.dir}, not in the grid's "
                f"{job.run_dir}: were hydra.sweep.dir or hydra.sweep.subdir overridden? Set "
                "paths.output_dir instead."
            )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("status", "dry-run", "sbatch"))
    parser.add_argument("--all", action="store_true", help="status: list finished runs too")
    parser.add_argument(
        "-o", "--output", help="sbatch: the script's file (default: <sweep dir>/<grid>.sbatch)"
    )
    parser.add_argument("overrides", nargs="*", help="as for a multirun, e.g. experiment=noise")
    args = parser.parse_intermixed_args(argv)
    with exit_on_user_error():
        if args.command == "status":
            status(args.overrides, show_all=args.all)
        elif args.command == "dry-run":
            dry_run(args.overrides)
        else:
            write_sbatch(args.overrides, args.output)


if __name__ == "__main__":
    main()
