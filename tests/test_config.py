"""The real config tree composes, and overrides land where the code reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.compose import compose_config, compose_train
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from shiftlab.config import CONF_DIR, register_resolvers
from shiftlab.identity import settings, settings_hash

DATASETS = sorted(p.stem for p in (CONF_DIR / "dataset").glob("*.yaml"))


def test_there_are_datasets_to_check() -> None:
    assert {"synthetic_mri", "mri_breast"} <= set(DATASETS)


def test_default_train_config_is_the_synthetic_mri_job(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path / "data", tmp_path / "out")
    assert cfg.dataset.name == "synthetic_mri"
    assert (cfg.source, cfg.target) == ("ge", "siemens")
    assert cfg.seed == 0 and cfg.split_seed == 0
    assert cfg.model.name == "mrnet2d"
    assert set(cfg.logger) == {"csv"} and cfg.logger.csv._target_.endswith("CSVLogger")


@pytest.mark.parametrize("dataset", DATASETS)
def test_train_composes_for_every_dataset(dataset: str, tmp_path: Path) -> None:
    data_dir, out_dir = tmp_path / "data", tmp_path / "out"
    cfg = compose_train(data_dir, out_dir, f"dataset={dataset}")
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves

    assert resolved["dataset"]["name"] == dataset
    source, target = cfg.dataset.domains.source, cfg.dataset.domains.target
    assert source != target
    assert (resolved["source"], resolved["target"]) == (source, target)
    assert (resolved["data"]["source"], resolved["data"]["target"]) == (source, target)
    assert resolved["callbacks"]["checkpoint"]["monitor"] == f"val/{source}/auroc"
    assert resolved["data"]["dataset_name"] == dataset
    assert resolved["data"]["preprocess"] == resolved["dataset"]["preprocess"]
    # The dataset's own network unless model= says otherwise.
    network = {
        "synthetic_ct": "nodulex",
        "ct_lung_nodule": "nodulex",
        "ct_head": "nodulex3d",
        "synthetic_xray": "densenet121",
        "xray_chest": "densenet121",
        "xray_chest_vindr": "densenet121",
        "xray_mammo": "densenet121",
    }.get(dataset, "mrnet2d")
    assert resolved["model"]["name"] == network
    if network == "mrnet2d":
        stride = resolved["dataset"].get("mrnet_first_conv_stride", 4)
        assert resolved["model"]["net"]["first_conv_stride"] == stride
    override = compose_train(data_dir, out_dir, f"dataset={dataset}", "model=smallcnn")
    assert override.model.name == "smallcnn"
    # Everything the dataset owns lives under the data folder that was asked for.
    for key in ("root", "dicom_root", "manifest_dir"):
        assert Path(resolved["dataset"][key]).is_relative_to(data_dir), key
    assert Path(resolved["data"]["cache_dir"]).is_relative_to(data_dir)


def test_overrides_land_where_the_code_reads_them(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path / "data",
        tmp_path / "out",
        "seed=3",
        "trainer.max_epochs=2",
        "source=siemens",
        "target=ge",
    )
    assert cfg.seed == 3
    assert cfg.trainer.max_epochs == 2
    assert (cfg.source, cfg.target) == ("siemens", "ge")
    assert (cfg.data.source, cfg.data.target) == ("siemens", "ge")
    assert cfg.callbacks.checkpoint.monitor == "val/siemens/auroc"
    # The dataset's defaults are untouched; the run's choice is the top-level key.
    assert (cfg.dataset.domains.source, cfg.dataset.domains.target) == ("ge", "siemens")
    # Without a top-level choice, the dataset's own defaults decide.
    flipped = compose_train(
        tmp_path / "data",
        tmp_path / "out",
        "dataset.domains.source=siemens",
        "dataset.domains.target=ge",
    )
    assert (flipped.source, flipped.target) == ("siemens", "ge")
    assert flipped.callbacks.checkpoint.monitor == "val/siemens/auroc"


def test_wandb_logger_groups_by_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_train(
        tmp_path / "data",
        tmp_path / "out",
        "logger=wandb",
        "dataset=mri_breast",
        "source=siemens",
        "target=ge",
        "seed=7",
    )
    logger = OmegaConf.to_container(cfg.logger.wandb, resolve=True)
    assert logger["_target_"] == "shiftlab.loggers.wandb.MaskedWandbLogger"
    assert logger["group"] == "mri_breast/siemens->ge"
    assert logger["name"] == "mrnet2d-seed7"
    assert set(logger["tags"]) >= {
        "dataset:mri_breast",
        "modality:MR",
        "direction:siemens->ge",
        "seed:7",
    }
    assert logger["mode"] == "offline", "nothing may leave the machine unless asked for"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert compose_train(tmp_path, tmp_path, "logger=wandb").logger.wandb.mode == "disabled"


@pytest.mark.parametrize("dataset", [None, *DATASETS])
def test_ingest_composes(dataset: str | None, tmp_path: Path) -> None:
    overrides = [] if dataset is None else [f"dataset={dataset}"]
    cfg = compose_config("ingest", tmp_path / "data", tmp_path / "out", *overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["dataset"]["name"] == (dataset or "synthetic_mri")
    assert resolved["split_seed"] == 0
    assert Path(resolved["dataset"]["manifest_dir"]).is_relative_to(tmp_path / "data")
    assert Path(resolved["paths"]["pseudonym_key"]).is_relative_to(tmp_path / "data")
    overridden = compose_config("ingest", tmp_path / "data", tmp_path / "out", "split_seed=4")
    assert overridden.split_seed == 4


def test_settings_hash_ignores_locations_but_not_settings(tmp_path: Path) -> None:
    """Run directories are named by this hash: the same settings elsewhere are the same run."""
    here = compose_train(tmp_path / "a", tmp_path / "out-a")
    elsewhere = compose_train(tmp_path / "b", tmp_path / "out-b", "logger=wandb")
    assert settings_hash(here) == settings_hash(elsewhere)
    changes = ("seed=1", "split_seed=1", "source=siemens", "trainer.max_epochs=3", "optim.lr=0.01")
    for change in changes:
        changed = compose_train(tmp_path / "a", tmp_path / "out-a", change)
        assert settings_hash(changed) != settings_hash(here), change
    # The settings (what W&B receives) hold no local path.
    text = OmegaConf.to_yaml(OmegaConf.create(settings(here)))
    assert str(tmp_path) not in text
    assert "paths" not in settings(here) and "logger" not in settings(here)


def test_run_directory_is_named_by_scenario_seed_and_settings_hash(tmp_path: Path) -> None:
    register_resolvers()
    overrides = [f"paths.data_dir='{tmp_path / 'data'}'", f"paths.output_dir='{tmp_path / 'out'}'"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "seed=0"], return_hydra_config=True)
        other = compose("train", overrides=[*overrides, "seed=5"], return_hydra_config=True)
    expected = tmp_path / "out" / "runs" / "synthetic_mri" / "ge-siemens"
    assert Path(cfg.hydra.run.dir) == expected / f"mrnet2d-seed0-{settings_hash(cfg)}"
    assert Path(cfg.hydra.sweep.dir) / cfg.hydra.sweep.subdir == Path(cfg.hydra.run.dir)
    assert Path(other.hydra.run.dir).name == f"mrnet2d-seed5-{settings_hash(other)}"
    assert settings_hash(other) != settings_hash(cfg)


def test_mammograms_are_not_flipped_unless_asked(tmp_path: Path) -> None:
    """Flips would undo the chest-wall alignment of the mammography preset; others keep them."""
    data, out = tmp_path / "data", tmp_path / "out"
    assert compose_train(data, out, "dataset=xray_mammo").data.hflip is False
    assert compose_train(data, out, "dataset=xray_chest").data.hflip is True
    assert compose_train(data, out, "dataset=xray_mammo", "data.hflip=true").data.hflip is True
