"""How a run fails: a non-finite loss stops it, and every failure is recorded in its run directory.

A run that fails after it started writes ``failure.json`` (``kind``, one-line ``reason``, the
exception's type, when) beside its record, and the attempt in ``attempts.json`` names the reason.
The run stays incomplete (no ``done``), so the report leaves it out and a relaunch tries it again.
The reason is meant to be read anywhere: DICOM and data locations in it are masked, since a file
path can hold a patient folder name (the full message still goes to the console).
``recorded_attempt`` wraps the training of an attempt: it records a failure and finishes the
attempt's loggers (W&B learns whether the attempt failed), whichever way the attempt ends.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

from shiftlab.errors import ShiftlabError
from shiftlab.manifest import CSV_NAME, PATH_SEPARATOR
from shiftlab.runs.record import FAILURE, RunRecord

REASON_CHARS = 500
# On a GPU, reading the loss back every step would wait for the device at every step: the flag is
# kept on the device and read every this many steps (and before each validation).
CHECK_EVERY_N_STEPS_ON_GPU = 25
# Locations masked in a recorded reason, most specific first (config keys).
MASKED = ("dataset.dicom_root", "dataset.root", "paths.data_dir", "paths.cache_dir")
# Shorter folder or file names of the manifest are not masked where they occur in a reason
# (they would mask ordinary words); a PatientID is longer.
MIN_MASKED_NAME = 4


class TrainingDiverged(ShiftlabError):
    """The training loss (or a recorded metric) is not a finite number."""


class FiniteLoss(L.Callback):
    """Stops training when the loss is nan or inf, before a checkpoint of that epoch is saved.

    A non-finite loss ruins the weights for good: training on would only turn the run's metrics
    into numbers that mean nothing. The check happens before each validation, so the epoch's
    checkpoints (saved when validation ends) are never written from broken weights.
    """

    def __init__(self) -> None:
        self._bad: torch.Tensor | None = None
        self._since: tuple[int, int] | None = None  # (epoch, step) of the first unchecked step
        self._unchecked = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, *_: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        bad = ~torch.isfinite(loss.detach()).all()
        self._bad = bad if self._bad is None else self._bad | bad
        if self._since is None:
            self._since = (trainer.current_epoch, trainer.global_step)
        self._unchecked += 1
        if loss.device.type == "cpu" or self._unchecked >= CHECK_EVERY_N_STEPS_ON_GPU:
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        bad = self._bad is not None and bool(self._bad)
        since = self._since
        self._bad, self._since, self._unchecked = None, None, 0
        if trainer.world_size > 1:
            # Every process checks at the same steps; all stop if one saw it (none waits on a
            # process that stopped alone).
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        epoch, first = since or (trainer.current_epoch, trainer.global_step)
        last = trainer.global_step
        steps = f"step {first}" if first >= last - 1 else f"steps {first}-{last}"
        raise TrainingDiverged(
            f"training stopped: the training loss became nan or inf (epoch {epoch}, {steps}). "
            "Lower optim.lr, check the preprocessed inputs (dataset.preprocess), or train in "
            "full precision (trainer.precision=32-true)"
        )


def check_finite_metrics(metrics: Mapping[str, float]) -> None:
    """Refuse to record a metric that is nan or inf: it would read as a result."""
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(float(v)))
    if bad:
        raise TrainingDiverged(
            f"training stopped: {', '.join(bad)} is not a finite number "
            "(the network's outputs are nan or inf). Lower optim.lr or check the inputs"
        )


def mask(text: str, cfg: DictConfig | None) -> str:
    """``text`` on one line, at most REASON_CHARS long, with data locations masked.

    A path under the DICOM root becomes ``<dataset.dicom_root>/…`` up to the next colon (TCIA
    folder names hold spaces and commas, so nothing else ends such a path), other data folders
    ``<name>``; and every folder or file name of the manifest's paths that still appears (a path
    quoted relative to the root) becomes ``…``: in TCIA's layout one of them is the PatientID.
    """
    text = " ".join(str(text).split())
    for key in MASKED:
        location = _select(cfg, key)
        if not location:
            continue
        if key == "dataset.dicom_root":
            text = re.sub(re.escape(location) + r"(/[^:]*)?", f"<{key}>/…", text)
        else:
            text = text.replace(location, f"<{key}>")
    for name in _path_names(cfg, text):
        text = text.replace(name, "…")
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def _path_names(cfg: DictConfig | None, text: str) -> list[str]:
    """The folder and file names of the manifest's paths that occur in ``text``, longest first."""
    manifest_dir = _select(cfg, "dataset.manifest_dir")
    if not manifest_dir:
        return []
    try:
        paths = pd.read_csv(Path(manifest_dir) / CSV_NAME, usecols=["paths"], dtype=str)["paths"]
    except Exception:  # no manifest (the failure may be about that): nothing more to mask
        return []
    names = {
        name
        for joined in paths.dropna()
        for path in joined.split(PATH_SEPARATOR)
        for name in path.split("/")
        if len(name) >= MIN_MASKED_NAME and name in text
    }
    return sorted(names, key=len, reverse=True)


def _select(cfg: DictConfig | None, key: str) -> str | None:
    if cfg is None:
        return None
    try:
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if node is not None else None
    except Exception:  # an interpolation that does not resolve: nothing to mask
        return None
    return str(node).rstrip("/") if node else None


def failure_record(error: BaseException, cfg: DictConfig | None = None) -> dict[str, Any]:
    """What ``failure.json`` holds for this exception."""
    if isinstance(error, TrainingDiverged):
        kind = "diverged"
    elif isinstance(error, ShiftlabError):
        kind = "error"
    elif isinstance(error, KeyboardInterrupt | SystemExit):
        kind = "interrupted"
    else:
        kind = "crash"
    message = str(error) or type(error).__name__
    reason = message if isinstance(error, ShiftlabError) else f"{type(error).__name__}: {message}"
    return {
        "kind": kind,
        "reason": mask(reason, cfg),
        "error_type": f"{type(error).__module__}.{type(error).__qualname__}",
        "failed_at": time.time(),
    }


@contextmanager
def recorded_attempt(record: RunRecord, cfg: DictConfig, writer: bool) -> Iterator[list[Logger]]:
    """Around an attempt's training: yields the list that its loggers are to be put in.

    A failure inside is recorded beside the run by the ``writer`` (global rank 0), masked, so the
    grid and the report say why, and a ShiftlabError's message names the file. However the
    attempt ends, a W&B run among the loggers is finished, with exit code 1 if it failed.
    """
    loggers: list[Logger] = []
    failed = True
    try:
        yield loggers
        failed = False
    except BaseException as error:
        if writer:
            record.write_failure(failure_record(error, cfg))
            if isinstance(error, ShiftlabError):
                error.args = (f"{error} (recorded in {record.dir / FAILURE})",)
        raise
    finally:
        if any(isinstance(logger, WandbLogger) for logger in loggers):
            import wandb  # only when W&B is in use: importing it costs a second

            wandb.finish(exit_code=1 if failed else 0)
