"""What a reader of the report sees: the console shows the tables the runs make (an ablation grid's
own tables, no empty Table 1), figure labels and legends never cover each other or the data,
and a grid's summary line says which overrides it counted.

Figures are measured as drawn (Agg): text and legend boxes in display pixels against each other,
the figure's edge and every plotted point.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from shiftlab import grid
from shiftlab.report import figures as report_figures
from shiftlab.report.__main__ import main as report_main

RUNS = Path(__file__).resolve().parent / "fixtures" / "report_runs"

# The smoke grid's separabilities and ΔAUCs (docs/report.md): MRI and CT both near 1.0.
SMOKE_SEPARABILITY = pd.DataFrame(
    [
        ("MRI", "synthetic_mri", "ge", "siemens", 0.038, -0.261, 0.331, 1.000),
        ("MRI", "synthetic_mri", "siemens", "ge", -0.011, -0.269, 0.258, 1.000),
        ("X-ray", "synthetic_xray", "ge", "philips", 0.266, -0.180, 0.677, 0.976),
        ("X-ray", "synthetic_xray", "philips", "ge", -0.184, -0.582, 0.206, 0.976),
        ("CT", "synthetic_ct", "ge", "siemens", -0.019, -0.282, 0.232, 0.999),
        ("CT", "synthetic_ct", "siemens", "ge", 0.029, -0.188, 0.231, 0.999),
    ],
    columns=[
        "modality",
        "dataset",
        "source",
        "target",
        "delta_auroc_mean",
        "delta_ci_low",
        "delta_ci_high",
        "separability_auroc",
    ],
)


def _ablation_runs(folder: Path) -> Path:
    """The fixture's injection and noise runs alone: the records of an ablation grid."""
    for run in RUNS.glob("*/*/*"):
        text = (run / "config.yaml").read_text()
        if "name: injection" in text or "name: noise" in text:
            shutil.copytree(run, folder / run.relative_to(RUNS))
    return folder


def _report_console(what: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    report_main([str(what), "--out", str(out), "--n-boot", "50", "--no-characterisation"])
    return capsys.readouterr().out


def test_console_of_an_ablation_grid_shows_its_tables_and_says_why_not_table_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _ablation_runs(tmp_path / "runs")
    shown = _report_console(runs, tmp_path / "report", capsys)
    assert "**Table 3: target injection.**" in shown and "**Table 4: noise" in shown
    assert "| MRI | toy_mri | ge → siemens | smallcnn | replace | 0.3 | 3 |" in shown
    assert "| CT | toy_ct | ge → siemens | smallcnn | 20 | 3 |" in shown
    assert "(no rows)" not in shown and "**Table 1" not in shown and "**Table 2" not in shown
    assert (
        "note: No Table 1 or 2: every run is an ablation (injection, noise), none has shift=none; "
        "the cross-vendor ΔAUC without the ablation is in Table 3's rows at fraction 0 and "
        "Table 4's rows at alpha 0." in shown
    )
    # The report folder agrees with the console: no empty table in it either.
    assert "(no rows)" not in (tmp_path / "report" / "report.md").read_text()
    assert sorted(p.name for p in (tmp_path / "report" / "figures").iterdir()) == [
        "injection.png",
        "noise.png",
    ]


def test_console_of_a_mixed_grid_shows_every_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = _report_console(RUNS, tmp_path / "report", capsys)
    titles = [line.split(".**")[0] for line in shown.splitlines() if line.startswith("**Table")]
    assert titles == [
        "**Table 1: AUROC per dataset and direction",
        "**Table 2: ΔAUC per modality and the study's",
        "**Table 3: target injection",
        "**Table 4: noise on the training images",
    ]
    assert "No Table 1 or 2" not in shown


# --- figures ----------------------------------------------------------------------------------


def _drawn(figure: Figure) -> FigureCanvasAgg:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas


def _inside(inner: Bbox, outer: Bbox) -> bool:
    return Bbox.union([inner, outer]).bounds == outer.bounds


def _points(ax: Axes) -> np.ndarray:
    """Every plotted data point of the axes, in display pixels: line vertices (markers, ends of
    error bars and CI lines) and scatter markers."""
    parts = [line.get_transform().transform(line.get_xydata()) for line in ax.lines]
    parts += [
        c.get_offset_transform().transform(c.get_offsets())
        for c in ax.collections
        if isinstance(c, PathCollection)
    ]
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if parts else np.empty((0, 2))


def _covers(box: Bbox, points: np.ndarray) -> np.ndarray:
    return (
        (points[:, 0] >= box.x0)
        & (points[:, 0] <= box.x1)
        & (points[:, 1] >= box.y0)
        & (points[:, 1] <= box.y1)
    )


def _assert_labels_apart(figure: Figure, expected: int) -> None:
    renderer = _drawn(figure).get_renderer()
    [ax] = figure.axes
    labels = [text for text in ax.texts if text.get_text()]
    assert len(labels) == expected
    boxes = [Text.get_window_extent(text, renderer) for text in labels]  # the text, no leader
    for (a, first), (b, second) in itertools.combinations(zip(labels, boxes, strict=True), 2):
        assert not first.overlaps(second), (a.get_text(), b.get_text())
    for text, box in zip(labels, boxes, strict=True):
        assert _inside(box, figure.bbox), f"{text.get_text()!r} runs past the figure's edge"
        assert not _covers(box, _points(ax)).any(), f"{text.get_text()!r} covers a data point"
    legend = figure.legends[0].get_window_extent(renderer) if figure.legends else None
    if legend is not None:
        assert _inside(legend, figure.bbox) and not legend.overlaps(ax.bbox)


def test_separability_labels_do_not_overlap_and_stay_in_the_figure() -> None:
    _assert_labels_apart(report_figures.separability_figure(SMOKE_SEPARABILITY), 6)


def test_separability_labels_of_a_crowded_study_still_fit() -> None:
    """Fourteen scenarios at one point (the paper grid's count): the figure grows to hold them."""
    crowded = pd.concat([SMOKE_SEPARABILITY.iloc[[0]]] * 14, ignore_index=True)
    crowded["dataset"] = [f"dataset_{k:02d}" for k in range(14)]
    _assert_labels_apart(report_figures.separability_figure(crowded), 14)


def test_spread_keeps_order_and_distance_and_moves_only_the_crowded() -> None:
    wanted = [0.9, 0.5, 0.51, 0.49, 0.02]
    placed = report_figures.spread(wanted, gap=0.05, low=0.0, high=1.0)
    assert placed[0] == 0.9  # room around it: stays where its point is
    assert placed[1] == pytest.approx(0.5)  # a stack of three, centred on its points
    assert placed[2] == pytest.approx(0.55) and placed[3] == pytest.approx(0.45)
    assert placed[4] == pytest.approx(0.02)
    order = np.argsort(wanted)
    assert list(np.argsort(placed)) == list(order)
    assert np.diff(np.sort(placed)).min() >= 0.05 - 1e-12
    assert report_figures.spread([0.0, 0.0], gap=0.1, low=0.05, high=0.95) == pytest.approx(
        [0.15, 0.05]
    )


def _ablation_frame(setting: str, values: list[float]) -> pd.DataFrame:
    """An ablation table like the smoke grid's: three datasets, both directions, AUROCs over the
    whole panel, so that no corner of an axes is free of data."""
    rng = np.random.default_rng(0)
    rows = []
    for modality, dataset, (a, b) in [
        ("MRI", "synthetic_mri", ("ge", "siemens")),
        ("X-ray", "synthetic_xray", ("ge", "philips")),
        ("CT", "synthetic_ct", ("ge", "siemens")),
    ]:
        for source, target in ((a, b), (b, a)):
            for value in values:
                rows.append(
                    {
                        "modality": modality,
                        "dataset": dataset,
                        "source": source,
                        "target": target,
                        "model": "smallcnn",
                        "mode": "replace" if setting == "fraction" else "",
                        setting: value,
                        "source_auroc_mean": rng.uniform(0.3, 1.0),
                        "source_auroc_sd": 0.05,
                        "target_auroc_mean": rng.uniform(0.3, 1.0),
                        "target_auroc_sd": 0.05,
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "figure",
    [
        pytest.param(
            lambda: report_figures.injection_figure(
                _ablation_frame("fraction", [0, 0.1, 0.2, 0.3, 0.4, 0.5])
            ),
            id="injection",
        ),
        pytest.param(
            lambda: report_figures.noise_figure(_ablation_frame("alpha", [0, 1, 2, 5, 10, 20, 50])),
            id="noise",
        ),
        pytest.param(
            lambda: report_figures.intensity_figure(
                {
                    "dataset": "synthetic_mri",
                    "preprocess": "MRIPreprocessor",
                    "edges": np.linspace(-3, 3, 41),
                    "density": {
                        "ge": np.exp(-(np.linspace(-3, 3, 40) ** 2)),
                        "siemens": np.exp(-((np.linspace(-3, 3, 40) - 1) ** 2)),
                    },
                    "samples": {"ge": 100, "siemens": 100},
                }
            ),
            id="intensity",
        ),
    ],
)
def test_legends_sit_outside_the_data(figure) -> None:
    drawn = figure()
    renderer = _drawn(drawn).get_renderer()
    panels = [ax for ax in drawn.axes if ax.get_visible()]
    assert panels
    for ax in panels:
        legend = ax.get_legend().get_window_extent(renderer)
        assert _inside(legend, drawn.bbox), f"{ax.get_title()}: legend past the figure's edge"
        assert not legend.overlaps(ax.bbox), f"{ax.get_title()}: legend inside the axes"
        for other in panels:
            assert not _covers(legend, _points(other)).any(), f"{ax.get_title()}: covers data"


# --- grid summary line ------------------------------------------------------------------------


def test_status_and_dry_run_summary_names_the_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = [
        "experiment=smoke_injection",
        "dataset=synthetic_mri",
        "direction=forward",
        "seed=0",
        f"paths.output_dir={tmp_path / 'out'}",
    ]
    out = f"paths.output_dir={tmp_path / 'out'}"
    named = f"smoke_injection (dataset=synthetic_mri direction=forward seed=0 {out})"
    grid.status(overrides)
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{named}: 6 runs: 0 done, ")
    grid.dry_run(overrides)
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{named}: 6 jobs would start (")
    monkeypatch.setenv("SHIFTLAB_OUTPUT_DIR", str(tmp_path / "elsewhere"))
    grid.dry_run(["experiment=smoke_paper_grid"])  # no other override: the name alone
    assert capsys.readouterr().out.splitlines()[-1].startswith("smoke_paper_grid: 12 jobs would")
