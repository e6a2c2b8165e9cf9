"""The report's figures, as PNG files (matplotlib's object interface: no pyplot state, no display
needed).

Each figure is drawn by a ``*_figure`` function that returns it (what the tests measure) and saved
by the function of the same name without the suffix. Legends sit outside the axes, so they never
hide a data point; point labels are stacked beside the plot with leader lines, so they never
cover each other. Constrained layout makes room for both inside the figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shiftlab.extras import require
from shiftlab.files import write_via_temporary

require("matplotlib", extra="report", needed_by="Drawing the report's figures (or --no-figures)")
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from shiftlab.report.mitigation import target_fell  # noqa: E402
from shiftlab.report.tables import STUDY_DELTA  # noqa: E402

DPI = 150
COLOURS = {"MRI": "#1f77b4", "X-ray": "#ff7f0e", "CT": "#2ca02c"}
OTHER = "#7f7f7f"
LABEL_SIZE = 6.5  # points: the separability figure's point labels
LINE_SPACING = 1.5  # label pitch in font sizes: room for a line and a little air


def _save(figure: Figure, path: Path) -> Path:
    # matplotlib picks the format by the extension, which the temporary name keeps last.
    return write_via_temporary(
        path, lambda tmp: figure.savefig(tmp, dpi=DPI, bbox_inches="tight"), ".png"
    )


def _legend_beside(ax: Axes, fontsize: float) -> None:
    """The axes' legend to their right, outside the data (constrained layout keeps it in)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=fontsize)


def delta_auc_figure(scenarios: pd.DataFrame, seeds: pd.DataFrame) -> Figure:
    """ΔAUC per scenario with its bootstrap CI and the per-seed values, grouped by modality, with
    the study's mean ΔAUC of each modality as a dashed line."""
    rows = scenarios.reset_index(drop=True)
    height = 1.2 + 0.38 * max(len(rows), 1)
    figure = Figure(figsize=(7.5, height), layout="constrained")
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
    return figure


def delta_auc(scenarios: pd.DataFrame, seeds: pd.DataFrame, path: Path) -> Path:
    return _save(delta_auc_figure(scenarios, seeds), path)


def _panels(count: int) -> tuple[int, int]:
    """Rows and columns of panels: two abreast at most, as each has its legend beside it."""
    columns = min(2, max(count, 1))
    return math.ceil(max(count, 1) / columns), columns


def _curves(
    frame: pd.DataFrame,
    setting: str,
    label: str,
    title: str,
    both_domains: bool,
    log_setting: bool = False,
) -> Figure:
    datasets = list(dict.fromkeys(frame["dataset"]))  # the table's order: by modality
    rows, columns = _panels(len(datasets))
    # Each panel is about 4.5 inches of plot and 2 more for its legend beside it.
    figure = Figure(figsize=(6.5 * columns, 3.4 * rows), layout="constrained")
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
        _legend_beside(ax, fontsize=6)
    for ax in axes[len(datasets) :]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=10)
    return figure


def injection_figure(injection: pd.DataFrame) -> Figure:
    return _curves(
        injection,
        "fraction",
        "fraction of the training set from the target domain",
        "Target injection: AUROC against the injected fraction",
        both_domains=True,
    )


def injection_curves(injection: pd.DataFrame, path: Path) -> Path:
    return _save(injection_figure(injection), path)


def noise_figure(noise: pd.DataFrame) -> Figure:
    return _curves(
        noise,
        "alpha",
        "noise strength alpha",
        "Noise on training images: AUROC on both domains against alpha",
        both_domains=True,
        log_setting=True,
    )


def noise_curves(noise: pd.DataFrame, path: Path) -> Path:
    return _save(noise_figure(noise), path)


def intensity_figure(histograms: dict[str, Any]) -> Figure:
    """Pixel-value density of each vendor after preprocessing: the shift the networks see."""
    figure = Figure(figsize=(7.5, 3.6), layout="constrained")
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
    _legend_beside(ax, fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def intensity_histograms(histograms: dict[str, Any], path: Path) -> Path:
    return _save(intensity_figure(histograms), path)


def spread(wanted: Sequence[float], gap: float, low: float, high: float) -> list[float]:
    """Positions for labels that want to sit at ``wanted``: in the same order, at least ``gap``
    apart, within [low, high] where they fit, each as near its wish as its neighbours allow.

    Labels are taken from the top down; one that would come within ``gap`` of the stack above
    joins it, and each stack is centred on its members' wishes (then moved inside the range).
    """
    order = sorted(range(len(wanted)), key=lambda i: wanted[i], reverse=True)
    stacks: list[list[int]] = []
    tops: list[float] = []

    def top_of(members: list[int]) -> float:
        centred = float(np.mean([wanted[i] for i in members])) + gap * (len(members) - 1) / 2
        return max(min(centred, high), low + gap * (len(members) - 1))

    for index in order:
        stacks.append([index])
        tops.append(top_of([index]))
        while len(stacks) > 1 and tops[-2] - gap * len(stacks[-2]) < tops[-1]:
            joining = stacks.pop()
            tops.pop()
            stacks[-1] += joining
            tops[-1] = top_of(stacks[-1])
    positions = [0.0] * len(wanted)
    for members, top in zip(stacks, tops, strict=True):
        for rank, index in enumerate(members):
            positions[index] = top - rank * gap
    return positions


def separability_figure(scenarios: pd.DataFrame) -> Figure:
    """ΔAUC of each scenario against the vendor separability of its two domains.

    Scenarios of one dataset share their separability, and synthetic or strongly shifted sets
    all sit near 1.0: their labels stand in a column right of the plot, spread apart in the
    order of their points and joined to them by leader lines.
    """
    rows = scenarios.dropna(subset=["separability_auroc"]).reset_index(drop=True)
    pitch = LABEL_SIZE * LINE_SPACING / 72  # inches per label
    figure = Figure(figsize=(7.5, max(4.0, 2.0 + pitch * len(rows))), layout="constrained")
    ax = figure.add_subplot()
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
    for modality, colour in COLOURS.items():
        ax.scatter([], [], color=colour, label=modality)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlim(0.45, 1.02)  # the range of an AUROC that is better than chance
    ax.set_xlabel("vendor separability (domain classifier AUROC)")
    ax.set_ylabel("ΔAUC (mean over seeds, 95% CI)")
    ax.set_title("Is a larger measurable shift a larger drop?", fontsize=10)
    figure.legend(loc="outside lower center", ncols=len(COLOURS), fontsize=7)
    ax.grid(alpha=0.3)
    _label_points(figure, ax, rows)
    return figure


def _label_points(figure: Figure, ax: Axes, rows: pd.DataFrame) -> None:
    """Each point's label right of the axes, at its point's height where there is room."""
    if rows.empty:
        return
    figure.draw_without_rendering()  # the layout and data limits the labels are placed by
    points = ax.transData.transform(rows[["separability_auroc", "delta_auroc_mean"]].to_numpy())
    heights = ax.transAxes.inverted().transform(points)[:, 1]
    gap = LABEL_SIZE * LINE_SPACING * figure.dpi / 72 / ax.bbox.height  # in axes heights
    # Half a gap of margin: no label reaches above or below the axes, so the layout's height
    # (and with it the gap) stays what it was measured as.
    placed = spread(list(heights), gap, gap / 2, 1 - gap / 2)
    for r, height in zip(rows.itertuples(), placed, strict=True):
        colour = COLOURS.get(r.modality, OTHER)
        ax.annotate(
            f"{r.dataset} {r.source}→{r.target}",
            (r.separability_auroc, r.delta_auroc_mean),
            xytext=(1.04, height),
            textcoords="axes fraction",
            fontsize=LABEL_SIZE,
            color=colour,
            va="center",
            ha="left",
            annotation_clip=False,
            arrowprops={
                "arrowstyle": "-",
                "color": colour,
                "lw": 0.5,
                "shrinkA": 1,
                "shrinkB": 3,
                "relpos": (0.0, 0.5),
            },
        )


def separability_vs_delta(scenarios: pd.DataFrame, path: Path) -> Path:
    return _save(separability_figure(scenarios), path)


ALL_COLOUR = "black"


def mitigation_figure(pooled: pd.DataFrame) -> Figure:
    """The share of the drop each method recovers, per modality and over all scenarios, with its
    patient-bootstrap interval (the report's per-modality mitigation table): methods down the
    axis, one row per modality within each, 0% where none is and 100% where the drop is gone.
    A hollow marker: the method's mean target AUROC is below none's (as printed), so a share
    above 0 there is a network that learnt less, not a remedy."""
    rows = pooled.reset_index(drop=True)
    methods = list(dict.fromkeys(rows["mitigation"]))
    height = 1.4 + 0.22 * max(len(rows), 1) + 0.15 * len(methods)
    figure = Figure(figsize=(7.5, height), layout="constrained")
    ax = figure.add_subplot()
    positions, centres, y, hollow = [], [], 0.0, False
    for method in methods:
        members = rows.index[rows["mitigation"] == method]
        spots = [y - i for i in range(len(members))]
        positions += spots
        centres.append(float(np.mean(spots)))
        y = spots[-1] - 1.5  # a gap between methods
    for position, r in zip(positions, rows.itertuples(), strict=True):
        colour = ALL_COLOUR if r.modality == "all" else COLOURS.get(r.modality, OTHER)
        if math.isnan(r.recovered):
            ax.annotate(
                "no drop",
                (0.0, position),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize=7,
                color=colour,
                va="center",
            )
            continue
        low, high = r.recovered_ci_low, r.recovered_ci_high
        if not (math.isnan(low) or math.isnan(high)):
            ax.plot([100 * low, 100 * high], [position] * 2, color=colour, lw=2)
        fell = target_fell(r.target_auroc_mean, r.baseline_target_auroc_mean)
        face, edge = ("white", colour) if fell else (colour, "black")
        ax.scatter([100 * r.recovered], [position], s=30, color=face, edgecolor=edge, zorder=3)
        hollow = hollow or fell
    for modality in dict.fromkeys(rows["modality"]):
        colour = ALL_COLOUR if modality == "all" else COLOURS.get(modality, OTHER)
        ax.scatter([], [], color=colour, label="all scenarios" if modality == "all" else modality)
    if hollow:
        ax.scatter([], [], color="white", edgecolor="grey", label="target AUROC below none's")
    ax.axvline(0.0, color="black", lw=0.8)
    ax.axvline(100.0, color="black", lw=0.8, ls="--")
    transductive = dict(zip(rows["mitigation"], rows["transductive"], strict=False))
    labels = [f"{m} (transductive)" if transductive[m] else m for m in methods]
    ax.set_yticks(centres, labels, fontsize=8)
    ax.set_xlabel(
        "share of the drop recovered, % ((ΔAUC − ΔAUC none) / −ΔAUC none; 95% patient-bootstrap "
        "CI)",
        fontsize=8,
    )
    ax.set_title(
        "Mitigations: how much of the cross-vendor drop each recovers "
        "(0: as none; dashed: all of it)",
        fontsize=9,
    )
    ax.grid(axis="x", alpha=0.3)
    _legend_beside(ax, fontsize=7)
    return figure


def mitigation_recovery(pooled: pd.DataFrame, path: Path) -> Path:
    return _save(mitigation_figure(pooled), path)
