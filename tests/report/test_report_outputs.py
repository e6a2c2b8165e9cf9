"""What the report writes: figures, LaTeX, the notebook that shows it, the W&B views that mirror
it, and the shift characterisation on the images of real (synthetic) runs."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from helpers.compose import REPO
from helpers.sets import SyntheticSet
from nbclient import NotebookClient
from sklearn.metrics import roc_auc_score

from shiftlab.report import Options, build, load_report, read_folder, wandb_panels
from shiftlab.report.characterise import DatasetImages, separability, vendor_histograms

RUNS = Path(__file__).resolve().parent / "fixtures" / "report_runs"
NOTEBOOK = REPO / "notebooks" / "report.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fixture_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    build(
        read_folder(RUNS),
        out,
        "report_runs",
        Options(n_boot=200, characterise=False),
        root=RUNS,
        echo=lambda _: None,
    )
    return out


def test_figures_and_tables_are_written(fixture_report: Path) -> None:
    for name in ("delta_auc", "injection", "noise"):
        path = fixture_report / "figures" / f"{name}.png"
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000
    latex = (fixture_report / "tables" / "scenarios.tex").read_text()
    assert r"\begin{tabular}" in latex and r"toy\_mri" in latex and r"$\pm$" in latex
    report = load_report(fixture_report)
    assert set(report["tables"]) == {"scenarios", "modality", "injection", "noise"}
    assert report["figures"] == [
        fixture_report / "figures" / f"{n}.png" for n in ("delta_auc", "injection", "noise")
    ]
    injection = report["tables"]["injection"]
    assert sorted(injection["fraction"]) == [0.0, 0.3] and (injection["seeds"] == 3).all()
    noise = report["tables"]["noise"]
    assert sorted(noise["alpha"]) == [0.0, 20.0]
    markdown = (fixture_report / "report.md").read_text()
    assert "![delta_auc](figures/delta_auc.png)" in markdown and "## Notes" in markdown


@pytest.mark.slow
def test_the_notebook_builds_and_shows_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIFTLAB_RUNS", str(RUNS))
    monkeypatch.setenv("SHIFTLAB_REPORT", str(tmp_path / "report"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    markdown = " ".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "Table 1: AUROC per dataset and direction" in markdown
    assert "26 used" in markdown and "1 incomplete" in markdown
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    assert (tmp_path / "report" / "report.json").is_file()


def test_wandb_views_mirror_the_report_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    views = wandb_panels.views("team", "shiftlab")
    assert [v.name for v in views] == [
        "shiftlab report: ΔAUC per scenario",
        "shiftlab report: target injection",
        "shiftlab report: noise",
        "shiftlab report: mitigations",
    ]
    specs = [json.dumps(wandb_panels.spec(v)) for v in views]
    filters = [json.loads(s)["spec"]["section"]["runSets"][0] for s in specs]
    assert [f["filters"]["filters"][0]["value"] for f in filters] == [
        "none",
        "injection",
        "noise",
        "none",
    ]
    # Every view splits each scenario's runs by method: a remedy's runs are never averaged
    # with those of none.
    scenario = {"section": "run", "name": "group"}
    method = {"section": "config", "name": "mitigation.value.name"}
    assert all(f["grouping"] == [scenario, method] for f in filters)
    assert '"groupBy": "mitigation.value.name"' in specs[3]
    assert "summary_metrics.test/delta_auroc" in specs[0]
    assert "summary:test/cross_domain_auroc" in specs[0]
    assert '"xAxis": "config:shift.value.fraction"' in specs[1]
    assert '"xAxis": "config:shift.value.alpha"' in specs[2]
    assert wandb_panels.default_project() == "shiftlab"

    wandb_panels.main(["--json", str(tmp_path / "views.json")])
    assert len(json.loads((tmp_path / "views.json").read_text())) == 4
    assert "Cross-domain (target) AUROC against injected fraction" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:  # WANDB_MODE is offline in tests: nothing sent
        wandb_panels.main(["--entity", "team", "--save"])
    assert stopped.value.code == 2
    assert "nothing is sent" in capsys.readouterr().err


def _images(shift: float, patients: int = 40, undecoded: int = 0) -> DatasetImages:
    """``undecoded`` samples of each vendor are NaN rows, as the cache leaves a sample whose
    pixels could not be decoded."""
    rng = np.random.default_rng(0)
    vendors = np.repeat(["ge", "siemens"], patients)
    arrays = rng.normal(0.0, 1.0, size=(2 * patients, 2, 16, 16)).astype(np.float32)
    arrays[vendors == "siemens"] = arrays[vendors == "siemens"] * (1 + shift) + shift
    decoded = np.ones(2 * patients, dtype=bool)
    for first in (0, patients):
        decoded[first : first + undecoded] = False
    arrays[~decoded] = np.nan
    manifest = pd.DataFrame(
        {"vendor": vendors, "patient_id": [f"p{i}" for i in range(2 * patients)]}
    )
    return DatasetImages(
        "toy", manifest, arrays, {}, {"_target_": "x.MRIPreprocessor"}, decoded=decoded
    )


def test_separability_tells_shifted_vendors_apart_and_not_equal_ones() -> None:
    assert separability(_images(shift=0.5), "ge", "siemens")["separability_auroc"] > 0.95
    assert abs(separability(_images(shift=0.0), "ge", "siemens")["separability_auroc"] - 0.5) < 0.2


def test_samples_the_cache_could_not_decode_are_left_out_of_the_characterisation() -> None:
    images = _images(shift=0.5, undecoded=3)
    measured = separability(images, "ge", "siemens")
    assert measured["samples_a"] == measured["samples_b"] == 37
    assert measured["separability_auroc"] > 0.95
    histograms = vendor_histograms(images)
    assert histograms["samples"] == {"ge": 37, "siemens": 37}
    assert all(np.isfinite(d).all() for d in histograms["density"].values())


def test_report_of_real_runs_with_the_shift_measured(
    small_set: SyntheticSet, tmp_path: Path
) -> None:
    """Two short runs of the synthetic MRI set: the report's numbers are those of their
    predictions, and the vendors' images (severity 1.0) are told apart."""
    from shiftlab.train import train

    runs = tmp_path / "runs"
    for seed in (0, 1):
        cfg = small_set.compose(
            tmp_path / "outputs", "model=smallcnn", "trainer.max_epochs=1", f"seed={seed}"
        )
        train(cfg, runs / f"synthetic_mri/ge-siemens/smallcnn-seed{seed}")
    report = build(
        read_folder(runs),
        tmp_path / "report",
        "runs",
        Options(n_boot=200),
        root=runs,
        echo=lambda _: None,
    )
    [row] = report.tables["scenarios"].raw.itertuples()
    deltas = []
    for seed in (0, 1):
        predictions = pd.read_csv(
            runs / f"synthetic_mri/ge-siemens/smallcnn-seed{seed}" / "predictions.csv"
        )
        predictions = predictions[predictions["split"] == "test"]  # not the source validation
        auc = {d: roc_auc_score(t["label"], t["logit"]) for d, t in predictions.groupby("domain")}
        deltas.append(auc["siemens"] - auc["ge"])
    assert row.delta_auroc_mean == pytest.approx(np.mean(deltas), abs=1e-9)
    assert row.delta_ci_low < row.delta_auroc_mean < row.delta_ci_high
    [shift] = report.tables["shift"].raw.itertuples()
    assert shift.separability_auroc > 0.8 and shift.samples_a == shift.samples_b == 100
    assert row.separability_auroc == shift.separability_auroc
    assert (tmp_path / "report" / "figures" / "intensity_synthetic_mri.png").is_file()
    assert (tmp_path / "report" / "figures" / "separability.png").is_file()
