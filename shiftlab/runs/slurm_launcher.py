"""A grid on SLURM: the launcher that submits it as one job array and waits for it
(``launcher=slurm``), and the plain sbatch script of the same array (``grid sbatch``).

The launcher is hydra-submitit-launcher's, with three changes. Each run's SLURM job is written
into its run directory at submission (``shiftlab.runs.states``), so a relaunch sees runs whose tasks
wait in the queue, or wait to start again after a requeue, and does not submit them again.
While the array runs, a task left pending for a reason that waiting will not cure is reported.
And every task is waited for: one that ended without a result (killed for its memory, cancelled,
its node lost) gets a ``failure.json`` naming SLURM's state, so the grid ends with one line per
failed run rather than submitit's ``UncompletedJobError`` traceback for the first of them.

The sbatch script needs no submitit: each array task runs ``python -m shiftlab.train`` with its
run's overrides, and requeues itself on SLURM's warning before the time limit.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import OmegaConf

from shiftlab.errors import ShiftlabError
from shiftlab.runs.slurm import STUCK_REASONS, pending_reasons

# The run record's modules (pandas) are imported where they are used: Hydra imports the plugin
# built on this module (hydra_plugins/shiftlab_plugins/launchers.py) in every application.

log = logging.getLogger(__name__)

LOOK_AT_QUEUE_S = 60.0  # how often the launching process asks why tasks are pending
POLL_S = 2.0
# How a task that ended without a result was ended, by SLURM's state (sacct), and what to do.
ENDINGS = {
    "TIMEOUT": "it reached its time limit: raise hydra.launcher.timeout_min",
    "CANCELLED": "it was cancelled (scancel, or an administrator)",
    "NODE_FAIL": "its node failed",
    "PREEMPTED": "it was preempted and not requeued",
}
OUT_OF_MEMORY = "it used more memory than it asked for: raise hydra.launcher.mem_gb"
# slurmstepd's words in the task's log when it kills a task for its memory: polled limits
# ("Exceeded job memory limit") or cgroup's ("Detected 1 oom_kill event").
MEMORY_KILL = re.compile(r"memory limit|oom[-_ ]kill", re.IGNORECASE)


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """hydra-submitit-launcher's SLURM array launcher (see the module's docstring); Hydra finds
    it as ``hydra_plugins.shiftlab_plugins.launchers.SlurmLauncher``.

    ``run_dirs`` maps a job's overrides to its run directory; the sweeper fills it from its
    planning (composing every job's configuration again would cost 0.1 s per run).
    """

    run_dirs: dict[tuple[str, ...], Path]

    def _run_dir(self, overrides: Sequence[str]) -> Path:
        # Imported here: Hydra imports this module in every application it starts (plugin
        # discovery), and the run states bring pandas with them.
        from shiftlab.runs.states import job_run_dir

        known = getattr(self, "run_dirs", {}).get(tuple(overrides))
        if known is not None:
            return known
        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        return job_run_dir(loader.load_sweep_config(self.config, list(overrides)))

    def _executor(self) -> Any:
        """submitit's executor with hydra.launcher's settings, as hydra-submitit-launcher makes it
        (its keys are submitit's; GPUs of 0 mean none, not ``--gpus-per-node=0``)."""
        import submitit

        params = dict(self.params)
        if not params.get("gpus_per_node"):
            params["gpus_per_node"] = None
        executor = submitit.AutoExecutor(
            cluster="slurm",
            folder=params.pop("submitit_folder"),
            slurm_max_num_timeout=params.pop("max_num_timeout"),
        )
        shared = set(OmegaConf.structured(submitit_launcher.BaseQueueConf).keys())
        executor.update_parameters(
            **{key if key in shared else f"slurm_{key}": value for key, value in params.items()}
        )
        return executor

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.config is not None
        since = time.time()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        run_dirs = [self._run_dir(overrides) for overrides in job_overrides]
        state = Singleton.get_state()
        arguments = []  # hydra-submitit-launcher's, per job
        for index, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{index} : {' '.join(filter_overrides(overrides))}")
            job_id = f"job_id_for_{index}"
            arguments.append((list(overrides), "hydra.sweep.dir", index, job_id, state))
        # The task runs hydra-submitit-launcher's own class: what this subclass changes is the
        # submitting and the waiting, done here.
        task = submitit_launcher.SlurmLauncher.__new__(submitit_launcher.SlurmLauncher)
        task.__dict__.update({k: v for k, v in self.__dict__.items() if k != "run_dirs"})
        try:
            jobs = self._executor().map_array(task, *zip(*arguments, strict=True))
        except Exception as error:  # sbatch refused the array: its message, on one line
            message = " ".join(str(error).split())
            raise ShiftlabError(f"launcher=slurm: sbatch refused the array: {message}") from None
        from shiftlab.runs.states import record_slurm_job

        for run_dir, job in zip(run_dirs, jobs, strict=True):
            record_slurm_job(run_dir, job.job_id)
        array = jobs[0].job_id.split("_")[0]
        log.info(f"submitted SLURM job array {array} ({len(jobs)} tasks): squeue -j {array}")
        self._wait(jobs, array)
        return [
            self._result(job, overrides, run_dir, since)
            for job, overrides, run_dir in zip(jobs, job_overrides, run_dirs, strict=True)
        ]

    def _wait(self, jobs: Sequence[Any], array: str) -> None:
        """Until every task has ended; a task pending for a reason waiting will not cure (its
        partition cannot hold it, its account or QOS refuses it) is reported once."""
        reported: set[str] = set()
        looked = time.time() - LOOK_AT_QUEUE_S + 10  # first look 10 s after submitting
        while not all(job.done() for job in jobs):
            if time.time() - looked >= LOOK_AT_QUEUE_S:
                looked = time.time()
                for task, reason in pending_reasons(array).items():
                    if reason.startswith(STUCK_REASONS) and reason not in reported:
                        reported.add(reason)
                        log.warning(
                            f"SLURM task {task} is pending with reason {reason}: it will not "
                            f"start as submitted (scontrol show job {task} says why). Cancel "
                            f"the array with scancel {array}, then change hydra.launcher "
                            "(partition, account, qos, cpus_per_task, mem_gb, gpus_per_node)."
                        )
            time.sleep(POLL_S)

    def _result(self, job: Any, overrides: Sequence[str], run_dir: Path, since: float) -> JobReturn:
        """The task's JobReturn. A run that failed is reported at the end of the grid with the
        others, one line each, from its failure.json (shiftlab.grid), which is written here when
        the task could not write it: killed, or failed outside the run."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        from shiftlab.runs.record import FAILURE, RunRecord

        failure = run_dir / FAILURE
        try:
            result = job.results()[0]
        except (UncompletedJobError, FailedJobError) as error:
            recorded = failure.exists() and failure.stat().st_mtime >= since
            if not recorded:
                RunRecord(run_dir).write_failure(_lost_task(job, error))
            return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
        if result.status == JobStatus.FAILED:  # the run raised: Hydra kept the exception
            if not (failure.exists() and failure.stat().st_mtime >= since):
                from shiftlab.runs.failure import failure_record

                RunRecord(run_dir).write_failure(failure_record(result._return_value))
            result.status, result.return_value = JobStatus.COMPLETED, None
        return result


def _lost_task(job: Any, error: Exception) -> dict[str, Any]:
    """failure.json of a task that ended without its result: what SLURM says ended it."""
    state = str(job.state)  # sacct's, e.g. OUT_OF_MEMORY, FAILED, CANCELLED by 1000
    trace = re.search(r"with trace:\n-+\n(.*?)\n-+\n", str(error), re.DOTALL)
    if trace:  # the task's own exception: the last line of its traceback
        what = trace.group(1).strip().splitlines()[-1]
    elif state.startswith("OUT_OF_MEMORY") or MEMORY_KILL.search(_tail(job.paths.stderr)):
        what = f"{OUT_OF_MEMORY} (SLURM state {state})"
    else:
        ending = ENDINGS.get(state.split()[0], "it ended without finishing the run")
        what = f"{ending} (SLURM state {state})"
    return {
        "kind": "crash" if trace else "killed",
        "reason": f"SLURM task {job.job_id}: {what}; log: {_relative(job.paths.stderr)}",
        "error_type": f"{type(error).__module__}.{type(error).__qualname__}",
        "slurm_state": state,
        "failed_at": time.time(),
    }


def _tail(path: Path, size: int = 4096) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(max(file.seek(0, os.SEEK_END) - size, 0))
            return file.read().decode(errors="replace")
    except OSError:
        return ""


def _relative(path: Path) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- the sbatch script --------------------------------------------------------------------------

# hydra.launcher's keys that become an #SBATCH option of the same meaning.
SBATCH_OPTIONS = {
    "name": "job-name",
    "timeout_min": "time",
    "nodes": "nodes",
    "tasks_per_node": "ntasks-per-node",
    "cpus_per_task": "cpus-per-task",
    "gpus_per_node": "gpus-per-node",
    "mem_gb": "mem",
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "comment": "comment",
    "constraint": "constraint",
    "exclude": "exclude",
    "gres": "gres",
    "cpus_per_gpu": "cpus-per-gpu",
    "gpus_per_task": "gpus-per-task",
    "mem_per_gpu": "mem-per-gpu",
    "mem_per_cpu": "mem-per-cpu",
}
# A task runs its run in this very process (no second launch), with the launcher left out.
TASK_MODE = ("hydra.mode=RUN", "launcher=basic")


def task_arguments(overrides: Sequence[str]) -> list[str]:
    """A job's overrides as one run's command line: without the launcher, in Hydra's run mode."""

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    kept = [o for o in overrides if key(o) != "launcher" and not key(o).startswith("launcher.")]
    return [*kept, *TASK_MODE]


# The script that sbatch_script fills in (str.format). Each {..._block} is whole lines, each ending
# in a newline, or nothing when there are none; {{ and }} are the shell's own braces.
SBATCH_TEMPLATE = """\
#!/bin/bash
# {title}: {n_runs} runs not done when this was written, one per array task.
# Submit it as it is: sbatch <this file>. Each task trains its run in the batch step
# (python -m shiftlab.train <its overrides> hydra.mode=RUN launcher=basic); a run that is
# done is not trained again, one held by a live task is skipped, an incomplete one
# resumes from its last checkpoint.
{options_block}
set -u
cd {workdir}
{environment_block}case "$SLURM_ARRAY_TASK_ID" in
{cases_block}    *) echo "no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;
esac

# SLURM's signal before the time limit: requeue this task, which resumes from the run's
# last checkpoint; at most {max_requeues} times (SLURM_RESTART_COUNT counts requeues).
requeue() {{
    if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {max_requeues} ]; then
        echo "time limit near: requeueing task $SLURM_ARRAY_TASK_ID"
        scontrol requeue "$SLURM_JOB_ID"
    fi
}}
trap requeue USR2
{setup_block}{python} -u -m shiftlab.train "$@" &
run=$!
wait "$run"
status=$?
while kill -0 "$run" 2>/dev/null; do  # the trap interrupted the wait: wait on
    wait "$run"
    status=$?
done
exit "$status"
"""


def sbatch_script(
    launcher: dict[str, Any],
    runs: Sequence[tuple[Sequence[str], Path]],
    log_dir: Path,
    title: str,
) -> str:
    """The sbatch file of one array task per run (``runs``: each run's overrides and directory).

    ``launcher`` is hydra.launcher, resolved. Each task trains its run with
    ``python -m shiftlab.train`` in the batch step, and on SLURM's signal before the time limit
    requeues itself (at most ``max_num_timeout`` times); the run resumes from its last.ckpt.
    """
    if int(launcher.get("nodes") or 1) != 1 or int(launcher.get("tasks_per_node") or 1) != 1:
        raise ShiftlabError(
            "the sbatch script runs one process per array task: set hydra.launcher.nodes=1 and "
            "hydra.launcher.tasks_per_node=1 (one run on several GPUs: docs/launchers.md, 'DDP')"
        )
    options = _sbatch_options(launcher, len(runs), log_dir)
    return SBATCH_TEMPLATE.format(
        title=title,
        n_runs=len(runs),
        options_block=_block(f"#SBATCH {option}" for option in options),
        workdir=shlex.quote(str(Path.cwd())),
        environment_block=_block(_environment()),
        cases_block=_block(_array_cases(runs)),
        max_requeues=int(launcher.get("max_num_timeout") or 0),
        setup_block=_block(launcher.get("setup") or []),
        python=shlex.quote(sys.executable),
    )


def _block(lines: Iterable[str]) -> str:
    """Lines as one of SBATCH_TEMPLATE's blocks: each ends in a newline, none gives nothing."""
    return "".join(line + "\n" for line in lines)


def _sbatch_options(launcher: dict[str, Any], n_runs: int, log_dir: Path) -> list[str]:
    """The #SBATCH options: hydra.launcher's, the array's, and its additional_parameters."""
    options = []
    for key, option in SBATCH_OPTIONS.items():
        value = launcher.get(key)
        if value is None or (key == "gpus_per_node" and not value):
            continue
        options.append(f"--{option}={value}G" if key == "mem_gb" else f"--{option}={value}")
    at_once = min(int(launcher.get("array_parallelism") or n_runs), n_runs)
    options += [
        f"--array=0-{n_runs - 1}%{at_once}",
        f"--output={log_dir}/%A_%a.log",
        "--open-mode=append",  # a requeued task adds to its log
        f"--signal=B:USR2@{launcher.get('signal_delay_s') or 120}",
    ]
    for key, value in (launcher.get("additional_parameters") or {}).items():
        name = key.replace("_", "-")
        if value is True:
            options.append(f"--{name}")
        elif value not in (None, False):
            options.append(f"--{name}={value}")
    return options


def _environment() -> list[str]:
    """The exports that give each task the data and output folders of the shell that wrote it."""
    return [
        f"export {name}={shlex.quote(os.environ[name])}"
        for name in ("SHIFTLAB_DATA_DIR", "SHIFTLAB_OUTPUT_DIR")
        if name in os.environ
    ]


def _array_cases(runs: Sequence[tuple[Sequence[str], Path]]) -> list[str]:
    """One case line per array task: its run's command line, its run directory as a comment."""
    return [
        f"    {index}) set -- {' '.join(shlex.quote(a) for a in task_arguments(overrides))} ;;"
        f"  # {run_dir}"
        for index, (overrides, run_dir) in enumerate(runs)
    ]
