"""The metrics a deployed model is judged by, beside AUROC: sensitivity and specificity at a
threshold chosen on the source scanner's validation split, the expected calibration error and the
Brier score. One definition each, used by the run record (``shiftlab.train``) and the report.

- **Threshold** (a logit; a sample is called positive when its logit is at or above it), chosen
  on the source validation split only, among its distinct logits (the points of its ROC curve):
  - ``youden``: the threshold of largest Youden's J = sensitivity + specificity − 1 (Youden,
    "Index for rating diagnostic tests", Cancer 3(1), 1950); on ties the highest threshold, the
    one that calls fewer samples positive;
  - ``sensitivity``: the highest threshold whose sensitivity reaches ``target_sensitivity``, i.e.
    the most specific operating point that still finds that share of the positives.
- **Sensitivity** (true-positive rate) and **specificity** (true-negative rate) of a domain at
  that fixed threshold.
- **Expected calibration error** (binned ECE; Naeini, Cooper and Hauskrecht, "Obtaining well
  calibrated probabilities using Bayesian binning", AAAI 2015; Guo et al., "On calibration of
  modern neural networks", ICML 2017): the predicted probability of the positive class is put
  into ``bins`` equal-width bins of [0, 1], each right-closed as in Guo et al. ((k−1)/M, k/M], 0
  in the first), and ECE = Σ over bins of |bin|/n · |mean(label) − mean(probability)|.
- **Brier score** (Brier, "Verification of forecasts expressed in terms of probability", Monthly
  Weather Review 78(1), 1950): the mean of (probability − label)².

Every metric takes row weights, so the report's bootstrap resamples patients without copying rows
(``WeightedMetrics``); ``domain_metrics`` is the same code with every weight 1, and
``record_metrics`` what a run records, computed from the very table it writes to
``predictions.csv``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

THRESHOLD_RULES = ("youden", "sensitivity")
METRICS = ("sensitivity", "specificity", "ece", "brier")


@dataclass(frozen=True)
class Threshold:
    """A decision threshold on the logits and how it was chosen."""

    rule: str
    value: float
    target_sensitivity: float | None  # the rule ``sensitivity``'s target, else None
    sensitivity: float  # on the split it was chosen on
    specificity: float

    def record(self) -> dict[str, float | str]:
        """As ``metrics.json`` keeps it (``threshold``)."""
        target = self.target_sensitivity
        targeted = {} if target is None else {"target_sensitivity": target}
        return {
            "rule": self.rule,
            "value": self.value,
            **targeted,
            "chosen_on": "source validation split",
            "source_val_sensitivity": self.sensitivity,
            "source_val_specificity": self.specificity,
        }


def choose_threshold(
    logits: np.ndarray, labels: np.ndarray, rule: str, target_sensitivity: float | None = None
) -> Threshold:
    """The threshold of ``rule`` (``THRESHOLD_RULES``) on these predictions (the source
    validation split's); they must hold both classes. ``target_sensitivity``: the rule
    ``sensitivity``'s target (unused by ``youden``)."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule must be one of {THRESHOLD_RULES}; got {rule!r}")
    if rule == "sensitivity" and target_sensitivity is None:
        raise ValueError("the threshold rule sensitivity needs a target_sensitivity")
    logits = np.asarray(logits, dtype=np.float64)
    positive = np.asarray(labels).astype(bool)
    if positive.all() or not positive.any():
        raise ValueError("a threshold needs predictions of both classes")
    order = np.argsort(-logits, kind="stable")
    ordered, hits = logits[order], positive[order]
    # The last row of each run of equal logits: calling every row down to it positive is the
    # threshold at that logit (highest first, so sensitivity grows along the candidates).
    ends = np.r_[np.flatnonzero(ordered[1:] != ordered[:-1]), ordered.size - 1]
    candidates = ordered[ends]
    sensitivity = np.cumsum(hits)[ends] / positive.sum()
    false_positive_rate = np.cumsum(~hits)[ends] / (~positive).sum()
    if rule == "youden":  # J = sensitivity + specificity − 1 = TPR − FPR
        best = int(np.argmax(sensitivity - false_positive_rate))  # the first: the highest
    else:
        best = int(np.argmax(sensitivity >= target_sensitivity))  # the lowest always reaches 1
    return Threshold(
        rule=rule,
        value=float(candidates[best]),
        target_sensitivity=float(target_sensitivity) if rule == "sensitivity" else None,
        sensitivity=float(sensitivity[best]),
        specificity=float(1.0 - false_positive_rate[best]),
    )


def bin_index(probabilities: np.ndarray, bins: int) -> np.ndarray:
    """The equal-width bin of each probability, bins right-closed ((k−1)/M, k/M], 0 in the first.
    The edges are ``np.linspace(0, 1, bins + 1)``, so a probability on an edge goes below it."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.searchsorted(edges[1:-1], np.asarray(probabilities, dtype=np.float64), side="left")


class WeightedMetrics:
    """The four metrics of one domain's predictions for any weighting of its rows: ``weights`` is
    replicates × rows (integer weights: how often the bootstrap drew each row's patient)."""

    def __init__(
        self,
        logits: np.ndarray,
        probabilities: np.ndarray,
        labels: np.ndarray,
        threshold: float,
        bins: int,
    ) -> None:
        labels = np.asarray(labels).astype(np.float64)
        probabilities = np.asarray(probabilities, dtype=np.float64)
        called = np.asarray(logits, dtype=np.float64) >= threshold
        self.positive = labels == 1
        self.true_positive = called & self.positive
        self.true_negative = ~called & ~self.positive
        self.squared_error = (probabilities - labels) ** 2
        # Row r's share of its bin's gap (label − probability), one column per bin.
        gap = labels - probabilities
        self.binned_gap = np.zeros((labels.size, bins))
        self.binned_gap[np.arange(labels.size), bin_index(probabilities, bins)] = gap

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        total = w.sum(axis=1)
        positives = w @ self.positive
        negatives = total - positives
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "sensitivity": w @ self.true_positive / positives,
                "specificity": w @ self.true_negative / negatives,
                # Σ_bins |Σ_bin w (y − p)| / Σ w  =  Σ_bins |bin|/n · |mean(y) − mean(p)|
                "ece": np.abs(w @ self.binned_gap).sum(axis=1) / total,
                "brier": w @ self.squared_error / total,
            }


def domain_metrics(
    logits: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    bins: int,
) -> dict[str, float]:
    """Sensitivity and specificity at ``threshold``, ECE with ``bins`` bins and the Brier score of
    one domain's predictions (``METRICS``); NaN where a rate's class is absent."""
    metrics = WeightedMetrics(logits, probabilities, labels, threshold, bins)
    return {name: float(value[0]) for name, value in metrics(np.ones(len(labels))).items()}


def record_metrics(
    predictions: pd.DataFrame,
    source: str,
    rule: str,
    target_sensitivity: float | None,
    bins: int,
) -> tuple[Threshold, dict[str, float]]:
    """From a run's predictions (``predictions.csv``'s columns): the threshold chosen on its
    source validation rows (``split`` val), and every test domain's metrics at it, named as
    ``metrics.json`` names them (``test/<domain>/<metric>``)."""
    val = predictions[(predictions["split"] == "val") & (predictions["domain"] == source)]
    threshold = choose_threshold(
        val["logit"].to_numpy(), val["label"].to_numpy(), rule, target_sensitivity
    )
    metrics = {}
    test = predictions[predictions["split"] == "test"]
    for domain, rows in test.groupby("domain", sort=False):
        values = domain_metrics(
            rows["logit"].to_numpy(),
            rows["probability"].to_numpy(),
            rows["label"].to_numpy(),
            threshold.value,
            bins,
        )
        metrics |= {f"test/{domain}/{name}": value for name, value in values.items()}
    return threshold, metrics


def check_evaluation(evaluation: Mapping) -> list[str]:
    """What is wrong with an ``evaluation`` config node (empty: nothing), each as key=value:
    expected."""
    problems = []
    threshold = evaluation.get("threshold") or {}
    rule = threshold.get("rule")
    if rule not in THRESHOLD_RULES:
        problems.append(
            f"evaluation.threshold.rule={rule!r}: expected one of {', '.join(THRESHOLD_RULES)}"
        )
    target = threshold.get("target_sensitivity")
    if not (isinstance(target, int | float) and not isinstance(target, bool) and 0 < target <= 1):
        problems.append(
            f"evaluation.threshold.target_sensitivity={target!r}: expected a number in (0, 1]"
        )
    bins = evaluation.get("ece_bins")
    if not (isinstance(bins, int) and not isinstance(bins, bool) and bins >= 1):
        problems.append(f"evaluation.ece_bins={bins!r}: expected a whole number of at least 1")
    return problems
