"""The seven real presets: all 14 scenarios compose and take a training step on their twins, and
without data each preset says where to download it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.compose import REPO, compose_train

from shiftlab.config import CONF_DIR
from shiftlab.data.prepare import ensure_manifest
from shiftlab.errors import ShiftlabError
from shiftlab.train import train

# preset -> its default (source, target); both directions are the study's two scenarios.
PRESETS = {
    "mri_breast": ("ge", "siemens"),
    "mri_prostate": ("siemens", "other"),
    "mri_brain": ("siemens", "ge"),
    "ct_lung_nodule": ("ge", "siemens"),
    "ct_head": ("ge", "philips"),
    "xray_chest": ("philips", "imaging_dynamics"),
    "xray_mammo": ("siemens", "planmed"),
}
SCENARIOS = [
    (preset, a, b)
    for preset, (source, target) in PRESETS.items()
    for a, b in ((source, target), (target, source))
]
ONE_STEP = (
    "twin=true",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=1",
    "data.batch_size=4",
    "data.eval_batch_size=16",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for every twin: each is generated and ingested once, by its first run."""
    return tmp_path_factory.mktemp("twins")


def test_presets_are_the_seven_of_the_study() -> None:
    presets = {p.stem for p in (CONF_DIR / "dataset").glob("*.yaml")}
    assert set(PRESETS) <= presets


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "source", "target"), SCENARIOS)
def test_scenario_composes_and_trains_one_step_on_its_twin(
    preset: str, source: str, target: str, data_dir: Path, tmp_path: Path
) -> None:
    cfg = compose_train(
        data_dir,
        tmp_path / "out",
        f"dataset={preset}",
        f"source={source}",
        f"target={target}",
        *ONE_STEP,
    )
    assert cfg.dataset.root == f"{data_dir}/twins/{preset}"
    assert (cfg.source, cfg.target) == (source, target)
    result = train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "done").exists()
    assert result["scenario"] == f"{preset}/{source}->{target}"
    for domain in (source, target):
        assert 0.0 <= result["metrics"][f"test/{domain}/auroc"] <= 1.0
    assert (Path(cfg.dataset.root) / "TWIN.txt").exists()


@pytest.mark.parametrize("preset", list(PRESETS))
def test_missing_real_dataset_prints_its_own_download_instructions(
    preset: str, tmp_path: Path
) -> None:
    cfg = compose_train(tmp_path / "empty", tmp_path / "out", f"dataset={preset}")
    assert cfg.dataset.root == f"{tmp_path / 'empty'}/{preset}"
    with pytest.raises(ShiftlabError) as error:
        ensure_manifest(cfg)
    message = str(error.value)
    assert str(cfg.dataset.dicom_root) in message
    assert "https://" in message
    assert f"python -m shiftlab.ingest dataset={preset}" in message
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").rglob("*.dcm"))


@pytest.mark.slow
def test_missing_dataset_on_the_command_line_exits_2_with_instructions(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shiftlab.train",
            "dataset=ct_lung_nodule",
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.output_dir={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "LIDC-IDRI" in result.stderr
    assert "twin=true" in result.stderr
