"""A run's identity: its settings with machine-specific locations masked, and their hash.

Run directories are named by the hash (not by timestamps), so two launches of the same settings
find each other's runs, on any machine. Where files live (``paths``, shown as ``<data_dir>`` …
wherever they are interpolated), how the run is logged (``logger``) or launched (``launcher``),
what the trainer only displays (``DISPLAY_ONLY``) and Hydra's own settings do not change a result
and are left out. The same settings are what reaches W&B, where every other value that is a local
path, or text that holds one, is masked too (``shiftlab.local_paths``): a folder name can be a
PatientID. The hash reads the optimiser settings of shiftlab 0.1.0's shape where they mean the
same (``hashed_settings``), so run directories made before ``optim`` named its class keep theirs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# The config tree, inside the package so that a wheel carries it (Hydra's application packaging:
# hydra.cc/docs/advanced/app_packaging). An absolute path: Hydra resolves a relative config_path
# against the calling module only when it runs as `python -m`, not when a console script imports
# it (then as pkg://, which would need the tree to be an importable package).
CONF_DIR = Path(__file__).resolve().parent / "conf"

NOT_SETTINGS = ("hydra", "paths", "logger", "launcher")
# Trainer options that change what is printed or how often curves are logged, never the model.
DISPLAY_ONLY = ("enable_progress_bar", "enable_model_summary", "log_every_n_steps")


def settings(cfg: DictConfig) -> dict[str, Any]:
    raw = OmegaConf.to_container(cfg, resolve=False)
    # Dropped before resolving: nothing interpolates them, and the launcher's settings may ask
    # the machine (its GPU count), which a run's identity must not depend on.
    for key in ("hydra", "logger", "launcher"):
        raw.pop(key, None)
    raw["paths"] = {key: f"<{key}>" for key in raw.get("paths", {})}
    resolved = OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
    for key in DISPLAY_ONLY:
        resolved.get("trainer", {}).pop(key, None)
    return {key: value for key, value in resolved.items() if key not in NOT_SETTINGS}


# How ``optim`` read before it named its class (shiftlab 0.1.0): Adam's ``lr`` and
# ``weight_decay``, and ``scheduler: cosine | none``, now the ``scheduler`` group. These are the
# group's options as shipped; a run of Adam with one of them hashes in the old shape, so the run
# directories of 0.1.0 keep their names and a relaunch finds them (tests/test_schema.py).
ADAM = "torch.optim.Adam"
SCHEDULERS_OF_0_1 = {
    "cosine": {
        "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
        "_partial_": True,
        "interval": "step",
        "run_length_argument": "T_max",
    },
    "none": {"_target_": None},
}


def hashed_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The settings as the hash reads them: an Adam run with a scheduler that 0.1.0 had, in the
    shape ``optim`` had then; every other optimiser or schedule as it is."""
    optim, scheduler = values.get("optim"), values.get("scheduler")
    if not (isinstance(optim, dict) and isinstance(scheduler, dict)):
        return values
    if optim.get("_target_") != ADAM or optim.get("_partial_") is not True:
        return values
    if set(optim) != {"_target_", "_partial_", "lr", "weight_decay"}:
        return values
    name = next((n for n, shape in SCHEDULERS_OF_0_1.items() if shape == scheduler), None)
    if name is None:
        return values
    old = {"lr": optim["lr"], "weight_decay": optim["weight_decay"], "scheduler": name}
    return {**{k: v for k, v in values.items() if k != "scheduler"}, "optim": old}


def settings_hash(cfg: DictConfig) -> str:
    text = json.dumps(hashed_settings(settings(cfg)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def dataset_root(name: str, *, _root_: DictConfig) -> str:
    """Where a preset's files live: its real download, or its miniature twin when ``twin=true``.

    Twins live apart (``<data_dir>/twins/<name>``) so switching never mixes a twin's manifest or
    cache with the real dataset's.
    """
    data_dir = _root_.paths.data_dir
    return f"{data_dir}/twins/{name}" if _root_.get("twin", False) else f"{data_dir}/{name}"


def _visible_gpu_count() -> int:
    from shiftlab.gpu_slots import visible_gpus  # the launcher's business, imported only when asked

    return len(visible_gpus())


def register_resolvers() -> None:
    """``${run_hash:}`` in Hydra's run and sweep directories, ``${dataset_root:<name>}`` in
    dataset configs, ``${visible_gpu_count:}`` in the local multi-GPU launcher."""
    if not OmegaConf.has_resolver("run_hash"):
        OmegaConf.register_new_resolver("run_hash", lambda *, _root_: settings_hash(_root_))
    if not OmegaConf.has_resolver("visible_gpu_count"):
        OmegaConf.register_new_resolver("visible_gpu_count", _visible_gpu_count)
    if not OmegaConf.has_resolver("dataset_root"):
        OmegaConf.register_new_resolver("dataset_root", dataset_root)
