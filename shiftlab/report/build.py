"""From run records to the report folder: tables, figures, notes, and what was left out."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from shiftlab.errors import ShiftlabError
from shiftlab.files import write_text_atomic
from shiftlab.report import characterise
from shiftlab.report.calibration import calibration_table
from shiftlab.report.deployment import deployment_table
from shiftlab.report.external import external_table
from shiftlab.report.mitigation import mitigated, mitigation_tables
from shiftlab.report.records import (
    NO_MITIGATION,
    UNRECORDED,
    Group,
    Run,
    differing_settings,
    group_runs,
)
from shiftlab.report.stats import CI_LEVEL
from shiftlab.report.summary import modality_name, seed_rows, summarise
from shiftlab.report.tables import (
    Table,
    injection_table,
    modality_table,
    noise_table,
    runs_table,
    scenario_table,
    shift_table,
)

STATUSES = ("used", "unusable", "duplicate", "incomplete", "running", "missing")
WHEN_PRESENT = ("debug",)  # counted only in a report that has such runs
ABLATIONS = ("injection", "noise")
UNCHANGED = "the ablation's runs at fraction 0 or alpha 0, which inject and add nothing"
LISTED = 20  # runs left out that the notes name one by one (runs.csv lists them all)


@dataclass
class Options:
    n_boot: int = 2000
    bootstrap_seed: int = 0
    figures: bool = True
    characterise: bool = True
    max_images: int = 500
    strict: bool = False


@dataclass
class Report:
    out: Path
    origin: str
    counts: dict[str, int]
    tables: dict[str, Table]
    figures: list[Path]
    notes: list[str]
    runs: pd.DataFrame
    seeds: pd.DataFrame
    files: list[Path] = field(default_factory=list)


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def _left_out_notes(runs: Sequence[Run], root: Path | None) -> list[str]:
    """A note for each run that has a record or a start but is not in the tables (the first
    ``LISTED``; runs.csv has them all). Runs never started are only counted."""
    shown = ("unusable", "duplicate", "incomplete", "running", "debug")
    left_out = [r for r in runs if r.status in shown]
    notes = [
        f"Left out ({run.status}): {_relative(run.run_dir, root)}: {run.reason}."
        for run in left_out[:LISTED]
    ]
    if len(left_out) > LISTED:
        notes.append(f"… and {len(left_out) - LISTED} more left out: see tables/runs.csv.")
    return notes


def _conflicts(groups: Sequence[Group]) -> tuple[set[str], list[str]]:
    """Group keys of scenarios whose runs fall into several settings groups, and a note each."""
    by_scenario: dict[tuple, list[Group]] = defaultdict(list)
    for group in groups:
        by_scenario[group.scenario].append(group)
    keys, notes = set(), []
    for (dataset, source, target, shift, mitigation), members in sorted(by_scenario.items()):
        if len(members) < 2:
            continue
        keys.update(g.key for g in members)
        listed = "; ".join(
            f"{g.key}: {g.model}, seeds {' '.join(map(str, g.seeds))}" for g in members
        )
        setting = shift if mitigation == NO_MITIGATION else f"{shift}, mitigation {mitigation}"
        notes.append(
            f"{dataset} {source} → {target} ({setting}): runs fall into {len(members)} "
            f"settings groups ({listed}), which differ in {differing_settings(members)}. Each "
            "group is reported as its own row (marked †) and none enters the modality table."
        )
    return keys, notes


def _characterise(
    groups: Sequence[Group], options: Options, notes: list[str]
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Vendor separability of every domain pair with runs, and per-vendor histograms, for each
    set of images the runs trained on (manifest, DICOM root, preprocessing), from the
    preprocessing cache; a note for each that has no cache here. A separability row names the
    settings groups it applies to (``groups``)."""
    by_source: dict[tuple, list[Group]] = defaultdict(list)
    for group in groups:
        by_source[characterise.source_of(group.first.config)].append(group)
    per_dataset = Counter(key[0] for key in by_source)
    rows, histograms = [], []
    for key in sorted(by_source):
        members = by_source[key]
        first = members[0].first
        try:
            images = characterise.open_images(first.config, first.metrics.get("manifest_sha256"))
        except characterise.Unavailable as why:
            notes.append(f"Shift characterisation of {members[0].dataset} left out: {why}.")
            continue
        pairs: dict[tuple[str, str], list[str]] = defaultdict(list)
        for g in members:
            pairs[tuple(sorted((g.source, g.target)))].append(g.key)
        for (first_domain, second_domain), keys in sorted(pairs.items()):
            try:
                row = characterise.separability(
                    images, first_domain, second_domain, options.max_images
                )
            except characterise.Unavailable as why:
                notes.append(
                    f"Vendor separability of {members[0].dataset} {first_domain} / "
                    f"{second_domain} left out: {why}."
                )
                continue
            modality = modality_name(members[0].modality)
            rows.append({"modality": modality, **row, "groups": " ".join(sorted(keys))})
        histogram = characterise.vendor_histograms(images)
        # One figure per set of images; named by the dataset alone unless it has several.
        histogram["name"] = images.dataset
        if per_dataset[images.dataset] > 1:
            histogram["name"] += "-" + hashlib.sha256(repr(key).encode()).hexdigest()[:8]
        histograms.append(histogram)
    return pd.DataFrame(rows), histograms


def _no_baseline_note(summaries: pd.DataFrame) -> str:
    """Why Tables 1 and 2 are left out, and which rows of the ablation tables stand in for them
    (no target data injected, no noise added: the settings of a run without an ablation)."""
    present = [a for a in ABLATIONS if (summaries["shift_name"] == a).any()]
    zero = {"injection": ("fraction", "Table 3"), "noise": ("alpha", "Table 4")}
    baselines = [
        f"{zero[a][1]}'s rows at {zero[a][0]} 0"
        for a in present
        if ((summaries["shift_name"] == a) & (summaries[zero[a][0]] == 0)).any()
    ]
    return f"No Table 1 or 2: every run is an ablation ({', '.join(present)}), none has " + (
        f"shift=none; the cross-vendor ΔAUC without the ablation is in {' and '.join(baselines)}."
        if baselines
        else "shift=none."
    )


def build(
    runs: Sequence[Run],
    out: Path,
    origin: str,
    options: Options | None = None,
    root: Path | None = None,
    echo: Callable[[str], None] = print,
) -> Report:
    """Write the report of these runs into ``out`` and return it."""
    options = options or Options()
    if options.figures:  # matplotlib, the report extra: a missing one is named before any work
        from shiftlab.report import figures
    groups = group_runs(runs)
    counts = Counter(run.status for run in runs)
    statuses = [*STATUSES, *(s for s in WHEN_PRESENT if counts.get(s))]
    count_line = ", ".join(f"{counts.get(s, 0)} {s}" for s in statuses)
    if not groups:
        raise ShiftlabError(
            f"no usable run record in {origin} ({len(runs)} run directories: {count_line}). "
            "A run is usable once it has written its done marker; see runs listed by "
            "python -m shiftlab.grid status."
        )
    conflicting, notes = _notes(runs, groups, options, root)
    echo(f"{origin}: {len(runs)} run directories: {count_line}; {len(groups)} settings groups")

    summaries = pd.DataFrame([summarise(g, options.n_boot, options.bootstrap_seed) for g in groups])
    seeds = pd.DataFrame([row for g in groups for row in seed_rows(g)])
    seeds["run_dir"] = [_relative(Path(p), root) for p in seeds["run_dir"]]
    with_methods = bool(mitigated(groups))  # runs.csv and seeds.csv then name each run's method
    if with_methods:
        labels = {g.key: g.mitigation["label"] for g in groups}
        seeds.insert(seeds.columns.get_loc("shift") + 1, "mitigation", seeds["group"].map(labels))
    separability, histograms = pd.DataFrame(), []
    if options.characterise:
        separability, histograms = _characterise(groups, options, notes)
    tables = _tables(groups, summaries, separability, conflicting, options, notes, root)

    if (out / "report.json").is_file():  # an earlier report here: none of its files may linger
        for folder in ("tables", "figures"):
            shutil.rmtree(out / folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    files = [p for table in tables.values() for p in table.write(out / "tables")]
    runs_frame = runs_table([_run_row(r, root) for r in runs], with_methods)
    for name, frame in (("runs", runs_frame), ("seeds", seeds)):
        path = out / "tables" / f"{name}.csv"
        write_text_atomic(path, frame.round(6).to_csv(index=False))
        files.append(path)
    drawn: list[Path] = []
    if options.figures:
        drawn = _draw(figures, out / "figures", tables, seeds, histograms)
    files += drawn
    counted = {s: counts.get(s, 0) for s in statuses}
    report = Report(out, origin, counted, tables, drawn, notes, runs_frame, seeds, files)
    files.append(_write_markdown(report, options))
    files.append(_write_json(report, options))
    return report


def _notes(
    runs: Sequence[Run], groups: Sequence[Group], options: Options, root: Path | None
) -> tuple[set[str], list[str]]:
    """The scenarios whose runs conflict, and the report's notes on runs left out, conflicts and
    records without a code version (``--strict`` refuses conflicts instead)."""
    conflicting, conflict_notes = _conflicts(groups)
    if conflict_notes and options.strict:
        raise ShiftlabError(
            "runs of one scenario differ in settings, manifest or code version (--strict):\n  "
            + "\n  ".join(conflict_notes)
        )
    notes = [*_left_out_notes(runs, root), *conflict_notes]
    if any(r.code_version == UNRECORDED for r in runs if r.status == "used"):
        notes.append(
            "The run records do not state a code version (no code_version in metrics.json): runs "
            "are grouped by settings and manifest only."
        )
    return conflicting, notes


def _tables(
    groups: Sequence[Group],
    summaries: pd.DataFrame,
    separability: pd.DataFrame,
    conflicting: set[str],
    options: Options,
    notes: list[str],
    root: Path | None,
) -> dict[str, Table]:
    """The tables these runs make, in the report's order: each only where its runs are present."""
    methods = mitigated(groups)
    mitigations = mitigation_tables(
        groups, conflicting, options.n_boot, options.bootstrap_seed, notes
    )
    if methods:  # the mitigation tables compare these runs with none's; the study's read the rest
        summaries = summaries[~summaries["group"].isin(methods)]
    plain = summaries[~summaries["shift_name"].isin(ABLATIONS)]
    scenarios = scenario_table(plain, options.n_boot, separability, conflicting)
    scenario_rows = scenarios.raw
    tables: dict[str, Table] = {}
    if scenario_rows.empty and summaries.empty:  # every run has a mitigation
        notes.insert(0, "No Table 1 or 2: every run has a mitigation, none has mitigation=none.")
    elif scenario_rows.empty:  # an ablation grid: Tables 1 and 2 would be empty
        notes.insert(0, _no_baseline_note(summaries))
    else:
        baseline = scenario_rows[
            (scenario_rows["shift_name"] == "none") & ~scenario_rows["conflict"]
        ]
        tables["scenarios"] = scenarios
        tables["modality"] = modality_table(baseline)
    if (summaries["shift_name"] == "injection").any():
        tables["injection"] = injection_table(summaries, conflicting)
    if (summaries["shift_name"] == "noise").any():
        tables["noise"] = noise_table(summaries, conflicting)
    tables |= {table.name: table for table in mitigations}
    if not separability.empty and not scenario_rows.empty:
        tables["shift"] = shift_table(separability, scenario_rows)
    elif not separability.empty:  # an ablation grid: its runs at setting 0 change nothing
        unchanged = summaries[(summaries["fraction"] == 0) | (summaries["alpha"] == 0)]
        tables["shift"] = shift_table(separability, unchanged, UNCHANGED)
    external = external_table(groups, notes, lambda path: _relative(path, root))
    if external is not None:  # runs tested on another dataset (python -m shiftlab.evaluate)
        tables["external"] = external
    calibration = calibration_table([g for g in groups if g.key not in methods], notes)
    if calibration is not None:  # runs on the synthetic sets (experiment=calibration)
        tables["calibration"] = calibration
    deployment = deployment_table(
        groups, options.n_boot, options.bootstrap_seed, conflicting, notes
    )
    if deployment is not None:  # records with the metrics beyond AUROC (evaluation in config)
        tables["deployment"] = deployment
    return tables


def _run_row(run: Run, root: Path | None) -> dict[str, Any]:
    """One row of runs.csv: where the run is, whether it was used and why not, what it ran."""
    return {
        "run_dir": _relative(run.run_dir, root),
        "status": run.status,
        "reason": run.reason,
        **run.describe(),
        "group": run.group or "",
    }


def _draw(
    figures: ModuleType,
    folder: Path,
    tables: dict[str, Table],
    seeds: pd.DataFrame,
    histograms: list[dict[str, Any]],
) -> list[Path]:
    drawn = []
    if "scenarios" in tables:
        scenarios = tables["scenarios"].raw
        drawn.append(figures.delta_auc(scenarios, seeds, folder / "delta_auc.png"))
        if "separability_auroc" in scenarios and scenarios["separability_auroc"].notna().any():
            drawn.append(figures.separability_vs_delta(scenarios, folder / "separability.png"))
    if "injection" in tables:
        drawn.append(figures.injection_curves(tables["injection"].raw, folder / "injection.png"))
    if "noise" in tables:
        drawn.append(figures.noise_curves(tables["noise"].raw, folder / "noise.png"))
    if "mitigation_modality" in tables:
        pooled = tables["mitigation_modality"].raw
        drawn.append(figures.mitigation_recovery(pooled, folder / "mitigation.png"))
    for histogram in histograms:
        name = f"intensity_{histogram['name']}.png"
        drawn.append(figures.intensity_histograms(histogram, folder / name))
    return drawn


def _write_markdown(report: Report, options: Options) -> Path:
    counts = ", ".join(f"{n} {s}" for s, n in report.counts.items())
    lines = [
        "# shiftlab report",
        "",
        f"Run records read from `{report.origin}`: {counts}.",
        f"Only used runs enter the tables; every run directory and its status is in "
        f"`tables/runs.csv`, every seed's AUROCs in `tables/seeds.csv`. Bootstrap: "
        f"{options.n_boot} replicates, seed {options.bootstrap_seed}, "
        f"{CI_LEVEL:.0%} percentile intervals.",
        "",
    ]
    if report.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in report.notes], ""]
    lines += ["## Tables", ""]
    for table in report.tables.values():
        lines += [table.markdown(), ""]
    if report.figures:
        lines += ["## Figures", ""]
        lines += [f"![{p.stem}](figures/{p.name})" for p in report.figures]
        lines.append("")
    path = report.out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def _write_json(report: Report, options: Options) -> Path:
    summary = {
        "origin": report.origin,
        "counts": report.counts,
        "bootstrap": {
            "replicates": options.n_boot,
            "seed": options.bootstrap_seed,
            "level": CI_LEVEL,
            "resampling": "patients within each test domain, one draw shared by all seeds",
        },
        "tables": {name: f"tables/{name}" for name in report.tables},
        "figures": [f"figures/{p.name}" for p in report.figures],
        "notes": report.notes,
    }
    path = report.out / "report.json"
    write_text_atomic(path, json.dumps(summary, indent=2) + "\n")
    return path


def load(out: str | os.PathLike[str]) -> dict[str, Any]:
    """A written report: its summary (report.json), tables (raw frames and Markdown), figures."""
    out = Path(out)
    summary_path = out / "report.json"
    if not summary_path.is_file():
        raise ShiftlabError(
            f"no report in {out} (report.json missing). Write one with: "
            "python -m shiftlab.report <runs folder> --out " + str(out)
        )
    summary = json.loads(summary_path.read_text())
    tables = {
        name: pd.read_csv(out / f"{stem}.csv", keep_default_na=True)
        for name, stem in summary["tables"].items()
    }
    markdown = {name: (out / f"{stem}.md").read_text() for name, stem in summary["tables"].items()}
    return {
        "summary": summary,
        "tables": tables,
        "markdown": markdown,
        "runs": pd.read_csv(out / "tables" / "runs.csv"),
        "seeds": pd.read_csv(out / "tables" / "seeds.csv"),
        "figures": [out / f for f in summary["figures"]],
    }
