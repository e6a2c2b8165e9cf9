"""The report's statistics: the patient bootstrap of ΔAUC, and the test across seeds (the AUROC
itself is ``shiftlab.auroc``).

The bootstrap answers "how much could ΔAUC move with other test patients?". One replicate draws,
for each test domain, as many patients as it has, with replacement; every row (slice, nodule,
image) of a drawn patient comes along, as many times as the patient was drawn. The same draw is
applied to every seed of the group: the seeds share one test set (same manifest, same
split_seed), so drawing each seed's patients independently would average the test-set
uncertainty away and give too narrow an interval. Each seed's ΔAUC is recomputed on the
replicate, the seeds are averaged, and the 2.5th and 97.5th percentiles of that average over the
replicates are the 95% interval (percentile bootstrap). Replicates where a domain lost one of its
classes (AUROC undefined) are dropped and counted.

The bootstrap does not cover training noise: that is what the test across seeds is for (a
one-sample t-test and a Wilcoxon signed-rank test of the per-seed ΔAUC against zero).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from shiftlab.auroc import RankedScores

CI_LEVEL = 0.95
# Bootstrap weights are drawn in chunks of at most this many (replicate x row) cells, so memory
# stays bounded for test sets of thousands of images and grids of ten seeds.
CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class DomainTest:
    """One seed's predictions on one test domain: scores, labels, and each row's patient."""

    scores: np.ndarray
    labels: np.ndarray
    patients: np.ndarray  # patient ids (str), one per row
    probabilities: np.ndarray | None = None  # of the positive class, where the record has them


@dataclass(frozen=True)
class SeedTests:
    """One seed's source and target test predictions."""

    seed: int
    source: DomainTest
    target: DomainTest
    # Records with the metrics beyond AUROC: the logit threshold chosen on source validation,
    # and the number of ECE bins (shiftlab.deployment_metrics).
    threshold: float | None = None
    ece_bins: int | None = None


@dataclass(frozen=True)
class Bootstrap:
    low: float
    high: float
    replicates: int  # used (AUROC defined on both domains for every seed)
    dropped: int  # replicates where a resampled test set lost a class


def rng_for(bootstrap_seed: int, key: str) -> np.random.Generator:
    """A generator for one group of runs: the same seed and key always draw the same replicates,
    whatever other groups the report holds and in whatever order they are computed."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return np.random.default_rng(np.random.SeedSequence([int(bootstrap_seed), digest]))


def _patient_index(seeds: Sequence[SeedTests], role: str) -> tuple[int, list[np.ndarray]]:
    """The patients of one domain over all seeds, and each seed's rows as indices into them."""
    tests = [getattr(s, role) for s in seeds]
    patients = np.unique(np.concatenate([t.patients for t in tests]))
    return len(patients), [np.searchsorted(patients, t.patients) for t in tests]


def patient_draws(
    seeds: Sequence[SeedTests], n_boot: int, rng: np.random.Generator
) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    """The patient resamples of the bootstrap, in chunks of replicates, as row weights: for each
    seed, the weight of each source test row and of each target test row (replicates × rows),
    that is how often its patient was drawn. One draw per domain is shared by every seed."""
    n_source, source_rows = _patient_index(seeds, "source")
    n_target, target_rows = _patient_index(seeds, "target")
    cells = sum(len(r) for r in source_rows) + sum(len(r) for r in target_rows)
    chunk = max(1, min(n_boot, CHUNK_CELLS // max(cells, 1)))
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        source_draw = rng.multinomial(n_source, np.full(n_source, 1.0 / n_source), size=size)
        target_draw = rng.multinomial(n_target, np.full(n_target, 1.0 / n_target), size=size)
        yield [source_draw[:, r] for r in source_rows], [target_draw[:, r] for r in target_rows]
        done += size


def bootstrap_delta(
    seeds: Sequence[SeedTests],
    n_boot: int,
    rng: np.random.Generator,
    level: float = CI_LEVEL,
) -> Bootstrap:
    """Percentile interval of the seed-averaged ΔAUC (target − source) over patient resamples."""
    if n_boot < 1 or not seeds:
        return Bootstrap(np.nan, np.nan, 0, 0)
    return percentile_interval(delta_replicates(seeds, n_boot, rng).mean(axis=0), level)


def delta_replicates(
    seeds: Sequence[SeedTests], n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Each seed's ΔAUC (target − source) on each of ``n_boot`` patient resamples, one row per
    seed (NaN where a resampled domain lost a class). Every seed is scored on the same draws, so
    runs that share a test set (one group, or a method and its baseline) can be compared
    replicate by replicate."""
    ranked = [
        (
            RankedScores(s.source.scores, s.source.labels),
            RankedScores(s.target.scores, s.target.labels),
        )
        for s in seeds
    ]
    n_source, source_rows = _patient_index(seeds, "source")
    n_target, target_rows = _patient_index(seeds, "target")
    cells = sum(len(r) for r in source_rows) + sum(len(r) for r in target_rows)
    chunk = max(1, min(n_boot, CHUNK_CELLS // max(cells, 1)))
    parts: list[np.ndarray] = []
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        source_draw = rng.multinomial(n_source, np.full(n_source, 1.0 / n_source), size=size)
        target_draw = rng.multinomial(n_target, np.full(n_target, 1.0 / n_target), size=size)
        parts.append(
            np.stack(
                [
                    target.auroc(target_draw[:, t_rows]) - source.auroc(source_draw[:, s_rows])
                    for (source, target), s_rows, t_rows in zip(
                        ranked, source_rows, target_rows, strict=True
                    )
                ]
            )
        )
        done += size
    return np.concatenate(parts, axis=1)


def percentile_interval(replicates: np.ndarray, level: float = CI_LEVEL) -> Bootstrap:
    """The percentile interval of a statistic's bootstrap replicates; NaN replicates (the
    statistic undefined on that resample) are dropped and counted."""
    valid = replicates[~np.isnan(replicates)]
    if valid.size == 0:
        return Bootstrap(np.nan, np.nan, 0, int(replicates.size))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(valid, [tail, 100.0 - tail])
    return Bootstrap(float(low), float(high), int(valid.size), int(replicates.size - valid.size))


@dataclass(frozen=True)
class SeedTest:
    """Tests across seeds of whether the mean per-seed ΔAUC differs from zero (two-sided)."""

    t: float
    p_t: float  # one-sample t-test, n - 1 degrees of freedom
    p_wilcoxon: float  # Wilcoxon signed-rank, exact for small n


def seed_test(deltas: Sequence[float]) -> SeedTest:
    values = np.asarray(deltas, dtype=np.float64)
    if values.size < 2 or np.all(values == values[0]):
        return SeedTest(np.nan, np.nan, np.nan)
    t = stats.ttest_1samp(values, 0.0)
    if np.all(values == 0):
        p_wilcoxon = np.nan
    else:
        p_wilcoxon = float(stats.wilcoxon(values, zero_method="wilcox").pvalue)
    return SeedTest(float(t.statistic), float(t.pvalue), p_wilcoxon)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return np.nan, np.nan
    sd = float(array.std(ddof=1)) if array.size > 1 else np.nan
    return float(array.mean()), sd
