"""External validation in the report: "trained on A, tested on site C".

For each settings group, the evaluation records its runs hold (``python -m shiftlab.evaluate``,
``<run dir>/evaluations/*/``) are read like run records: only finished ones (``done``), their
AUROCs recomputed from ``predictions.csv`` by the one definition (``shiftlab.auroc``) and checked
against their ``metrics.json``. Records of one evaluation setting (the other dataset, its split
and settings, its manifest) are averaged over the group's seeds, beside the same seeds' AUROCs on
their own source and target test sets. A record left out is named in a note.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shiftlab.auroc import auroc
from shiftlab.report.records import AGREEMENT, Group, Run
from shiftlab.report.stats import mean_sd
from shiftlab.report.summary import domain_auroc, modality_name
from shiftlab.report.tables import Table, arrow, format_mean_sd, order_rows
from shiftlab.runs.record import DONE

EVALUATIONS = "evaluations"  # shiftlab.evaluate.EVALUATIONS (not imported: it brings Lightning)


@dataclass(frozen=True)
class Evaluation:
    """One finished evaluation record of one run, its AUROCs recomputed."""

    run: Run
    key: tuple[str, str, str, str]  # dataset, split, settings hash, manifest sha256
    aurocs: dict[str, float]  # domain -> AUROC
    samples: dict[str, int]  # domain -> n


class _Unusable(Exception):
    pass


def _read(run: Run, folder: Path) -> Evaluation:
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        on = metrics["evaluated_on"]
        predictions = pd.read_csv(
            folder / "predictions.csv", dtype={"domain": str, "patient_id": str}
        )
        recorded = {
            name.split("/")[1]: float(value)
            for name, value in metrics["metrics"].items()
            if name.startswith("test/") and name.endswith("/auroc")
        }
    except (OSError, ValueError, KeyError, TypeError, pd.errors.ParserError) as error:
        raise _Unusable(f"unreadable ({type(error).__name__}: {error})") from None
    aurocs, samples = {}, {}
    for domain, value in recorded.items():
        rows = predictions[predictions["domain"] == domain]
        recomputed = auroc(rows["logit"].to_numpy(dtype=np.float64), rows["label"].to_numpy())
        if not abs(recomputed - value) <= AGREEMENT:
            raise _Unusable(
                f"predictions.csv gives AUROC {recomputed:.4f} on {domain}, "
                f"metrics.json says {value:.4f}"
            )
        aurocs[domain], samples[domain] = recomputed, len(rows)
    key = tuple(str(on[k]) for k in ("dataset", "split", "settings_hash", "manifest_sha256"))
    return Evaluation(run, key, aurocs, samples)


def read_evaluations(run: Run, notes: list[str], where: Callable[[Path], str]) -> list[Evaluation]:
    """The finished evaluation records of a run; a note for each one left out."""
    found = []
    for folder in sorted((run.run_dir / EVALUATIONS).glob("*/")):
        if not (folder / DONE).is_file():
            notes.append(f"Evaluation left out (incomplete: no done marker): {where(folder)}.")
            continue
        try:
            found.append(_read(run, folder))
        except _Unusable as why:
            notes.append(f"Evaluation left out: {where(folder)}: {why}.")
    return found


def _rows(group: Group, evaluations: Sequence[Evaluation]) -> list[dict[str, Any]]:
    """One row per domain of one evaluation setting of one group."""
    runs = [e.run for e in evaluations]
    source = mean_sd([domain_auroc(r.tests.source) for r in runs if r.tests])
    target = mean_sd([domain_auroc(r.tests.target) for r in runs if r.tests])
    dataset, split, settings_hash, manifest = evaluations[0].key
    domains = list(dict.fromkeys(d for e in evaluations for d in e.aurocs))
    rows = []
    for domain in domains:
        values = [e.aurocs[domain] for e in evaluations if domain in e.aurocs]
        mean, sd = mean_sd(values)
        rows.append(
            {
                "modality": modality_name(group.modality),
                "dataset": group.dataset,
                "source": group.source,
                "target": group.target,
                "model": group.model,
                "group": group.key,
                "source_auroc_mean": source[0],
                "source_auroc_sd": source[1],
                "target_auroc_mean": target[0],
                "target_auroc_sd": target[1],
                "tested_on": dataset,
                "split": split,
                "evaluation_settings": settings_hash,
                "evaluation_manifest_sha256": manifest,
                "domain": domain,
                "n": max(e.samples.get(domain, 0) for e in evaluations),
                "seeds": len(values),
                "seeds_in_group": len(group.runs),
                "auroc_mean": mean,
                "auroc_sd": sd,
            }
        )
    return rows


def external_table(
    groups: Sequence[Group], notes: list[str], where: Callable[[Path], str] = str
) -> Table | None:
    """The external-validation table of these groups, or None when no run holds an evaluation."""
    rows = []
    for group in groups:
        by_setting: dict[tuple, list[Evaluation]] = defaultdict(list)
        for run in group.runs:
            for evaluation in read_evaluations(run, notes, where):
                by_setting[evaluation.key].append(evaluation)
        for key in sorted(by_setting):
            rows += _rows(group, by_setting[key])
    if not rows:
        return None
    raw = order_rows(pd.DataFrame(rows))
    # A setting is named by its dataset and split; by its settings hash too where one dataset
    # and split were evaluated with several settings (another synthetic seed, another site).
    settings_per_name = raw.groupby(["tested_on", "split"])["evaluation_settings"].nunique()
    display = pd.DataFrame(
        [
            {
                "dataset": r.dataset,
                "source → target": arrow(r.source, r.target),
                "network": r.model,
                "source AUROC": format_mean_sd(r.source_auroc_mean, r.source_auroc_sd),
                "target AUROC": format_mean_sd(r.target_auroc_mean, r.target_auroc_sd),
                "tested on": f"{r.tested_on} ({r.split})"
                + (
                    f" [{r.evaluation_settings}]"
                    if settings_per_name[(r.tested_on, r.split)] > 1
                    else ""
                ),
                "domain": r.domain,
                "n": r.n,
                "seeds": f"{r.seeds} of {r.seeds_in_group}",
                "AUROC": format_mean_sd(r.auroc_mean, r.auroc_sd),
            }
            for r in raw.itertuples()
        ]
    )
    caption = (
        "Runs of each settings group tested on another dataset or site "
        "(python -m shiftlab.evaluate): AUROC on each of its domains (vendors), mean ± SD over "
        "the seeds evaluated (sample SD, n − 1), recomputed from the evaluations' "
        "predictions.csv. Source and target AUROC: the same seeds on their own test sets. "
        "n: samples of the domain; split: the other dataset's split evaluated (all: every split). "
        "[hash]: the evaluation settings, shown where one dataset was evaluated with several."
    )
    title = "External validation: trained on A, tested on site C"
    return Table("external", title, caption, raw, display)
