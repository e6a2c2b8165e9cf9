"""Optional packages and the extras that install them (pyproject.toml's optional-dependencies).

The core install ingests, trains and writes run records. W&B (``logger=wandb``), the SLURM and
multi-GPU launchers and the report come with extras. Code that needs an optional package imports
it through ``require``, so a missing one stops with the extra to install instead of a bare
ModuleNotFoundError deep in a library.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from shiftlab.errors import ShiftlabError


class MissingExtra(ShiftlabError, ModuleNotFoundError):
    """An optional package is not installed; the message names the extra that installs it."""


def install_command(extra: str) -> str:
    return f"pip install 'shiftlab[{extra}]'"


def _missing(module: str, extra: str, needed_by: str) -> MissingExtra:
    return MissingExtra(
        f"{needed_by} needs the '{extra}' extra ({module} is not installed): "
        f"{install_command(extra)}",
        name=module,
    )


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (its parents are imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """``module`` imported, or a MissingExtra naming ``extra`` when it is not installed.

    ``needed_by`` says what needs it in the user's words (``logger=wandb``). A module that is
    installed but fails to import for another reason raises as it is.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is None or not (module + ".").startswith(error.name + "."):
            raise
        raise _missing(module, extra, needed_by) from None


@dataclass(frozen=True)
class LauncherPlugin:
    """The Hydra launcher a launcher preset (conf/launcher/<preset>.yaml) selects."""

    package: str  # the plugin's module, under Hydra's hydra_plugins namespace
    config: str  # its name in the hydra/launcher config group
    extra: str


# Presets missing here run on Hydra's own launcher.
LAUNCHERS = {
    "slurm": LauncherPlugin("hydra_plugins.hydra_submitit_launcher", "submitit_slurm", "slurm"),
    "local_gpus": LauncherPlugin("hydra_plugins.hydra_joblib_launcher", "joblib", "local-gpus"),
}


def require_launcher(preset: str | None) -> None:
    """Refuse a launcher preset whose Hydra launcher is not installed, naming its extra."""
    plugin = LAUNCHERS.get(preset or "")
    if plugin is not None and not installed(plugin.package):
        raise _missing(plugin.package, plugin.extra, f"launcher={preset}")


def stand_in_for_missing_launchers() -> None:
    """Register an empty hydra/launcher config for each launcher plugin that is not installed.

    A preset selects its plugin's config (``override /hydra/launcher: submitit_slurm``), which
    the plugin registers with Hydra. Without the plugin, Hydra would stop composing at that line
    with "Could not find 'hydra/launcher/submitit_slurm'"; with the stand-in, composition goes
    on, a single run works, and a multirun reaches ``require_launcher``, which names the extra.
    """
    from hydra.core.config_store import ConfigStore

    for plugin in LAUNCHERS.values():
        if not installed(plugin.package):
            ConfigStore.instance().store(
                group="hydra/launcher", name=plugin.config, node={}, provider="shiftlab"
            )
