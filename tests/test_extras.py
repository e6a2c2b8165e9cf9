"""The core install and the extras (pyproject.toml): what works without them, and what says which
extra to install.

A core install is simulated faithfully: a virtual environment whose site-packages links to this
one's, less every package that an extra (or dev) asks for, so they are neither importable nor
known to importlib.metadata. Its processes run the real command lines.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import os
import re
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.compose import REPO

from shiftlab.extras import MissingExtra, require

EXTRAS = ("wandb", "slurm", "local-gpus", "report", "dev")
Run = Callable[..., subprocess.CompletedProcess]


def _requirements() -> list[tuple[str, str | None]]:
    """(distribution, extra or None for the core) of each of shiftlab's requirements."""
    found = []
    for line in importlib.metadata.requires("shiftlab") or []:
        name = re.match(r"[A-Za-z0-9._-]+", line).group()
        extra = re.search(r"""extra\s*==\s*["']([^"']+)""", line)
        found.append((_normal(name), extra.group(1) if extra else None))
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _owners() -> dict[str, set[str]]:
    """The distributions that install each top-level module, from their file lists
    (importlib.metadata.packages_distributions reads only top_level.txt on Python 3.10, which
    wheels built without setuptools, numpy's among them, do not have)."""
    owners: dict[str, set[str]] = {}
    for distribution in importlib.metadata.distributions():
        # Read once: each .metadata parses the METADATA file again (75 s for every file here).
        name = _normal(distribution.metadata["Name"])
        for file in distribution.files or []:
            top = file.parts[0] if len(file.parts) > 1 else inspect.getmodulename(file.name)
            if top:
                owners.setdefault(top, set()).add(name)
    return owners


def _files(distribution: importlib.metadata.Distribution, site: Path) -> set[Path]:
    """The distribution's files inside site-packages, relative to it."""
    inside = set()
    for file in distribution.files or []:
        path = Path(os.path.normpath(site / file))
        if path.is_relative_to(site):
            inside.add(path.relative_to(site))
    return inside


def _core_site_packages(target: Path) -> None:
    """Links to this environment's site-packages, less the extras' distributions.

    A folder shared with kept distributions (a namespace such as hydra_plugins) is rebuilt
    entry by entry; one that only hidden distributions fill is left out, so it cannot be
    imported as an empty namespace package.
    """
    site = Path(sysconfig.get_paths()["purelib"])
    hidden_names = {name for name, extra in _requirements() if extra and name != "shiftlab"}
    hidden: set[Path] = set()
    kept: set[Path] = set()
    for distribution in importlib.metadata.distributions(path=[str(site)]):
        files = _files(distribution, site)
        (hidden if _normal(distribution.metadata["Name"]) in hidden_names else kept).update(files)
    assert hidden, "the extras' packages must be installed here to be hidden"
    holds_hidden = hidden | {parent for path in hidden for parent in path.parents}
    holds_kept = kept | {parent for path in kept for parent in path.parents}

    def mirror(folder: Path, into: Path) -> None:
        into.mkdir(parents=True, exist_ok=True)
        for entry in folder.iterdir():
            relative = entry.relative_to(site)
            if relative not in holds_hidden:
                (into / entry.name).symlink_to(entry)
            elif relative in holds_kept and entry.is_dir():
                mirror(entry, into / entry.name)

    mirror(site, target)


@pytest.fixture(scope="module")
def core_env(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Run a command of the core install, from an empty folder, data and outputs in tmp."""
    root = tmp_path_factory.mktemp("core-install")
    venv.EnvBuilder(symlinks=True, with_pip=False).create(root / "venv")
    [site] = (root / "venv" / "lib").glob("python3*/site-packages")
    site.rmdir()
    _core_site_packages(site)
    python = root / "venv" / "bin" / "python"

    def run(*arguments: str, timeout: int = 300) -> subprocess.CompletedProcess:
        cwd = root / "cwd"
        cwd.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "SHIFTLAB_DATA_DIR": str(root / "data"),
            "SHIFTLAB_OUTPUT_DIR": str(root / "outputs"),
            "PYTHONPATH": str(REPO),
        }
        return subprocess.run(
            [str(python), *arguments],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def test_every_import_of_shiftlab_is_a_declared_requirement() -> None:
    """Each package shiftlab's code imports belongs to a distribution pyproject.toml names (the
    core or an extra), not one that only happens to come with another package."""
    declared = {name for name, _ in _requirements()}
    owners = _owners()
    undeclared = {}
    for path in sorted((REPO / "shiftlab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "shiftlab":
                    continue
                if not owners.get(top, set()) & declared:
                    undeclared[top] = f"{path.relative_to(REPO)}:{node.lineno}"
    assert not undeclared, f"imported but not in pyproject.toml: {undeclared}"


@pytest.fixture(scope="module")
def core_run(core_env: Run) -> subprocess.CompletedProcess:
    """A synthetic run of the core install: data generated and ingested, trained, recorded."""
    return core_env(
        "-m", "shiftlab.train", "dataset.synthetic.patients_per_vendor=40", "trainer.max_epochs=1"
    )


@pytest.mark.slow
def test_core_install_ingests_trains_and_writes_the_run_record(
    core_env: Run, core_run: subprocess.CompletedProcess
) -> None:
    hidden = ("wandb", "submitit", "matplotlib", "sklearn", "pytest")
    hidden += ("hydra_plugins.hydra_submitit_launcher", "hydra_plugins.hydra_joblib_launcher")
    found = core_env("-c", f"import importlib.util as u; print([u.find_spec(m) for m in {hidden}])")
    assert found.stdout.strip() == str([None] * len(hidden)), found.stderr[-2000:]

    assert core_run.returncode == 0, core_run.stderr[-3000:]
    run_dir = Path(re.search(r"run record: (\S+)", core_run.stdout).group(1))
    assert (run_dir / "done").is_file() and (run_dir / "metrics.json").is_file()
    assert (run_dir / "predictions.csv").is_file() and (run_dir / "csv").is_dir()


@pytest.mark.slow
def test_logger_wandb_without_its_extra_says_which_to_install(core_env: Run) -> None:
    result = core_env(
        "-m",
        "shiftlab.train",
        "dataset.synthetic.patients_per_vendor=40",
        "trainer.max_epochs=1",
        "logger=wandb",
        "seed=1",
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "logger=wandb needs the 'wandb' extra" in result.stderr
    assert "pip install 'shiftlab[wandb]'" in result.stderr


@pytest.mark.slow
def test_slurm_launcher_without_its_extra_says_which_to_install(core_env: Run) -> None:
    result = core_env("-m", "shiftlab.train", "-m", "seed=0,1", "launcher=slurm")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "launcher=slurm needs the 'slurm' extra" in result.stderr
    assert "pip install 'shiftlab[slurm]'" in result.stderr


@pytest.mark.slow
def test_report_figures_without_their_extra_say_which_to_install(
    core_env: Run, core_run: subprocess.CompletedProcess, tmp_path: Path
) -> None:
    """The report's figures and the W&B views name their extras; the tables need none."""
    runs = Path(re.search(r"run record: (\S+)", core_run.stdout).group(1)).parent
    for arguments, extra in (
        (["shiftlab.report", str(runs), "--out", str(tmp_path / "report")], "report"),
        (["shiftlab.report.wandb_panels"], "wandb"),
    ):
        result = core_env("-m", *arguments)
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        assert f"needs the '{extra}' extra" in result.stderr
        assert f"pip install 'shiftlab[{extra}]'" in result.stderr
    assert not (tmp_path / "report").exists(), "refused before any work"

    tables_only = ["--no-figures", "--no-characterisation", "--n-boot", "10"]
    result = core_env("-m", "shiftlab.report", str(runs), "--out", str(tmp_path), *tables_only)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "report.md").is_file() and (tmp_path / "tables" / "runs.csv").is_file()


@pytest.mark.slow
def test_other_parts_name_their_extra_and_presets_still_compose(core_env: Run) -> None:
    """The separability classifier (scikit-learn) and launcher=local_gpus name their extras;
    the launcher presets compose without their plugins, so a single run can carry them."""
    script = """
import numpy as np
from hydra import compose, initialize_config_dir

from shiftlab.extras import MissingExtra, require_launcher
from shiftlab.report.characterise import domain_classifier_auroc
from shiftlab.config import CONF_DIR, register_resolvers

register_resolvers()
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    for preset in ("slurm", "local_gpus"):
        compose("train", overrides=[f"launcher={preset}"], return_hydra_config=True)
calls = (
    lambda: require_launcher("local_gpus"),
    lambda: domain_classifier_auroc(np.zeros((4, 2)), np.array([0, 0, 1, 1]), np.arange(4)),
)
for call in calls:
    try:
        call()
    except MissingExtra as error:
        print(error)
"""
    result = core_env("-c", script)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "launcher=local_gpus needs the 'local-gpus' extra" in lines[0]
    assert "pip install 'shiftlab[local-gpus]'" in lines[0]
    assert "Vendor separability (or --no-characterisation) needs the 'report' extra" in lines[1]
    assert "pip install 'shiftlab[report]'" in lines[1]


def test_require_names_the_extra_only_for_the_missing_module(tmp_path: Path) -> None:
    """A module that is installed but breaks on an import of its own raises as it is: the
    extra would not fix it."""
    (tmp_path / "shiftlab_broken_plugin.py").write_text("import shiftlab_no_such_module\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ModuleNotFoundError) as raised:
            require("shiftlab_broken_plugin", extra="report", needed_by="this test")
        assert not isinstance(raised.value, MissingExtra)
        with pytest.raises(MissingExtra, match=r"pip install 'shiftlab\[report\]'"):
            require("shiftlab_absent_plugin.sub", extra="report", needed_by="this test")
    finally:
        sys.path.remove(str(tmp_path))
