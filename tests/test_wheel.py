"""shiftlab as a user installs it: a wheel built from the checkout, installed into a fresh virtual
environment, used from a folder outside the checkout (issue 17.1).

Offline: the wheel's dependencies are this environment's packages, linked into the new
environment's site-packages (no download, no pip cache needed), and ``pip install --no-index``
resolves the wheel's requirements against them, so a requirement missing here fails the install.
Nothing of the checkout is importable there: no PYTHONPATH, no editable install. The config tree
the commands compose is the one inside the installed package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.compose import REPO, compose_train

from shiftlab.config import CONF_DIR
from shiftlab.identity import settings_hash

# A wheel built, installed in a new environment and run there: minutes (docs/tests.md).
pytestmark = pytest.mark.slow

Run = Callable[..., subprocess.CompletedProcess]
# What a wheel is built from, as a clone has it (build outputs of the checkout are left behind).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "shiftlab", "hydra_plugins")
TRAIN = ("model=smallcnn", "dataset.synthetic.patients_per_vendor=40", "trainer.max_epochs=1")
# A user's own dataset config, in a folder of theirs: the packaged synthetic set generated with
# another seed, as another site would give it. Its defaults list finds the packaged config.
SITE_C = """\
defaults:
  - synthetic_mri
  - _self_

name: site_c
synthetic:
  seed: 1
  patients_per_vendor: 20
"""


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    site: Path
    base: Path
    user: Path
    run: Run


def succeed(*command: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def build_wheel(into: Path) -> Path:
    """``pip wheel`` of a copy of the checkout's sources, with this environment's setuptools."""
    source = into / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    pip = (sys.executable, "-m", "pip", "wheel", "--isolated", "--no-index", "--no-deps")
    succeed(*pip, "--no-build-isolation", f"--wheel-dir={into / 'dist'}", str(source))
    [wheel] = (into / "dist").glob("shiftlab-*.whl")
    return wheel


def link_dependencies(site: Path, wheel: Path) -> None:
    """This environment's installed packages, linked into ``site``, less shiftlab itself.

    A top-level folder the wheel also installs into (hydra_plugins, a namespace shared with
    Hydra's launchers) is made a real folder of links, so the install writes nothing here.
    """
    here = Path(sysconfig.get_paths()["purelib"])
    with zipfile.ZipFile(wheel) as archive:
        shared = {name.split("/")[0] for name in archive.namelist()}
    for entry in here.iterdir():
        name = entry.name
        if name.startswith(("shiftlab", "__editable__")):
            continue  # this checkout's editable install
        if name in shared and entry.is_dir():
            (site / name).mkdir()
            for inner in entry.iterdir():
                (site / name / inner.name).symlink_to(inner)
        else:
            (site / name).symlink_to(entry)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(base)
    venv.EnvBuilder(symlinks=True, with_pip=False).create(base / "venv")
    python = base / "venv" / "bin" / "python"
    [site] = (base / "venv" / "lib").glob("python3*/site-packages")
    link_dependencies(site, wheel)
    # Nothing of the checkout on the path (tests run with PYTHONPATH naming it).
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env |= {
        "SHIFTLAB_DATA_DIR": str(base / "data"),
        "SHIFTLAB_OUTPUT_DIR": str(base / "outputs"),
        "WANDB_MODE": "offline",
    }
    # No index: the wheel's requirements must all be met by the linked packages.
    succeed(str(python), "-m", "pip", "install", "--isolated", "--no-index", str(wheel), env=env)
    user = base / "user"  # the user's folder, outside the checkout: where commands start
    (user / "configs" / "dataset").mkdir(parents=True)
    (user / "configs" / "dataset" / "site_c.yaml").write_text(SITE_C)

    def run(*arguments: str, script: str = "python") -> subprocess.CompletedProcess:
        """A command of the new environment (its python, or a console script), from ``user``."""
        return subprocess.run(
            [str(base / "venv" / "bin" / script), *arguments],
            cwd=user,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return Installed(wheel, python, site, base, user, run)


def test_the_wheel_carries_the_config_tree(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("shiftlab/conf/")}
    tree = {f"shiftlab/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert shipped == tree


def test_an_installed_wheel_trains_evaluates_and_reports_from_another_folder(
    installed: Installed,
) -> None:
    where = installed.run(
        "-c",
        "import shiftlab, hydra_plugins.shiftlab_plugins as p\n"
        "print(shiftlab.__file__, p.__file__)",
    )
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert Path(path).is_relative_to(installed.site), "the installed package, not the checkout"

    trained = installed.run("-m", "shiftlab.train", *TRAIN)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = Path(re.search(r"run record: (\S+)", trained.stdout).group(1))
    assert (run_dir / "done").is_file()
    # Run identity does not depend on where the configs live: the installed package's tree and
    # the checkout's give the same settings hash, so the same run directory.
    checkout = compose_train(installed.base / "data", installed.base / "outputs", *TRAIN)
    assert json.loads((run_dir / "metrics.json").read_text())["config_hash"] == settings_hash(
        checkout
    )
    assert run_dir.name.endswith(settings_hash(checkout))

    # External validation on the user's own site, a config found through --config-dir.
    evaluated = installed.run(
        "-m", "shiftlab.evaluate", "--config-dir", "configs", f"run={run_dir}", "dataset=site_c"
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    [record] = (run_dir / "evaluations").iterdir()
    assert record.name.startswith("site_c-test-") and (record / "done").is_file()

    report = installed.base / "report"
    reported = installed.run(
        "-m",
        "shiftlab.report",
        str(installed.base / "outputs" / "runs"),
        f"--out={report}",
        "--no-characterisation",
        "--n-boot=200",
    )
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert "site_c" in (report / "tables" / "external.csv").read_text(), "the evaluation's column"
    assert [p.name for p in installed.user.iterdir()] == ["configs"], (
        "nothing is written where the commands run"
    )


def test_an_installed_wheel_explains_itself_and_refuses_bad_settings_at_once(
    installed: Installed,
) -> None:
    helped = installed.run("--help", script="shiftlab-train")
    assert helped.returncode == 0, helped.stderr
    assert "ΔAUC" in helped.stdout and "Powered by Hydra" not in helped.stdout
    groups = dict(re.findall(r"^(\w+): (.+)$", helped.stdout, re.M))
    assert {"synthetic_mri", "xray_chest"} <= set(groups["dataset"].split(", "))

    refused = installed.run("-m", "shiftlab.train", "seed=abc", "paths.output_dir=refused")
    assert refused.returncode == 2, refused.stderr
    assert "seed='abc' (str): expected an int" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (installed.user / "refused").exists(), "refused before any folder is made"
