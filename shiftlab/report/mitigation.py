"""The mitigation view: each method's ΔAUC against the runs of ``none`` on the same seeds, and the
share of the drop it recovers, per dataset and direction, per modality and overall.

A method's runs (conf/mitigation/: augment, histogram, adabn, mixstyle) are compared with the
runs of ``none`` (empirical risk minimisation, the study's own training) whose settings are the
same apart from the mitigation (same network, epochs, manifest, code version: ``baseline_key``),
seed by seed: a seed fixes the initialisation and the data order, so the pair differs only in
the method. Only the seeds both have enter a row.

- ΔAUC (target − source AUROC) of the method, mean over the paired seeds, with a percentile
  patient bootstrap interval (``shiftlab.report.stats``). The method's and none's runs share one
  test set (one manifest, one split_seed), so each replicate draws one set of test patients and
  scores every seed of both on it: the difference and the share below are computed replicate by
  replicate.
- The paired test against none: a two-sided t-test and a Wilcoxon signed-rank test of the
  per-seed differences ΔAUC_method − ΔAUC_none (``seed_test`` of the differences against 0).
- The share of the drop recovered, (ΔAUC_method − ΔAUC_none) / −ΔAUC_none: 1 where the method
  removes the drop, 0 where it changes nothing, negative where it widens it. It is undefined
  where none shows no drop (ΔAUC_none ≥ 0); its interval is given only where none's drop has an
  interval entirely below 0 (otherwise the ratio is unbounded), and replicates where none shows
  no drop are dropped and counted.

- The source and target AUROC of the method and of none, means over the paired seeds. A
  smaller drop is a remedy only where the target AUROC rises with it: a method can also shrink
  the drop by lowering the source AUROC (a network that learnt less), and a note names every row
  where ΔAUC improved while the target AUROC fell.

Per modality and overall, the scenarios' means are pooled before the share is taken (a scenario
with a small drop cannot dominate), the interval combines the scenarios' independent bootstraps
replicate by replicate, and the tests run across scenarios on their mean differences.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shiftlab.report.records import NO_MITIGATION, Group, without_mitigation
from shiftlab.report.stats import (
    CI_LEVEL,
    SeedTests,
    delta_replicates,
    percentile_interval,
    rng_for,
    seed_test,
)
from shiftlab.report.summary import MODALITY_ORDER, domain_auroc, modality_name
from shiftlab.report.tables import (
    MITIGATION_ORDER,
    Table,
    arrow,
    interval,
    number,
    p_value,
    scenario_cells,
)

# The methods in the report's order (docs/report.md); a method shiftlab does not ship comes after.
METHOD_ORDER = tuple(m for m in MITIGATION_ORDER if m != NO_MITIGATION)
ALL = "all"


def mitigated(groups: Sequence[Group]) -> set[str]:
    """The keys of the groups trained or tested with a mitigation other than none."""
    return {g.key for g in groups if g.mitigation["name"] != NO_MITIGATION}


def baseline_key(group: Group) -> str:
    """What a method's group shares with the group of none it is compared with: settings apart
    from the mitigation, manifest and code version (for a group of none, its own key)."""
    run = group.first
    text = json.dumps(
        {
            "settings": without_mitigation(run.settings),
            "manifest_sha256": run.metrics.get("manifest_sha256"),
            "code_version": run.code_version,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Comparison:
    """One method's group against its group of none, on the seeds both have."""

    method: Group
    baseline: Group
    seeds: list[int]
    deltas: np.ndarray  # per paired seed: the method's ΔAUC
    baseline_deltas: np.ndarray  # per paired seed: none's ΔAUC
    replicates: np.ndarray  # per bootstrap replicate: the method's seed-mean ΔAUC
    baseline_replicates: np.ndarray  # the same for none, on the same patient draws
    aurocs: tuple[float, float]  # the method's mean source and target AUROC
    baseline_aurocs: tuple[float, float]  # none's, on the same seeds


def _tests(group: Group, seeds: Sequence[int]) -> list[SeedTests]:
    return [run.tests for run in group.runs if run.seed in seeds and run.tests is not None]


def _aurocs(tests: Sequence[SeedTests]) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, the source and the target AUROC (each computed once: ΔAUC and the means are
    both taken from them)."""
    source = np.array([domain_auroc(t.source) for t in tests])
    target = np.array([domain_auroc(t.target) for t in tests])
    return source, target


def target_fell(target: float, baseline_target: float) -> bool:
    """The method's target AUROC is below none's as printed (3 digits), so nothing reads
    "0.828 against 0.828"."""
    return round(target, 3) < round(baseline_target, 3)


def compare(method: Group, baseline: Group, n_boot: int, bootstrap_seed: int) -> Comparison:
    seeds = sorted(set(method.seeds) & set(baseline.seeds))
    ours, theirs = _tests(method, seeds), _tests(baseline, seeds)
    (source, target), (baseline_source, baseline_target) = _aurocs(ours), _aurocs(theirs)
    if n_boot >= 1 and seeds:
        rng = rng_for(bootstrap_seed, f"{method.key}/{baseline.key}")
        both = delta_replicates([*ours, *theirs], n_boot, rng)
        replicates, baseline_replicates = both[: len(ours)].mean(0), both[len(ours) :].mean(0)
    else:
        replicates = baseline_replicates = np.array([])
    return Comparison(
        method,
        baseline,
        seeds,
        target - source,
        baseline_target - baseline_source,
        replicates,
        baseline_replicates,
        (float(source.mean()), float(target.mean())),
        (float(baseline_source.mean()), float(baseline_target.mean())),
    )


def recovered(delta: float | np.ndarray, baseline: float | np.ndarray) -> Any:
    """(ΔAUC − ΔAUC_none) / −ΔAUC_none, NaN where none shows no drop (ΔAUC_none ≥ 0)."""
    delta, baseline = np.asarray(delta, dtype=float), np.asarray(baseline, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(baseline < 0, (delta - baseline) / -baseline, np.nan)
    return float(share) if share.ndim == 0 else share


def _intervals(replicates: np.ndarray, baseline_replicates: np.ndarray) -> dict[str, float]:
    """The bootstrap intervals of a row: ΔAUC, none's ΔAUC, the difference and the share."""
    delta = percentile_interval(replicates)
    baseline = percentile_interval(baseline_replicates)
    difference = percentile_interval(replicates - baseline_replicates)
    share = percentile_interval(recovered(replicates, baseline_replicates))
    bounded = baseline.high < 0  # none's drop is distinguishable from no drop
    return {
        "delta_ci_low": delta.low,
        "delta_ci_high": delta.high,
        "baseline_ci_low": baseline.low,
        "baseline_ci_high": baseline.high,
        "difference_ci_low": difference.low,
        "difference_ci_high": difference.high,
        "recovered_ci_low": share.low if bounded else np.nan,
        "recovered_ci_high": share.high if bounded else np.nan,
        "bootstrap_replicates": difference.replicates,
        "recovered_dropped": share.dropped if bounded else np.nan,
    }


def _method_rank(name: str) -> int:
    return METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)


def _modality_rank(modality: str) -> int:
    if modality == ALL:
        return len(MODALITY_ORDER) + 1
    return MODALITY_ORDER.index(modality) if modality in MODALITY_ORDER else len(MODALITY_ORDER)


def _scenario_row(c: Comparison, conflicting: set[str]) -> dict[str, Any]:
    method = c.method.mitigation
    difference = c.deltas - c.baseline_deltas
    across = seed_test(difference)
    delta, baseline = float(c.deltas.mean()), float(c.baseline_deltas.mean())
    shift = c.method.shift
    return {
        "modality": modality_name(c.method.modality),
        "dataset": c.method.dataset,
        "source": c.method.source,
        "target": c.method.target,
        "model": c.method.model,
        "shift": str(shift.get("label", shift.get("name", "none"))),
        "method": method["name"],
        "mitigation": method["label"],
        "transductive": method["transductive"],
        "group": c.method.key,
        "baseline_group": c.baseline.key,
        "seeds": len(c.seeds),
        "seed_list": " ".join(map(str, c.seeds)),
        **_auroc_columns([c]),
        "delta_auroc_mean": delta,
        "baseline_delta_auroc_mean": baseline,
        "difference_mean": float(difference.mean()),
        "recovered": recovered(delta, baseline),
        **_intervals(c.replicates, c.baseline_replicates),
        "t": across.t,
        "p_t": across.p_t,
        "p_wilcoxon": across.p_wilcoxon,
        "conflict": c.method.key in conflicting or c.baseline.key in conflicting,
    }


def _auroc_columns(members: Sequence[Comparison]) -> dict[str, float]:
    """Mean source and target AUROC of the method and of none over these comparisons."""
    ours = np.mean([c.aurocs for c in members], axis=0)
    theirs = np.mean([c.baseline_aurocs for c in members], axis=0)
    return {
        "source_auroc_mean": float(ours[0]),
        "target_auroc_mean": float(ours[1]),
        "baseline_source_auroc_mean": float(theirs[0]),
        "baseline_target_auroc_mean": float(theirs[1]),
    }


def _with_none(value: float, baseline: float) -> str:
    return f"{number(value)} ({number(baseline)})"


def _pooled_row(method: dict[str, Any], modality: str, members: Sequence[Comparison]) -> dict:
    """One method over the scenarios of one modality (or all): means of the scenarios' mean
    ΔAUC, the share of the pooled drop, its interval from the scenarios' replicates (independent
    draws, combined index by index) and the tests across scenarios."""
    deltas = np.array([c.deltas.mean() for c in members])
    baselines = np.array([c.baseline_deltas.mean() for c in members])
    differences = deltas - baselines
    across = seed_test(differences)
    lengths = {c.replicates.size for c in members}
    if len(lengths) == 1 and lengths != {0}:
        replicates = np.mean([c.replicates for c in members], axis=0)
        baseline_replicates = np.mean([c.baseline_replicates for c in members], axis=0)
    else:
        replicates = baseline_replicates = np.array([])
    intervals = _intervals(replicates, baseline_replicates)
    return {
        "method": method["name"],
        "mitigation": method["label"],
        "transductive": method["transductive"],
        "modality": modality,
        "scenarios": len(members),
        "improved": int((differences > 0).sum()),
        **_auroc_columns(members),
        "baseline_delta_auroc_mean": float(baselines.mean()),
        "delta_auroc_mean": float(deltas.mean()),
        "difference_mean": float(differences.mean()),
        "recovered": recovered(deltas.mean(), baselines.mean()),
        "recovered_ci_low": intervals["recovered_ci_low"],
        "recovered_ci_high": intervals["recovered_ci_high"],
        "bootstrap_replicates": intervals["bootstrap_replicates"],
        "recovered_dropped": intervals["recovered_dropped"],
        "t": across.t,
        "p_t": across.p_t,
        "p_wilcoxon": across.p_wilcoxon,
    }


def comparisons(
    groups: Sequence[Group], n_boot: int, bootstrap_seed: int, notes: list[str]
) -> list[Comparison]:
    """Each method's group with its group of none; a note for each that has none to pair with
    or shares only some of its seeds."""
    baselines = {baseline_key(g): g for g in groups if g.mitigation["name"] == NO_MITIGATION}
    found = []
    for group in groups:
        if group.mitigation["name"] == NO_MITIGATION:
            continue
        where = (
            f"Mitigation {group.mitigation['label']}: {group.dataset} "
            f"{arrow(group.source, group.target)} ({group.model}, group {group.key})"
        )
        baseline = baselines.get(baseline_key(group))
        paired = sorted(set(group.seeds) & set(baseline.seeds)) if baseline else []
        if not paired:
            why = "seed" if baseline else "run of none with the same settings"
            notes.append(f"{where} left out of the mitigation tables: no {why} to pair with.")
            continue
        if paired != group.seeds or paired != baseline.seeds:
            notes.append(
                f"{where}: seeds {' '.join(map(str, paired))} paired with none (method: "
                f"{' '.join(map(str, group.seeds))}; none: {' '.join(map(str, baseline.seeds))})."
            )
        found.append(compare(group, baseline, n_boot, bootstrap_seed))
    return found


def _percent(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:+.0%}"


def _share(value: float) -> str:
    return "no drop" if np.isnan(value) else _percent(value)


def _share_interval(low: float, high: float) -> str:
    if np.isnan(low) or np.isnan(high):
        return "–"
    return f"[{_percent(low)}, {_percent(high)}]"


def _scenario_table(rows: pd.DataFrame, n_boot: int) -> Table:
    show_shift = bool((rows["shift"] != "none").any())
    conflicts = bool(rows["conflict"].any())
    level = f"{CI_LEVEL:.0%} CI"
    display = []
    for r in rows.itertuples():
        row = scenario_cells(r.modality, r.dataset, r.source, r.target, r.model, r.conflict)
        if show_shift:
            row["ablation"] = r.shift
        row |= {
            "method": r.mitigation,
            "transductive": "yes" if r.transductive else "no",
            "seeds": str(r.seeds),
            "source AUROC (none)": _with_none(r.source_auroc_mean, r.baseline_source_auroc_mean),
            "target AUROC (none)": _with_none(r.target_auroc_mean, r.baseline_target_auroc_mean),
            "ΔAUC": number(r.delta_auroc_mean, signed=True),
            level: interval(r.delta_ci_low, r.delta_ci_high),
            "ΔAUC none": number(r.baseline_delta_auroc_mean, signed=True),
            "difference": number(r.difference_mean, signed=True),
            "p (paired t-test)": p_value(r.p_t),
            "p (Wilcoxon)": p_value(r.p_wilcoxon),
            "drop recovered": _share(r.recovered),
            f"recovered {level}": _share_interval(r.recovered_ci_low, r.recovered_ci_high),
        }
        if conflicts:
            row["settings group"] = r.group
        display.append(row)
    caption = (
        "Each mitigation's runs against the runs of none (empirical risk minimisation) with the "
        "same settings, paired by seed; seeds: the seeds both have. Source and target AUROC: "
        "the method's, mean over those seeds, with none's in brackets (a smaller drop helps "
        "only where the target AUROC rises too). ΔAUC = target − source "
        "AUROC, mean over those seeds; ΔAUC none: the same for none; difference: ΔAUC − ΔAUC "
        f"none. {level}: percentile patient bootstrap ({n_boot} replicates; each replicate "
        "draws one set of test patients per domain and scores every seed of the method and of "
        "none on it). p: two-sided paired t-test (n − 1 degrees of freedom) and Wilcoxon "
        "signed-rank test of the per-seed differences (method − none, same seed). Drop "
        "recovered = (ΔAUC − ΔAUC none) / −ΔAUC none: +100% the drop is gone, 0% unchanged, "
        "negative a wider drop; no drop: ΔAUC none ≥ 0, where the share is undefined. Its "
        "interval (same replicates) is given where none's drop has an interval below 0, else "
        "unbounded (–). Transductive: the method read the target domain's test images, not "
        "their labels, before it was tested (adabn re-estimates the BatchNorm statistics on "
        "them): it is not a model deployed unchanged."
    )
    if conflicts:
        caption += (
            " † Runs of this row's scenario and method differ in settings, manifest or code "
            "version: each settings group is its own row and none enters the per-modality table "
            "(see the notes)."
        )
    title = "Mitigations: ΔAUC per method against none, paired by seed"
    return Table("mitigation", title, caption, rows, pd.DataFrame(display))


def _modality_table(rows: pd.DataFrame) -> Table:
    display = [
        {
            "method": r.mitigation,
            "transductive": "yes" if r.transductive else "no",
            "modality": r.modality,
            "scenarios": str(r.scenarios),
            "improved": str(r.improved),
            "target AUROC (none)": _with_none(r.target_auroc_mean, r.baseline_target_auroc_mean),
            "mean ΔAUC none": number(r.baseline_delta_auroc_mean, signed=True),
            "mean ΔAUC": number(r.delta_auroc_mean, signed=True),
            "difference": number(r.difference_mean, signed=True),
            "p (t-test)": p_value(r.p_t),
            "p (Wilcoxon)": p_value(r.p_wilcoxon),
            "drop recovered": _share(r.recovered),
            f"{CI_LEVEL:.0%} CI": _share_interval(r.recovered_ci_low, r.recovered_ci_high),
        }
        for r in rows.itertuples()
    ]
    caption = (
        "Each mitigation over the scenarios (dataset × direction) of a modality, and over all: "
        "means of the scenarios' ΔAUC (paired seeds, as in the table above); improved: "
        "scenarios where the method's ΔAUC is above none's; target AUROC: the method's mean, "
        "none's in brackets. Drop recovered = (mean ΔAUC − mean "
        "ΔAUC none) / −mean ΔAUC none (pooled: no drop where mean ΔAUC none ≥ 0); its "
        f"{CI_LEVEL:.0%} CI combines the scenarios' patient bootstraps replicate by replicate, "
        "given where none's pooled drop has an interval below 0. p: two-sided t-test and "
        "Wilcoxon signed-rank test across scenarios of their mean differences (method − none). "
        "Scenarios whose runs fall into several settings groups are left out (see the notes)."
    )
    title = "Mitigations per modality: the share of the drop recovered"
    return Table("mitigation_modality", title, caption, rows, pd.DataFrame(display))


def mitigation_tables(
    groups: Sequence[Group],
    conflicting: set[str],
    n_boot: int,
    bootstrap_seed: int,
    notes: list[str],
) -> list[Table]:
    """The mitigation table and its per-modality summary, or none where no group has a
    mitigation other than none (or none to pair with)."""
    found = comparisons(groups, n_boot, bootstrap_seed, notes)
    if not found:
        return []
    found.sort(key=_row_order)
    rows = pd.DataFrame([_scenario_row(c, conflicting) for c in found])
    notes.extend(_drop_shrank_but_target_fell(found))
    clean = [c for c, conflict in zip(found, rows["conflict"], strict=True) if not conflict]
    pooled = []
    for method in _methods(clean):
        of_method = [c for c in clean if c.method.mitigation == method]
        present = {modality_name(c.method.modality) for c in of_method}
        for modality in [*sorted(present, key=_modality_rank), ALL]:
            members = [c for c in of_method if modality in (ALL, modality_name(c.method.modality))]
            pooled.append(_pooled_row(method, modality, members))
    return [_scenario_table(rows, n_boot), _modality_table(pd.DataFrame(pooled))]


def _drop_shrank_but_target_fell(found: Sequence[Comparison]) -> list[str]:
    """A note for each row whose drop shrank only because the source AUROC fell."""
    notes = []
    for c in found:
        (source, target), (source_none, target_none) = c.aurocs, c.baseline_aurocs
        if c.deltas.mean() > c.baseline_deltas.mean() and target_fell(target, target_none):
            g = c.method
            notes.append(
                f"Mitigation {g.mitigation['label']}: {g.dataset} {arrow(g.source, g.target)} "
                f"({g.model}, group {g.key}): a smaller drop than none's but a lower target "
                f"AUROC ({number(target)} against {number(target_none)}), because the source "
                f"AUROC fell more ({number(source)} against {number(source_none)}): the method "
                "did not help on the target."
            )
    return notes


def _row_order(c: Comparison) -> tuple:
    """Modalities in the study's order, then dataset, direction, network, method, group."""
    g = c.method
    return (
        _modality_rank(modality_name(g.modality)),
        g.dataset,
        g.source,
        g.target,
        g.model,
        _method_rank(g.mitigation["name"]),
        g.mitigation["label"],
        g.key,
    )


def _methods(found: Sequence[Comparison]) -> list[dict[str, Any]]:
    """The methods of these comparisons (a method with other settings is another label), in
    ``METHOD_ORDER``."""
    methods = {c.method.mitigation["label"]: c.method.mitigation for c in found}
    return sorted(methods.values(), key=lambda m: (_method_rank(m["name"]), m["label"]))
