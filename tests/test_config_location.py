"""Where the configs live: inside the package (``shiftlab/conf/``, so a wheel carries them), with a
user's own folder added by ``--config-dir`` or ``hydra.searchpath`` (issue 17.1); a run's identity
(its settings hash, which names its folder) does not depend on either."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.compose import REPO, compose_train
from hydra import compose, initialize_config_dir

import shiftlab
from shiftlab.config import CONF_DIR, register_resolvers
from shiftlab.identity import settings_hash

# Computed at bd88f32, when the tree was <repo>/conf: the run folders made before the move are
# the ones a relaunch finds after it.
HASHES_BEFORE_THE_MOVE = {
    "ae9f379d5d40": (),
    "a407abfb6446": ("dataset=synthetic_ct",),
    "09b39609d282": ("dataset=xray_chest", "direction=reverse", "model=densenet121"),
    "45e3b28b398e": ("experiment=paper_grid", "dataset=mri_prostate", "shift=noise"),
    "5afda6613726": ("dataset=ct_head", "seed=3", "scheduler=none"),
}
# A user's dataset, in a folder of their own: the packaged synthetic set with another seed. Its
# defaults list names the packaged config, which the search path finds.
SITE_C = """\
defaults:
  - synthetic_mri
  - _self_

name: site_c
synthetic:
  seed: 1
"""


def test_the_config_tree_is_part_of_the_package() -> None:
    assert Path(shiftlab.__file__).resolve().parent / "conf" == CONF_DIR
    assert {"train.yaml", "ingest.yaml", "evaluate.yaml"} <= {p.name for p in CONF_DIR.iterdir()}


@pytest.mark.parametrize(("expected", "overrides"), HASHES_BEFORE_THE_MOVE.items())
def test_runs_made_before_the_move_keep_their_settings_hash(
    expected: str, overrides: tuple[str, ...], tmp_path: Path
) -> None:
    assert settings_hash(compose_train(tmp_path / "data", tmp_path / "out", *overrides)) == expected


def test_the_same_tree_elsewhere_gives_the_same_hashes(tmp_path: Path) -> None:
    """Nothing that is hashed holds the tree's location: a copy in another folder (as a wheel
    installs it in site-packages) composes the same settings."""
    elsewhere = tmp_path / "site-packages" / "shiftlab" / "conf"
    shutil.copytree(CONF_DIR, elsewhere)
    register_resolvers()
    places = (f"paths.data_dir='{tmp_path / 'data'}'", f"paths.output_dir='{tmp_path / 'out'}'")
    for expected, overrides in HASHES_BEFORE_THE_MOVE.items():
        with initialize_config_dir(config_dir=str(elsewhere), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[*places, *overrides])
        assert settings_hash(cfg) == expected


def users_folder(base: Path) -> Path:
    mine = base / "my-configs"
    (mine / "dataset").mkdir(parents=True)
    (mine / "dataset" / "site_c.yaml").write_text(SITE_C)
    (mine / "dataset" / "synthetic_mri.yaml").write_text("name: not_the_packaged_one\n")
    return mine


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_a_users_own_folder_adds_a_dataset(how: str, tmp_path: Path) -> None:
    """From a folder outside the checkout, the user's ``dataset/site_c.yaml`` is found, and
    builds on a packaged config."""
    mine = users_folder(tmp_path)
    where = ["--config-dir", str(mine)] if how == "--config-dir" else [f"{how}=[file://{mine}]"]
    shown = subprocess.run(
        [sys.executable, "-m", "shiftlab.train", *where, "dataset=site_c", "--cfg", "job"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "  name: site_c\n" in shown.stdout and "    seed: 1\n" in shown.stdout
    assert "MRIPreprocessor" in shown.stdout, "the packaged synthetic_mri underneath"


def test_a_packaged_config_is_found_before_a_users_of_the_same_name(tmp_path: Path) -> None:
    """What docs/configs.md says: the user's folder adds configs, never replaces packaged ones."""
    searchpath = f"hydra.searchpath=[file://{users_folder(tmp_path)}]"

    def dataset(name: str) -> str:
        cfg = compose_train(tmp_path / "data", tmp_path / "out", searchpath, f"dataset={name}")
        return cfg.dataset.name

    assert dataset("site_c") == "site_c", "the folder is searched"
    assert dataset("synthetic_mri") == "synthetic_mri"
