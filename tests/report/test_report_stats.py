"""The report's statistics: AUROC, the patient bootstrap of ΔAUC (its coverage on simulated
predictions with a known true ΔAUC), and the tests across seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from shiftlab.auroc import RankedScores, auroc
from shiftlab.report.stats import (
    DomainTest,
    SeedTests,
    bootstrap_delta,
    mean_sd,
    rng_for,
    seed_test,
)

PATIENT_SD, ROW_SD = 0.5, 1.0


def test_auroc_is_sklearns_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + labels, 1)  # many ties
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(auroc([0.1, 0.2], [1, 1]))


def test_weighted_auroc_is_the_auroc_of_repeated_rows() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 50)
    scores = np.round(rng.normal(size=50), 1)
    weights = rng.integers(0, 4, size=(5, 50))
    ranked = RankedScores(scores, labels)
    for row, value in zip(weights, ranked.auroc(weights), strict=True):
        expected = roc_auc_score(np.repeat(labels, row), np.repeat(scores, row))
        assert value == pytest.approx(expected, abs=1e-12)


def _domain(rng: np.random.Generator, separation: float, patients: int) -> tuple[DomainTest, ...]:
    """A test set: labels and a difficulty per patient, one to three rows each."""
    labels = np.tile([0, 1], patients // 2)
    effects = rng.normal(0.0, PATIENT_SD, patients)
    rows = np.repeat(np.arange(patients), rng.integers(1, 4, patients))
    return labels, effects, rows


def _seed_scores(rng, separation, test) -> DomainTest:
    labels, effects, rows = test
    y = labels[rows]
    scores = separation * y + effects[rows] + rng.normal(0.0, ROW_SD, rows.size)
    return DomainTest(scores, y, np.array([f"p{i}" for i in rows]))


def _covers(rng: np.random.Generator, separations, patients: int, n_boot: int) -> bool:
    """One simulated grid cell: does the interval hold the true seed-averaged ΔAUC?

    Scores are separation × label + patient effect + row noise, so for two rows of different
    patients the population AUROC is Φ(separation / sqrt(2 (patient SD² + row SD²))).
    """
    source_test, target_test = _domain(rng, 0, patients), _domain(rng, 0, patients)
    scale = np.sqrt(2 * (PATIENT_SD**2 + ROW_SD**2))
    seeds, truth = [], []
    for seed, (source, target) in enumerate(separations):
        seeds.append(
            SeedTests(
                seed, _seed_scores(rng, source, source_test), _seed_scores(rng, target, target_test)
            )
        )
        truth.append(norm.cdf(target / scale) - norm.cdf(source / scale))
    interval = bootstrap_delta(seeds, n_boot, rng)
    return interval.low <= np.mean(truth) <= interval.high


def _coverage(simulations: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    # Three seeds ("models") of one scenario: the target is harder than the source.
    separations = [(2.0 + rng.normal(0, 0.2), 1.2 + rng.normal(0, 0.2)) for _ in range(3)]
    return float(np.mean([_covers(rng, separations, 60, 300) for _ in range(simulations)]))


def test_bootstrap_interval_covers_the_true_delta_at_about_its_nominal_rate() -> None:
    """200 simulated test sets (60 patients per domain, 3 seeds): a 95% interval."""
    assert 0.9 <= _coverage(200, seed=0) <= 0.99


@pytest.mark.slow
def test_bootstrap_coverage_over_many_simulations() -> None:
    coverage = np.mean([_coverage(200, seed=s) for s in range(1, 6)])
    assert 0.92 <= coverage <= 0.97


def _one_seed(rng: np.random.Generator) -> list[SeedTests]:
    test = _domain(rng, 0, 40)
    return [SeedTests(0, _seed_scores(rng, 2.0, test), _seed_scores(rng, 1.0, test))]


def test_bootstrap_is_reproducible_and_drops_replicates_without_both_classes() -> None:
    seeds = _one_seed(np.random.default_rng(3))
    first = bootstrap_delta(seeds, 200, rng_for(0, "group"))
    again = bootstrap_delta(seeds, 200, rng_for(0, "group"))
    other = bootstrap_delta(seeds, 200, rng_for(1, "group"))
    assert first == again and first != other
    assert first.low < first.high and first.replicates == 200 and first.dropped == 0
    # Two patients per domain, one of each class: many replicates lose a class.
    tiny = DomainTest(np.array([0.1, 0.9]), np.array([0, 1]), np.array(["a", "b"]))
    few = bootstrap_delta([SeedTests(0, tiny, tiny)], 100, rng_for(0, "tiny"))
    assert few.dropped > 0 and few.replicates + few.dropped == 100


def test_seed_test_and_spread() -> None:
    result = seed_test([-0.10, -0.12, -0.08, -0.11, -0.09])
    assert result.t < 0 and result.p_t < 0.001 and result.p_wilcoxon == pytest.approx(0.0625)
    assert np.isnan(seed_test([-0.1]).p_t)  # one seed: no test
    mean, sd = mean_sd([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9) and sd == pytest.approx(0.1)
    assert np.isnan(mean_sd([0.8])[1])
