"""The metrics beyond AUROC (shiftlab/deployment_metrics.py) against independent computations
(scikit-learn, and ECE written out bin by bin here), and in a real run's record: every number of
metrics.json recomputed from its predictions.csv without shiftlab's code, the threshold chosen on
the source validation rows alone, and the evaluation settings as config and identity take them."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.compose import compose_train
from omegaconf import OmegaConf
from sklearn.metrics import brier_score_loss, recall_score, roc_auc_score, roc_curve

from shiftlab.config import CONF_DIR
from shiftlab.deployment_metrics import (
    WeightedMetrics,
    choose_threshold,
    domain_metrics,
    record_metrics,
)
from shiftlab.errors import ShiftlabError
from shiftlab.identity import EVALUATION_AS_SHIPPED, settings_hash
from shiftlab.report.records import comparable_settings
from shiftlab.schema import check_train_config

# Enough source validation samples (about 12) for a threshold that means something, made and
# trained in seconds.
DATA = (
    "dataset.synthetic.patients_per_vendor=40",
    "dataset.split_fractions={train:0.4,val:0.3,test:0.3}",
)
RUN = ("model=smallcnn", "trainer.max_epochs=2")


def fixed_predictions(seed: int, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits with ties within and across classes (rounded), labels of both classes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    logits = np.round(1.2 * labels + rng.normal(shift, 1.0, size=n), 1)
    return logits, labels


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def sklearn_threshold(logits: np.ndarray, labels: np.ndarray, rule: str, target: float) -> float:
    """The threshold by scikit-learn's ROC curve: every distinct logit, highest first, a sample
    positive when its logit is at or above it."""
    fpr, tpr, thresholds = roc_curve(labels, logits, drop_intermediate=False)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # the first point calls none positive
    best = np.argmax(tpr - fpr) if rule == "youden" else np.argmax(tpr >= target)
    return float(thresholds[best])


def hand_ece(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Binned ECE written out: bins ((k−1)/M, k/M] (0 in the first), Σ |bin|/n · |acc − conf|."""
    total = 0.0
    for k in range(1, bins + 1):
        low, high = (k - 1) / bins, k / bins
        inside = (probabilities > low) & (probabilities <= high)
        if k == 1:
            inside |= probabilities == 0.0
        if inside.any():
            gap = labels[inside].mean() - probabilities[inside].mean()
            total += inside.sum() / len(labels) * abs(gap)
    return total


@pytest.mark.parametrize(("rule", "target"), [("youden", None), ("sensitivity", 0.9)])
def test_threshold_sensitivity_and_specificity_match_sklearn(rule: str, target: float) -> None:
    val_logits, val_labels = fixed_predictions(0, 80)
    chosen = choose_threshold(val_logits, val_labels, rule, target)
    assert chosen.value == sklearn_threshold(val_logits, val_labels, rule, target or 0.0)
    called = (val_logits >= chosen.value).astype(int)
    assert chosen.sensitivity == recall_score(val_labels, called)
    assert chosen.specificity == recall_score(val_labels, called, pos_label=0)
    if rule == "sensitivity":  # the most specific threshold that reaches the target
        assert chosen.sensitivity >= 0.9
        assert recall_score(val_labels, val_logits > chosen.value) < 0.9
    for seed, shift in ((1, 0.0), (2, 0.7)):  # a target domain whose logits moved up
        logits, labels = fixed_predictions(seed, 60, shift)
        values = domain_metrics(logits, sigmoid(logits), labels, chosen.value, 15)
        called = (logits >= chosen.value).astype(int)
        assert values["sensitivity"] == pytest.approx(recall_score(labels, called), abs=1e-15)
        assert values["specificity"] == pytest.approx(
            recall_score(labels, called, pos_label=0), abs=1e-15
        )


def test_youden_ties_go_to_the_highest_threshold() -> None:
    """J is 0.5 at logits 0.4 and 0.2: the threshold that calls fewer samples positive wins, as
    the first maximum along scikit-learn's ROC curve."""
    logits, labels = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1])
    assert sklearn_threshold(logits, labels, "youden", 0.0) == 0.4
    assert choose_threshold(logits, labels, "youden").value == 0.4


def test_a_target_sensitivity_reached_exactly_is_reached() -> None:
    """9 of 10 positives at or above 2.0: sensitivity 0.9 is reached there, not only below."""
    logits = np.array([*range(1, 11), 0.5, 5.5], dtype=float)
    labels = np.array([1] * 10 + [0, 0])
    chosen = choose_threshold(logits, labels, "sensitivity", 0.9)
    assert chosen.value == sklearn_threshold(logits, labels, "sensitivity", 0.9) == 2.0
    assert (chosen.sensitivity, chosen.specificity) == (0.9, 0.5)


def test_ece_and_brier_match_independent_computations() -> None:
    logits, labels = fixed_predictions(3, 200, shift=0.4)
    probabilities = sigmoid(logits)
    for bins in (1, 10, 15):
        values = domain_metrics(logits, probabilities, labels, 0.0, bins)
        assert values["ece"] == pytest.approx(hand_ece(probabilities, labels, bins), abs=1e-12)
        assert values["brier"] == pytest.approx(brier_score_loss(labels, probabilities), abs=1e-12)
    # One bin: |mean label − mean probability|. Probabilities on the edges go to the bin below.
    assert domain_metrics(logits, probabilities, labels, 0.0, 1)["ece"] == pytest.approx(
        abs(labels.mean() - probabilities.mean()), abs=1e-12
    )
    # Probabilities on bin edges (0.2 and 0.5 of 10 bins) go to the bin below: bins closed on
    # the left would give 0.207 here instead of 0.321.
    edges = np.array([0.0, 0.2, 0.2, 0.25, 0.5, 0.6, 1.0])
    edge_labels = np.array([0, 0, 1, 1, 0, 1, 1])
    assert domain_metrics(edges, edges, edge_labels, 0.5, 10)["ece"] == pytest.approx(
        hand_ece(edges, edge_labels, 10), abs=1e-12
    )
    assert hand_ece(edges, edge_labels, 10) == pytest.approx(0.3214285714, abs=1e-9)


def test_weights_are_rows_repeated() -> None:
    """The report's bootstrap weights rows by how often their patient was drawn: the weighted
    metrics must be those of the repeated rows."""
    logits, labels = fixed_predictions(4, 40)
    probabilities = sigmoid(logits)
    weights = np.random.default_rng(5).integers(0, 3, size=(4, 40))
    weighted = WeightedMetrics(logits, probabilities, labels, 0.3, 15)(weights)
    for replicate, w in enumerate(weights):
        repeated = domain_metrics(
            np.repeat(logits, w), np.repeat(probabilities, w), np.repeat(labels, w), 0.3, 15
        )
        for name, value in repeated.items():
            assert weighted[name][replicate] == pytest.approx(value, abs=1e-12), name


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a small synthetic set and two short real runs on it: the shipped
    evaluation settings (run/) and the rule ``sensitivity`` (run-sensitivity/)."""
    from shiftlab.train import train

    base = tmp_path_factory.mktemp("deployed")
    with contextlib.redirect_stdout(io.StringIO()):
        train(compose_train(base / "data", base / "out", *DATA, *RUN), base / "run")
        sensitivity = (
            "evaluation.threshold.rule=sensitivity",
            "evaluation.threshold.target_sensitivity=0.75",
            "evaluation.ece_bins=10",
        )
        cfg = compose_train(base / "data", base / "out", *DATA, *RUN, *sensitivity)
        train(cfg, base / "run-sensitivity")
    return base


def read_record(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    # Floats parsed by Python's float: exact, where pandas' default parser can be one ulp off.
    predictions = pd.read_csv(
        run_dir / "predictions.csv",
        dtype={"split": str, "domain": str},
        converters={"logit": float, "probability": float},
    )
    return json.loads((run_dir / "metrics.json").read_text()), predictions


@pytest.mark.parametrize("run", ["run", "run-sensitivity"])
def test_a_runs_record_is_recomputed_from_its_predictions(deployed: Path, run: str) -> None:
    """Every metric of metrics.json from predictions.csv alone, with scikit-learn and numpy."""
    record, predictions = read_record(deployed / run)
    metrics, threshold, source = record["metrics"], record["threshold"], record["source"]
    rule, target, bins = ("youden", None, 15) if run == "run" else ("sensitivity", 0.75, 10)
    assert threshold["rule"] == rule and record["ece_bins"] == bins
    assert threshold.get("target_sensitivity") == target

    val = predictions[predictions["split"] == "val"]
    assert set(val["domain"]) == {source}, "only the source's validation rows"
    assert threshold["value"] == sklearn_threshold(val["logit"], val["label"], rule, target)
    test = predictions[predictions["split"] == "test"]
    assert sorted(set(test["domain"])) == sorted([source, record["target"]])
    for domain, rows in test.groupby("domain"):
        labels, logits = rows["label"].to_numpy(), rows["logit"].to_numpy()
        probabilities = rows["probability"].to_numpy()
        called = (logits >= threshold["value"]).astype(int)
        assert metrics[f"test/{domain}/auroc"] == pytest.approx(
            roc_auc_score(labels, logits), abs=1e-12
        )
        assert metrics[f"test/{domain}/sensitivity"] == pytest.approx(
            recall_score(labels, called), abs=1e-12
        )
        assert metrics[f"test/{domain}/specificity"] == pytest.approx(
            recall_score(labels, called, pos_label=0), abs=1e-12
        )
        assert metrics[f"test/{domain}/ece"] == pytest.approx(
            hand_ece(probabilities, labels, bins), abs=1e-12
        )
        assert metrics[f"test/{domain}/brier"] == pytest.approx(
            brier_score_loss(labels, probabilities), abs=1e-12
        )


def test_the_validation_rows_are_the_source_validation_split(deployed: Path) -> None:
    record, predictions = read_record(deployed / "run")
    [manifest_path] = (deployed / "data").rglob("manifest.csv")
    manifest = pd.read_csv(manifest_path, dtype={"split": str})
    source_val = manifest[(manifest["vendor"] == record["source"]) & (manifest["split"] == "val")]
    val = predictions[predictions["split"] == "val"]
    assert sorted(val["sample_id"]) == sorted(source_val["sample_id"])
    assert len(val) == record["samples"][record["source"]]["val"]
    # The test rows come first, as before the validation rows were added.
    assert (predictions["split"].iloc[: len(predictions) - len(val)] == "test").all()


def test_the_threshold_is_chosen_on_source_validation_only(deployed: Path) -> None:
    """Target labels, and the source's test labels, never move the threshold; the source
    validation labels do."""
    record, predictions = read_record(deployed / "run")
    source = record["source"]
    chosen, _ = record_metrics(predictions, source, "youden", None, 15)
    assert chosen.value == record["threshold"]["value"]
    flipped = predictions.copy()
    test = flipped["split"] == "test"
    flipped.loc[test, "label"] = 1 - flipped.loc[test, "label"]
    again, metrics = record_metrics(flipped, source, "youden", None, 15)
    assert again == chosen
    assert metrics[f"test/{record['target']}/sensitivity"] != pytest.approx(
        record["metrics"][f"test/{record['target']}/sensitivity"]
    ), "the flipped labels were read"
    val = (flipped["split"] == "val") & (flipped["domain"] == source)
    flipped.loc[val, "label"] = 1 - flipped.loc[val, "label"]
    assert record_metrics(flipped, source, "youden", None, 15)[0].value != chosen.value


def test_the_shipped_evaluation_settings_keep_every_runs_hash(tmp_path: Path) -> None:
    shipped = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train.yaml").evaluation)
    assert shipped == EVALUATION_AS_SHIPPED
    default = compose_train(tmp_path / "data", tmp_path / "out")
    without = OmegaConf.create(OmegaConf.to_container(default))
    del without["evaluation"]
    assert settings_hash(default) == settings_hash(without)
    other = {
        settings_hash(compose_train(tmp_path / "data", tmp_path / "out", override))
        for override in ("evaluation.ece_bins=10", "evaluation.threshold.rule=sensitivity")
    }
    assert settings_hash(default) not in other and len(other) == 2
    # The report groups them as the hash tells them apart.
    assert not any(k.startswith("evaluation.") for k in comparable_settings(dict(default)))
    assert "evaluation.ece_bins" in comparable_settings(
        OmegaConf.to_container(compose_train(tmp_path, tmp_path, "evaluation.ece_bins=10"))
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("evaluation.threshold.rule=f1", "evaluation.threshold.rule='f1': expected one of"),
        ("evaluation.threshold.target_sensitivity=1.5", "target_sensitivity=1.5: expected"),
        ("evaluation.ece_bins=0", "evaluation.ece_bins=0: expected a whole number"),
    ],
)
def test_evaluation_settings_that_cannot_be_used_are_refused(
    override: str, message: str, tmp_path: Path
) -> None:
    cfg = compose_train(tmp_path / "data", tmp_path / "out", override)
    with pytest.raises(ShiftlabError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_train_config(cfg)
