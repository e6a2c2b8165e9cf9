"""The report's tables: numbers as CSV (full precision), and as Markdown and LaTeX for reading.

Every table is built twice: a raw frame (one column per number, written to ``<name>.csv``) and a
display frame of formatted text (``<name>.md``, ``<name>.tex``), each with its caption.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shiftlab.files import write_text_atomic
from shiftlab.report.stats import CI_LEVEL
from shiftlab.report.summary import MODALITY_ORDER

# The study's mean cross-domain AUC change per modality (docs/study.md), and its count of scenarios
# with a drop.
STUDY_DELTA = {"MRI": -0.097, "X-ray": -0.067, "CT": -0.026}
STUDY_DROPS = "11 of 14"
CSV_DIGITS = 6


@dataclass
class Table:
    name: str
    title: str
    caption: str
    raw: pd.DataFrame
    display: pd.DataFrame

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{self.name}.{ext}" for ext in ("csv", "md", "tex")]
        write_text_atomic(paths[0], self.raw.round(CSV_DIGITS).to_csv(index=False))
        write_text_atomic(paths[1], self.markdown())
        write_text_atomic(paths[2], self.latex())
        return paths

    def markdown(self) -> str:
        return f"**{self.title}.** {self.caption}\n\n{markdown_table(self.display)}"

    def latex(self) -> str:
        return latex_table(self.display, f"{self.title}. {self.caption}", f"tab:{self.name}")


# --- number formats ---------------------------------------------------------------------------


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if _missing(value):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_mean_sd(mean: float, sd: float, signed: bool = False) -> str:
    if _missing(mean):
        return "–"
    shown = number(mean, signed=signed)
    return shown if _missing(sd) else f"{shown} ± {number(sd)}"


def interval(low: float, high: float) -> str:
    if _missing(low) or _missing(high):
        return "–"
    return f"[{number(low, signed=True)}, {number(high, signed=True)}]"


def p_value(p: float) -> str:
    if _missing(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def arrow(source: str, target: str) -> str:
    return f"{source} → {target}"


def scenario_cells(
    modality: str, dataset: str, source: str, target: str, model: str, conflict: bool
) -> dict[str, str]:
    """The columns that name a scenario, first in every per-scenario table: modality, dataset
    (marked † where its runs fall into several settings groups), direction and network."""
    return {
        "modality": modality,
        "dataset": dataset + (" †" if conflict else ""),
        "source → target": arrow(source, target),
        "network": model,
    }


# --- writers ----------------------------------------------------------------------------------


def markdown_table(display: pd.DataFrame) -> str:
    if display.empty:
        return "(no rows)\n"
    cells = [[str(c) for c in display.columns]] + [
        [str(v).replace("|", "\\|") for v in row] for row in display.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines) + "\n"


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "→": r"$\rightarrow$",
    "Δ": r"$\Delta$",
    "−": "-",
    "–": "--",
    "≥": r"$\geq$",
    "<": r"$<$",
    "†": r"$^\dagger$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(char, char) for char in str(text))


def latex_table(display: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``)."""
    columns = "l" * max(len(display.columns), 1)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{columns}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in display.columns) + r" \\",
        r"\midrule",
    ]
    lines += [
        " & ".join(latex_escape(v) for v in row) + r" \\" for row in display.itertuples(index=False)
    ]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# --- the tables -------------------------------------------------------------------------------


def _modality_rank(modality: str) -> int:
    return MODALITY_ORDER.index(modality) if modality in MODALITY_ORDER else len(MODALITY_ORDER)


# The mitigations in the order the report lists them: none (the study's runs) first.
MITIGATION_ORDER = ("none", "augment", "histogram", "adabn", "mixstyle")


def order_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Modalities in the study's order, then dataset, direction, ablation setting, mitigation (in
    ``MITIGATION_ORDER``), group."""
    if frame.empty:
        return frame
    keys = frame.assign(_rank=frame["modality"].map(_modality_rank))
    if "mitigation_name" in keys:
        keys["_method"] = keys["mitigation_name"].map(
            lambda m: MITIGATION_ORDER.index(m) if m in MITIGATION_ORDER else len(MITIGATION_ORDER)
        )
    by = [
        c
        for c in (
            "_rank",
            "dataset",
            "source",
            "target",
            "model",
            "shift_name",
            "mode",
            "fraction",
            "alpha",
            "_method",
            "group",
        )
        if c in keys
    ]
    ordered = keys.sort_values(by, kind="stable")
    return ordered.drop(columns=["_rank", "_method"], errors="ignore").reset_index(drop=True)


def _scenario_caption(n_boot: int, conflicts: bool, separability: bool) -> str:
    level = f"{CI_LEVEL:.0%}"
    text = (
        "AUROC on each domain's test split: mean ± SD across seeds (sample SD, n − 1). "
        "ΔAUC = target − source AUROC (negative: a drop), mean across seeds. "
        f"{level} CI: percentile bootstrap over the patients of both test sets "
        f"({n_boot} replicates; each replicate draws one set of patients per domain, used for "
        "every seed; ΔAUC recomputed per seed and averaged across seeds). "
        "p (t-test): two-sided one-sample t-test of the per-seed ΔAUC against 0 (n − 1 degrees "
        "of freedom); p (Wilcoxon): two-sided Wilcoxon signed-rank test of the same values."
    )
    if separability:
        text += (
            " Vendor separability: cross-validated AUROC of a logistic regression telling the two "
            "domains apart from intensity statistics of the preprocessed images (0.5: not at all)."
        )
    if conflicts:
        text += (
            " † Runs of this scenario differ in settings, manifest or code version: each settings "
            "group is its own row, never averaged with the others."
        )
    return text


def scenario_table(
    summaries: pd.DataFrame,
    n_boot: int,
    separability: pd.DataFrame | None = None,
    conflicting: set[str] | None = None,
) -> Table:
    conflicting = conflicting or set()
    raw = order_rows(summaries.copy())
    raw["conflict"] = raw["group"].isin(conflicting) if not raw.empty else []
    has_separability = False
    if separability is not None and not separability.empty and not raw.empty:
        lookup = {
            group: r.separability_auroc
            for r in separability.itertuples()
            for group in r.groups.split()
        }
        raw["separability_auroc"] = [lookup.get(group, np.nan) for group in raw["group"]]
        has_separability = bool(raw["separability_auroc"].notna().any())
    show_shift = not raw.empty and bool((raw["shift_name"] != "none").any())
    rows = []
    for r in raw.itertuples():
        row = scenario_cells(r.modality, r.dataset, r.source, r.target, r.model, r.conflict)
        if show_shift:
            row["ablation"] = r.shift
        row |= {
            "seeds": str(r.seeds),
            "source AUROC": format_mean_sd(r.source_auroc_mean, r.source_auroc_sd),
            "target AUROC": format_mean_sd(r.target_auroc_mean, r.target_auroc_sd),
            "ΔAUC": number(r.delta_auroc_mean, signed=True),
            f"{CI_LEVEL:.0%} CI": interval(r.delta_ci_low, r.delta_ci_high),
            "p (t-test)": p_value(r.p_t),
            "p (Wilcoxon)": p_value(r.p_wilcoxon),
        }
        if has_separability:
            row["vendor separability"] = number(r.separability_auroc)
        if conflicting:
            row["settings group"] = r.group
        rows.append(row)
    return Table(
        "scenarios",
        "Table 1: AUROC per dataset and direction",
        _scenario_caption(n_boot, bool(conflicting), has_separability),
        raw,
        pd.DataFrame(rows),
    )


def modality_table(scenarios: pd.DataFrame) -> Table:
    """Mean ΔAUC per modality beside the study's, from one row per scenario (no ablation)."""
    rows, display = [], []
    groups = (
        [
            (m, scenarios[scenarios["modality"] == m])
            for m in sorted(scenarios["modality"].unique(), key=_modality_rank)
        ]
        if not scenarios.empty
        else []
    )
    groups.append(("all", scenarios))
    for modality, frame in groups:
        deltas = (
            frame["delta_auroc_mean"].to_numpy(dtype=float) if not frame.empty else np.array([])
        )
        significant = int((frame["delta_ci_high"] < 0).sum()) if not frame.empty else 0
        mean = float(deltas.mean()) if deltas.size else np.nan
        sd = float(deltas.std(ddof=1)) if deltas.size > 1 else np.nan
        study = STUDY_DELTA.get(modality, np.nan)
        rows.append(
            {
                "modality": modality,
                "scenarios": int(deltas.size),
                "drops": int((deltas < 0).sum()),
                "drops_ci_below_zero": significant,
                "delta_auroc_mean": mean,
                "delta_auroc_sd": sd,
                "study_delta_auroc": study,
                "difference": mean - study,
                "study_drops": STUDY_DROPS if modality == "all" else "",
            }
        )
        display.append(
            {
                "modality": modality,
                "scenarios": str(deltas.size),
                "with a drop (ΔAUC < 0)": str(int((deltas < 0).sum())),
                "CI below 0": str(significant),
                "mean ΔAUC": format_mean_sd(mean, sd, signed=True),
                "study's mean ΔAUC": number(study, signed=True),
                "difference": number(mean - study, signed=True),
                "study: scenarios with a drop": STUDY_DROPS if modality == "all" else "",
            }
        )
    caption = (
        "Mean ΔAUC over the scenarios (dataset × direction, runs without an ablation) of each "
        "modality, ± SD across scenarios, beside the mean the study published. "
        "A drop: mean ΔAUC across seeds below 0; CI below 0: its 95% bootstrap interval lies "
        "entirely below 0. Scenarios whose runs fall into several settings groups are left out "
        "(see the notes)."
    )
    return Table(
        "modality",
        "Table 2: ΔAUC per modality and the study's",
        caption,
        pd.DataFrame(rows),
        pd.DataFrame(display),
    )


def _ablation_display(raw: pd.DataFrame, setting: str, conflicting: set[str]) -> pd.DataFrame:
    rows = []
    for r in raw.itertuples():
        rows.append(
            {
                **scenario_cells(
                    r.modality, r.dataset, r.source, r.target, r.model, r.group in conflicting
                ),
                **({"mode": r.mode} if setting == "fraction" else {}),
                setting: f"{getattr(r, setting):g}",
                "seeds": str(r.seeds),
                "source AUROC": format_mean_sd(r.source_auroc_mean, r.source_auroc_sd),
                "target AUROC": format_mean_sd(r.target_auroc_mean, r.target_auroc_sd),
                "ΔAUC": number(r.delta_auroc_mean, signed=True),
                f"{CI_LEVEL:.0%} CI": interval(r.delta_ci_low, r.delta_ci_high),
                **({"settings group": r.group} if conflicting & set(raw["group"]) else {}),
            }
        )
    return pd.DataFrame(rows)


CONFLICT_NOTE = (
    " † Runs of this row's scenario and setting differ in settings, manifest or code version: "
    "each settings group is its own row, never averaged with the others (see the notes)."
)


def _ablation_table(
    summaries: pd.DataFrame,
    ablation: str,
    setting: str,
    title: str,
    caption: str,
    conflicting: set[str] | None,
) -> Table:
    conflicting = conflicting or set()
    raw = order_rows(summaries[summaries["shift_name"] == ablation])
    if conflicting & set(raw["group"]):
        caption += CONFLICT_NOTE
    display = _ablation_display(raw, setting, conflicting)
    return Table(ablation, title, caption, raw, display)


def injection_table(summaries: pd.DataFrame, conflicting: set[str] | None = None) -> Table:
    caption = (
        "Target injection (ablation 1): a fraction of the training set drawn from the target "
        "domain's training split (mode replace: the training set keeps its size; add: it "
        "grows). AUROC on each domain's test split, mean ± SD across seeds; ΔAUC and its "
        "patient-bootstrap CI as in Table 1."
    )
    return _ablation_table(
        summaries, "injection", "fraction", "Table 3: target injection", caption, conflicting
    )


def noise_table(summaries: pd.DataFrame, conflicting: set[str] | None = None) -> Table:
    caption = (
        "Gaussian noise on the training images (ablation 2) at strength alpha (by default the "
        "noise SD in percent of the training images' pixel SD). AUROC on each domain's test "
        "split, mean ± SD across seeds; ΔAUC and its patient-bootstrap CI as in Table 1."
    )
    return _ablation_table(
        summaries,
        "noise",
        "alpha",
        "Table 4: noise on the training images",
        caption,
        conflicting,
    )


NO_ABLATION = "runs without an ablation"


def shift_table(
    separability: pd.DataFrame, scenarios: pd.DataFrame, beside: str = NO_ABLATION
) -> Table:
    """Vendor separability per dataset and domain pair, beside the ΔAUC of both directions from
    the rows of ``scenarios`` (``beside`` says which rows they are, for the caption)."""
    raw = separability.copy()
    if not raw.empty:
        raw = raw.assign(_rank=raw["modality"].map(_modality_rank))
        raw = raw.sort_values(["_rank", "dataset", "domain_a", "domain_b"], kind="stable")
        raw = raw.drop(columns="_rank").reset_index(drop=True)
    display = []
    if not raw.empty:

        def delta(groups: str, source: str, target: str) -> float:
            match = scenarios[
                scenarios["group"].isin(groups.split())
                & (scenarios["source"] == source)
                & (scenarios["target"] == target)
            ]
            return float(match["delta_auroc_mean"].iloc[0]) if len(match) == 1 else np.nan

        raw["delta_a_to_b"] = [delta(r.groups, r.domain_a, r.domain_b) for r in raw.itertuples()]
        raw["delta_b_to_a"] = [delta(r.groups, r.domain_b, r.domain_a) for r in raw.itertuples()]
        repeated = raw.duplicated(["dataset", "domain_a", "domain_b"], keep=False).any()
        for r in raw.itertuples():
            display.append(
                {
                    "modality": r.modality,
                    "dataset": r.dataset,
                    "domains a / b": f"{r.domain_a} / {r.domain_b}",
                    "samples": f"{r.samples_a} / {r.samples_b}",
                    "patients": f"{r.patients_a} / {r.patients_b}",
                    "vendor separability (AUROC)": format_mean_sd(
                        r.separability_auroc, r.separability_fold_sd
                    ),
                    "ΔAUC a → b": number(r.delta_a_to_b, signed=True),
                    "ΔAUC b → a": number(r.delta_b_to_a, signed=True),
                    **({"settings groups": r.groups} if repeated else {}),
                }
            )
    caption = (
        "How far apart the two domains' images are: cross-validated AUROC (± SD across the "
        "patient folds) of a logistic regression predicting the domain from intensity statistics "
        "of the preprocessed images (0.5: indistinguishable; 1.0: always told apart), beside "
        f"the mean ΔAUC of each direction ({beside}, of the same settings "
        "group). Samples: images used per domain (all splits, capped)."
    )
    return Table(
        "shift", "Table 5: vendor separability and ΔAUC", caption, raw, pd.DataFrame(display)
    )


def runs_table(rows: Sequence[dict], mitigation: bool = False) -> pd.DataFrame:
    """runs.csv: every run directory, its status and what it ran (its mitigation where the
    report has runs of one)."""
    columns = [
        "run_dir",
        "status",
        "reason",
        "dataset",
        "source",
        "target",
        "shift",
        *(["mitigation"] if mitigation else []),
        "seed",
        "group",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame["seed"] = frame["seed"].astype("Int64")
    return frame
