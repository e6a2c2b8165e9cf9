"""experiment=calibration: the grid the sweeper plans (and trains), and the report's calibration
view, which must give the table ``python -m shiftlab.calibrate`` printed before it ran this grid.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.compose import REPO, compose_train
from sklearn.metrics import roc_auc_score

from shiftlab import calibrate, grid
from shiftlab.identity import settings_hash
from shiftlab.report import Options, build
from shiftlab.report.calibration import calibration_table
from shiftlab.report.records import group_runs, read_folder

# The sets, their calibration networks and modalities (conf/calibration/set/).
SETS = {
    "synthetic_mri": ("mrnet2d", "MR", ("ge", "siemens")),
    "synthetic_xray": ("smallcnn", "DX", ("ge", "philips")),
    "synthetic_ct": ("nodulex", "CT", ("ge", "siemens")),
}
STUDY = {"MR": -0.097, "DX": -0.067, "CT": -0.026}  # docs/study.md, per modality


def places(tmp_path: Path) -> list[str]:
    return [f"paths.data_dir='{tmp_path / 'data'}'", f"paths.output_dir='{tmp_path / 'out'}'"]


def preset_severity(tmp_path: Path, dataset: str) -> float:
    return float(compose_train(tmp_path, tmp_path, f"dataset={dataset}").dataset.synthetic.severity)


def test_the_grid_is_every_set_at_both_severities_both_directions_five_seeds(
    tmp_path: Path,
) -> None:
    _, jobs = grid.grid(["experiment=calibration", *places(tmp_path)])
    planned = {
        (
            job.config.dataset.name,
            job.config.model.name,
            float(job.config.dataset.synthetic.severity),
            job.config.source,
            job.config.target,
            int(job.config.seed),
        )
        for job in jobs
    }
    expected = {
        (dataset, network, severity, source, target, seed)
        for dataset, (network, _, domains) in SETS.items()
        for severity in (preset_severity(tmp_path, dataset), 0.0)
        for source, target in (domains, domains[::-1])
        for seed in range(5)
    }
    assert len(jobs) == 60 and planned == expected
    # Kept apart from the study's runs, in the layout of the calibration command before it.
    assert all(job.run_dir.is_relative_to(tmp_path / "out" / "calibration") for job in jobs)
    assert {job.state for job in jobs} == {"missing"}


def test_a_run_of_the_grid_is_the_run_the_old_command_and_the_plain_preset_train(
    tmp_path: Path,
) -> None:
    """Same settings hash and folder as ``python -m shiftlab.calibrate`` composed them (so its
    finished calibrations are found as done), and at the preset severity the same run as
    ``dataset=<set>`` (model=smallcnn for X-ray) trains outside the grid."""
    _, jobs = grid.grid(
        ["experiment=calibration", "calibration/set=synthetic_xray", *places(tmp_path)]
    )
    for job in jobs:
        c = job.config
        severity = float(c.dataset.synthetic.severity)
        chosen = ["dataset=synthetic_xray", "model=smallcnn"]
        where = [f"source={c.source}", f"target={c.target}", f"seed={c.seed}"]
        old = compose_train(
            tmp_path / "data",
            tmp_path / "out",
            *chosen,
            f"dataset.synthetic.severity={severity}",
            *where,
        )
        name = f"severity{severity}-seed{c.seed}-{settings_hash(old)}"
        assert job.run_dir == (
            tmp_path / "out" / "calibration" / "synthetic_xray" / f"{c.source}-{c.target}" / name
        )
        if severity != 0:
            plain = compose_train(tmp_path / "data", tmp_path / "out", *chosen, *where)
            assert settings_hash(plain) == settings_hash(c)


def test_the_calibrate_command_stands_for_overrides_of_the_grid(tmp_path: Path) -> None:
    argv = ["--seeds", "2", "--modalities", "DX,CT", "--skip-null", *places(tmp_path)]
    overrides = calibrate.grid_overrides(argv)
    assert overrides == [
        "experiment=calibration",
        "seed=range(0,2)",
        "calibration/set=synthetic_xray,synthetic_ct",
        "calibration/severity=preset",
        *places(tmp_path),
    ]
    _, jobs = grid.grid(overrides)
    assert sorted({(j.config.dataset.name, int(j.config.seed)) for j in jobs}) == [
        (d, s) for d in ("synthetic_ct", "synthetic_xray") for s in (0, 1)
    ]
    assert all(float(j.config.dataset.synthetic.severity) > 0 for j in jobs) and len(jobs) == 8
    with pytest.raises(SystemExit) as exit_info:
        calibrate.grid_overrides(["--modalities", "US"])
    assert exit_info.value.code == 2


# --- the report's calibration view on simulated records ----------------------------------------


def write_record(
    folder: Path, dataset: str, severity: float, source: str, target: str, seed: int, **extra
) -> Path:
    """A finished run's record as train writes it, with simulated predictions: the source's
    test patients separated more than the target's where the severity is above 0."""
    network, modality, _ = SETS[dataset]
    name = f"{dataset}/{severity}/{source}/{target}/{seed}"
    rng = np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    parts = []
    for domain, strength in ((source, 2.0), (target, 2.0 - severity)):
        labels = np.tile([0, 1], 12)
        logits = (strength + rng.normal(0, 0.3)) * labels + rng.normal(0, 1, labels.size)
        parts.append(
            pd.DataFrame(
                {
                    "sample_id": [f"{domain}-{i}" for i in range(labels.size)],
                    "patient_id": [f"p-{domain}-{i}" for i in range(labels.size)],
                    "domain": domain,
                    "split": "test",
                    "label": labels,
                    "logit": np.round(logits, 6),
                }
            )
        )
    predictions = pd.concat(parts, ignore_index=True)
    config = {
        "paths": {"data_dir": "/data", "output_dir": "/out"},
        "model": {"name": network},
        "dataset": {
            "name": dataset,
            "modality": modality,
            "domains": {"source": SETS[dataset][2][0], "target": SETS[dataset][2][1]},
            "synthetic": {"severity": severity, "seed": 0},
        },
        "source": source,
        "target": target,
        "shift": {"name": "none", "label": "none"},
        "data": {"source": source, "target": target, "seed": seed},
        "callbacks": {"checkpoint": {"monitor": f"val/{source}/auroc"}},
        "trainer": {"max_epochs": 20},
        "seed": seed,
        **extra,
    }
    run_dir = (
        folder / dataset / f"{source}-{target}" / f"severity{severity}-seed{seed}-{len(extra)}"
    )
    run_dir.mkdir(parents=True)
    predictions.to_csv(run_dir / "predictions.csv", index=False)
    written = pd.read_csv(run_dir / "predictions.csv")
    auroc = {
        d: float(roc_auc_score(rows["label"], rows["logit"]))
        for d, rows in written.groupby("domain")
    }
    metrics = {
        "dataset": dataset,
        "modality": modality,
        "model": network,
        "source": source,
        "target": target,
        "seed": seed,
        "manifest_sha256": f"manifest of {dataset} at {severity}",
        "shift": {"name": "none", "label": "none"},
        "metrics": {
            f"test/{source}/auroc": auroc[source],
            f"test/{target}/auroc": auroc[target],
            "test/delta_auroc": auroc[target] - auroc[source],
        },
        **extra,
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "done").write_text("")
    return run_dir


SEVERITIES = {"synthetic_mri": 0.65, "synthetic_xray": 0.45, "synthetic_ct": 0.25}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    for dataset, (_, _, domains) in SETS.items():
        for severity in (SEVERITIES[dataset], 0.0):
            for source, target in (domains, domains[::-1]):
                for seed in range(3):
                    write_record(folder, dataset, severity, source, target, seed)
    return folder


def old_summary(folder: Path) -> pd.DataFrame:
    """What calibrate.py's summary_table computed from its runs' metrics.json, per modality and
    severity: means over both directions and every seed, the SD, and the checks."""
    rows = []
    for metrics_path in sorted(folder.rglob("metrics.json")):
        m = json.loads(metrics_path.read_text())
        config = yaml.safe_load(metrics_path.with_name("config.yaml").read_text())
        if m.get("debug") or config["trainer"]["max_epochs"] != 20:
            continue
        rows.append(
            {
                "modality": m["modality"],
                "severity": config["dataset"]["synthetic"]["severity"],
                "in": m["metrics"][f"test/{m['source']}/auroc"],
                "cross": m["metrics"][f"test/{m['target']}/auroc"],
                "delta": m["metrics"]["test/delta_auroc"],
            }
        )
    table = []
    for (modality, severity), group in pd.DataFrame(rows).groupby(["modality", "severity"]):
        deltas = group["delta"].tolist()
        row = {
            "modality": modality,
            "severity": severity,
            "runs": len(group),
            "in_domain_auroc": group["in"].mean(),
            "cross_domain_auroc": group["cross"].mean(),
            "delta_auroc_mean": statistics.fmean(deltas),
            "delta_auroc_sd": statistics.stdev(deltas),
        }
        if severity:
            close = abs(row["delta_auroc_mean"] - STUDY[modality]) <= 0.03
            row["check"] = "ok" if close else "off"
        else:
            row["check"] = "ok" if statistics.fmean(abs(d) for d in deltas) < 0.02 else "off"
        table.append(row)
    return pd.DataFrame(table)


def view(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    notes: list[str] = []
    table = calibration_table(group_runs(read_folder(folder)), notes)
    assert table is not None
    return table.raw, notes


def test_the_view_gives_the_table_the_calibration_command_printed(records: Path) -> None:
    raw, notes = view(records)
    # One row per set and severity (both directions and all seeds averaged), in the study's
    # order of modalities, the preset severity first.
    assert list(zip(raw["dataset"], raw["severity"], strict=True)) == [
        (d, s)
        for d in ("synthetic_mri", "synthetic_xray", "synthetic_ct")
        for s in (SEVERITIES[d], 0.0)
    ]
    codes = {"MRI": "MR", "X-ray": "DX", "CT": "CT"}
    got = raw.assign(modality=raw["modality"].map(codes)).set_index(["modality", "severity"])
    expected = old_summary(records).set_index(["modality", "severity"])
    numbers = [
        "runs",
        "in_domain_auroc",
        "cross_domain_auroc",
        "delta_auroc_mean",
        "delta_auroc_sd",
    ]
    pd.testing.assert_frame_equal(
        got.loc[expected.index, numbers], expected[numbers], check_exact=False, atol=1e-6
    )
    assert got.loc[expected.index, "check"].tolist() == expected["check"].tolist()
    assert set(raw["network"]) == {"mrnet2d", "smallcnn", "nodulex"} and (raw["runs"] == 6).all()
    assert raw.loc[raw["severity"] > 0, "study_delta"].tolist() == [-0.097, -0.067, -0.026]
    assert all(d.count("→") == 2 for d in raw["by_direction"])
    order = [n for n in notes if "order of mean ΔAUC" in n]
    means = raw[raw["severity"] > 0]["delta_auroc_mean"].tolist()
    holds = means[0] < means[1] < means[2]
    assert order == [
        "Calibration: the study's order of mean ΔAUC (MRI < X-ray < CT) "
        + ("holds." if holds else "does not hold.")
    ]


def test_runs_of_other_settings_are_rows_of_their_own_and_debug_runs_none(
    records: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "runs"
    for run_dir in records.rglob("done"):
        target = folder / run_dir.parent.relative_to(records)
        target.mkdir(parents=True)
        for path in run_dir.parent.iterdir():
            (target / path.name).write_bytes(path.read_bytes())
    # Two epochs instead of 20: another setting, never averaged with the calibration's runs.
    for source, target in (("ge", "siemens"), ("siemens", "ge")):
        write_record(folder, "synthetic_mri", 0.65, source, target, 0, trainer={"max_epochs": 2})
    # A debug run (debug=fast_dev_run): in no row at all.
    write_record(folder, "synthetic_ct", 0.0, "ge", "siemens", 7, debug="fast_dev_run")
    raw, notes = view(folder)
    mri = raw[(raw["dataset"] == "synthetic_mri") & (raw["severity"] > 0)]
    assert sorted(mri["runs"]) == [2, 6]
    assert any(
        "synthetic_mri at its severity has 2 rows" in n and "trainer.max_epochs" in n for n in notes
    )
    assert raw[raw["dataset"] == "synthetic_ct"]["runs"].tolist() == [6, 6]
    report = build(
        read_folder(folder),
        tmp_path / "report",
        "runs",
        Options(n_boot=50, figures=False, characterise=False),
        root=folder,
        echo=lambda _: None,
    )
    assert report.counts["debug"] == 1 and report.counts["used"] == 38
    [left_out] = [n for n in report.notes if n.startswith("Left out (debug)")]
    assert "debug=fast_dev_run" in left_out and "not a result" in left_out
    written = pd.read_csv(tmp_path / "report" / "tables" / "calibration.csv")
    assert len(written) == len(raw) == 7
    assert (
        "Calibration: synthetic ΔAUC per modality"
        in (tmp_path / "report" / "tables" / "calibration.md").read_text()
    )


def test_a_report_without_synthetic_runs_has_no_calibration_table() -> None:
    runs = read_folder(REPO / "tests" / "report" / "fixtures" / "report_runs")
    assert calibration_table(group_runs(runs), []) is None


def test_synthetic_runs_without_the_null_check_are_not_a_calibration(tmp_path: Path) -> None:
    """A smoke grid on the synthetic sets (preset severity only, a few patients) shows no
    calibration table: it would grade a grid that was not made to calibrate anything."""
    for seed in (0, 1):
        write_record(tmp_path, "synthetic_mri", 0.65, "ge", "siemens", seed)
        write_record(tmp_path, "synthetic_mri", 0.65, "siemens", "ge", seed)
    assert calibration_table(group_runs(read_folder(tmp_path)), []) is None
    write_record(tmp_path, "synthetic_mri", 0.0, "ge", "siemens", 0)
    assert calibration_table(group_runs(read_folder(tmp_path)), []) is not None


# --- the sweeper trains it ----------------------------------------------------------------------


@pytest.mark.slow
def test_the_sweeper_trains_the_calibration_grid_and_the_report_shows_it(tmp_path: Path) -> None:
    """A tiny calibration (one set, one seed, 1 epoch) through the sweeper, resumable, and its
    report with the calibration table."""
    tiny = [
        "calibration/set=synthetic_mri",
        "seed=0",
        "model=smallcnn",
        "dataset.synthetic.patients_per_vendor=12",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        *places(tmp_path),
    ]
    command = [sys.executable, "-m", "shiftlab.calibrate", *tiny]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, jobs = grid.grid(["experiment=calibration", *tiny])
    assert len(jobs) == 4 and {job.state for job in jobs} == {"done"}
    assert "Calibration: synthetic ΔAUC per modality vs the study" in done.stdout
    table = pd.read_csv(tmp_path / "out" / "reports" / "calibration" / "tables" / "calibration.csv")
    assert table["severity"].tolist() == [0.65, 0.0] and (table["runs"] == 2).all()
    with contextlib.redirect_stdout(io.StringIO()):  # a relaunch starts nothing
        assert grid.dry_run(["experiment=calibration", *tiny]) == []
