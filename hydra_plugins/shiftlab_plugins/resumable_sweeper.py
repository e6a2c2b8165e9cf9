"""The resumable sweeper (``hydra/sweeper: resumable``, selected by conf/train.yaml): every job of
the grid, as Hydra's basic sweeper expands it, less the runs that are done, held by a live process
or waiting in SLURM's queue. Relaunching a grid starts only what is missing or incomplete.

Its planning is ``shiftlab.grid``'s (the same as ``python -m shiftlab.grid status`` prints). Hydra
imports this module in every Hydra application it starts, so shiftlab's modules (which import
pandas and more) are imported where the sweeper first needs them, not here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

# params: the grid, as the basic sweeper takes it (key: a,b,c or range(start,stop[,step])), which
# an experiment preset sets; max_batch_size: jobs handed to the launcher at once (null: all).
ConfigStore.instance().store(
    group="hydra/sweeper",
    name="resumable",
    node={
        "_target_": "hydra_plugins.shiftlab_plugins.resumable_sweeper.ResumableSweeper",
        "max_batch_size": None,
        "params": None,
    },
    provider="shiftlab",
)


class ResumableSweeper(Sweeper):
    """Hydra's sweeper interface over ``shiftlab.grid.launch_plan``."""

    def __init__(self, max_batch_size: int | None = None, params: Any = None) -> None:
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.started: list[Path] = []

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from shiftlab.extras import require_launcher
        from shiftlab.grid import grid_errors

        with grid_errors():  # before Hydra instantiates the launcher: a missing one names its extra
            require_launcher(config.get("launcher", {}).get("name"))
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        """Launch the grid's runs that are not done; then the runs of this launch that failed,
        if any, one line each and exit status 1 (``shiftlab.grid.check_failures``)."""
        from shiftlab.grid import check_failures, grid_errors

        since, self.started = time.time(), []
        try:
            with grid_errors():  # from the launcher: SLURM refused the array
                return self._launch(arguments)
        finally:
            check_failures(self.started, since)

    def _launch(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        from shiftlab.grid import launch_plan

        assert self.hydra_context is not None and self.config is not None
        assert self.launcher is not None
        loader = self.hydra_context.config_loader
        parser = OverridesParser.create(config_loader=loader)
        params = [f"{key}={value}" for key, value in self.params.items()]
        starting = launch_plan(loader, self.config, parser.parse_overrides(params + arguments))
        self.started = [job.run_dir for job in starting]
        if self.config.get("launcher", {}).get("name") == "slurm":  # launchers.SlurmLauncher
            self.launcher.run_dirs = {job.overrides: job.run_dir for job in starting}
        # The grid's configuration beside its runs, as Hydra's sweepers save it.
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        # Every job was composed by the planning: Sweeper.validate_batch_is_legal would again.
        jobs = [list(job.overrides) for job in starting]
        size = self.max_batch_size if self.max_batch_size and self.max_batch_size > 0 else None
        size = size or max(len(jobs), 1)
        returns = []
        for first in range(0, len(jobs), size):
            results = self.launcher.launch(jobs[first : first + size], initial_job_idx=first)
            for result in results:
                _ = result.return_value  # a job that raised raises here, as in Hydra's sweepers
            returns.append(results)
        return returns
