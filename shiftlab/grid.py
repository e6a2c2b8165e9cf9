"""Grids of runs: which are done, which run elsewhere, which to start; GPU pinning; the CLI.

    python -m shiftlab.grid status experiment=paper_grid     # done / running / incomplete / missing
    python -m shiftlab.grid dry-run experiment=paper_grid    # the runs a multirun would start
    python -m shiftlab.grid sbatch experiment=paper_grid launcher=slurm   # the SLURM script

A grid is a Hydra multirun (``python -m shiftlab.train experiment=paper_grid``). Its run
directories are named by the settings hash, so a relaunch finds the runs of earlier launches:
``ResumableSweeper`` (Hydra's basic sweeper, configured in conf/hydra/sweeper/) leaves out runs
that are done or held by a live process, and hands the rest to the launcher; an incomplete run
resumes from its last checkpoint (``shiftlab.train``). The same planning, without launching, is
what ``status`` and ``dry-run`` print.

A process that trains a run holds ``<run dir>/lock``, created with O_EXCL and holding its pid,
host and SLURM job. The lock is live while its process is alive (same host) or while its
heartbeat (the file's mtime, touched every minute) is recent (another host). A requeued SLURM
task takes over the lock of its own earlier attempt.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import types
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from shiftlab.errors import ShiftlabError, exit_on_user_error
from shiftlab.record import DONE, FAILURE, check_writable

# Hydra's first plugin scan executes its plugin modules again, replacing their classes: the basic
# sweeper is taken after that scan, or a subclass of it would not be a subclass of Hydra's.
Plugins.instance()
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # noqa: E402

from shiftlab.settings import CONF_DIR  # noqa: E402

LOCK = "lock"
HEARTBEAT_S = 60.0  # how often a training process touches its lock
STALE_AFTER_S = 600.0  # a lock of another host untouched this long belongs to a dead process
STATES = ("done", "running", "incomplete", "missing")
NO_GPU = (
    "launcher=local_gpus found no GPU (CUDA_VISIBLE_DEVICES is empty or nvidia-smi lists none); "
    "set launcher.gpus=N, or use launcher=basic."
)

log = logging.getLogger(__name__)


# --- the lock of a run in flight ------------------------------------------------------------


def _slurm_job() -> str | None:
    """This process's SLURM job (array task), which a requeued task keeps."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _read_lock(path: Path) -> tuple[str, float] | None:
    try:
        return path.read_text(), path.stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None


def _live(text: str, mtime: float, stale_after_s: float) -> dict[str, Any] | None:
    """The holder described by a lock file's text, or None when its process is gone."""
    try:
        holder = json.loads(text)
    except ValueError:  # just created, not written yet
        holder = {}
    if holder.get("slurm_job") and holder["slurm_job"] == _slurm_job():
        return None  # our own task before it was requeued
    if holder.get("host") == socket.gethostname() and not _alive(int(holder["pid"])):
        return None
    if time.time() - mtime > stale_after_s:
        return None  # no heartbeat: a dead process on another host (or a hung one)
    return holder


def lock_holder(run_dir: Path, stale_after_s: float = STALE_AFTER_S) -> dict[str, Any] | None:
    """The live process training ``run_dir`` (pid, host, SLURM job, start), or None."""
    found = _read_lock(Path(run_dir) / LOCK)
    return _live(*found, stale_after_s) if found else None


def describe(holder: dict[str, Any]) -> str:
    where = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    return where + (f", SLURM job {holder['slurm_job']}" if holder.get("slurm_job") else "")


class RunLock:
    """``<run dir>/lock`` while this process trains the run.

    ``with RunLock(run_dir) as lock:`` takes the lock unless a live process holds it;
    ``lock.holder`` is then that process (and nothing was taken), else None.
    """

    def __init__(
        self,
        run_dir: str | Path,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.path = Path(run_dir) / LOCK
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.holder: dict[str, Any] | None = None
        self._token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _content(self) -> str:
        return json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "slurm_job": _slurm_job(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "token": self._token,
            }
        )

    def _break(self, stale_text: str) -> None:
        """Remove a stale lock, unless another process replaced it meanwhile."""
        grave = self.path.with_name(f"{LOCK}.stale.{self._token}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return  # another process broke it first
        if grave.read_text() != stale_text:
            # A process broke the stale lock and took a fresh one in between: give it back.
            os.rename(grave, self.path)
        else:
            grave.unlink()

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                found = _read_lock(self.path)
                if found is None:
                    continue
                self.holder = _live(*found, self.stale_after_s)
                if self.holder is not None:
                    return False
                self._break(found[0])
                continue
            with os.fdopen(fd, "w") as file:
                file.write(self._content())
            self.holder = None
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()
            return True
        raise ShiftlabError(f"could not take the lock {self.path}: it keeps changing hands")

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        found = _read_lock(self.path)
        if found and self._token in found[0]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.holder is None:
            self.release()


def failures(run_dirs: Sequence[Path], since: float = 0.0) -> list[tuple[Path, str]]:
    """The runs among ``run_dirs`` whose last attempt failed (at or after ``since``), with the
    reason from their failure.json."""
    found = []
    for run_dir in run_dirs:
        path = Path(run_dir) / FAILURE
        try:
            if path.stat().st_mtime < since:
                continue
            found.append((Path(run_dir), str(json.loads(path.read_text()).get("reason"))))
        except (OSError, ValueError):
            continue
    return found


class OutputCheck(Callback):
    """Before Hydra makes a single run's directory: a clear error when it cannot be written
    (conf/train.yaml, hydra.callbacks). A multirun checks its sweep folder when planning."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Exits (status 2) rather than raising: Hydra turns a callback's exception into a warning.
        with exit_on_user_error():
            check_writable(config.hydra.run.dir)


def run_state(run_dir: Path) -> str:
    """done (``done`` written), running (a live lock), incomplete (started), or missing."""
    if (run_dir / DONE).exists():
        return "done"
    if lock_holder(run_dir) is not None:
        return "running"
    if (run_dir / "config.yaml").exists():
        return "incomplete"
    return "missing"


# --- one GPU per worker process (launcher=local_gpus) ----------------------------------------

_claimed: tuple[str, IO] | None = None  # this process's GPU and its slot file, held until exit


def visible_gpus() -> list[str]:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists.

    Asks the driver through nvidia-smi, not CUDA, so the launching process never creates a
    CUDA context (its worker processes pick their GPU before theirs).
    """
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def pin_gpu(gpus: int, slot_dir: str | Path, poll_s: float = 2.0) -> str:
    """Claim a GPU slot for this process and make that GPU its only visible device.

    Slot k stands for the k-th visible GPU. A slot is held by an exclusive ``flock`` on
    ``slot_dir/gpu<k>.lock``, which the operating system releases when the process ends, even
    when it is killed. A worker process that runs several jobs keeps its first GPU (CUDA reads
    CUDA_VISIBLE_DEVICES once). Must run before anything starts CUDA in this process.
    """
    global _claimed
    if _claimed is not None:
        return _claimed[0]
    if gpus < 1:
        raise ShiftlabError(NO_GPU)
    devices = visible_gpus() or [str(i) for i in range(gpus)]
    devices = devices[:gpus]
    slot_dir = Path(slot_dir)
    slot_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for slot, device in enumerate(devices):
            file = open(slot_dir / f"gpu{slot}.lock", "a+")  # noqa: SIM115 (held until exit)
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                continue
            file.seek(0)
            file.truncate()
            file.write(f"{os.getpid()} {socket.gethostname()}\n")
            file.flush()
            os.environ["CUDA_VISIBLE_DEVICES"] = device
            _claimed = (device, file)
            return device
        if not waited:
            print(f"all {len(devices)} GPU slots in {slot_dir} are taken; waiting", flush=True)
            waited = True
        time.sleep(poll_s)


# --- planning: which runs a multirun would start ---------------------------------------------


@dataclass(frozen=True)
class Job:
    overrides: tuple[str, ...]
    run_dir: Path
    state: str
    config: DictConfig = field(compare=False, repr=False)

    def describe(self) -> str:
        shown = [o for o in self.overrides if not o.startswith(("paths.", "hydra.", "experiment="))]
        return " ".join(shown)


def job_run_dir(job_config: DictConfig) -> Path:
    return Path(job_config.hydra.sweep.dir) / str(job_config.hydra.sweep.subdir)


def plan(loader: ConfigLoader, master: DictConfig, jobs: Sequence[Sequence[str]]) -> list[Job]:
    """Each job's run directory (as the launcher will compose it) and its state."""
    planned = []
    for overrides in jobs:
        job_config = loader.load_sweep_config(master, list(overrides))
        run_dir = job_run_dir(job_config)
        planned.append(Job(tuple(overrides), run_dir, run_state(run_dir), job_config))
    return planned


def prepare_data(jobs: Sequence[Job]) -> None:
    """Make sure every dataset of these jobs has its manifest, once, before any job starts.

    Synthetic sets are generated here rather than by several jobs at once in parallel workers
    or array tasks; a missing real dataset is one clear error instead of one failed job each.
    """
    from shiftlab.data.prepare import ensure_manifest

    seen: set[str] = set()
    for job in jobs:
        manifest_dir = str(job.config.dataset.manifest_dir)
        if manifest_dir not in seen:
            seen.add(manifest_dir)
            ensure_manifest(job.config)


def counts(jobs: Sequence[Job]) -> str:
    found = Counter(job.state for job in jobs)
    return ", ".join(f"{found[state]} {state}" for state in STATES)


def to_start(jobs: Sequence[Job]) -> list[Job]:
    return [job for job in jobs if job.state in ("incomplete", "missing")]


class GridError(CompactHydraException):
    """A ShiftlabError met before launching: Hydra prints its message alone and exits with 1."""


class ResumableSweeper(BasicSweeper):
    """Hydra's basic sweeper, less the runs that are done or held by a live process.

    Registered with Hydra below; selected by conf/hydra/sweeper/resumable.yaml.
    """

    def split_arguments(
        self, overrides: list[Override], max_batch_size: int | None
    ) -> list[list[list[str]]]:
        try:
            check_writable(self.config.hydra.sweep.dir)
        except ShiftlabError as error:
            raise GridError(f"error: {error}") from None
        [jobs] = BasicSweeper.split_arguments(overrides, None)
        planned = plan(self.hydra_context.config_loader, self.config, jobs)
        starting = to_start(planned)
        log.info(f"{len(planned)} runs: {counts(planned)}; starting {len(starting)}")
        for job in planned:
            if job.state == "running":
                log.info(
                    f"\trunning elsewhere ({describe(lock_holder(job.run_dir) or {})}): "
                    f"{job.describe()}"
                )
        self.started = [job.run_dir for job in starting]
        if not starting:
            return []
        try:
            launcher = self.config.get("launcher", {})
            if launcher.get("name") == "local_gpus" and int(launcher.gpus) < 1:
                raise ShiftlabError(NO_GPU)
            prepare_data(starting)
        except ShiftlabError as error:
            raise GridError(f"error: {error}") from None
        todo = [list(job.overrides) for job in starting]
        return list(BasicSweeper.split_overrides_to_chunks(todo, max_batch_size))

    def sweep(self, arguments: list[str]) -> Any:
        """Hydra's sweep, then the runs of this launch that failed, if any: one line each (from
        their failure.json), and exit status 1. A failed run does not stop the others."""
        since, self.started = time.time(), []
        try:
            return super().sweep(arguments)
        finally:
            failed = failures(self.started, since)
            if failed:
                lines = [f"  {_relative(run_dir)}: {reason}" for run_dir, reason in failed]
                raise GridError(
                    f"error: {len(failed)} of {len(self.started)} runs failed (failure.json in "
                    "each; a relaunch tries them again):\n" + "\n".join(lines)
                )


def _publish_sweeper() -> None:
    """Make ``hydra_plugins.shiftlab.ResumableSweeper`` importable and known to Hydra.

    Hydra instantiates sweepers only from its plugin namespace (``hydra_plugins.*``, checked in
    hydra.core.plugins). Rather than ship a second top-level package, shiftlab publishes its
    sweeper there as a module of its own when shiftlab.train or this module is imported.
    """
    name = "hydra_plugins.shiftlab"
    module = sys.modules.get(name) or types.ModuleType(name, "shiftlab's Hydra sweeper")
    ResumableSweeper.__module__ = name
    module.ResumableSweeper = ResumableSweeper
    sys.modules[name] = module
    Plugins.instance().register(ResumableSweeper)


_publish_sweeper()


# --- the command line -------------------------------------------------------------------------


@contextlib.contextmanager
def config_loader() -> Iterator[ConfigLoader]:
    from hydra import initialize_config_dir

    from shiftlab.settings import register_resolvers

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
    arguments += list(master.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    [jobs] = BasicSweeper.split_arguments(parsed, None)
    return master, jobs


def grid(overrides: Sequence[str]) -> tuple[DictConfig, list[Job]]:
    with config_loader() as loader:
        master, jobs = expand(loader, overrides)
        return master, plan(loader, master, jobs)


def _name(master: DictConfig) -> str:
    return str(master.hydra.runtime.choices.get("experiment") or "grid")


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
            print(f"{job.state:<11} {job.describe()}  {_relative(job.run_dir)}{why}")
    print(f"{_name(master)}: {len(jobs)} runs: {counts(jobs)}")
    return jobs


def dry_run(overrides: Sequence[str]) -> list[Job]:
    master, jobs = grid(overrides)
    starting = to_start(jobs)
    for job in starting:
        print(f"{job.state:<11} {job.describe()}  {_relative(job.run_dir)}")
    print(f"{_name(master)}: {len(starting)} jobs would start ({counts(jobs)})")
    return starting


def sbatch_script(overrides: Sequence[str]) -> str:
    """The sbatch file hydra-submitit-launcher would submit for the runs to start.

    Rendered with submitit's own template and parameter names, so it needs no cluster.
    """
    from submitit.slurm import slurm

    master, jobs = grid(overrides)
    if master.get("launcher", {}).get("name") != "slurm":
        raise ShiftlabError("the sbatch script is for launcher=slurm; add it to the overrides.")
    starting = to_start(jobs)
    if not starting:
        raise ShiftlabError(f"nothing to submit: {counts(jobs)}")
    params = OmegaConf.to_container(master.hydra.launcher, resolve=True)
    folder = params.pop("submitit_folder")
    rename = slurm.SlurmExecutor._equivalence_dict()
    skip = {"_target_", "max_num_timeout"}
    options = {rename.get(k, k): v for k, v in params.items() if k not in skip and v is not None}
    if "mem" in options:
        options["mem"] = slurm._convert_mem(options["mem"])
    command = " ".join(
        [shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(folder)]
    )
    return slurm._make_sbatch_string(
        command=command, folder=folder, map_count=len(starting), **options
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("status", "dry-run", "sbatch"))
    parser.add_argument("--all", action="store_true", help="status: list finished runs too")
    parser.add_argument("overrides", nargs="*", help="as for a multirun, e.g. experiment=noise")
    args = parser.parse_intermixed_args(argv)
    with exit_on_user_error():
        if args.command == "status":
            status(args.overrides, show_all=args.all)
        elif args.command == "dry-run":
            dry_run(args.overrides)
        else:
            print(sbatch_script(args.overrides))


if __name__ == "__main__":
    main()
