"""The run record: what a finished run leaves behind for the report.

A run directory holds ``config.yaml`` (resolved), ``metrics.json``, ``predictions.csv`` and,
written last, ``done``. Every file is written to a temporary name and renamed, so a killed run
never leaves a half-written file; a directory without ``done`` is an incomplete run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

DONE = "done"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunRecord:
    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)

    def start(self, cfg: DictConfig) -> None:
        """Mark the run incomplete (a rerun must not look finished) and store its config.

        Checkpoints of an earlier attempt are removed: this run trains from scratch.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / DONE).unlink(missing_ok=True)
        shutil.rmtree(self.dir / "checkpoints", ignore_errors=True)
        write_atomic(self.dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
        write_atomic(self.dir / "metrics.json", text)

    def write_predictions(self, predictions: pd.DataFrame) -> None:
        write_atomic(self.dir / "predictions.csv", predictions.to_csv(index=False))

    def finish(self) -> None:
        write_atomic(self.dir / DONE, "")
