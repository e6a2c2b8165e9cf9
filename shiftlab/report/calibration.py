"""The calibration view: the synthetic sets' mean ΔAUC per modality beside the study's, and the
null check (severity 0: identical vendors, so ΔAUC near 0).

Its runs are those of ``experiment=calibration`` (conf/experiment/calibration.yaml): each
synthetic set at its preset severity and at severity 0, both directions, several seeds. The view
is shown when the runs hold a severity-0 null check; then every used run on a synthetic set (its
config has ``dataset.synthetic``) without an ablation enters it. Runs of both directions and
every seed are averaged when their settings agree apart from the seed and which domain is the
source; each such set of runs is one row. AUROCs are recomputed from the predictions, as in
every table of the report.

The synthetic shifts' magnitudes are set by design through each generator's severity knob; they
are not produced by physics. The view shows how close the design lands, nothing more.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from shiftlab.report.records import Group, Run, differing_settings
from shiftlab.report.stats import mean_sd
from shiftlab.report.summary import MODALITY_ORDER, domain_auroc, modality_name
from shiftlab.report.tables import STUDY_DELTA, Table, arrow, format_mean_sd, number

TOLERANCE = 0.03  # |mean ΔAUC - study| allowed at the preset severity
NULL_LIMIT = 0.02  # mean |ΔAUC| allowed at severity 0


def severity(run: Run) -> float | None:
    """The severity of the synthetic set a run trained on; None for any other dataset."""
    synthetic = (run.config.get("dataset") or {}).get("synthetic")
    if not isinstance(synthetic, dict) or "severity" not in synthetic:
        return None
    return float(synthetic["severity"])


def _without_direction(run: Run) -> str:
    """The run's settings with its two domains' names blanked wherever they appear, so that the
    two directions of one setting share a key (the seed is already left out of ``settings``)."""
    names = "|".join(re.escape(str(run.metrics[key])) for key in ("source", "target"))
    domains = re.compile(rf"(?<![A-Za-z0-9_])({names})(?![A-Za-z0-9_])")
    blanked = {
        key: domains.sub("<domain>", value) if isinstance(value, str) else value
        for key, value in run.settings.items()
    }
    text = json.dumps(
        {
            "settings": blanked,
            "manifest_sha256": run.metrics.get("manifest_sha256"),
            "code_version": run.code_version,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _row(groups: Sequence[Group], key: str) -> dict[str, Any]:
    """One calibration setting: means over both directions and every seed, and its check."""
    aurocs = {
        group.key: [
            (domain_auroc(run.tests.source), domain_auroc(run.tests.target))
            for run in group.runs
            if run.tests is not None
        ]
        for group in groups
    }
    source = [s for pairs in aurocs.values() for s, _ in pairs]
    target = [t for pairs in aurocs.values() for _, t in pairs]
    deltas = [t - s for s, t in zip(source, target, strict=True)]
    first = groups[0]
    modality = modality_name(first.modality)
    level = severity(first.first)
    delta_mean, delta_sd = mean_sd(deltas)
    by_direction = [
        f"{arrow(g.source, g.target)} "
        + number(float(np.mean([t - s for s, t in aurocs[g.key]])), signed=True)
        for g in groups
    ]
    row: dict[str, Any] = {
        "modality": modality,
        "dataset": first.dataset,
        "network": first.model,
        "severity": level,
        "kind": "null" if level == 0 else "preset",
        "runs": len(deltas),
        "in_domain_auroc": float(np.mean(source)),
        "cross_domain_auroc": float(np.mean(target)),
        "delta_auroc_mean": delta_mean,
        "delta_auroc_sd": delta_sd,
        "study_delta": np.nan,
        "mean_abs_delta": np.nan,
        "check": "",
        "by_direction": "; ".join(by_direction),
        "setting": key,
        "groups": " ".join(g.key for g in groups),
    }
    if level == 0:
        row["mean_abs_delta"] = float(np.mean(np.abs(deltas)))
        row["check"] = "ok" if row["mean_abs_delta"] < NULL_LIMIT else "off"
    elif modality in STUDY_DELTA:
        row["study_delta"] = STUDY_DELTA[modality]
        row["check"] = "ok" if abs(delta_mean - STUDY_DELTA[modality]) <= TOLERANCE else "off"
    return row


def _rank(row: dict[str, Any]) -> tuple:
    modality = row["modality"]
    rank = MODALITY_ORDER.index(modality) if modality in MODALITY_ORDER else len(MODALITY_ORDER)
    return (rank, row["dataset"], row["kind"] == "null", -row["severity"], row["setting"])


def calibration_rows(groups: Sequence[Group]) -> tuple[pd.DataFrame, dict[str, list[Group]]]:
    """One row per calibration setting of these groups (synthetic sets, no ablation), in the
    study's order of modalities, preset severity before severity 0; and each setting's groups."""
    settings: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        if severity(group.first) is None or group.shift.get("name", "none") != "none":
            continue
        settings[_without_direction(group.first)].append(group)
    rows = sorted((_row(members, key) for key, members in settings.items()), key=_rank)
    return pd.DataFrame(rows), settings


def ordering_holds(rows: pd.DataFrame) -> bool | None:
    """The study's order of drops, MRI larger than X-ray larger than CT, among the modalities with
    one preset-severity row each; None where fewer than two such modalities are present."""
    preset = rows[rows["kind"] == "preset"]
    counts = preset["modality"].value_counts()
    means = preset.set_index("modality")["delta_auroc_mean"]
    present = [m for m in MODALITY_ORDER if counts.get(m, 0) == 1]
    if len(present) < 2:
        return None
    return all(means[a] < means[b] for a, b in itertools.pairwise(present))


def _check_text(row: Any) -> str:
    if row.kind == "null":
        return f"{row.check} ({'<' if row.check == 'ok' else '≥'} {NULL_LIMIT})"
    if not row.check:
        return "– (no study value)"
    return f"{row.check} ({'within' if row.check == 'ok' else 'more than'} {TOLERANCE})"


def calibration_table(groups: Sequence[Group], notes: list[str]) -> Table | None:
    """The calibration table of these groups, or None when they hold no calibration: runs on a
    synthetic set at severity 0 (the null check that ``experiment=calibration`` pairs with each
    preset severity). Without it, runs on the synthetic sets are some other grid (a smoke grid of
    a few patients), whose ΔAUC measures nothing about the calibration."""
    raw, settings = calibration_rows(groups)
    if raw.empty or not (raw["kind"] == "null").any():
        return None
    for (dataset, kind), rows in raw.groupby(["dataset", "kind"], sort=False):
        if len(rows) > 1:
            firsts = [settings[key][0] for key in rows["setting"]]
            notes.append(
                f"Calibration: {dataset} at {'severity 0' if kind == 'null' else 'its severity'} "
                f"has {len(rows)} rows, one per setting ({', '.join(rows['setting'])}), which "
                f"differ in {differing_settings(firsts)}."
            )
    order = ordering_holds(raw)
    if order is not None:
        notes.append(
            "Calibration: the study's order of mean ΔAUC (MRI < X-ray < CT) "
            + ("holds." if order else "does not hold.")
        )
    display = pd.DataFrame(
        [
            {
                "modality": r.modality,
                "dataset": r.dataset,
                "network": r.network,
                "severity": f"{r.severity:g}",
                "runs": r.runs,
                "in-domain AUROC": number(r.in_domain_auroc),
                "cross-domain AUROC": number(r.cross_domain_auroc),
                "mean ΔAUC": format_mean_sd(r.delta_auroc_mean, r.delta_auroc_sd, signed=True),
                "study": number(r.study_delta, signed=True) if r.kind == "preset" else "",
                "mean abs ΔAUC": number(r.mean_abs_delta) if r.kind == "null" else "",
                "check": _check_text(r),
                "per direction": r.by_direction,
            }
            for r in raw.itertuples()
        ]
    )
    caption = (
        "Calibration of the synthetic sets (python -m shiftlab.train experiment=calibration): "
        "each row averages the runs of both directions and every seed of one setting. AUROC "
        "in-domain: on the source's test set; cross-domain: on the target's. Mean ΔAUC ± SD "
        "(sample SD, n − 1) across those runs, beside the study's mean for the modality; check: "
        f"within {TOLERANCE} of it. Severity 0 (identical vendors): the mean absolute ΔAUC must "
        f"stay below {NULL_LIMIT}. The shifts' magnitudes are set by design through the severity, "
        "not produced by physics."
    )
    title = "Calibration: synthetic ΔAUC per modality vs the study"
    return Table("calibration", title, caption, raw, display)
