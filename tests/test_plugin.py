"""shiftlab's Hydra plugins (hydra_plugins/shiftlab_plugins): Hydra's own plugin discovery finds
them, in this install and in the wheel, from a folder outside the checkout, with nothing imported
or registered by shiftlab first; the sweeper expands a grid as Hydra's basic sweeper does, and
shiftlab uses no private Hydra code."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers.compose import REPO
from hydra.core.override_parser.overrides_parser import OverridesParser

from shiftlab.grid import sweep_jobs

SWEEPER = "hydra_plugins.shiftlab_plugins.resumable_sweeper.ResumableSweeper"
SLURM = "hydra_plugins.shiftlab_plugins.launchers.SlurmLauncher"
PLUGIN_FILES = {f"hydra_plugins/shiftlab_plugins/{name}.py" for name in ("__init__", "launchers")}
PLUGIN_FILES.add("hydra_plugins/shiftlab_plugins/resumable_sweeper.py")

# What a Hydra application's start finds: the plugin classes, the sweeper's config, and what the
# scan imported (it runs in every Hydra application of the environment).
DISCOVER = """
import json, sys
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper

kinds = (Sweeper, Launcher)
plugins = [f"{c.__module__}.{c.__name__}" for t in kinds for c in Plugins.instance().discover(t)]
print(json.dumps({
    "plugins": plugins,
    "sweeper": ConfigStore.instance().load("hydra/sweeper/resumable.yaml").node._target_,
    "imported": sorted(m for m in ("shiftlab.grid", "pandas", "torch") if m in sys.modules),
    "package": sys.modules["hydra_plugins.shiftlab_plugins"].__file__,
    "shiftlab": sys.modules["shiftlab"].__file__,
}))
"""


def discover(cwd: Path, *python_options: str, path: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if path:
        env["PYTHONPATH"] = path
    result = subprocess.run(
        [sys.executable, *python_options, "-c", DISCOVER],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Hydra's scan warns about a plugin module that fails or warns, and goes on without it.
    assert "Error importing" not in result.stderr, result.stderr
    assert "Hydra plugins scanner" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def check_found(found: dict, root: Path) -> None:
    assert {SWEEPER, SLURM} <= set(found["plugins"])
    assert found["sweeper"] == SWEEPER
    assert found["imported"] == [], "the scan stays cheap for every Hydra application"
    assert Path(found["package"]).is_relative_to(root)
    assert Path(found["shiftlab"]).is_relative_to(root)


def test_hydra_discovers_the_plugins_of_this_install(tmp_path: Path) -> None:
    check_found(discover(tmp_path), REPO)


@pytest.mark.slow
def test_the_wheel_ships_the_plugins_and_hydra_discovers_them_there(tmp_path: Path) -> None:
    """Built from a copy of the sources, installed into a folder of its own, and run with
    ``python -S`` (no site: this environment's editable shiftlab is not on the path; its packages
    are, through PYTHONPATH, after the wheel's)."""
    pytest.importorskip("setuptools", reason="builds the wheel without network")
    source = tmp_path / "source"
    for name in ("shiftlab", "hydra_plugins"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    offline = ["--no-deps", "--no-index"]
    subprocess.run(
        [*pip, "wheel", *offline, "--no-build-isolation", "-w", tmp_path / "dist", source],
        check=True,
        timeout=300,
    )
    [wheel] = (tmp_path / "dist").glob("shiftlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert names >= PLUGIN_FILES
    assert "hydra_plugins/__init__.py" not in names, "a namespace, shared with other plugins"

    site = tmp_path / "site"
    subprocess.run([*pip, "install", *offline, "--target", site, wheel], check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    packages = sysconfig.get_paths()["purelib"]
    check_found(discover(elsewhere, "-S", path=os.pathsep.join([str(site), packages])), site)


@pytest.mark.parametrize(
    "arguments",
    [
        ["dataset=a,b,c", "direction=forward,reverse", "seed=range(0,3)", "model=smallcnn"],
        ["seed=range(0,10)", "dataset=x,y", "seed=3", "+extra='q,r'", "shift.alpha=0,0.5"],
        ["dataset=a", "dataset=b,c", "~callbacks", "paths.output_dir=/tmp/o"],
    ],
)
def test_the_sweeper_expands_a_grid_as_hydras_basic_sweeper(arguments: list[str]) -> None:
    """The same jobs in the same order, so every grid keeps its runs (a key given again keeps
    its first place and takes its last value). Hydra's basic sweeper is the reference here."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    overrides = OverridesParser.create().parse_overrides(arguments)
    assert sweep_jobs(overrides) == BasicSweeper.split_arguments(overrides, None)[0]


def _by_hand(node: ast.AST) -> str | None:
    """What ``node`` does that Hydra's plugin discovery should do instead, if anything."""
    if isinstance(node, ast.ImportFrom | ast.Import):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [alias.name for alias in node.names]
        if any(name.startswith("hydra._internal") for name in names):
            return "imports from hydra._internal"
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "sys.modules":
        return "sets sys.modules" if isinstance(node.ctx, ast.Store) else None
    if isinstance(node, ast.Attribute) and node.attr == "register":
        return "registers a plugin" if "Plugins" in ast.unparse(node.value) else None
    return None


def test_no_private_hydra_code_and_no_plugin_registered_by_hand() -> None:
    """shiftlab and its plugins import nothing from hydra._internal, put nothing into
    sys.modules, and register no plugin themselves: Hydra's discovery finds them."""
    found = [
        f"{path.relative_to(REPO)}:{node.lineno}: {what}"
        for path in [*(REPO / "shiftlab").rglob("*.py"), *(REPO / "hydra_plugins").rglob("*.py")]
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if (what := _by_hand(node))
    ]
    assert found == []
