"""The deployment view (shiftlab/report/deployment.py) over committed run records: the committed
table to the digit, its numbers recomputed with scikit-learn and by hand from predictions.csv,
its interval recomputed naively on the same patient draws; records from before the metrics
beyond AUROC give no such table, and a record whose numbers its predictions do not give is left
out with the reason."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, recall_score, roc_curve

from shiftlab.report import Options, Report, build, read_folder
from shiftlab.report.stats import rng_for

FIXTURES = Path(__file__).parent / "fixtures"
RUNS = FIXTURES / "deployment_runs"
EXPECTED = FIXTURES / "deployment_expected"
METRICS = ("sensitivity", "specificity", "ece", "brier")


def _fixture_script():
    spec = importlib.util.spec_from_file_location(
        "make_deployment_runs", FIXTURES / "make_deployment_runs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOLDEN = _fixture_script().GOLDEN
EXPECTED_FILES = _fixture_script().EXPECTED_FILES


def _build(runs: Path, out: Path) -> Report:
    return build(read_folder(runs), out, runs.name, Options(**GOLDEN), root=runs, echo=print)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return _build(RUNS, tmp_path_factory.mktemp("deployment-report"))


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_table_is_the_committed_one(report: Report, name: str) -> None:
    written = (report.out / "tables" / name).read_text()
    assert written == (EXPECTED / name).read_text(), (
        f"{name} differs from tests/report/fixtures/deployment_expected/{name}; if the change is "
        "intended, regenerate with python tests/report/fixtures/make_deployment_runs.py and "
        "review the diff"
    )
    assert "deployment" in json.loads((report.out / "report.json").read_text())["tables"]


def hand_ece(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Binned ECE written out: bins ((k−1)/M, k/M] (0 in the first), Σ |bin|/n · |acc − conf|."""
    total = 0.0
    for k in range(1, bins + 1):
        inside = (probabilities > (k - 1) / bins) & (probabilities <= k / bins)
        if k == 1:
            inside |= probabilities == 0.0
        if inside.any():
            gap = labels[inside].mean() - probabilities[inside].mean()
            total += inside.sum() / len(labels) * abs(gap)
    return total


def youden_or_target(val: pd.DataFrame, rule: str) -> float:
    """The threshold by scikit-learn's ROC curve of the source validation rows."""
    fpr, tpr, thresholds = roc_curve(val["label"], val["logit"], drop_intermediate=False)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    if rule == "youden":
        return float(thresholds[np.argmax(tpr - fpr)])
    target = float(rule.split("≥")[1])
    return float(thresholds[np.argmax(tpr >= target)])


def independent(rows: pd.DataFrame, threshold: float, bins: int) -> dict[str, float]:
    labels, called = rows["label"].to_numpy(), (rows["logit"] >= threshold).astype(int)
    probabilities = rows["probability"].to_numpy()
    return {
        "sensitivity": recall_score(labels, called),
        "specificity": recall_score(labels, called, pos_label=0),
        "ece": hand_ece(probabilities, labels, bins),
        "brier": brier_score_loss(labels, probabilities),
    }


def per_seed(report: Report, row: pd.Series) -> list[tuple[pd.DataFrame, float]]:
    """Each seed's predictions and its threshold, recomputed from predictions.csv alone."""
    runs = report.runs[(report.runs["group"] == row["group"]) & (report.runs["status"] == "used")]
    found = []
    for run_dir in runs.sort_values("seed")["run_dir"]:
        table = pd.read_csv(RUNS / run_dir / "predictions.csv", dtype={"patient_id": str})
        val = table[(table["split"] == "val") & (table["domain"] == row["source"])]
        found.append((table, youden_or_target(val, row["threshold_rule"])))
    return found


def test_numbers_recomputed_independently(report: Report) -> None:
    table = pd.read_csv(report.out / "tables" / "deployment.csv")
    assert list(table["threshold_rule"]) == ["youden", "sensitivity ≥ 0.8"]
    for _, row in table.iterrows():
        seeds = per_seed(report, row)
        assert row["seeds"] == len(seeds) == 3
        assert row["threshold_mean"] == pytest.approx(np.mean([t for _, t in seeds]), abs=1e-6)
        values = {
            role: pd.DataFrame(
                [
                    independent(
                        t[(t["split"] == "test") & (t["domain"] == row[role])],
                        threshold,
                        row["ece_bins"],
                    )
                    for t, threshold in seeds
                ]
            )
            for role in ("source", "target")
        }
        for name in METRICS:
            source, target = values["source"][name], values["target"][name]
            assert row[f"{name}_source_mean"] == pytest.approx(source.mean(), abs=1e-6), name
            assert row[f"{name}_target_mean"] == pytest.approx(target.mean(), abs=1e-6), name
            assert row[f"{name}_target_sd"] == pytest.approx(target.std(ddof=1), abs=1e-6), name
            delta = target - source
            assert row[f"{name}_delta_mean"] == pytest.approx(delta.mean(), abs=1e-6), name
            assert row[f"{name}_delta_sd"] == pytest.approx(delta.std(ddof=1), abs=1e-6), name
            assert row[f"{name}_ci_low"] <= row[f"{name}_ci_high"]


def plain(
    labels: np.ndarray, logits: np.ndarray, probabilities: np.ndarray, threshold: float, bins: int
) -> dict[str, float]:
    """The four metrics by their textbook formulas, in plain numpy (fast enough to score every
    bootstrap replicate row by row)."""
    called = logits >= threshold
    return {
        "sensitivity": called[labels == 1].mean(),
        "specificity": (~called[labels == 0]).mean(),
        "ece": hand_ece(probabilities, labels, bins),
        "brier": np.mean((probabilities - labels) ** 2),
    }


def test_interval_recomputed_naively_on_the_same_draws(report: Report) -> None:
    """The draws of ΔAUC's interval (group key, bootstrap seed; source first, then target), each
    replicate's test sets built row by row (a patient's rows repeated as often as it was drawn)
    and scored by the textbook formulas."""
    table = pd.read_csv(report.out / "tables" / "deployment.csv")
    row = table.iloc[0]
    seeds = per_seed(report, row)
    domains = {
        role: [t[(t["split"] == "test") & (t["domain"] == row[role])] for t, _ in seeds]
        for role in ("source", "target")
    }
    patients = {
        role: np.unique(np.concatenate([f["patient_id"] for f in frames]))
        for role, frames in domains.items()
    }
    rng = rng_for(GOLDEN["bootstrap_seed"], row["group"])
    n_boot = GOLDEN["n_boot"]
    draws = {
        role: rng.multinomial(len(p), np.full(len(p), 1 / len(p)), size=n_boot)
        for role, p in patients.items()
    }
    columns = {
        role: [
            (
                np.searchsorted(patients[role], f["patient_id"].to_numpy()),
                f["label"].to_numpy(),
                f["logit"].to_numpy(),
                f["probability"].to_numpy(),
            )
            for f in frames
        ]
        for role, frames in domains.items()
    }
    means = {name: [] for name in METRICS}
    for b in range(n_boot):
        changes = {name: [] for name in METRICS}
        for s, (_, threshold) in enumerate(seeds):
            scored = {}
            for role in ("source", "target"):
                patient, labels, logits, probabilities = columns[role][s]
                times = draws[role][b][patient]
                scored[role] = plain(
                    np.repeat(labels, times),
                    np.repeat(logits, times),
                    np.repeat(probabilities, times),
                    threshold,
                    row["ece_bins"],
                )
            for name in METRICS:
                changes[name].append(scored["target"][name] - scored["source"][name])
        for name in METRICS:
            means[name].append(np.mean(changes[name]))
    for name in METRICS:
        low, high = np.percentile(means[name], [2.5, 97.5])
        assert row[f"{name}_ci_low"] == pytest.approx(low, abs=1e-6), name
        assert row[f"{name}_ci_high"] == pytest.approx(high, abs=1e-6), name
        assert row[f"{name}_bootstrap_replicates"] == n_boot


def test_records_from_before_the_metrics_give_no_deployment_table(tmp_path: Path) -> None:
    old = _build(FIXTURES / "report_runs", tmp_path / "report")
    assert "deployment" not in old.tables
    assert not (tmp_path / "report" / "tables" / "deployment.csv").exists()


def _copy_run(tmp_path: Path) -> Path:
    [first] = sorted(RUNS.glob("toy_mri/ge-siemens/*seed0*"))
    copy = tmp_path / "runs" / first.relative_to(RUNS)
    shutil.copytree(first, copy)
    return copy


def _problem(run_dir: Path) -> str | None:
    [run] = read_folder(run_dir.parents[2])
    return run.problem


def test_a_record_its_predictions_do_not_give_is_left_out_with_the_reason(tmp_path: Path) -> None:
    run_dir = _copy_run(tmp_path)
    assert _problem(run_dir) is None
    path = run_dir / "metrics.json"
    record = json.loads(path.read_text())
    stated = dict(record)
    stated["metrics"] = {**record["metrics"], "test/siemens/ece": 0.5}
    path.write_text(json.dumps(stated))
    assert _problem(run_dir).startswith("predictions.csv gives test/siemens/ece 0.")
    chosen = dict(record, threshold={**record["threshold"], "value": 9.0})
    path.write_text(json.dumps(chosen))
    assert _problem(run_dir).startswith("predictions.csv gives threshold ")
    path.write_text(json.dumps(record))
    predictions = pd.read_csv(run_dir / "predictions.csv")
    predictions[predictions["split"] == "test"].to_csv(run_dir / "predictions.csv", index=False)
    assert _problem(run_dir) == (
        "predictions.csv lacks source validation rows of both classes (split val, domain ge), "
        "on which metrics.json's threshold was chosen"
    )
