"""The report over committed run records: the committed tables, to the digit, and the same numbers
recomputed independently (scikit-learn, scipy, a naive bootstrap) from the predictions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from shiftlab.report import Options, Report, build, read_folder
from shiftlab.report.stats import rng_for

FIXTURES = Path(__file__).parent / "fixtures"
RUNS = FIXTURES / "report_runs"
EXPECTED = FIXTURES / "report_expected"


def _fixture_script():
    spec = importlib.util.spec_from_file_location(
        "make_report_runs", FIXTURES / "make_report_runs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOLDEN = _fixture_script().GOLDEN
EXPECTED_FILES = _fixture_script().EXPECTED_FILES


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Report:
    out = tmp_path_factory.mktemp("golden-report")
    return build(
        read_folder(RUNS), out, "report_runs", Options(**GOLDEN), root=RUNS, echo=lambda _: None
    )


@pytest.mark.parametrize("name", [*EXPECTED_FILES, "runs.csv"])
def test_tables_are_the_committed_ones(golden: Report, name: str) -> None:
    written = (golden.out / "tables" / name).read_text()
    assert written == (EXPECTED / name).read_text(), (
        f"{name} differs from tests/report/fixtures/report_expected/{name}; if the change is "
        "intended, regenerate with python tests/report/fixtures/make_report_runs.py and review "
        "the diff"
    )


def test_left_out_runs_are_counted_with_their_reason(golden: Report) -> None:
    assert golden.counts == {
        "used": 26,
        "unusable": 2,
        "duplicate": 0,
        "incomplete": 1,
        "running": 0,
        "missing": 0,
    }
    runs = golden.runs.set_index("status")
    assert "no done marker" in runs.loc["incomplete", "reason"]
    reasons = " | ".join(runs.loc["unusable", "reason"])
    assert "metrics.json is not valid JSON" in reasons and "predictions.csv is missing" in reasons
    notes = " ".join(golden.notes)
    assert "Left out (incomplete): toy_ct/siemens-ge/smallcnn-seed0-" in notes


def _predictions(run_dir: str) -> pd.DataFrame:
    return pd.read_csv(RUNS / run_dir / "predictions.csv", dtype={"patient_id": str})


def _per_seed(golden: Report, group: str, source: str, target: str) -> pd.DataFrame:
    used = golden.runs[(golden.runs["group"] == group) & (golden.runs["status"] == "used")]
    rows = []
    for run_dir, seed in zip(used["run_dir"], used["seed"], strict=True):
        table = _predictions(run_dir)
        auc = {d: roc_auc_score(t["label"], t["logit"]) for d, t in table.groupby("domain")}
        rows.append(
            {"seed": seed, "source": auc[source], "target": auc[target], "run_dir": run_dir}
        )
    return pd.DataFrame(rows).sort_values("seed")


def test_scenario_numbers_recomputed_independently(golden: Report) -> None:
    scenarios = pd.read_csv(golden.out / "tables" / "scenarios.csv")
    assert len(scenarios) == 5
    for row in scenarios.itertuples():
        seeds = _per_seed(golden, row.group, row.source, row.target)
        delta = seeds["target"] - seeds["source"]
        assert row.seeds == len(seeds)
        assert row.source_auroc_mean == pytest.approx(seeds["source"].mean(), abs=1e-6)
        assert row.source_auroc_sd == pytest.approx(seeds["source"].std(ddof=1), abs=1e-6)
        assert row.target_auroc_mean == pytest.approx(seeds["target"].mean(), abs=1e-6)
        assert row.target_auroc_sd == pytest.approx(seeds["target"].std(ddof=1), abs=1e-6)
        assert row.delta_auroc_mean == pytest.approx(delta.mean(), abs=1e-6)
        assert row.p_t == pytest.approx(stats.ttest_1samp(delta, 0.0).pvalue, abs=1e-6)
        assert row.p_wilcoxon == pytest.approx(stats.wilcoxon(delta).pvalue, abs=1e-6)


def _pairwise_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC by its definition: the share of (positive, negative) pairs ranked right, ties half."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    wins = (positive[:, None] > negative[None, :]).sum() + 0.5 * (
        positive[:, None] == negative[None, :]
    ).sum()
    return wins / (positive.size * negative.size)


def test_bootstrap_interval_recomputed_naively(golden: Report) -> None:
    """The same patient draws, each replicate's test sets built row by row and scored pair by
    pair: the report's fast weighted AUROC gives the same interval."""
    scenarios = pd.read_csv(golden.out / "tables" / "scenarios.csv")
    row = scenarios[(scenarios["dataset"] == "toy_mri") & (scenarios["source"] == "ge")].iloc[0]
    seeds = _per_seed(golden, row.group, row.source, row.target)
    tables = [_predictions(d) for d in seeds["run_dir"]]
    patients = {
        domain: np.unique(np.concatenate([t[t["domain"] == domain]["patient_id"] for t in tables]))
        for domain in (row.source, row.target)
    }
    rng = rng_for(GOLDEN["bootstrap_seed"], row.group)
    n_boot = GOLDEN["n_boot"]
    draws = {
        domain: rng.multinomial(len(p), np.full(len(p), 1 / len(p)), size=n_boot)
        for domain, p in patients.items()  # source first, then target, as the report draws
    }
    means = []
    for b in range(n_boot):
        deltas = []
        for table in tables:
            auc = {}
            for domain in (row.source, row.target):
                rows = table[table["domain"] == domain]
                times = dict(zip(patients[domain], draws[domain][b], strict=True))
                repeat = rows["patient_id"].map(times).to_numpy()
                auc[domain] = _pairwise_auroc(
                    np.repeat(rows["label"].to_numpy(), repeat),
                    np.repeat(rows["logit"].to_numpy(), repeat),
                )
            deltas.append(auc[row.target] - auc[row.source])
        means.append(np.mean(deltas))
    low, high = np.percentile(means, [2.5, 97.5])
    assert row.delta_ci_low == pytest.approx(low, abs=1e-6)
    assert row.delta_ci_high == pytest.approx(high, abs=1e-6)
    assert row.bootstrap_replicates == n_boot


def test_modality_table_averages_the_scenarios(golden: Report) -> None:
    scenarios = pd.read_csv(golden.out / "tables" / "scenarios.csv")
    modality = pd.read_csv(golden.out / "tables" / "modality.csv").set_index("modality")
    mri = scenarios[scenarios["modality"] == "MRI"]["delta_auroc_mean"]
    assert modality.loc["MRI", "delta_auroc_mean"] == pytest.approx(mri.mean(), abs=1e-6)
    assert modality.loc["MRI", "study_delta_auroc"] == -0.097
    assert modality.loc["all", "scenarios"] == 5
    assert modality.loc["all", "drops"] == int((scenarios["delta_auroc_mean"] < 0).sum())
