"""A generator killed mid-file leaves its temporary file behind: ingest never takes it for data,
and the next generation removes it.

shiftlab writes each file under a temporary name, ``<name>.<pid>.tmp``, and renames it into place
(``shiftlab/files.py``). A process killed between the two (``kill -9``, an out-of-memory kill,
a SLURM time limit) leaves the first part of a real DICOM file there, with the SOP Instance UID of
the file it was writing: ingest listed it as a duplicate SOPInstanceUID, for good.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers.compose import compose_config

from shiftlab.errors import instantiate
from shiftlab.ingest.accounting import SKIPPED_NAME
from shiftlab.ingest.run import run_ingest
from shiftlab.manifest import JSON_NAME

# Writes a fraction of the file named on its command line under the temporary name a writer of
# that file uses, then is killed: what a generator killed while writing that file (or, with the
# whole file written, just before renaming it) leaves.
KILLED_WRITER = """
import os, signal, sys
target, fraction = sys.argv[1], float(sys.argv[2])
data = open(target, "rb").read()
with open(f"{target}.{os.getpid()}.tmp", "wb") as f:
    f.write(data[: int(len(data) * fraction)])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_writer(target: Path, fraction: float = 0.5) -> Path:
    child = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target), str(fraction)])
    assert child.returncode == -signal.SIGKILL
    [leftover] = target.parent.glob(f"{target.name}.*.tmp")
    return leftover


@pytest.fixture
def generated(tmp_path: Path):
    """A small synthetic MRI set, generated through its config (the generator a run calls)."""
    cfg = compose_config(
        "ingest",
        tmp_path / "data",
        tmp_path / "out",
        "dataset.synthetic.patients_per_vendor=4",
        "dataset.split_fractions={train:0.5,val:0.25,test:0.25}",
    )
    with contextlib.redirect_stderr(io.StringIO()):
        instantiate(cfg.dataset.synthetic)
    return cfg


def test_ingest_never_scans_a_killed_writers_leftover(generated) -> None:
    dicom_root = Path(generated.dataset.dicom_root)
    images = sorted(dicom_root.rglob("*.dcm"))
    cut_short = killed_writer(images[1])
    assert cut_short.read_bytes()[128:132] == b"DICM", "a real DICOM file, cut short"
    killed_writer(images[4], fraction=1.0)  # whole, with images[4]'s SOPInstanceUID

    with contextlib.redirect_stdout(io.StringIO()):
        run_ingest(generated.dataset, generated.paths, generated.split_seed)
    manifest_dir = Path(generated.dataset.manifest_dir)
    skipped = pd.read_csv(manifest_dir / SKIPPED_NAME, dtype=str)
    assert skipped.empty, skipped.to_dict("records")
    meta = json.loads((manifest_dir / JSON_NAME).read_text())
    assert meta["n_files_scanned"] == len(images)


def test_the_next_generation_removes_a_dead_writers_leftover_only(generated) -> None:
    images = sorted(Path(generated.dataset.dicom_root).rglob("*.dcm"))
    first = {path: path.read_bytes() for path in images}
    leftover = killed_writer(images[1])
    # A write in progress in another process that is alive: not a leftover, not to be touched.
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        in_progress = images[2].with_name(f"{images[2].name}.{alive.pid}.tmp")
        in_progress.write_bytes(b"being written")

        with contextlib.redirect_stderr(io.StringIO()):
            instantiate(generated.dataset.synthetic)  # the relaunch
        assert not leftover.exists(), "the killed writer's leftover is still there"
        assert in_progress.read_bytes() == b"being written"
    finally:
        alive.kill()
        alive.wait()
    assert {path: path.read_bytes() for path in images} == first
