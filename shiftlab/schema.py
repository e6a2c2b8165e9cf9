"""What a training config must hold, checked once it is composed, before anything is made.

Hydra composes whatever an override gives (``seed=abc``, ``optim.lr=fast``, an optimiser argument
that its class does not take); unchecked, such a value fails deep inside training, after the data
was generated and the run's folder made. ``check_train_config`` is the one place that states the
expected types: a ``SettingsCheck`` Hydra callback runs it before Hydra makes the run's folder
(``conf/train.yaml``, ``hydra.callbacks``), and ``shiftlab.train.train`` runs it for callers of
the API and for each job of a multirun. Every problem is named in one ShiftlabError (exit status
2 on the command line): the key, what was expected, what was found. An unknown option of a group
(``scheduler=linear``) is Hydra's own error, which lists the group's options.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from shiftlab.deployment_metrics import check_evaluation
from shiftlab.errors import ShiftlabError, exit_on_user_error
from shiftlab.models.classifier import LIGHTNING_SCHEDULE_KEYS

# Seeds as Lightning's seed_everything and numpy take them: out of this range Lightning warns and
# draws a random seed, and the run would not be reproducible.
SEED_RANGE = (0, 2**32 - 1)
SEEDS = ("seed", "split_seed")
SWITCHES = ("twin", "runtime.channels_last", "runtime.compile")
INTERVALS = ("step", "epoch")
# Keys of a scheduler config that are Lightning's or shiftlab's, not the schedule's arguments.
SCHEDULE_KEYS = (*LIGHTNING_SCHEDULE_KEYS, "run_length_argument")
HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(node: Any) -> Any:
    """A config node as plain, resolved values."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _locate(path: str) -> Any:
    """The object a dotted path names (the longest importable module, then attributes), or None.
    Quietly: Hydra's own lookup logs an error line for every miss."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name, None)
        return found
    return None


def _callable(key: str, target: Any, example: str, problems: list[str]) -> Any:
    """The class or function a ``_target_`` names, or None with the problem noted."""
    if not isinstance(target, str) or not target:
        problems.append(f"{key}={target!r}: expected a dotted path such as {example}")
        return None
    found = _locate(target)
    if not callable(found):
        problems.append(f"{key}={target!r}: no class or function of that name ({example}, say)")
        return None
    return found


def _arguments(key: str, target: Any, arguments: Mapping[str, Any], problems: list[str]) -> None:
    """Note the arguments that ``target`` (called with one positional first) does not take."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # no signature to read (a builtin): the call will tell
        return
    try:
        signature.bind_partial(None, **arguments)
    except TypeError:
        taken = [n for n in list(signature.parameters)[1:] if n not in ("self", "kwargs")]
        unknown = [n for n in arguments if n not in signature.parameters]
        problems.append(
            f"{key}: {target.__module__}.{target.__qualname__} takes no argument "
            f"{', '.join(map(repr, unknown)) or 'of these'} (it takes {', '.join(taken)})"
        )


def _check_optimizer(optim: Any, problems: list[str]) -> None:
    if not isinstance(optim, Mapping):
        problems.append(f"optim={_shown(optim)}: expected a mapping with _target_, _partial_, lr")
        return
    target = _callable("optim._target_", optim.get("_target_"), "torch.optim.Adam", problems)
    if optim.get("_partial_") is not True:
        problems.append(
            f"optim._partial_={optim.get('_partial_')!r}: expected true (the optimiser is built "
            "later, with the network's parameters)"
        )
    lr = optim.get("lr")
    if not (_is_number(lr) and lr > 0):
        problems.append(f"optim.lr={_shown(lr)}: expected a number > 0, such as 1e-3")
    if "scheduler" in optim:  # optim.scheduler of shiftlab 0.1.0
        problems.append(
            f"optim.scheduler={optim['scheduler']!r}: the schedule is now its own group, "
            f"scheduler={optim['scheduler']} (conf/scheduler/)"
        )
        optim = {k: v for k, v in optim.items() if k != "scheduler"}
    decay = optim.get("weight_decay", 0)
    if not (_is_number(decay) and decay >= 0):
        problems.append(f"optim.weight_decay={_shown(decay)}: expected a number >= 0")
    if target is not None:
        arguments = {k: v for k, v in optim.items() if k not in HYDRA_KEYS}
        _arguments("optim", target, arguments, problems)


def _check_scheduler(scheduler: Any, problems: list[str]) -> None:
    if not isinstance(scheduler, Mapping):
        problems.append(
            f"scheduler={_shown(scheduler)}: expected an option of the scheduler group "
            "(scheduler=cosine or scheduler=none, conf/scheduler/)"
        )
        return
    if scheduler.get("_target_") is None:  # scheduler=none: a constant learning rate
        return
    example = "torch.optim.lr_scheduler.CosineAnnealingLR"
    target = _callable("scheduler._target_", scheduler["_target_"], example, problems)
    if scheduler.get("_partial_") is not True:
        problems.append(
            f"scheduler._partial_={scheduler.get('_partial_')!r}: expected true (the schedule "
            "is built later, with the optimiser)"
        )
    interval = scheduler.get("interval")
    if interval not in INTERVALS:
        problems.append(f"scheduler.interval={interval!r}: expected one of {list(INTERVALS)}")
    length = scheduler.get("run_length_argument")
    if length is not None and not isinstance(length, str):
        problems.append(
            f"scheduler.run_length_argument={_shown(length)}: expected the name of the argument "
            "that takes the run's length (T_max, total_iters, ...) or null"
        )
        length = None
    if target is not None:
        arguments = {
            k: v for k, v in scheduler.items() if k not in HYDRA_KEYS and k not in SCHEDULE_KEYS
        }
        _arguments("scheduler", target, {**arguments, **({length: 1} if length else {})}, problems)


def check_train_config(cfg: DictConfig) -> None:
    """Raise a ShiftlabError naming every setting of ``cfg`` whose type or value cannot train."""
    problems: list[str] = []
    for key in SEEDS:
        value = OmegaConf.select(cfg, key)
        low, high = SEED_RANGE
        if not (isinstance(value, int) and not isinstance(value, bool)):
            problems.append(f"{key}={_shown(value)}: expected an int (a whole number, {key}=3)")
        elif not low <= value <= high:
            problems.append(f"{key}={value}: expected an int from {low} to {high}")
    for key in SWITCHES:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, bool):
            problems.append(f"{key}={_shown(value)}: expected a bool ({key}=true or false)")
    _check_optimizer(_plain(cfg.get("optim")), problems)
    _check_scheduler(_plain(cfg.get("scheduler")), problems)
    evaluation = _plain(cfg.get("evaluation"))
    if isinstance(evaluation, Mapping):
        problems += check_evaluation(evaluation)
    else:
        problems.append(
            f"evaluation={_shown(evaluation)}: expected the threshold rule and ECE bins "
            "(evaluation: {threshold: {rule: youden, target_sensitivity: 0.9}, ece_bins: 15})"
        )
    loggers = cfg.get("logger")
    if not (isinstance(loggers, Mapping) and "csv" in loggers):
        problems.append(
            "logger.csv is missing: the run record's curves (csv/metrics.csv) are always written; "
            "logger=<name> adds a logger beside them"
        )
    if problems:
        raise ShiftlabError("; ".join(problems) + ". Nothing was generated or trained.")


class SettingsCheck(Callback):
    """Before Hydra makes a run's folder, or a multirun's: ``check_train_config``."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Exits (status 2) rather than raising: Hydra turns a callback's exception into a warning.
        with exit_on_user_error():
            check_train_config(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_on_user_error():
            check_train_config(config)
