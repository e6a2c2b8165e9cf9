"""Reading run records: broken and partial runs are reported, never crashed on; runs of other
settings, manifests or code are never averaged together silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from shiftlab.report import Options, build, read_folder
from shiftlab.report.__main__ import main
from shiftlab.report.records import comparable_settings, find_run_dirs, load_run

RUNS = Path(__file__).parent / "fixtures" / "report_runs"
FAST = Options(n_boot=50, figures=False, characterise=False)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A private copy of the committed run records, free to damage."""
    return Path(shutil.copytree(RUNS, tmp_path / "runs"))


def _run(runs: Path, scenario: str, seed: int) -> Path:
    [found] = [
        d
        for d in sorted((runs / scenario).glob(f"smallcnn-seed{seed}-*"))
        if json.loads((d / "metrics.json").read_text())["shift"]["name"] == "none"
    ]
    return found


def _report(runs: Path, tmp_path: Path, options: Options = FAST):
    return build(
        read_folder(runs), tmp_path / "report", "runs", options, root=runs, echo=lambda _: None
    )


def _status(report, run_dir: Path, runs: Path) -> tuple[str, str]:
    row = report.runs.set_index("run_dir").loc[str(run_dir.relative_to(runs))]
    return row["status"], row["reason"]


def test_finds_run_directories_but_not_hydras_own(runs: Path) -> None:
    run_dir = _run(runs, "toy_mri/ge-siemens", 0)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    found = find_run_dirs(runs)
    assert run_dir in found and not any(".hydra" in str(d) for d in found)
    assert len(found) == 29


def test_partial_and_broken_runs_are_reported_not_crashed_on(runs: Path, tmp_path: Path) -> None:
    no_done = _run(runs, "toy_mri/ge-siemens", 0)
    (no_done / "done").unlink()
    no_predictions = _run(runs, "toy_mri/ge-siemens", 1)
    (no_predictions / "predictions.csv").unlink()
    garbage = _run(runs, "toy_mri/siemens-ge", 0)
    (garbage / "metrics.json").write_text("{not json")
    wrong_columns = _run(runs, "toy_mri/siemens-ge", 1)
    (wrong_columns / "predictions.csv").write_text("a,b\n1,2\n")
    disagreeing = _run(runs, "toy_ct/ge-siemens", 0)
    table = pd.read_csv(disagreeing / "predictions.csv")
    table["label"] = 1 - table["label"]
    table.to_csv(disagreeing / "predictions.csv", index=False)
    no_config = _run(runs, "toy_ct/ge-siemens", 1)
    (no_config / "config.yaml").unlink()

    report = _report(runs, tmp_path)

    assert _status(report, no_done, runs) == (
        "incomplete",
        "no done marker: the run started and stopped before its record",
    )
    assert _status(report, no_predictions, runs) == ("unusable", "predictions.csv is missing")
    assert _status(report, garbage, runs)[1].startswith("metrics.json is not valid JSON")
    assert _status(report, wrong_columns, runs) == (
        "unusable",
        "predictions.csv lacks column(s) patient_id, domain, label, logit (or probability)",
    )
    assert "metrics.json says" in _status(report, disagreeing, runs)[1]
    assert _status(report, no_config, runs) == ("unusable", "config.yaml is missing")
    assert report.counts["used"] == 26 - 6
    scenarios = report.tables["scenarios"].raw.set_index(["dataset", "source", "target"])
    assert scenarios.loc[("toy_mri", "ge", "siemens"), "seeds"] == 1
    assert scenarios.loc[("toy_ct", "ge", "siemens"), "seeds"] == 1
    assert "Left out (unusable)" in (tmp_path / "report" / "report.md").read_text()


def test_a_run_copied_twice_counts_once(runs: Path, tmp_path: Path) -> None:
    original = _run(runs, "toy_mri/ge-siemens", 2)
    shutil.copytree(original, runs / "elsewhere" / original.name)
    report = _report(runs, tmp_path)
    assert report.counts["duplicate"] == 1
    scenarios = report.tables["scenarios"].raw.set_index(["dataset", "source", "target"])
    assert scenarios.loc[("toy_mri", "ge", "siemens"), "seeds"] == 3


def _copy_scenario(runs: Path, scenario: str, to: str, change) -> None:
    for seed in range(3):
        source = _run(runs, scenario, seed)
        copy = Path(shutil.copytree(source, runs / to / f"{source.name}-copy"))
        change(copy)


def _other_manifest(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["manifest_sha256"] = "0" * 64
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def _more_epochs(run_dir: Path) -> None:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["trainer"]["max_epochs"] = 60
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


def test_runs_of_another_manifest_are_kept_apart_and_said_so(runs: Path, tmp_path: Path) -> None:
    _copy_scenario(runs, "toy_mri/siemens-ge", "reingested", _other_manifest)
    report = _report(runs, tmp_path)
    raw = report.tables["scenarios"].raw
    rows = raw[(raw["dataset"] == "toy_mri") & (raw["source"] == "siemens")]
    assert len(rows) == 2 and rows["conflict"].all() and (rows["seeds"] == 3).all()
    [note] = [n for n in report.notes if "settings groups" in n]
    assert "toy_mri siemens → ge" in note and "manifest_sha256 (" in note and "000000000000" in note
    markdown = report.tables["scenarios"].markdown()
    assert "toy_mri †" in markdown and "settings group" in markdown
    # Neither group enters the per-modality mean: MRI keeps only ge -> siemens.
    modality = report.tables["modality"].raw.set_index("modality")
    assert modality.loc["MRI", "scenarios"] == 1


def test_runs_of_other_settings_are_kept_apart_and_strict_refuses(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _copy_scenario(runs, "toy_ct/ge-siemens", "longer", _more_epochs)
    report = _report(runs, tmp_path)
    [note] = [n for n in report.notes if "settings groups" in n]
    assert "trainer.max_epochs (2 vs 60)" in note or "trainer.max_epochs (60 vs 2)" in note
    with pytest.raises(SystemExit) as stopped:
        main(
            [
                str(runs),
                "--out",
                str(tmp_path / "strict"),
                "--strict",
                "--n-boot",
                "20",
                "--no-figures",
                "--no-characterisation",
            ]
        )
    assert stopped.value.code == 2
    assert "differ in settings, manifest or code version" in capsys.readouterr().err
    assert not (tmp_path / "strict").exists()


def test_code_versions_are_never_averaged(runs: Path) -> None:
    run = load_run(_run(runs, "toy_mri/ge-siemens", 0))
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    metrics["code_version"] = "v2"
    (run.run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert load_run(run.run_dir).group != run.group


def test_the_seed_and_the_machine_do_not_split_a_group(runs: Path) -> None:
    config = yaml.safe_load((_run(runs, "toy_mri/ge-siemens", 0) / "config.yaml").read_text())
    other = yaml.safe_load(yaml.safe_dump(config))
    other["seed"] = other["data"]["seed"] = 7
    other["paths"]["data_dir"] = "/elsewhere"
    other["dataset"]["root"] = "/elsewhere/toy_mri"
    for key in ("manifest_dir", "dicom_root"):
        other["data"][key] = other["data"][key].replace("/data", "/elsewhere", 1)
    assert comparable_settings(other) == comparable_settings(config)
    other["split_seed"] = 1
    assert comparable_settings(other) != comparable_settings(config)


def test_command_line_errors_are_sentences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        ([str(tmp_path / "nowhere")], "does not exist"),
        ([str(tmp_path)], "no run directory below"),
        ([str(RUNS), "experiment=paper_grid"], "not both"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        assert message in capsys.readouterr().err


def test_a_grid_with_no_finished_run_counts_its_missing_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["experiment=smoke_paper_grid", f"paths.output_dir={tmp_path}"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "no usable run record" in err and "12 missing" in err


def _other_network(run_dir: Path) -> None:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["model"] = {"name": "densenet121", "net": {"_target_": "shiftlab.models.densenet.X"}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["model"] = "densenet121"
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_another_network_on_one_scenario_is_a_row_of_its_own(runs: Path, tmp_path: Path) -> None:
    _copy_scenario(runs, "toy_xray/ge-philips", "densenet", _other_network)
    report = _report(runs, tmp_path)
    raw = report.tables["scenarios"].raw
    rows = raw[raw["dataset"] == "toy_xray"]
    assert sorted(rows["model"]) == ["densenet121", "smallcnn"] and rows["conflict"].all()
    [note] = [n for n in report.notes if "settings groups" in n]
    assert "model.name (smallcnn vs densenet121)" in note or "(densenet121 vs smallcnn)" in note
    # Neither group enters the per-modality mean (toy_xray was X-ray's only scenario).
    assert "X-ray" not in set(report.tables["modality"].raw["modality"])


def test_a_new_report_replaces_the_old_one(runs: Path, tmp_path: Path) -> None:
    options = Options(n_boot=20, characterise=False)
    _report(runs, tmp_path, options)
    stale = tmp_path / "report" / "figures" / "intensity_gone.png"
    stale.write_bytes(b"old")
    _report(runs, tmp_path, options)
    assert not stale.exists() and (tmp_path / "report" / "figures" / "delta_auc.png").is_file()


def test_a_record_is_checked_against_the_logits_only(runs: Path) -> None:
    """One AUROC definition: a metrics.json value that only the float32 probabilities reproduce
    (saturated logits tie there) is a disagreement, not an accepted alternative."""
    run_dir = _run(runs, "toy_mri/ge-siemens", 0)
    table = pd.read_csv(run_dir / "predictions.csv")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    source = metrics["source"]
    rows = table["domain"] == source
    # Distinct logits far above 17: their float32 sigmoids are all exactly 1.0.
    table.loc[rows, "logit"] = 20.0 + 0.5 * table.loc[rows, "label"] + 0.01 * table.index[rows]
    table.loc[rows, "probability"] = 1.0
    table.to_csv(run_dir / "predictions.csv", index=False)
    metrics["metrics"][f"test/{source}/auroc"] = 0.5  # what the tied probabilities give
    (run_dir / "metrics.json").write_text(json.dumps(metrics))

    run = load_run(run_dir)

    assert run.status == "unusable"
    assert "metrics.json says 0.5000" in run.problem
