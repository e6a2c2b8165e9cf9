"""A run's identity: its settings with machine-specific locations masked, and their hash.

Run directories are named by the hash (not by timestamps), so two launches of the same settings
find each other's runs, on any machine. Where files live (``paths``, shown as ``<data_dir>`` …
wherever they are interpolated), how the run is logged (``logger``) and Hydra's own settings do
not change a result and are left out. The same masked settings are what reaches W&B, so no local
path (which may hold a patient folder name) leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

NOT_SETTINGS = ("hydra", "paths", "logger")


def settings(cfg: DictConfig) -> dict[str, Any]:
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra", None)
    raw["paths"] = {key: f"<{key}>" for key in raw.get("paths", {})}
    resolved = OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
    return {key: value for key, value in resolved.items() if key not in NOT_SETTINGS}


def settings_hash(cfg: DictConfig) -> str:
    text = json.dumps(settings(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def dataset_root(name: str, *, _root_: DictConfig) -> str:
    """Where a preset's files live: its real download, or its miniature twin when ``twin=true``.

    Twins live apart (``<data_dir>/twins/<name>``) so switching never mixes a twin's manifest or
    cache with the real dataset's.
    """
    data_dir = _root_.paths.data_dir
    return f"{data_dir}/twins/{name}" if _root_.get("twin", False) else f"{data_dir}/{name}"


def register_resolvers() -> None:
    """``${run_hash:}`` in Hydra's run and sweep directories, ``${dataset_root:<name>}`` in
    dataset configs."""
    if not OmegaConf.has_resolver("run_hash"):
        OmegaConf.register_new_resolver("run_hash", lambda *, _root_: settings_hash(_root_))
    if not OmegaConf.has_resolver("dataset_root"):
        OmegaConf.register_new_resolver("dataset_root", dataset_root)
