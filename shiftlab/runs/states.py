"""Where a run stands: done, running (a live lock), requeued or queued (its SLURM job waits in
the queue), incomplete or missing; the lock itself.

A process that trains a run holds ``<run dir>/lock``, created with O_EXCL and holding its pid,
host and SLURM job. The lock is live while its process is alive (same host) or while its
heartbeat (the file's mtime, touched every minute) is recent (another host). A requeued SLURM
task takes over the lock of its own earlier attempt.

``<run dir>/slurm_job`` names the SLURM job (array task) of the run's latest submission or
start; it outlives the lock, so a run whose task was requeued (preempted, out of time, or
``scontrol requeue``) and waits to start again is known as such by ``squeue``, and a relaunch
does not submit it a second time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from shiftlab.errors import ShiftlabError, exit_on_user_error
from shiftlab.files import write_text_atomic
from shiftlab.runs.record import DONE, FAILURE, check_writable
from shiftlab.runs.slurm import ACTIVE, QUEUED, job_state

LOCK = "lock"
SLURM_JOB = "slurm_job"
HEARTBEAT_S = 60.0  # how often a training process touches its lock
STALE_AFTER_S = 600.0  # a lock of another host untouched this long belongs to a dead process
STATES = ("done", "running", "requeued", "queued", "incomplete", "missing")

log = logging.getLogger(__name__)


def job_run_dir(job_config: DictConfig) -> Path:
    """The run directory of one job of a multirun, as its composed configuration names it."""
    return Path(job_config.hydra.sweep.dir) / str(job_config.hydra.sweep.subdir)


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
            if _slurm_job():
                record_slurm_job(self.path.parent, _slurm_job())
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


def record_slurm_job(run_dir: Path, job: str) -> None:
    """Name the SLURM job that trains (or will train) the run."""
    write_text_atomic(Path(run_dir) / SLURM_JOB, f"{job}\n")


def slurm_job(run_dir: Path) -> str | None:
    """The SLURM job of the run's latest submission or start, if it had one."""
    try:
        return (Path(run_dir) / SLURM_JOB).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def run_state(run_dir: Path) -> str:
    """done (``done`` written); running (a live lock, or its SLURM job runs); requeued (started,
    and its SLURM job waits in the queue to start again) or queued (not started yet, its job
    waits); incomplete (started, nothing will start it again); or missing."""
    if (run_dir / DONE).exists():
        return "done"
    if lock_holder(run_dir) is not None:
        return "running"
    started = (run_dir / "config.yaml").exists()
    job = slurm_job(run_dir)
    state = job and job_state(job)
    if state in QUEUED:
        return "requeued" if started else "queued"
    if state in ACTIVE:
        return "running"  # starting (not locked yet), or ending
    return "incomplete" if started else "missing"
