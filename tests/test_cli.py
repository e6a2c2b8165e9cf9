"""``python -m shiftlab.train`` as a user runs it, in a fresh process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.compose import REPO, compose_train


def run_train(tmp_path: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the entry point from an empty working folder, with data and outputs in tmp folders."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {
        **os.environ,
        "SHIFTLAB_DATA_DIR": str(tmp_path / "data"),
        "SHIFTLAB_OUTPUT_DIR": str(tmp_path / "outputs"),
        "WANDB_MODE": "offline",
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        [sys.executable, "-m", "shiftlab.train", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert list(cwd.iterdir()) == [], "nothing may be written to the working folder"
    return result


@pytest.mark.slow
def test_missing_real_dataset_says_where_to_get_it(tmp_path: Path) -> None:
    result = run_train(tmp_path, "dataset=mri_breast", "source=ge", "target=siemens")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    expected_folder = tmp_path / "data" / "mri_breast" / "Duke-Breast-Cancer-MRI"
    assert str(expected_folder) in result.stderr
    download = compose_train(tmp_path / "data", tmp_path / "out", "dataset=mri_breast").dataset
    url = re.search(r"https://\S+", download.download)
    assert url and "cancerimagingarchive.net" in url.group(), download.download
    assert url.group() in result.stderr
    assert "python -m shiftlab.ingest dataset=mri_breast" in result.stderr
    assert not list((tmp_path / "outputs").rglob("done"))


@pytest.mark.slow
def test_synthetic_run_prints_the_summary_and_writes_the_record(tmp_path: Path) -> None:
    result = run_train(tmp_path, "dataset.synthetic.patients_per_vendor=40", "trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "generating synthetic dataset synthetic_mri" in out, "first use generates the data"
    source = re.search(r"test AUROC\s+source ge: ([0-9.]+)", out)
    target = re.search(r"test AUROC\s+target siemens: ([0-9.]+)", out)
    delta = re.search(r"ΔAUC \(target - source\): ([+-][0-9.]+)", out)
    record = re.search(r"run record: (\S+)", out)
    assert source and target and delta and record, out

    run_dir = Path(record.group(1))
    runs = tmp_path / "outputs" / "runs" / "synthetic_mri" / "ge-siemens"
    assert run_dir.parent == runs and run_dir.name.startswith("mrnet2d-seed0-")
    assert (run_dir / "done").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run_dir.name.endswith(metrics["config_hash"])
    m = metrics["metrics"]
    assert float(source.group(1)) == pytest.approx(m["test/ge/auroc"], abs=5e-4)
    assert float(target.group(1)) == pytest.approx(m["test/siemens/auroc"], abs=5e-4)
    assert float(delta.group(1)) == pytest.approx(m["test/delta_auroc"], abs=5e-4)
    # The synthetic data went where SHIFTLAB_DATA_DIR points.
    assert list((tmp_path / "data").rglob("manifest.json"))


@pytest.mark.parametrize(
    "script",
    # shiftlab-train imports the training stack before it answers (seconds): slow.
    [pytest.param("shiftlab-train", marks=pytest.mark.slow), "shiftlab-ingest", "shiftlab-grid"],
)
def test_console_scripts_find_the_config_tree_from_any_folder(script: str, tmp_path: Path) -> None:
    """Console scripts import their module instead of running it as __main__: the config tree
    must still be found, whatever the working directory."""
    executable = Path(sys.executable).parent / script
    arguments = ["--help"] if script == "shiftlab-grid" else ["--cfg", "job"]
    result = subprocess.run(
        [str(executable), *arguments], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_the_version_is_written_once_and_shown_by_the_command(tmp_path: Path) -> None:
    """pyproject reads the version from shiftlab.__version__, so the installed metadata, the
    package and ``python -m shiftlab --version`` agree."""
    from importlib.metadata import version

    import shiftlab

    shown = subprocess.run(
        [sys.executable, "-m", "shiftlab", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"shiftlab {shiftlab.__version__}"
    assert version("shiftlab") == shiftlab.__version__
    assert not re.search(r'^version\s*=\s*"', (REPO / "pyproject.toml").read_text(), re.M)


@pytest.mark.slow
def test_help_describes_shiftlab_its_groups_and_examples(tmp_path: Path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "shiftlab.train", "--help"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "ΔAUC" in text and "Powered by Hydra" not in text
    groups = dict(re.findall(r"^(\w+): (.+)$", text, re.M))
    assert {"mri_breast", "xray_chest", "synthetic_mri"} <= set(groups["dataset"].split(", "))
    assert set(groups["shift"].split(", ")) == {"none", "injection", "noise"}
    assert len(re.findall(r"^\s+python -m shiftlab\.train", text, re.M)) == 3
