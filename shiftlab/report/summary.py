"""One row of numbers per group of runs (same settings, several seeds)."""

from __future__ import annotations

from typing import Any

import numpy as np

from shiftlab.auroc import auroc
from shiftlab.report.records import Group
from shiftlab.report.stats import DomainTest, bootstrap_delta, mean_sd, rng_for, seed_test

# The modality names of the study's summary, from the DICOM Modality of a dataset preset.
MODALITY_NAMES = {"MR": "MRI", "CT": "CT", "DX": "X-ray", "CR": "X-ray", "MG": "X-ray"}
MODALITY_ORDER = ("MRI", "X-ray", "CT")


def modality_name(code: str) -> str:
    return MODALITY_NAMES.get(code, code)


def summarise(group: Group, n_boot: int, bootstrap_seed: int) -> dict[str, Any]:
    """Mean ± SD across seeds of each domain's AUROC, the seed-averaged ΔAUC with its patient
    bootstrap interval, and the tests across seeds. AUROCs are recomputed from the predictions
    (and were checked against metrics.json when the records were read)."""
    tests = [run.tests for run in group.runs if run.tests is not None]
    source = [domain_auroc(t.source) for t in tests]
    target = [domain_auroc(t.target) for t in tests]
    deltas = [t - s for s, t in zip(source, target, strict=True)]
    interval = bootstrap_delta(tests, n_boot, rng_for(bootstrap_seed, group.key))
    across = seed_test(deltas)
    shift = group.shift
    source_mean, source_sd = mean_sd(source)
    target_mean, target_sd = mean_sd(target)
    delta_mean, delta_sd = mean_sd(deltas)
    return {
        "modality": modality_name(group.modality),
        "dataset": group.dataset,
        "source": group.source,
        "target": group.target,
        "model": group.model,
        "shift": str(shift.get("label", shift.get("name", "none"))),
        "shift_name": str(shift.get("name", "none")),
        "fraction": float(shift["fraction"]) if "fraction" in shift else np.nan,
        "mode": str(shift.get("mode", "")),
        "alpha": float(shift["alpha"]) if "alpha" in shift else np.nan,
        "group": group.key,
        "seeds": len(tests),
        "seed_list": " ".join(str(s) for s in group.seeds),
        "source_patients": len(np.unique(np.concatenate([t.source.patients for t in tests]))),
        "target_patients": len(np.unique(np.concatenate([t.target.patients for t in tests]))),
        "source_auroc_mean": source_mean,
        "source_auroc_sd": source_sd,
        "target_auroc_mean": target_mean,
        "target_auroc_sd": target_sd,
        "delta_auroc_mean": delta_mean,
        "delta_auroc_sd": delta_sd,
        "delta_ci_low": interval.low,
        "delta_ci_high": interval.high,
        "bootstrap_replicates": interval.replicates,
        "bootstrap_dropped": interval.dropped,
        "t": across.t,
        "p_t": across.p_t,
        "p_wilcoxon": across.p_wilcoxon,
    }


def domain_auroc(test: DomainTest) -> float:
    return auroc(test.scores, test.labels)


def seed_rows(group: Group) -> list[dict[str, Any]]:
    """One row per seed: recomputed AUROCs beside the ΔAUC the run recorded."""
    rows = []
    for run in group.runs:
        if run.tests is None:
            continue
        source, target = domain_auroc(run.tests.source), domain_auroc(run.tests.target)
        rows.append(
            {
                "modality": modality_name(group.modality),
                "dataset": group.dataset,
                "source": group.source,
                "target": group.target,
                "model": group.model,
                "shift": str(group.shift.get("label", "none")),
                "group": group.key,
                "seed": run.seed,
                "source_auroc": source,
                "target_auroc": target,
                "delta_auroc": target - source,
                "recorded_delta_auroc": float(
                    run.metrics["metrics"].get("test/delta_auroc", np.nan)
                ),
                "run_dir": str(run.run_dir),
            }
        )
    return rows
