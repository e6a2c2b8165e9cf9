"""The mitigation view over committed run records: the committed tables, to the digit, and the same
numbers recomputed independently (scikit-learn AUROC, scipy's paired tests, a bootstrap scored
pair by pair) from the records' predictions; runs grouped by method and paired with none by seed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from sklearn.metrics import roc_auc_score

from shiftlab.report import Options, Report, build, read_folder
from shiftlab.report.records import comparable_settings
from shiftlab.report.stats import rng_for

FIXTURES = Path(__file__).parent / "fixtures"
RUNS = FIXTURES / "mitigation_runs"
EXPECTED = FIXTURES / "mitigation_expected"


def _fixture_script():
    spec = importlib.util.spec_from_file_location(
        "make_mitigation_runs", FIXTURES / "make_mitigation_runs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIXTURE = _fixture_script()


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Report:
    out = tmp_path_factory.mktemp("mitigation-report")
    options = Options(**FIXTURE.GOLDEN)
    return build(read_folder(RUNS), out, "mitigation_runs", options, root=RUNS, echo=lambda _: None)


def _table(report: Report, name: str) -> pd.DataFrame:
    return pd.read_csv(report.out / "tables" / f"{name}.csv", dtype={"seed_list": str})


@pytest.mark.parametrize("name", FIXTURE.EXPECTED_FILES)
def test_tables_are_the_committed_ones(golden: Report, name: str) -> None:
    written = (golden.out / "tables" / name).read_text()
    assert written == (EXPECTED / name).read_text(), (
        f"{name} differs from tests/report/fixtures/mitigation_expected/{name}; if the change is "
        "intended, regenerate with python tests/report/fixtures/make_mitigation_runs.py and "
        "review the diff"
    )


# --- an independent reading of the records -----------------------------------------------------


def _records() -> pd.DataFrame:
    """Every run of the fixture as read without the report: its method (none where the record
    names none), scenario, seed and test AUROCs by scikit-learn on the rows of split test."""
    rows = []
    for metrics_path in sorted(RUNS.rglob("metrics.json")):
        run_dir = metrics_path.parent
        metrics = json.loads(metrics_path.read_text())
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        predictions = pd.read_csv(run_dir / "predictions.csv", dtype={"patient_id": str})
        test = predictions[predictions["split"] == "test"]
        auc = {d: roc_auc_score(t["label"], t["logit"]) for d, t in test.groupby("domain")}
        method = metrics.get("mitigation", {"name": "none"})["name"]
        rows.append(
            {
                "run_dir": run_dir,
                "dataset": metrics["dataset"],
                "source": metrics["source"],
                "target": metrics["target"],
                "method": method,
                "epochs": config["trainer"]["max_epochs"],
                "seed": metrics["seed"],
                "delta": auc[metrics["target"]] - auc[metrics["source"]],
                "source_auroc": auc[metrics["source"]],
                "target_auroc": auc[metrics["target"]],
            }
        )
    return pd.DataFrame(rows)


def _pair(records: pd.DataFrame, row: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The method's runs and none's of one row's scenario (2 epochs: the grid's settings), on
    the seeds both have, in seed order."""
    scenario = records[
        (records["dataset"] == row["dataset"])
        & (records["source"] == row["source"])
        & (records["target"] == row["target"])
        & (records["epochs"] == 2)
    ]
    method = scenario[scenario["method"] == row["method"]].set_index("seed")
    none = scenario[scenario["method"] == "none"].set_index("seed")
    seeds = sorted(set(method.index) & set(none.index))
    return method.loc[seeds], none.loc[seeds]


def test_mitigation_numbers_recomputed_independently(golden: Report) -> None:
    table = _table(golden, "mitigation")
    records = _records()
    assert len(table) == 9  # 4 scenarios x (augment, adabn) + mixstyle on one
    for _, row in table.iterrows():
        method, none = _pair(records, row)
        assert row["seed_list"] == " ".join(map(str, method.index))
        assert row["seeds"] == len(method) == len(none)
        delta, baseline = method["delta"].mean(), none["delta"].mean()
        assert row["delta_auroc_mean"] == pytest.approx(delta, abs=1e-6)
        assert row["baseline_delta_auroc_mean"] == pytest.approx(baseline, abs=1e-6)
        assert row["difference_mean"] == pytest.approx(delta - baseline, abs=1e-6)
        for domain in ("source", "target"):  # a smaller drop helps only if the target rises
            mean, none_mean = method[f"{domain}_auroc"].mean(), none[f"{domain}_auroc"].mean()
            assert row[f"{domain}_auroc_mean"] == pytest.approx(mean, abs=1e-6)
            assert row[f"baseline_{domain}_auroc_mean"] == pytest.approx(none_mean, abs=1e-6)
        paired_t = stats.ttest_rel(method["delta"], none["delta"])
        assert row["t"] == pytest.approx(paired_t.statistic, abs=1e-5)
        assert row["p_t"] == pytest.approx(paired_t.pvalue, abs=1e-6)
        wilcoxon = stats.wilcoxon(method["delta"], none["delta"])
        assert row["p_wilcoxon"] == pytest.approx(wilcoxon.pvalue, abs=1e-6)
        if baseline < 0:
            share = (delta - baseline) / -baseline
            assert row["recovered"] == pytest.approx(share, abs=1e-6)
        else:  # no drop: nothing to recover
            assert np.isnan(row["recovered"]) and row["dataset"] == "toy_xray"
        assert row["transductive"] == (row["method"] == "adabn")


def _weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC by its definition, each row counted as often as its weight (one weight row per
    replicate): the share of (positive, negative) pairs ranked right, ties half."""
    positive, negative = labels == 1, labels == 0
    wins = (scores[positive][:, None] > scores[negative][None, :]).astype(float)
    wins += 0.5 * (scores[positive][:, None] == scores[negative][None, :])
    pos, neg = weights[:, positive], weights[:, negative]
    return np.einsum("bp,pn,bn->b", pos, wins, neg) / (pos.sum(1) * neg.sum(1))


def test_intervals_recomputed_naively(golden: Report) -> None:
    """The same patient draws, each seed of the method and of none scored pair by pair on every
    replicate: the same intervals of ΔAUC, of the difference and of the share recovered."""
    table = _table(golden, "mitigation")
    row = table[(table["method"] == "augment") & (table["source"] == "ge")].iloc[0]
    assert row["dataset"] == "toy_mri"
    method, none = _pair(_records(), row)
    tables = [
        pd.read_csv(run_dir / "predictions.csv", dtype={"patient_id": str})
        for run_dir in [*method["run_dir"], *none["run_dir"]]
    ]
    tables = [t[t["split"] == "test"] for t in tables]
    domains = (row["source"], row["target"])
    patients = {
        d: np.unique(np.concatenate([t[t["domain"] == d]["patient_id"] for t in tables]))
        for d in domains
    }
    n_boot = FIXTURE.GOLDEN["n_boot"]
    rng = rng_for(FIXTURE.GOLDEN["bootstrap_seed"], f"{row['group']}/{row['baseline_group']}")
    draws = {  # source first, then target, as the report draws
        d: rng.multinomial(len(p), np.full(len(p), 1 / len(p)), size=n_boot)
        for d, p in patients.items()
    }
    deltas = []
    for t in tables:
        auc = {}
        for d in domains:
            rows = t[t["domain"] == d]
            index = np.searchsorted(patients[d], rows["patient_id"].to_numpy())
            auc[d] = _weighted_auroc(
                rows["label"].to_numpy(), rows["logit"].to_numpy(), draws[d][:, index]
            )
        deltas.append(auc[row["target"]] - auc[row["source"]])
    deltas = np.array(deltas)
    ours, theirs = deltas[: len(method)].mean(0), deltas[len(method) :].mean(0)
    share = (ours - theirs) / -theirs
    assert (theirs < 0).sum() == n_boot - row["recovered_dropped"]
    share = share[theirs < 0]
    for name, values in (("delta", ours), ("baseline", theirs), ("difference", ours - theirs)):
        low, high = np.percentile(values, [2.5, 97.5])
        assert row[f"{name}_ci_low"] == pytest.approx(low, abs=1e-6)
        assert row[f"{name}_ci_high"] == pytest.approx(high, abs=1e-6)
    low, high = np.percentile(share, [2.5, 97.5])
    assert row["recovered_ci_low"] == pytest.approx(low, abs=1e-6)
    assert row["recovered_ci_high"] == pytest.approx(high, abs=1e-6)


def test_modality_rows_pool_their_scenarios(golden: Report) -> None:
    """Each method per modality and over all: the scenarios' mean ΔAUC (recomputed from the
    records) averaged, the share of the pooled drop, and the tests across scenarios."""
    scenarios = _table(golden, "mitigation")
    pooled = _table(golden, "mitigation_modality")
    assert list(dict.fromkeys(pooled["method"])) == ["augment", "adabn", "mixstyle"]
    assert list(pooled[pooled["method"] == "augment"]["modality"]) == ["MRI", "X-ray", "CT", "all"]
    records = _records()
    means = []
    for _, row in scenarios.iterrows():
        method, none = _pair(records, row)
        means.append((method["delta"].mean(), none["delta"].mean()))
    scenarios[["delta", "baseline"]] = means
    for _, row in pooled.iterrows():
        members = scenarios[scenarios["method"] == row["method"]]
        if row["modality"] != "all":
            members = members[members["modality"] == row["modality"]]
        assert row["scenarios"] == len(members)
        delta, baseline = members["delta"].mean(), members["baseline"].mean()
        differences = members["delta"] - members["baseline"]
        assert row["delta_auroc_mean"] == pytest.approx(delta, abs=1e-6)
        assert row["baseline_delta_auroc_mean"] == pytest.approx(baseline, abs=1e-6)
        assert row["improved"] == (differences > 0).sum()
        if baseline < 0:
            assert row["recovered"] == pytest.approx((delta - baseline) / -baseline, abs=1e-6)
        else:
            assert np.isnan(row["recovered"])
        if len(members) == 1:  # one scenario's bootstrap: its own interval
            [single] = members.to_dict("records")
            for bound in ("recovered_ci_low", "recovered_ci_high"):
                assert row[bound] == pytest.approx(single[bound], abs=1e-6, nan_ok=True)
        else:
            assert row["p_t"] == pytest.approx(stats.ttest_1samp(differences, 0).pvalue, abs=1e-6)
            assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(differences).pvalue, abs=1e-6)


def test_methods_are_groups_of_their_own_paired_with_none_by_seed(golden: Report) -> None:
    runs = golden.runs
    assert (runs["status"] == "used").all() and len(runs) == 55
    per_method = runs.groupby(["dataset", "source", "target", "mitigation"])["group"].nunique()
    # One group per scenario and method; histogram's runs (3 epochs) are a group of their own.
    assert set(per_method) == {1}
    assert per_method.loc[("toy_mri", "ge", "siemens")].to_dict() == {
        "adabn": 1,
        "augment": 1,
        "histogram": 1,
        "mixstyle": 1,
        "none": 1,
    }
    table = _table(golden, "mitigation")
    none_groups = runs[runs["mitigation"] == "none"].groupby(["dataset", "source", "target"])
    baselines = none_groups["group"].first()
    for _, row in table.iterrows():
        assert row["baseline_group"] == baselines[(row["dataset"], row["source"], row["target"])]
    # Records from before mitigations (toy_xray's runs of none) are none, and pair.
    assert (table["dataset"] == "toy_xray").sum() == 2
    assert "histogram" not in set(table["method"])
    notes = " ".join(golden.notes)
    assert "Mitigation histogram: toy_mri ge → siemens" in notes
    assert "no run of none with the same settings to pair with" in notes
    assert "seeds 0 1 2 paired with none (method: 0 1 2; none: 0 1 2 3)" in notes
    # The study's tables read the runs of none only.
    scenarios = _table(golden, "scenarios")
    assert set(scenarios["group"]) == set(baselines)


def test_the_view_says_what_is_undefined_and_what_is_transductive(golden: Report) -> None:
    display = golden.tables["mitigation"].display
    xray = display[display["dataset"] == "toy_xray"]
    assert set(xray["drop recovered"]) == {"no drop"}
    assert set(xray["recovered 95% CI"]) == {"–"}
    assert set(display[display["method"] == "adabn"]["transductive"]) == {"yes"}
    assert set(display[display["method"] != "adabn"]["transductive"]) == {"no"}
    assert "Transductive: the method read the target domain's test images" in (
        golden.tables["mitigation"].caption
    )


def test_a_run_of_none_groups_with_runs_from_before_mitigations() -> None:
    config = {"model": {"name": "smallcnn"}, "seed": 0, "shift": {"name": "none"}}
    none = {**config, "mitigation": {"_target_": "x.NoMitigation", "name": "none"}}
    augment = {**config, "mitigation": {"_target_": "x.Augment", "name": "augment"}}
    assert comparable_settings(none) == comparable_settings(config)
    assert comparable_settings(augment) != comparable_settings(config)


def test_the_figure_shows_each_method(tmp_path: Path) -> None:
    from shiftlab.report.figures import mitigation_figure

    report = build(
        read_folder(RUNS),
        tmp_path,
        "mitigation_runs",
        Options(n_boot=50, characterise=False),
        root=RUNS,
        echo=lambda _: None,
    )
    assert tmp_path / "figures" / "mitigation.png" in report.figures
    assert (tmp_path / "figures" / "mitigation.png").read_bytes()[:4] == b"\x89PNG"
    figure = mitigation_figure(report.tables["mitigation_modality"].raw)
    [ax] = figure.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["augment", "adabn (transductive)", "mixstyle"]
    assert "share of the drop recovered" in ax.get_xlabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "target AUROC below none's" not in legend  # every target rose in the fixture
    # A row whose target AUROC fell below none's is drawn hollow, and the legend says why.
    pooled = report.tables["mitigation_modality"].raw.copy()
    fell = pooled.index[0]
    pooled.loc[fell, "target_auroc_mean"] = pooled.loc[fell, "baseline_target_auroc_mean"] - 0.1
    [ax] = mitigation_figure(pooled).axes
    faces = [c.get_facecolor()[0] for c in ax.collections if len(c.get_offsets())]
    assert sum(tuple(f) == (1.0, 1.0, 1.0, 1.0) for f in faces) == 1
    assert "target AUROC below none's" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_a_drop_that_shrank_because_the_source_fell_is_named() -> None:
    """A method can shrink the drop by learning less (a lower source AUROC) while the target
    AUROC falls too: the report must not let that read as a remedy."""
    from dataclasses import replace

    from shiftlab.report.mitigation import _drop_shrank_but_target_fell, comparisons
    from shiftlab.report.records import group_runs

    found = comparisons(group_runs(read_folder(RUNS)), 0, 0, [])
    assert _drop_shrank_but_target_fell(found) == []  # in the fixture every smaller drop helps
    [augment_ct] = [
        c
        for c in found
        if c.method.dataset == "toy_ct" and c.method.mitigation["name"] == "augment"
    ]
    assert augment_ct.deltas.mean() > augment_ct.baseline_deltas.mean()  # a smaller drop ...
    _, target_none = augment_ct.baseline_aurocs
    learnt_less = replace(augment_ct, aurocs=(0.62, target_none - 0.05))  # ... on a worse target
    [note] = _drop_shrank_but_target_fell([learnt_less])
    assert note.startswith("Mitigation augment: toy_ct ge → siemens")
    assert f"lower target AUROC ({target_none - 0.05:.3f} against {target_none:.3f})" in note
    assert "did not help on the target" in note
