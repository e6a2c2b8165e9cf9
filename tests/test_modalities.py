"""Every modality end to end: its synthetic DICOM set, its preprocessing, its network, a record.

One short run per modality through the real pipeline (generation, ingest, cache, Lightning),
then a second run that must be served from the cache alone.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.compose import compose_train

from shiftlab.data import cache
from shiftlab.train import train

# Each modality's own network trained on its set: the slow suite (docs/tests.md).
pytestmark = pytest.mark.slow

# dataset -> (network it defaults to, input shape of one sample, source, target)
MODALITIES = {
    "synthetic_mri": ("mrnet2d", (3, 64, 64), "ge", "siemens"),
    "synthetic_ct": ("nodulex", (5, 47, 47), "ge", "siemens"),
    "synthetic_xray": ("densenet121", (1, 64, 64), "ge", "philips"),
}
PATIENTS = 40


def _run(data_dir: Path, run_dir: Path, dataset: str, *overrides: str) -> dict:
    cfg = compose_train(
        data_dir,
        run_dir.parent / "outputs",
        f"dataset={dataset}",
        f"dataset.synthetic.patients_per_vendor={PATIENTS}",
        "trainer.max_epochs=1",
        "data.batch_size=8",
        *overrides,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return train(cfg, run_dir)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("modalities-data")


@pytest.mark.parametrize("dataset", sorted(MODALITIES))
def test_each_modality_trains_with_its_network_and_writes_a_record(
    dataset: str, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    network, shape, source, target = MODALITIES[dataset]
    result = _run(data_dir, tmp_path / "first", dataset)
    assert result["model"] == network
    assert (tmp_path / "first" / "done").exists()
    metrics = result["metrics"]
    for domain in (source, target):
        assert 0 <= metrics[f"test/{domain}/auroc"] <= 1
    predictions = pd.read_csv(tmp_path / "first" / "predictions.csv")
    predictions = predictions[predictions["split"] == "test"]
    assert set(predictions["domain"]) == {source, target}
    assert len(predictions) == sum(result["samples"][d]["test"] for d in (source, target))
    shapes = [np.load(p, mmap_mode="r").shape[1:] for p in (data_dir / "cache").glob("*.npy")]
    assert shape in shapes, shapes

    # A second run (another seed) must not decode a single DICOM file.
    def no_decoding(files: object) -> None:
        raise AssertionError(f"decoded DICOM again: {files}")

    monkeypatch.setattr(cache, "read_slices", no_decoding)
    again = _run(data_dir, tmp_path / "second", dataset, "seed=1")
    assert again["manifest_sha256"] == result["manifest_sha256"]


def test_nodulex3d_trains_on_a_cubic_patch(data_dir: Path, tmp_path: Path) -> None:
    """The 3D variant, selected by config, on a cube resampled to isotropic 1.5 mm voxels."""
    result = _run(
        data_dir,
        tmp_path / "run",
        "synthetic_ct",
        "model=nodulex3d",
        "dataset.preprocess.patch=[16,16,16]",
        "dataset.preprocess.spacing_mm=[1.5,1.5,1.5]",
    )
    assert result["model"] == "nodulex3d"
    shapes = [np.load(p, mmap_mode="r").shape[1:] for p in (data_dir / "cache").glob("*.npy")]
    assert (16, 16, 16) in shapes
