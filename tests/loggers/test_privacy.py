"""No identifying header value reaches anything that can leave the site.

Identifying values are planted in synthetic DICOM headers (PatientName, PatientBirthDate,
AccessionNumber, PatientID, InstitutionName, ReferringPhysicianName) and, as in TCIA's layout,
in folder and file names (the PatientID). Then the command line ingests and trains (W&B offline),
a run leaves out a sample whose file was damaged, a run fails when every file is, and the report
is built. Every file these write is searched, as
bytes, for the planted values:

- run records (config, metrics, predictions, attempts, failure.json), Hydra's .hydra/ and
  train.log, CSV logs, checkpoints, W&B offline runs, the report and the preprocessing cache
  (with its list of samples that could not be decoded) must hold none of them;
- the manifest folder stays on the site; even there no header value appears, and the PatientID
  only inside file paths (the ``paths`` column of manifest.csv, the ``path`` column of
  skipped.csv, unused.csv and flagged.csv).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers.compose import REPO, compose_train
from helpers.dicom_factory import write_series

from shiftlab.errors import ShiftlabError
from shiftlab.train import train

# The site is trained from the command line, in a new process: the slow suite (docs/tests.md).
pytestmark = pytest.mark.slow

# Unique strings planted in the headers (none of them can occur by chance in a written file).
HEADER_MARKERS = {
    "PatientName": "Qzorblatt^Quenby",
    "PatientBirthDate": "18610427",
    "AccessionNumber": "ACCQZX77310",
    "InstitutionName": "Qzx Infirmary Of Nowhere",
    "ReferringPhysicianName": "Drqzx^Hannelore",
}
PATIENT_PREFIX = "PIDQZX"
# Searched for: each planted value, and the parts of person names (W&B or a CSV could split them).
NEEDLES = sorted(
    {PATIENT_PREFIX, *HEADER_MARKERS.values(), "Qzorblatt", "Quenby", "Drqzx", "Hannelore"}
)
VENDORS = (("GE MEDICAL SYSTEMS", "ge"), ("SIEMENS", "siemens"))
OVERRIDES = (
    "model=smallcnn",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "dataset.preprocess.size=32",
    "dataset.split_fractions={train:0.5,val:0.15,test:0.35}",
)


def write_identifying_tree(root: Path) -> None:
    """8 patients per vendor (4 of each class), TCIA layout: <PatientID>/<study>/<series>/,
    file names starting with the PatientID, identifying values in every header."""
    labels = {}
    for manufacturer, vendor in VENDORS:
        for i in range(8):
            patient = f"{PATIENT_PREFIX}{vendor.upper()}{i:03d}"
            written = write_series(
                root / "dicom" / patient / "01-01-2000-NA-MRI BREAST-12345" / "3.000000-ax t1",
                patient_id=patient,
                manufacturer=manufacturer,
                n_slices=3,
                shape=(16, 16),
                file_names=[f"{patient}_1-0{k}.dcm" for k in range(1, 4)],
                extra={**HEADER_MARKERS, "AccessionNumber": f"{HEADER_MARKERS['AccessionNumber']}"},
            )
            labels[written.series_uid] = int(i >= 4)
    pd.DataFrame({"series_uid": list(labels), "lesion": list(labels.values())}).to_csv(
        root / "labels.csv", index=False
    )


def found_in(path: Path) -> list[str]:
    data = path.read_bytes()
    hits = []
    for needle in NEEDLES:
        for form in {needle, needle.lower(), needle.upper()}:
            if form.encode() in data or form.encode("utf-16-le") in data:
                hits.append(needle)
                break
    return hits


def leaks(*folders: Path, skip: tuple[Path, ...] = ()) -> dict[str, list[str]]:
    found = {}
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if any(path.is_relative_to(s) for s in skip):
                continue
            hits = found_in(path)
            if hits:
                found[str(path)] = hits
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Ingest, train (command line, W&B offline), a failed run and the report, on planted data."""
    base = tmp_path_factory.mktemp("privacy")
    root, data, out, wandb_home = base / "dataset", base / "data", base / "out", base / "wandb"
    write_identifying_tree(root)
    places = [f"paths.data_dir='{data}'", f"paths.output_dir='{out}'", f"dataset.root='{root}'"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        **{name: str(wandb_home / name.lower()) for name in ("WANDB_DIR", "WANDB_CONFIG_DIR")},
        **{name: str(wandb_home / name.lower()) for name in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR")},
    }
    trained = subprocess.run(
        [sys.executable, "-m", "shiftlab.train", "logger=wandb", *OVERRIDES, *places],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert list(out.rglob("done")), "the run finished"

    # A run over a damaged file leaves its sample out, listed beside its cache (cache2); a run
    # over files all damaged fails, and its failure reason is recorded, masked.
    damaged = sorted((root / "dicom").rglob("*_1-02.dcm"))
    for path in damaged[:1]:
        path.write_bytes(path.read_bytes()[:300])
    cfg = compose_train(
        data, out, *OVERRIDES, *places[2:], "seed=1", f"paths.cache_dir='{base / 'cache2'}'"
    )
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg, out / "runs" / "partial-run")
    assert list((base / "cache2").glob("*.excluded.csv")), "the damaged sample is listed"
    for path in damaged[1:]:
        path.write_bytes(path.read_bytes()[:300])
    cfg = compose_train(
        data, out, *OVERRIDES, *places[2:], "seed=2", f"paths.cache_dir='{base / 'cache3'}'"
    )
    with pytest.raises(ShiftlabError), contextlib.redirect_stdout(io.StringIO()):
        train(cfg, out / "runs" / "failed-run")
    assert (out / "runs" / "failed-run" / "failure.json").is_file()

    report = base / "report"
    try:
        from shiftlab.report.__main__ import main as report_main
    except ImportError:
        report = None
    if report is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            report_main([str(out / "runs"), "--out", str(report), "--n-boot", "20"])
    return {
        "base": base,
        "root": root,
        "data": data,
        "out": out,
        "wandb": wandb_home,
        "report": report,
        "manifest": Path(cfg.dataset.manifest_dir),
    }


def test_the_planted_values_are_in_the_input(site: dict[str, Path]) -> None:
    """The search is not vacuous: the DICOM files hold every planted value."""
    some_file = next((site["root"] / "dicom").rglob("*_1-01.dcm"))
    assert set(found_in(some_file)) == set(NEEDLES)


def test_nothing_that_leaves_the_site_holds_an_identifier(site: dict[str, Path]) -> None:
    runs = site["out"] / "runs"
    assert list(runs.rglob("*.ckpt")) and list(runs.rglob("*.wandb")), "all artifacts were made"
    assert list(runs.rglob("train.log")) and list(runs.rglob(".hydra/*.yaml"))
    assert list(runs.rglob("failure.json")) and list(runs.rglob("predictions.csv"))
    folders = [site["out"], site["wandb"], site["data"] / "cache"]
    folders += [site["base"] / "cache2", site["base"] / "cache3"]
    if site["report"] is not None:
        assert list(site["report"].rglob("*")), "the report was written"
        folders.append(site["report"])
    assert leaks(*[f for f in folders if f.exists()]) == {}


def test_the_site_local_manifest_holds_the_patient_id_only_in_paths(
    site: dict[str, Path],
) -> None:
    manifest_dir = site["manifest"]
    assert (manifest_dir / "manifest.csv").is_file()
    for path in sorted(manifest_dir.iterdir()):
        hits = found_in(path)
        assert set(hits) <= {PATIENT_PREFIX}, (path.name, hits)
        if not hits:
            continue
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        path_column = "paths" if path.name == "manifest.csv" else "path"
        others = table.drop(columns=[path_column])
        assert not others.apply(lambda c: c.str.contains(PATIENT_PREFIX)).any().any(), path.name
    # The rest of the data folder (the key, the cache) holds none of them either.
    assert leaks(site["data"], skip=(manifest_dir.parent.parent,)) == {}
