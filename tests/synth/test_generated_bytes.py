"""The synthetic sets are byte for byte what they were: the sha256 of every file of a small set.

Why hashes: byte identity is the contract here. Every published number (the calibration, the
study's grids, the cached preprocessing) was made from these files, and a generator made faster
(issue 20: DICOM headers encoded once per vendor, structures drawn only where they are non-zero,
patients written in parallel) must write the very same bytes, or be a new generator version
that says so (docs/synthetic.md). The manifests in ``trees/`` were made by the generators as
they were before that work, with each preset's settings at 4 patients per vendor; a change of a
single pixel, UID, header element or label row fails here.

The bytes also depend on the libraries: pydicom writes its version into every file, and numpy
and scipy round as they do. A manifest records the versions it was made with (the locked ones,
``constraints.txt``); under others the comparison is skipped, saying why. To record a new
generator version, run this file: ``python tests/synth/test_generated_bytes.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import scipy
import yaml

from shiftlab.config import CONF_DIR
from shiftlab.synth import common, ct, mri, xray

PATIENTS = 4
GENERATORS = {"synthetic_mri": mri, "synthetic_ct": ct, "synthetic_xray": xray}
TREES = Path(__file__).parent / "trees"


def library_versions() -> str:
    return f"numpy {np.__version__}, scipy {scipy.__version__}, pydicom {pydicom.__version__}"


def generate(name: str, out: Path, workers: int) -> Path:
    """The set ``name`` with its preset's settings, ``PATIENTS`` per vendor."""
    settings = yaml.safe_load((CONF_DIR / "dataset" / f"{name}.yaml").read_text())["synthetic"]
    keep = ("severity", "lesion_contrast", "seed")
    with contextlib.redirect_stderr(io.StringIO()):
        return GENERATORS[name].generate(
            out,
            patients_per_vendor=PATIENTS,
            workers=workers,
            **{key: settings[key] for key in keep},
        )


def tree_lines(root: Path) -> list[str]:
    """``<sha256>  <path>`` for every file under ``root``, sorted by path."""
    files = sorted(path for path in root.rglob("*") if path.is_file())
    return [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(root).as_posix()}"
        for path in files
    ]


def recorded(name: str) -> tuple[str, list[str]]:
    """The versions line and the hash lines of a set's manifest."""
    lines = (TREES / f"{name}.sha256").read_text().splitlines()
    versions = next(line for line in lines if line.startswith("# made with "))
    return versions.removeprefix("# made with "), [line for line in lines if line[:1] != "#"]


@pytest.mark.parametrize("workers", [1, 2], ids=["one process", "two processes"])
@pytest.mark.parametrize("name", GENERATORS)
def test_every_file_is_byte_for_byte_as_recorded(
    name: str, workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions, expected = recorded(name)
    if versions != library_versions():
        pytest.skip(f"{name}'s manifest was made with {versions}, not {library_versions()}")
    # Two processes share even a small set, so that the parallel path is the one checked.
    monkeypatch.setattr(common, "PARALLEL_MIN_PATIENTS", 1)
    found = tree_lines(generate(name, tmp_path / name, workers))

    assert len(found) == len(expected), f"{len(found)} files, expected {len(expected)}"
    changed = [line.split("  ")[1] for line in sorted(set(found) - set(expected))]
    assert not changed, f"{len(changed)} files differ from the recorded ones, e.g. {changed[:3]}"


def record() -> None:
    """Write the manifests of the generators as they are now: a new generator version."""
    TREES.mkdir(exist_ok=True)
    for name in GENERATORS:
        with tempfile.TemporaryDirectory() as tmp:
            lines = tree_lines(generate(name, Path(tmp) / name, workers=1))
        header = [
            f"# sha256 of every file {name} writes with its preset's settings, "
            f"{PATIENTS} patients per vendor (tests/synth/test_generated_bytes.py)",
            f"# made with {library_versions()}",
        ]
        (TREES / f"{name}.sha256").write_text("\n".join([*header, *lines]) + "\n")
        print(f"wrote {TREES / f'{name}.sha256'} ({len(lines)} files)")


if __name__ == "__main__":
    if sys.argv[1:]:
        sys.exit("usage: python tests/synth/test_generated_bytes.py  (records new manifests)")
    record()
