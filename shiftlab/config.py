"""Where shiftlab's Hydra config tree lives, and the resolvers its configs use.

``${run_hash:}`` names run directories by the settings hash (``shiftlab.identity``),
``${dataset_root:<name>}`` places a dataset (or its twin), ``${visible_gpu_count:}`` sizes the
local multi-GPU launcher. Every entry point calls ``register_resolvers`` before composing.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from shiftlab.identity import settings_hash

# The config tree, inside the package so that a wheel carries it (Hydra's application packaging:
# hydra.cc/docs/advanced/app_packaging). An absolute path: Hydra resolves a relative config_path
# against the calling module only when it runs as `python -m`, not when a console script imports
# it (then as pkg://, which would need the tree to be an importable package).
CONF_DIR = Path(__file__).resolve().parent / "conf"


def dataset_root(name: str, *, _root_: DictConfig) -> str:
    """Where a preset's files live: its real download, or its miniature twin when ``twin=true``.

    Twins live apart (``<data_dir>/twins/<name>``) so switching never mixes a twin's manifest or
    cache with the real dataset's.
    """
    data_dir = _root_.paths.data_dir
    return f"{data_dir}/twins/{name}" if _root_.get("twin", False) else f"{data_dir}/{name}"


# What the resolvers that read the config's root (``_root_``) read of it, by dotted key. The fast
# planner (shiftlab.planning) resolves an interpolation that calls one again only for a job that
# changes one of these keys; a resolver missing here counts as reading everything. Keep this in
# step with the resolver's code.
ROOT_READS = {"dataset_root": ("paths.data_dir", "twin")}


def _visible_gpu_count() -> int:
    from shiftlab.runs.gpu_slots import (
        visible_gpus,  # the launcher's business, imported only when asked
    )

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
