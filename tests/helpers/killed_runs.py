"""Runs killed on purpose: shiftlab.train's command line in a process that kills itself at a chosen
moment, for the tests of what a killed run leaves behind (tests/runs/, tests/loggers/)."""

from __future__ import annotations

from pathlib import Path

# Runs shiftlab.train's command line in a process that SIGKILLs itself at one moment: after the
# data is set up (the cache built), in the middle of epoch N ("epoch<N>"), or half-way through
# writing metrics.json (its temporary file half written, nothing renamed).
KILLER = r"""
import os, signal, sys

moment, overrides = sys.argv[1], sys.argv[2:]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if moment == "setup":
    from shiftlab.data.datamodule import ShiftDataModule

    original_setup = ShiftDataModule.setup

    def setup(self, stage=None):
        original_setup(self, stage)
        die()

    ShiftDataModule.setup = setup
elif moment.startswith("epoch"):  # "epoch<N>": in the middle of epoch N
    from shiftlab.models.classifier import ShiftClassifier

    original_step = ShiftClassifier.training_step
    kill_epoch = int(moment.removeprefix("epoch"))

    def training_step(self, batch, batch_idx):
        if self.current_epoch == kill_epoch:
            die()
        return original_step(self, batch, batch_idx)

    ShiftClassifier.training_step = training_step
elif moment == "record":
    from shiftlab import files
    from shiftlab.runs import record

    original_write = record.write_text_atomic

    def write_text_atomic(path, text, **options):
        if path.name == "metrics.json":
            files.temporary_path(path).write_text(text[: len(text) // 2])
            die()
        return original_write(path, text, **options)

    record.write_text_atomic = write_text_atomic

import runpy

# As `python -m shiftlab.train`: Hydra finds conf/ from the module run as __main__.
sys.argv = ["shiftlab.train", *overrides]
runpy.run_module("shiftlab.train", run_name="__main__", alter_sys=True)
"""


def places(tmp_path: Path) -> list[str]:
    return [f"paths.data_dir='{tmp_path / 'data'}'", f"paths.output_dir='{tmp_path / 'out'}'"]
