"""The deployment view: what a model deployed with the threshold chosen on the source scanner
does on the target scanner. Per settings group: sensitivity and specificity at that threshold,
the expected calibration error and the Brier score (``shiftlab.deployment_metrics``) on the
source and the target test set, and their changes (target − source) with patient-bootstrap
intervals.

Shown when the runs' records hold these metrics (``threshold`` in metrics.json); a report of
records from before them is the report they gave. Every number is recomputed from the runs'
``predictions.csv`` (the threshold from its source validation rows; both were checked against
metrics.json when the records were read). Each seed keeps its own threshold: the interval is over
test patients (``shiftlab.report.stats.patient_draws``, the draws of ΔAUC's interval, same seed
and group key), not over the choice of the threshold, which the deployed model has fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from shiftlab.deployment_metrics import METRICS, WeightedMetrics
from shiftlab.report.records import Group
from shiftlab.report.stats import (
    CI_LEVEL,
    Bootstrap,
    DomainTest,
    SeedTests,
    mean_sd,
    patient_draws,
    percentile_interval,
    rng_for,
)
from shiftlab.report.summary import modality_name
from shiftlab.report.tables import Table, arrow, interval, number, order_rows, scenario_cells

NAMES = {"sensitivity": "sensitivity", "specificity": "specificity", "ece": "ECE", "brier": "Brier"}


def _weighted(tests: SeedTests, domain: DomainTest) -> WeightedMetrics:
    return WeightedMetrics(
        domain.scores, domain.probabilities, domain.labels, tests.threshold, tests.ece_bins
    )


def _values(tests: SeedTests, domain: DomainTest) -> dict[str, float]:
    every_row = np.ones(len(domain.labels))
    return {name: float(v[0]) for name, v in _weighted(tests, domain)(every_row).items()}


def change_intervals(
    seeds: Sequence[SeedTests], n_boot: int, rng: np.random.Generator
) -> dict[str, Bootstrap]:
    """Percentile interval of each metric's seed-averaged change (target − source) over patient
    resamples; a replicate where a rate is undefined (a resampled domain lost a class) is dropped
    and counted, per metric."""
    if n_boot < 1 or not seeds:
        return {name: Bootstrap(np.nan, np.nan, 0, 0) for name in METRICS}
    scorers = [(_weighted(s, s.source), _weighted(s, s.target)) for s in seeds]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    for source_weights, target_weights in patient_draws(seeds, n_boot, rng):
        scored = [
            (source(sw), target(tw))
            for (source, target), sw, tw in zip(
                scorers, source_weights, target_weights, strict=True
            )
        ]
        for name in METRICS:
            changes = np.stack([t[name] - s[name] for s, t in scored])
            parts[name].append(changes.mean(axis=0))  # NaN when any seed's was undefined
    return {name: percentile_interval(np.concatenate(parts[name])) for name in METRICS}


def _threshold_rule(group: Group) -> str:
    chosen = group.first.metrics["threshold"]
    if chosen["rule"] == "sensitivity":
        return f"sensitivity ≥ {float(chosen['target_sensitivity']):g}"
    return str(chosen["rule"])


def summarise(group: Group, n_boot: int, bootstrap_seed: int) -> dict[str, Any]:
    """One row: each metric on source and target (mean ± SD across seeds), its change and the
    change's interval."""
    tests = [run.tests for run in group.runs if run.tests is not None]
    shift, mitigation = group.shift, group.first.metrics.get("mitigation") or {}
    row: dict[str, Any] = {
        "modality": modality_name(group.modality),
        "dataset": group.dataset,
        "source": group.source,
        "target": group.target,
        "model": group.model,
        "shift": str(shift.get("label", shift.get("name", "none"))),
        "shift_name": str(shift.get("name", "none")),
        "mitigation": str(mitigation.get("label", mitigation.get("name", "none"))),
        "mitigation_name": str(mitigation.get("name", "none")),
        "group": group.key,
        "seeds": len(tests),
        "seed_list": " ".join(str(s) for s in group.seeds),
        "threshold_rule": _threshold_rule(group),
        "ece_bins": tests[0].ece_bins,
        "threshold_mean": float(np.mean([t.threshold for t in tests])),
    }
    source = [_values(t, t.source) for t in tests]
    target = [_values(t, t.target) for t in tests]
    intervals = change_intervals(tests, n_boot, rng_for(bootstrap_seed, group.key))
    for name in METRICS:
        changes = [t[name] - s[name] for s, t in zip(source, target, strict=True)]
        for role, values in (("source", source), ("target", target), ("delta", None)):
            mean, sd = mean_sd(changes if values is None else [v[name] for v in values])
            row |= {f"{name}_{role}_mean": mean, f"{name}_{role}_sd": sd}
        row |= {
            f"{name}_ci_low": intervals[name].low,
            f"{name}_ci_high": intervals[name].high,
            f"{name}_bootstrap_replicates": intervals[name].replicates,
            f"{name}_bootstrap_dropped": intervals[name].dropped,
        }
    return row


def deployment_table(
    groups: Sequence[Group],
    n_boot: int,
    bootstrap_seed: int,
    conflicting: set[str],
    notes: list[str],
) -> Table | None:
    """The view of the groups whose records hold the metrics beyond AUROC (None: no group's
    does); a note for a group of which only some runs do."""
    with_metrics = []
    for group in groups:
        held = [run.tests is not None and run.tests.threshold is not None for run in group.runs]
        if all(held):
            with_metrics.append(group)
        elif any(held):
            notes.append(
                f"Deployment table: {group.dataset} {group.source} → {group.target} (group "
                f"{group.key}) left out: only {sum(held)} of its {len(held)} runs record the "
                "metrics beyond AUROC."
            )
    if not with_metrics:
        return None
    raw = order_rows(pd.DataFrame([summarise(g, n_boot, bootstrap_seed) for g in with_metrics]))
    show_shift = bool((raw["shift_name"] != "none").any())
    show_mitigation = bool((raw["mitigation"] != "none").any())
    show_rule = raw["threshold_rule"].nunique() > 1 or raw["ece_bins"].nunique() > 1
    display = []
    for r in raw.to_dict("records"):
        row = {
            **scenario_cells(
                r["modality"],
                r["dataset"],
                r["source"],
                r["target"],
                r["model"],
                r["group"] in conflicting,
            ),
            **({"ablation": r["shift"]} if show_shift else {}),
            **({"mitigation": r["mitigation"]} if show_mitigation else {}),
            "seeds": str(r["seeds"]),
            **(
                {"threshold": r["threshold_rule"], "ECE bins": str(r["ece_bins"])}
                if show_rule
                else {}
            ),
        }
        for name in METRICS:
            label = NAMES[name]
            row[label] = arrow(number(r[f"{name}_source_mean"]), number(r[f"{name}_target_mean"]))
            row[f"Δ {label}"] = number(r[f"{name}_delta_mean"], signed=True)
            row[f"Δ {label} {CI_LEVEL:.0%} CI"] = interval(
                r[f"{name}_ci_low"], r[f"{name}_ci_high"]
            )
        if conflicting & set(raw["group"]):
            row["settings group"] = r["group"]
        display.append(row)
    return Table(
        "deployment",
        "Deployment: sensitivity, specificity and calibration, source → target",
        _caption(raw, n_boot, show_rule, bool(conflicting & set(raw["group"]))),
        raw,
        pd.DataFrame(display),
    )


def _caption(raw: pd.DataFrame, n_boot: int, show_rule: bool, conflicts: bool) -> str:
    rule = (
        "the rule and the ECE bins of each row's settings"
        if show_rule
        else f"{raw['threshold_rule'].iloc[0]}, {raw['ece_bins'].iloc[0]} ECE bins"
    )
    text = (
        "A model deployed as trained, with its decision threshold chosen on the source "
        f"validation split ({rule}; Youden: largest sensitivity + specificity − 1; sensitivity ≥ "
        "t: the highest threshold reaching sensitivity t). Sensitivity and specificity at that "
        "threshold, expected calibration error (equal-width probability bins, Σ |bin|/n · "
        "|mean label − mean probability|) and Brier score (mean squared error of the "
        "probability) on each domain's test split: source → target, means across seeds. Δ = "
        f"target − source, mean across seeds; {CI_LEVEL:.0%} CI: percentile bootstrap over the "
        f"patients of both test sets ({n_boot} replicates, the draws of the group's ΔAUC interval; "
        "each seed keeps its threshold). A drop in sensitivity or specificity, or a rise in ECE "
        "or Brier, is the deployment getting worse."
    )
    if conflicts:
        text += (
            " † Runs of this scenario differ in settings, manifest or code version: each settings "
            "group is its own row, never averaged with the others."
        )
    return text
