"""The real config tree, composed the way the commands compose it, with data and outputs kept in a
test's temporary folders."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from shiftlab.config import CONF_DIR, register_resolvers

REPO = Path(__file__).resolve().parents[2]


def compose_config(
    config_name: str, data_dir: Path, output_dir: Path, *overrides: str
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with data and outputs kept in temporary folders."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name=config_name,
            overrides=[
                f"paths.data_dir='{data_dir}'",
                f"paths.output_dir='{output_dir}'",
                *overrides,
            ],
        )


def compose_train(data_dir: Path, output_dir: Path, *overrides: str) -> DictConfig:
    return compose_config(
        "train", data_dir, output_dir, "trainer.enable_progress_bar=false", *overrides
    )
