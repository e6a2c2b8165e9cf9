"""The W&B logger of ``logger=wandb``: Lightning's WandbLogger that sends nothing of this machine.

W&B records by default the command line (``sys.argv``: every override, data folders included),
the program, the Python executable, the working directory, the host, the git remote (which can
be a local path) and the code. Here these are off whatever the config says (``PRIVATE``), and
every value that reaches W&B through the logger (the run config, its name, group, tags and notes;
``shiftlab.train`` masks the summary alike) has its local paths masked by what it is
(``shiftlab.loggers.local_paths``). The W&B folder itself stays in the run directory; its
``debug.log`` names that folder, which is where it is written.

A run's W&B run has the id ``wandb_run_id`` gives: the run's settings hash and the start of the
attempt that began its training. A resumed attempt continues that W&B run (W&B's ``resume="allow"``,
which Lightning's logger sets); a run trained from scratch again (its folder deleted, or killed
before its first checkpoint) starts a new one: W&B keeps a run's history and holds a deleted run's
id for days (wandb/wandb#3424, wandb/docs#1117), so a bare settings hash would mix two trainings
in one W&B run, or fail. Offline, each attempt is a folder ``wandb/offline-run-<time>-<id>`` of
the run directory; ``wandb sync`` uploads the folders of one id as one run, in order of start
(``wandb sync --help``, wandb 0.31).
"""

from __future__ import annotations

import time
from argparse import Namespace
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from shiftlab.extras import require
from shiftlab.loggers.local_paths import mask_local_paths, mask_text

# wandb.Settings that keep the machine out of the run (named as in wandb 0.22 to 0.31, the range
# pyproject.toml allows and tests/loggers/test_wandb.py checks):
# no system metadata (argv, program, executable, cwd, host), no git state, no code.
PRIVATE = {
    "x_disable_meta": True,
    "disable_git": True,
    "disable_code": True,
}
_TEXT_ARGUMENTS = ("name", "group", "notes", "job_type")


def wandb_run_id(config_hash: str, attempts: Sequence[Mapping[str, Any]]) -> str:
    """``<settings hash>-<UTC start of the training>``: the same for every attempt that resumes
    it (``attempts.json``: ``resumed_from_epoch`` set), new when an attempt trains from scratch."""
    fresh = [i for i, attempt in enumerate(attempts) if attempt.get("resumed_from_epoch") is None]
    if not fresh:
        return config_hash
    started = attempts[fresh[-1]].get("started_at")
    if not isinstance(started, int | float):
        return f"{config_hash}-attempt{fresh[-1]}"
    return f"{config_hash}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started))}"


class MaskedWandbLogger(WandbLogger):
    """WandbLogger with ``PRIVATE`` settings and local paths masked in all it sends."""

    def __init__(self, *, settings: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        require("wandb", extra="wandb", needed_by="logger=wandb")
        for key in _TEXT_ARGUMENTS:
            if isinstance(kwargs.get(key), str):
                kwargs[key] = mask_text(kwargs[key])
        if kwargs.get("tags"):
            kwargs["tags"] = [mask_text(str(tag)) for tag in kwargs["tags"]]
        if kwargs.get("config"):
            kwargs["config"] = mask_local_paths(dict(kwargs["config"]))
        kwargs["save_code"] = False  # wandb.init's own argument would override the setting
        super().__init__(settings={**(settings or {}), **PRIVATE}, **kwargs)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        if isinstance(params, Namespace):
            params = vars(params)
        super().log_hyperparams(mask_local_paths(dict(params)))
