"""The report's figures, as PNG files (matplotlib's object interface: no pyplot state, no display
needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from shiftlab.report.tables import STUDY_DELTA

DPI = 150
COLOURS = {"MRI": "#1f77b4", "X-ray": "#ff7f0e", "CT": "#2ca02c"}
OTHER = "#7f7f7f"


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=DPI, bbox_inches="tight")
    tmp.replace(path)
    return path


def delta_auc(scenarios: pd.DataFrame, seeds: pd.DataFrame, path: Path) -> Path:
    """ΔAUC per scenario with its bootstrap CI and the per-seed values, grouped by modality, with
    the study's mean ΔAUC of each modality as a dashed line."""
    rows = scenarios.reset_index(drop=True)
    height = 1.2 + 0.38 * max(len(rows), 1)
    figure = Figure(figsize=(7.5, height))
    ax = figure.add_subplot()
    y = np.arange(len(rows))[::-1]
    for position, r in zip(y, rows.itertuples(), strict=True):
        colour = COLOURS.get(r.modality, OTHER)
        low, high = r.delta_ci_low, r.delta_ci_high
        if not (math.isnan(low) or math.isnan(high)):
            ax.plot([low, high], [position, position], color=colour, lw=2, solid_capstyle="butt")
        per_seed = seeds[seeds["group"] == r.group]["delta_auroc"].to_numpy()
        ax.scatter(
            per_seed, np.full(per_seed.size, position), s=10, color=colour, alpha=0.35, zorder=2
        )
        ax.scatter(
            [r.delta_auroc_mean], [position], s=36, color=colour, edgecolor="black", zorder=3
        )
    for modality in rows["modality"].unique():
        positions = y[(rows["modality"] == modality).to_numpy()]
        if modality in STUDY_DELTA:
            ax.plot(
                [STUDY_DELTA[modality]] * 2,
                [positions.min() - 0.4, positions.max() + 0.4],
                ls="--",
                color=COLOURS.get(modality, OTHER),
                lw=1,
            )
    ax.axvline(0.0, color="black", lw=0.8)
    labels = [
        f"{r.modality}  {r.dataset}  {r.source}→{r.target}  {r.model}"
        + (f"  [{r.shift}]" if r.shift != "none" else "")
        + (f"  † {r.group}" if getattr(r, "conflict", False) else "")
        for r in rows.itertuples()
    ]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("ΔAUC = target − source AUROC (mean over seeds, 95% patient-bootstrap CI)")
    ax.set_title(
        "Cross-vendor change in AUROC per scenario (dashed: the study's modality mean)", fontsize=9
    )
    ax.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def _panels(count: int) -> tuple[int, int]:
    columns = min(3, max(count, 1))
    return math.ceil(max(count, 1) / columns), columns


def _curves(
    frame: pd.DataFrame,
    setting: str,
    label: str,
    title: str,
    path: Path,
    both_domains: bool,
    log_setting: bool = False,
) -> Path:
    datasets = list(dict.fromkeys(frame["dataset"]))  # the table's order: by modality
    rows, columns = _panels(len(datasets))
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, dataset in zip(axes, datasets, strict=False):
        part = frame[frame["dataset"] == dataset]
        several_networks = part["model"].nunique() > 1
        for index, ((source, target, group_mode, model), lines) in enumerate(
            part.groupby(["source", "target", "mode", "model"], sort=True)
        ):
            lines = lines.sort_values(setting)
            colour = f"C{index}"
            name = f"{source}→{target}" + (f" ({group_mode})" if group_mode else "")
            name += f" {model}" if several_networks else ""
            ax.errorbar(
                lines[setting],
                lines["target_auroc_mean"],
                yerr=lines["target_auroc_sd"],
                color=colour,
                marker="o",
                ms=3,
                capsize=2,
                label=f"{name}: target",
            )
            if both_domains:
                ax.errorbar(
                    lines[setting],
                    lines["source_auroc_mean"],
                    yerr=lines["source_auroc_sd"],
                    color=colour,
                    marker="s",
                    ms=3,
                    capsize=2,
                    ls="--",
                    alpha=0.7,
                    label=f"{name}: source",
                )
        if log_setting:
            ax.set_xscale("symlog", linthresh=1.0)
            values = sorted(part[setting].unique())
            ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel(label)
        ax.set_ylabel("test AUROC (mean ± SD over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in axes[len(datasets) :]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def injection_curves(injection: pd.DataFrame, path: Path) -> Path:
    return _curves(
        injection,
        "fraction",
        "fraction of the training set from the target domain",
        "Target injection: AUROC against the injected fraction",
        path,
        both_domains=True,
    )


def noise_curves(noise: pd.DataFrame, path: Path) -> Path:
    return _curves(
        noise,
        "alpha",
        "noise strength alpha",
        "Noise on training images: AUROC on both domains against alpha",
        path,
        both_domains=True,
        log_setting=True,
    )


def intensity_histograms(histograms: dict[str, Any], path: Path) -> Path:
    """Pixel-value density of each vendor after preprocessing: the shift the networks see."""
    figure = Figure(figsize=(6.0, 3.6))
    ax = figure.add_subplot()
    edges = histograms["edges"]
    centres = (edges[:-1] + edges[1:]) / 2
    for vendor, density in histograms["density"].items():
        ax.plot(
            centres,
            density,
            drawstyle="steps-mid",
            label=f"{vendor} ({histograms['samples'][vendor]} samples)",
        )
    ax.set_xlabel(f"preprocessed intensity ({histograms['preprocess']})")
    ax.set_ylabel("density")
    ax.set_title(f"{histograms['dataset']}: intensities per vendor", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(figure, path)


def separability_vs_delta(scenarios: pd.DataFrame, path: Path) -> Path:
    """ΔAUC of each scenario against the vendor separability of its two domains."""
    figure = Figure(figsize=(5.5, 4.0))
    ax = figure.add_subplot()
    rows = scenarios.dropna(subset=["separability_auroc"])
    for r in rows.itertuples():
        colour = COLOURS.get(r.modality, OTHER)
        low, high = r.delta_ci_low, r.delta_ci_high
        if not (math.isnan(low) or math.isnan(high)):
            ax.plot([r.separability_auroc] * 2, [low, high], color=colour, lw=1)
        ax.scatter(
            [r.separability_auroc],
            [r.delta_auroc_mean],
            color=colour,
            edgecolor="black",
            s=30,
            zorder=3,
        )
        ax.annotate(
            f"{r.dataset} {r.source}→{r.target}",
            (r.separability_auroc, r.delta_auroc_mean),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    for modality, colour in COLOURS.items():
        ax.scatter([], [], color=colour, label=modality)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlim(0.45, 1.02)  # the range of an AUROC that is better than chance
    ax.set_xlabel("vendor separability (domain classifier AUROC)")
    ax.set_ylabel("ΔAUC (mean over seeds, 95% CI)")
    ax.set_title("Is a larger measurable shift a larger drop?", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(figure, path)
