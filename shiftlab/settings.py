"""A run's identity: a hash of the settings that can change its result.

Run directories are named by it (not by timestamps), so two launches of the same settings find
each other's runs. Where files live (``paths``), how the run is logged (``logger``) and Hydra's
own settings do not change a result and are left out.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

NOT_SETTINGS = frozenset({"hydra", "paths", "logger"})


def settings(cfg: DictConfig) -> dict:
    return {
        key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key])
        else cfg[key]
        for key in sorted(cfg)
        if key not in NOT_SETTINGS
    }


def settings_hash(cfg: DictConfig) -> str:
    text = json.dumps(settings(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def register_resolvers() -> None:
    """``${run_hash:}`` in Hydra's run and sweep directories."""
    if not OmegaConf.has_resolver("run_hash"):
        OmegaConf.register_new_resolver("run_hash", lambda *, _root_: settings_hash(_root_))
