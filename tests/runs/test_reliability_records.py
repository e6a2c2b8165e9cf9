"""Every run record says what made it: the code version (commit and dirty state, or the package
version outside a checkout), the package versions and the manifest hash."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from helpers.compose import compose_train

from shiftlab.runs import provenance
from shiftlab.train import train

TINY = (
    "dataset.synthetic.patients_per_vendor=12",
    "model=smallcnn",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
)
REQUIRED_PACKAGES = ("torch", "lightning", "monai", "pydicom", "numpy", "hydra-core", "omegaconf")


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("record")
    cfg = compose_train(base / "data", base / "out", *TINY)
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg, base / "run")
    return base / "run"


def test_metrics_name_the_code_packages_and_manifest(record: Path) -> None:
    metrics = json.loads((record / "metrics.json").read_text())
    code = metrics["code"]
    assert set(code) == {"version", "commit", "dirty", "dirty_hash"}
    assert metrics["code_version"] == provenance.code_version(code)
    if code["commit"] is not None:  # a git checkout (CI's clean clone included)
        head = subprocess.run(
            ["git", "-C", str(provenance.ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert code["commit"] == head
        assert metrics["code_version"].startswith(f"git:{head[:12]}")
        assert isinstance(code["dirty"], bool)
    for name in REQUIRED_PACKAGES:
        assert metrics["packages"][name] == metadata.version(name), name
    assert metrics["packages"]["python"]
    manifest = json.loads((Path(metrics_manifest_dir(record)) / "manifest.json").read_text())
    assert metrics["manifest_sha256"] == manifest["sha256"]
    [attempt] = json.loads((record / "attempts.json").read_text())
    assert attempt["code_version"] == metrics["code_version"]


def metrics_manifest_dir(run_dir: Path) -> str:
    return yaml.safe_load((run_dir / "config.yaml").read_text())["dataset"]["manifest_dir"]


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A git checkout of a miniature shiftlab tree, standing in for the real one."""
    repo = tmp_path / "repo"
    (repo / "shiftlab").mkdir(parents=True)
    (repo / "shiftlab" / "conf").mkdir()
    (repo / "shiftlab" / "train.py").write_text("x = 1\n")
    (repo / "README.md").write_text("docs\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    monkeypatch.setattr(provenance, "ROOT", repo.resolve())

    def version() -> dict:
        provenance.code.cache_clear()
        return provenance.code()

    yield repo, version
    provenance.code.cache_clear()


def test_dirty_state_names_the_difference(checkout) -> None:
    repo, version = checkout
    clean = version()
    assert clean["dirty"] is False and provenance.code_version(clean) == (
        f"git:{clean['commit'][:12]}"
    )
    (repo / "README.md").write_text("other docs\n")
    assert version()["dirty"] is False, "documentation does not change a result"
    (repo / "shiftlab" / "train.py").write_text("x = 2\n")
    first_edit = provenance.code_version(version())
    assert first_edit.startswith(f"git:{clean['commit'][:12]}+dirty.")
    assert provenance.code_version(version()) == first_edit, "the same edit, the same version"
    (repo / "shiftlab" / "train.py").write_text("x = 3\n")
    assert provenance.code_version(version()) != first_edit
    (repo / "shiftlab" / "train.py").write_text("x = 1\n")
    (repo / "shiftlab" / "conf" / "new.yaml").write_text("a: 1\n")
    assert version()["dirty"] is True, "an untracked config file counts"


def test_outside_a_checkout_the_package_version_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provenance, "ROOT", tmp_path.resolve())
    provenance.code.cache_clear()
    try:
        info = provenance.code()
    finally:
        provenance.code.cache_clear()
    assert info["commit"] is None and info["dirty"] is None
    assert provenance.code_version(info) == f"shiftlab-{info['version']}"


def test_a_run_resumed_on_other_code_says_so() -> None:
    scratch = {"resumed_from_epoch": None}
    attempts = [
        {**scratch, "code_version": "git:a"},
        {"resumed_from_epoch": 3, "code_version": "git:b"},
    ]
    assert provenance.trained_by(attempts) == "git:a then git:b"
    assert provenance.trained_by([*attempts, {**scratch, "code_version": "git:c"}]) == "git:c"
    assert provenance.trained_by([{**scratch, "code_version": "git:a"}] * 2) == "git:a"
