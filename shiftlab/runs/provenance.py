"""What produced a run: the code version and the versions of the packages it ran with.

Recorded in every run record (``metrics.json``: ``code_version``, ``code``, ``packages``; each
attempt in ``attempts.json``: ``code_version``), so that results made by different code are never
averaged silently (the report groups runs by ``code_version`` and ``manifest_sha256``).

``code_version`` is one string: ``git:<commit 12>`` for a clean checkout, with
``+dirty.<8 hex digits>`` when the files that decide a result (``shiftlab/``, its configs
included, and ``pyproject.toml``) differ from the commit; the hex digits hash that difference, so
two runs of the same uncommitted edit share a version and two different edits do not. Outside a
git checkout (an installed package) it is ``shiftlab-<version>``.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import shiftlab

# The packages whose versions can change a result (and pydicom, which decodes the pixels).
PACKAGES = (
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "monai",
    "pydicom",
    "numpy",
    "scipy",
    "pandas",
    "hydra-core",
    "omegaconf",
    "SimpleITK",
)
# What decides a result: a change elsewhere (tests, docs, README) makes no run dirty.
CODE_PATHS = ("shiftlab", "pyproject.toml")  # shiftlab/ holds the config tree (shiftlab/conf/)
ROOT = Path(shiftlab.__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args],
            capture_output=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode("utf-8", "replace")


def _difference_hash() -> str | None:
    """A hash of how the code paths differ from HEAD (edits and untracked files), or None."""
    status = _git("status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS)
    if status is None or not status.strip():
        return None
    digest = hashlib.sha256((_git("diff", "HEAD", "--binary", "--", *CODE_PATHS) or "").encode())
    for line in sorted(status.splitlines()):
        if line.startswith("??"):
            path = ROOT / line[3:].strip().strip('"')
            digest.update(line.encode())
            if path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


@functools.cache
def code() -> dict[str, Any]:
    """{version, commit, dirty, dirty_hash}: commit and dirty are None outside a git checkout."""
    info: dict[str, Any] = {
        "version": shiftlab.__version__,
        "commit": None,
        "dirty": None,
        "dirty_hash": None,
    }
    top = _git("rev-parse", "--show-toplevel")
    # Only shiftlab's own checkout: not a repository that merely holds an installed copy.
    if top is None or Path(top.strip()).resolve() != ROOT:
        return info
    commit = (_git("rev-parse", "HEAD") or "").strip()
    if not commit:
        return info
    difference = _difference_hash()
    info.update(commit=commit, dirty=difference is not None, dirty_hash=difference)
    return info


def code_version(info: dict[str, Any] | None = None) -> str:
    info = code() if info is None else info
    if not info.get("commit"):
        return f"shiftlab-{info['version']}"
    dirty = f"+dirty.{info['dirty_hash']}" if info.get("dirty") else ""
    return f"git:{info['commit'][:12]}{dirty}"


@functools.cache
def packages() -> dict[str, str | None]:
    """Installed versions (None: not installed), and Python's."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def provenance() -> dict[str, Any]:
    """The fields every run record holds: code_version, code and packages."""
    return {"code_version": code_version(), "code": dict(code()), "packages": dict(packages())}


def trained_by(attempts: list[dict[str, Any]]) -> str | None:
    """The code version of the attempts that trained the current weights: those since the last
    start from scratch. Several versions (a run resumed after the code changed) are joined with
    " then ", so such a run never shares a version with one trained by a single one."""
    start = max(
        (i for i, a in enumerate(attempts) if a.get("resumed_from_epoch") is None), default=0
    )
    versions = [a.get("code_version") for a in attempts[start:]]
    versions = list(dict.fromkeys(v for v in versions if v))
    return " then ".join(versions) if versions else None
