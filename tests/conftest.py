"""Shared fixtures: the real config tree, synthetic DICOM sets and one trained run per session.

Everything here goes through the real pieces: Hydra composes the config tree, the synthetic
generator writes DICOM files through the dataset config, ingest builds the manifest, and Lightning
trains. Every path a test writes to is a pytest temporary directory; W&B is forced offline. What
tests share besides fixtures (composing configs, the sets' sizes, DICOM series written by hand)
is in ``helpers/``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.compose import compose_config, compose_train
from helpers.sets import (
    DEFAULT_RUN_EPOCHS,
    FULL_PATIENTS,
    SMALL_PATIENTS,
    TINY_DATA,
    PresetTwin,
    SyntheticSet,
    TrainedRun,
)

from shiftlab.data.prepare import ensure_manifest
from shiftlab.ingest.run import ensure_twin, run_ingest


@pytest.fixture(scope="session", autouse=True)
def wandb_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No test may talk to W&B servers or write W&B files outside a temporary folder."""
    base = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            patch.setenv(name, str(base / name.lower()))
        patch.delenv("WANDB_API_KEY", raising=False)
        yield base


@pytest.fixture(scope="session")
def synthetic_set(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[int], SyntheticSet]:
    """Generate (through the real dataset config) and ingest a synthetic set once per size.

    All sizes share one data folder, so they share the pseudonym key and the array cache as a
    user's data folder would. Tests must not modify these files; tests that damage data make
    their own set in their own temporary folder.
    """
    data_dir = tmp_path_factory.mktemp("data")
    output_dir = tmp_path_factory.mktemp("outputs")
    made: dict[int, SyntheticSet] = {}

    def get(patients_per_vendor: int) -> SyntheticSet:
        if patients_per_vendor not in made:
            overrides = (
                f"dataset.synthetic.patients_per_vendor={patients_per_vendor}",
                # The full shift, not the calibrated default: tests of "a shift is measured"
                # need a margin far above seed-to-seed noise.
                "dataset.synthetic.severity=1.0",
                # The split the test margins below were measured with (the default set is
                # larger and holds out more test patients).
                "dataset.split_fractions={train:0.5,val:0.15,test:0.35}",
            )
            cfg = compose_train(data_dir, output_dir, *overrides)
            with contextlib.redirect_stdout(io.StringIO()):
                ensure_manifest(cfg)
            made[patients_per_vendor] = SyntheticSet(
                data_dir=data_dir,
                patients_per_vendor=patients_per_vendor,
                overrides=overrides,
                root=Path(cfg.dataset.root),
                manifest_dir=Path(cfg.dataset.manifest_dir),
            )
        return made[patients_per_vendor]

    return get


@pytest.fixture(scope="session")
def small_set(synthetic_set: Callable[[int], SyntheticSet]) -> SyntheticSet:
    return synthetic_set(SMALL_PATIENTS)


@pytest.fixture(scope="session")
def full_set(synthetic_set: Callable[[int], SyntheticSet]) -> SyntheticSet:
    return synthetic_set(FULL_PATIENTS)


@pytest.fixture(scope="session")
def default_run(full_set: SyntheticSet, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """The user's main job on the default synthetic set (ge -> siemens), trained once."""
    from shiftlab.train import train

    run_dir = tmp_path_factory.mktemp("default-run")
    outputs = tmp_path_factory.mktemp("default-run-outputs")
    cfg = full_set.compose(outputs, f"trainer.max_epochs={DEFAULT_RUN_EPOCHS}")
    result = train(cfg, run_dir)
    return TrainedRun(cfg=cfg, run_dir=run_dir, result=result, data=full_set)


@pytest.fixture(scope="session")
def preset_twin(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], PresetTwin]:
    """Each real preset's twin, generated and ingested once per session in a data folder of its
    own, for the preset tests in several modules. Tests read it and never change its files; a
    test that ingests a twin otherwise makes its own."""
    made: dict[str, PresetTwin] = {}

    def get(preset: str) -> PresetTwin:
        if preset not in made:
            base = tmp_path_factory.mktemp(preset)
            cfg = compose_config(
                "ingest", base / "data", base / "out", f"dataset={preset}", "twin=true"
            )
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                ensure_twin(cfg.dataset)
                run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)
            made[preset] = PresetTwin(cfg=cfg, output=out.getvalue())
        return made[preset]

    return get


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose data/ holds the tiny synthetic set, generated and ingested once per session
    for the tests of a run's mechanics. Tests link or read it and never change its files."""
    base = tmp_path_factory.mktemp("tiny")
    with contextlib.redirect_stdout(io.StringIO()):
        ensure_manifest(compose_train(base / "data", base / "out", *TINY_DATA))
    return base
