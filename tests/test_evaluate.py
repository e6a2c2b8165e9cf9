"""External validation: a trained run tested on another synthetic site (``python -m
shiftlab.evaluate``), its record beside the run, the refusal of data the network cannot take, and
the report's external-validation table.

Real pieces throughout: tiny runs trained by Lightning on a generated and ingested synthetic MRI
set, a second set generated with another generator seed as "another site", Hydra composing
``conf/evaluate.yaml``, the command line in a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.compose import compose_config, compose_train
from omegaconf import DictConfig

from shiftlab import evaluate as evaluation
from shiftlab.errors import ShiftlabError
from shiftlab.report import Options, build, read_folder
from shiftlab.runs import record

TINY = (
    "dataset.synthetic.patients_per_vendor=12",
    "model=smallcnn",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
)
SEEDS = (0, 1)
# The run's own dataset, and another site: the same generator with another seed.
OWN_SITE = ("dataset=synthetic_mri", "dataset.synthetic.patients_per_vendor=12")
OTHER_SITE = (*OWN_SITE, "dataset.synthetic.seed=1")
RECORD_FILES = {"config.yaml", "metrics.json", "predictions.csv", "done"}


class Study:
    """Tiny runs (one per seed) in ``out/runs``, their data in ``data``."""

    def __init__(self, base: Path) -> None:
        self.base, self.data, self.out = base, base / "data", base / "out"
        self.runs = {seed: self.out / "runs" / f"seed{seed}" for seed in SEEDS}

    def places(self) -> tuple[str, ...]:
        return (f"paths.data_dir='{self.data}'", f"paths.output_dir='{self.out}'")

    def compose(self, seed: int, *overrides: str) -> DictConfig:
        return compose_config(
            "evaluate", self.data, self.out, f"run='{self.runs[seed]}'", *overrides
        )

    def evaluate(self, seed: int, *overrides: str) -> tuple[dict, Path, bool]:
        with contextlib.redirect_stdout(io.StringIO()):
            return evaluation.evaluate(self.compose(seed, *overrides))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    from shiftlab.train import train

    made = Study(tmp_path_factory.mktemp("evaluate"))
    for seed in SEEDS:
        cfg = compose_train(made.data, made.out, *TINY, f"seed={seed}")
        with contextlib.redirect_stdout(io.StringIO()):
            train(cfg, made.runs[seed])
    return made


def mann_whitney(scores: pd.Series, labels: pd.Series) -> float:
    """AUROC as the share of (positive, negative) pairs ranked right, ties counting half."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    negatives = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def external_manifest(study: Study) -> pd.DataFrame:
    cfg = study.compose(0, *OTHER_SITE)
    return pd.read_csv(Path(cfg.dataset.manifest_dir) / "manifest.csv", dtype=str)


def command(study: Study, cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shiftlab.evaluate", *overrides, *study.places()],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_a_run_is_evaluated_on_another_site_into_a_record_beside_it(
    study: Study, tmp_path: Path
) -> None:
    run_dir = study.runs[0]
    done = command(study, tmp_path, f"run={run_dir}", *OTHER_SITE)
    assert done.returncode == 0, done.stderr[-3000:]

    [folder] = (run_dir / "evaluations").iterdir()
    assert folder.name.startswith("synthetic_mri-test-")
    assert {p.name for p in folder.iterdir()} == RECORD_FILES
    assert not list(tmp_path.iterdir()), "nothing is written where the command runs"
    assert f"evaluation record: {folder}" in done.stdout

    metrics = json.loads((folder / "metrics.json").read_text())
    # Logits parsed by Python's float: exact, where pandas 2's default parser can be one ulp off.
    predictions = pd.read_csv(
        folder / "predictions.csv", dtype={"split": str}, converters={"logit": float}
    )
    own = pd.read_csv(run_dir / "predictions.csv")
    assert list(predictions.columns) == list(own.columns), "a run's predictions.csv format"
    assert set(predictions["split"]) == {"test"}
    # Every vendor of the other site, each with the AUROC its predictions give.
    manifest = external_manifest(study)
    test_rows = manifest[manifest["split"] == "test"]
    assert sorted(metrics["metrics"]) == ["test/ge/auroc", "test/siemens/auroc"]
    for domain in ("ge", "siemens"):
        rows = predictions[predictions["domain"] == domain]
        assert sorted(rows["sample_id"]) == sorted(
            test_rows.loc[test_rows["vendor"] == domain, "sample_id"]
        )
        value = metrics["metrics"][f"test/{domain}/auroc"]
        assert value == pytest.approx(mann_whitney(rows["logit"], rows["label"]), abs=1e-12)
        assert metrics["samples"][domain]["n"] == len(rows)
        assert f"AUROC {domain}: {value:.3f}  (n={len(rows)}" in done.stdout
    # float32 logits kept exactly; pseudonymous ids of the other site's manifest only.
    logits = predictions["logit"].to_numpy()
    assert np.array_equal(logits.astype(np.float32).astype(np.float64), logits)
    assert set(predictions["patient_id"]) <= set(manifest["patient_id"])
    # The record names the run and its checkpoint; no local path outside config.yaml (as a run).
    assert (
        metrics["run"]["config_hash"]
        == json.loads((run_dir / "metrics.json").read_text())["config_hash"]
    )
    assert (run_dir / metrics["checkpoint"]["file"]).is_file()
    for name in ("metrics.json", "predictions.csv"):
        assert str(study.base) not in (folder / name).read_text()
    config = (folder / "config.yaml").read_text()
    assert "run: ../..\n" in config and "\nmodel:" not in config

    # The same command again: the stored result, nothing rewritten.
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    again = command(study, tmp_path, f"run={run_dir}", *OTHER_SITE)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"already evaluated, not evaluated again: {folder}" in again.stdout
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()} == before


def test_an_evaluation_interrupted_before_done_is_redone_to_the_same_bytes_done_last(
    study: Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, folder, _ = study.evaluate(1, *OTHER_SITE)
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    _, _, stored = study.evaluate(1, *OTHER_SITE)
    assert stored, "a finished evaluation is reused"

    # As a process killed after writing its files but before done (and one half-way through
    # a file): not finished, so evaluated again.
    (folder / "done").unlink()
    (folder / "metrics.json.99999.tmp").write_text("{half")
    written = []
    real_write = record.write_text_atomic

    def spy(path: Path, text: str, **options) -> None:
        real_write(path, text, **options)
        written.append(path.name)

    monkeypatch.setattr(record, "write_text_atomic", spy)
    monkeypatch.setattr(evaluation, "write_text_atomic", spy)
    again, same_folder, stored = study.evaluate(1, *OTHER_SITE)

    assert not stored and same_folder == folder
    assert written[-1] == "done" and set(written) == RECORD_FILES
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first, "the same bytes"
    assert again == result


def test_evaluating_on_its_own_test_set_reproduces_the_run_exactly(study: Study) -> None:
    run_dir = study.runs[0]
    result, folder, _ = study.evaluate(0, *OWN_SITE)
    run_metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    for domain in ("ge", "siemens"):
        assert result["metrics"][f"test/{domain}/auroc"] == run_metrics[f"test/{domain}/auroc"]
    # The selected checkpoint, the same samples in the same order, the very same logits.
    own = pd.read_csv(run_dir / "predictions.csv")
    own_test = own[own["split"] == "test"].reset_index(drop=True)  # then: source validation
    pd.testing.assert_frame_equal(pd.read_csv(folder / "predictions.csv"), own_test)


def test_split_all_evaluates_every_split_of_the_other_site(study: Study) -> None:
    result, folder, _ = study.evaluate(0, *OTHER_SITE, "split=all")
    assert folder.name.startswith("synthetic_mri-all-")
    predictions = pd.read_csv(folder / "predictions.csv", dtype={"split": str})
    manifest = external_manifest(study)
    assert set(predictions["split"]) == {"train", "val", "test"}
    assert sorted(predictions["sample_id"]) == sorted(manifest["sample_id"])
    for domain in ("ge", "siemens"):
        rows = predictions[predictions["domain"] == domain]
        assert result["metrics"][f"test/{domain}/auroc"] == pytest.approx(
            mann_whitney(rows["logit"], rows["label"]), abs=1e-12
        )


@pytest.mark.slow
def test_a_ct_dataset_is_refused_with_what_was_expected_and_found(
    study: Study, tmp_path: Path
) -> None:
    done = command(study, tmp_path, f"run={study.runs[0]}", "dataset=synthetic_ct")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: the network of run seed0 (smallcnn, trained on synthetic_mri)")
    assert "takes MR samples of shape (3, 64, 64)" in line
    assert "dataset synthetic_ct gives CT samples of shape (5, 47, 47)" in line
    assert "Evaluate on a dataset of modality MR" in line
    # Refused before anything was generated, decoded or written.
    assert not (study.data / "synthetic_ct").exists()
    assert not list((study.runs[0] / "evaluations").glob("synthetic_ct-*"))


def test_an_xray_dataset_or_another_input_size_is_refused(study: Study) -> None:
    with pytest.raises(ShiftlabError, match=r"DX samples of shape \(1, 64, 64\)"):
        study.evaluate(0, "dataset=synthetic_xray")
    # Same modality, another preprocessing: the overrides that give the network its input.
    with pytest.raises(ShiftlabError) as refused:
        study.evaluate(0, *OTHER_SITE, "dataset.preprocess.size=32")
    assert "gives MR samples of shape (3, 32, 32)" in str(refused.value)
    advice = "Preprocess it as the run did: add dataset.preprocess.size=64"
    assert str(refused.value).endswith(advice)


def test_only_a_finished_run_is_evaluated(study: Study, tmp_path: Path) -> None:
    with pytest.raises(ShiftlabError, match="is not a run directory"):
        evaluation.load_trained_run(tmp_path)
    copy = tmp_path / "run"
    shutil.copytree(study.runs[0], copy, ignore=shutil.ignore_patterns("evaluations"))
    (copy / "done").unlink()
    with pytest.raises(ShiftlabError, match="has not finished"):
        evaluation.load_trained_run(copy)


def test_the_report_lists_each_group_tested_on_another_site(study: Study, tmp_path: Path) -> None:
    per_seed = {seed: study.evaluate(seed, *OTHER_SITE) for seed in SEEDS}
    settings = per_seed[0][0]["evaluated_on"]["settings_hash"]
    # An evaluation left without done (killed) is named in a note, never averaged.
    killed = per_seed[1][1].with_name("synthetic_mri-test-killed")
    shutil.copytree(per_seed[1][1], killed)
    (killed / "done").unlink()

    report = build(
        read_folder(study.out / "runs"),
        tmp_path / "report",
        "runs",
        Options(n_boot=20, figures=False, characterise=False),
        root=study.out / "runs",
        echo=lambda _: None,
    )

    table = report.tables["external"]
    rows = table.raw[(table.raw["evaluation_settings"] == settings)].set_index("domain")
    for domain in ("ge", "siemens"):
        recomputed = []
        for _, folder, _ in per_seed.values():
            predictions = pd.read_csv(folder / "predictions.csv")
            mine = predictions[predictions["domain"] == domain]
            recomputed.append(mann_whitney(mine["logit"], mine["label"]))
        assert rows.loc[domain, "seeds"] == 2
        assert rows.loc[domain, "auroc_mean"] == pytest.approx(np.mean(recomputed), abs=1e-12)
        assert rows.loc[domain, "tested_on"] == "synthetic_mri"
    assert (tmp_path / "report" / "tables" / "external.csv").is_file()
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "External validation: trained on A, tested on site C" in markdown
    [note] = [n for n in report.notes if "synthetic_mri-test-killed" in n]
    assert "incomplete" in note
