"""The run record: what a finished run leaves behind for the report.

A run directory holds ``config.yaml`` (resolved), ``attempts.json`` (each start of the run:
settings hash, host, whether it resumed), ``metrics.json``, ``predictions.csv``, for a target
injection ``injected.csv``, and, written last, ``done``. Every file is written to a temporary
name and renamed, so a killed run never leaves a half-written file; a directory without ``done``
is an incomplete run, resumed from ``checkpoints/last.ckpt`` when it is started again. A run that
fails after its start writes ``failure.json`` (kind, one-line reason: ``shiftlab.runs.failure``) and
names the reason in its attempt; the next start removes it (the attempt keeps the reason).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from shiftlab.errors import ShiftlabError
from shiftlab.files import remove_temporaries, write_text_atomic

if TYPE_CHECKING:  # the grid's command line imports this module and needs no pandas
    import pandas as pd

DONE = "done"
ATTEMPTS = "attempts.json"
FAILURE = "failure.json"
LAST_CHECKPOINT = "checkpoints/last.ckpt"


def check_writable(folder: str | Path) -> None:
    """Raise a ShiftlabError unless files can be created in ``folder`` (or, where it does not
    exist yet, in the nearest folder above it that does), without creating ``folder`` itself."""
    folder = Path(folder).absolute()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    probe = existing / f".shiftlab-write-test.{os.getpid()}"
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ShiftlabError(
            f"cannot write the run record to {folder}: {error.strerror or error}. Nothing was "
            "trained; point paths.output_dir (or SHIFTLAB_OUTPUT_DIR) at a folder you can write."
        ) from None


class RunRecord:
    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)

    def finished(self, config_hash: str) -> dict[str, Any] | None:
        """The metrics of a complete record of these very settings, else None."""
        metrics = self.dir / "metrics.json"
        if not ((self.dir / DONE).is_file() and metrics.is_file()):
            return None
        result = json.loads(metrics.read_text())
        return result if result.get("config_hash") == config_hash else None

    def attempts(self) -> list[dict[str, Any]]:
        path = self.dir / ATTEMPTS
        return json.loads(path.read_text()) if path.is_file() else []

    def resume_point(self, config_hash: str) -> tuple[Path, int] | None:
        """``last.ckpt`` and its epoch, when an earlier attempt at these very settings left one.

        Read-only, so every process of a distributed run reaches the same answer.
        """
        last = self.dir / LAST_CHECKPOINT
        attempts = self.attempts()
        if not (last.is_file() and attempts and attempts[-1]["config_hash"] == config_hash):
            return None
        import torch  # only here: the grid's planning reads records without it

        try:
            epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
        except Exception:  # unreadable: the run starts over rather than failing on every relaunch
            return None
        return last, int(epoch)

    def start(
        self,
        cfg: DictConfig,
        config_hash: str = "",
        resume: tuple[Path, int] | None = None,
        **attempt: Any,
    ) -> None:
        """Mark the run incomplete (a rerun must not look finished), store its config, and add
        this attempt to ``attempts.json``.

        Unless it resumes, checkpoints of an earlier attempt are removed: it trains from scratch.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / DONE).unlink(missing_ok=True)
        (self.dir / FAILURE).unlink(missing_ok=True)  # its reason stays in attempts.json
        remove_temporaries(self.dir)  # left by a process killed while writing
        previous = self.attempts()
        if resume is None:
            shutil.rmtree(self.dir / "checkpoints", ignore_errors=True)
        else:
            # The CSV logger starts its file afresh: keep the curves of the attempt before.
            curves = self.dir / "csv" / "metrics.csv"
            if curves.is_file():
                os.replace(curves, curves.with_name(f"metrics.attempt{len(previous) - 1}.csv"))
        write_text_atomic(self.dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        this = {"config_hash": config_hash, "resumed_from_epoch": resume and resume[1], **attempt}
        attempts = [*previous, this]
        write_text_atomic(self.dir / ATTEMPTS, json.dumps(attempts, indent=2, default=str) + "\n")

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
        write_text_atomic(self.dir / "metrics.json", text)

    def write_predictions(self, predictions: pd.DataFrame) -> None:
        write_text_atomic(self.dir / "predictions.csv", predictions.to_csv(index=False))

    def write_table(self, name: str, table: pd.DataFrame) -> None:
        write_text_atomic(self.dir / name, table.to_csv(index=False))

    def write_failure(self, failure: dict[str, Any]) -> None:
        """``failure.json``, and the reason in this attempt's entry of ``attempts.json``."""
        write_text_atomic(self.dir / FAILURE, json.dumps(failure, indent=2, default=str) + "\n")
        attempts = self.attempts()
        if attempts:
            attempts[-1]["failure"] = failure.get("reason")
            write_text_atomic(
                self.dir / ATTEMPTS, json.dumps(attempts, indent=2, default=str) + "\n"
            )

    def failure(self) -> dict[str, Any] | None:
        """The failure of the last attempt, when it failed (and nothing restarted it since)."""
        path = self.dir / FAILURE
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except ValueError:
            return None

    def finish(self) -> None:
        write_text_atomic(self.dir / DONE, "")
