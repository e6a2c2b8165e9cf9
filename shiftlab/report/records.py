"""Run records as the report reads them: found, checked, and grouped by settings.

The report reads only what a run leaves behind (``config.yaml``, ``metrics.json``,
``predictions.csv``, ``done``); it never retrains and never asks W&B. A run directory is one of:

- **used**: ``done`` is there and its record reads back and agrees with itself;
- **unusable**: ``done`` is there but a file is missing, unreadable or inconsistent (the reason
  is reported);
- **duplicate**: a second record of a seed its group already has (the first by path is used);
- **debug**: a run of a ``debug=`` preset (conf/debug/), a check of the code path on a few
  batches, whatever its state: its config says ``debug: <preset>``;
- **incomplete**, **running**, **missing**: as ``python -m shiftlab.grid status`` says.

Only used runs enter a table; every other one is counted and listed in ``runs.csv``.

Runs are averaged only within a *group*: the same settings apart from the seed, the same manifest
content (``manifest_sha256``) and the same code version (``code_version`` in metrics.json, where
a record states one). A group key is a hash of those. Two groups of one scenario (for example
runs with 2 and 60 epochs, or before and after a re-ingest) are reported as separate rows and the
report says in which settings they differ.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from shiftlab.auroc import auroc
from shiftlab.deployment_metrics import record_metrics
from shiftlab.errors import ShiftlabError
from shiftlab.identity import (
    DISPLAY_ONLY,
    NOT_SETTINGS,
    stable_targets,
    without_shipped_evaluation,
    without_unnamed,
)
from shiftlab.report.stats import DomainTest, SeedTests

RUN_MARKERS = ("done", "metrics.json", "attempts.json", "config.yaml")
# Where the run's seed appears in its resolved config (the data module receives it too, and a
# mitigation that draws, conf/mitigation/augment.yaml, with the data module's copy of it).
SEED_KEYS = ("seed", "data.seed", "mitigation.seed", "data.mitigation.seed")
PREDICTION_COLUMNS = ("patient_id", "domain", "label")
# Records agree with their predictions exactly now; 1e-6 still accepts records written before
# the float64 AUROC (torchmetrics accumulated in float32, ~1e-7 off) but not another definition.
AGREEMENT = 1e-6
UNRECORDED = "unrecorded"
NO_MITIGATION = "none"  # conf/mitigation/none.yaml: the study's training, and every older run
SKIPPED_DIRS = ("checkpoints", "csv", "wandb")


@dataclass
class Run:
    """One run directory and what the report could make of it."""

    run_dir: Path
    state: str  # done | running | incomplete | missing (shiftlab.runs.states.run_state)
    problem: str | None = None  # why a done run cannot be used
    duplicate_of: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # flat, seed left out, paths masked
    tests: SeedTests | None = None
    group: str | None = None

    @property
    def debug(self) -> str | None:
        """The debug preset that made the run (conf/debug/), else None."""
        preset = self.metrics.get("debug") or self.config.get("debug")
        return str(preset) if preset else None

    @property
    def status(self) -> str:
        if self.debug is not None:
            return "debug"
        if self.state != "done":
            return self.state
        if self.problem is not None:
            return "unusable"
        return "duplicate" if self.duplicate_of is not None else "used"

    @property
    def reason(self) -> str:
        if self.debug is not None:
            return f"a debug run (debug={self.debug}): a check of the code path, not a result"
        if self.problem is not None:
            return self.problem
        if self.duplicate_of is not None:
            return f"same group and seed as {self.duplicate_of}"
        return {
            "incomplete": "no done marker: the run started and stopped before its record",
            "running": "a live process holds its lock",
            "missing": "never started",
        }.get(self.state, "")

    @property
    def seed(self) -> int | None:
        try:
            return int(self.metrics.get("seed", self.config.get("seed")))
        except (TypeError, ValueError):
            return None

    def describe(self) -> dict[str, Any]:
        """Dataset, direction, ablation and seed, from metrics.json or else config.yaml."""
        dataset = self.metrics.get("dataset") or (self.config.get("dataset") or {}).get("name")
        return {
            "dataset": dataset or "",
            "source": self.metrics.get("source", self.config.get("source", "")),
            "target": self.metrics.get("target", self.config.get("target", "")),
            "shift": self.shift.get("label", "") if (self.metrics or self.config) else "",
            "mitigation": self.mitigation["label"] if (self.metrics or self.config) else "",
            "seed": self.seed,
        }

    @property
    def shift(self) -> dict[str, Any]:
        shift = self.metrics.get("shift") or self.config.get("shift") or {"name": "none"}
        return dict(shift)

    @property
    def mitigation(self) -> dict[str, Any]:
        """The mitigation the run trained or was tested with (conf/mitigation/): name, label and
        whether it read the target's test images (transductive). A record from before
        mitigations, or without one, is ``none``."""
        found = self.metrics.get("mitigation") or self.config.get("mitigation") or {}
        name = str(found.get("name", NO_MITIGATION))
        return {
            "name": name,
            "label": str(found.get("label") or name),
            "transductive": bool(found.get("transductive", False)),
        }

    @property
    def code_version(self) -> str:
        return str(self.metrics.get("code_version") or UNRECORDED)


def find_run_dirs(folder: str | os.PathLike[str]) -> list[Path]:
    """Every run directory below ``folder`` (or ``folder`` itself), sorted by path.

    A run directory holds at least one of ``done``, ``metrics.json``, ``attempts.json`` or
    ``config.yaml``; Hydra's ``.hydra`` folders and a run's own subfolders are not runs.
    """
    root = Path(folder)
    found = []
    for current, dirs, files in os.walk(root):
        if any(marker in files for marker in RUN_MARKERS) and Path(current).name != ".hydra":
            found.append(Path(current))
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
    return sorted(found)


def _mask_paths(value: Any, paths: Mapping[str, str]) -> Any:
    """Machine-specific locations (``paths.*``) replaced by ``<name>`` where a string starts
    with one, so the same settings on another machine or disk compare equal."""
    if isinstance(value, dict):
        return {k: _mask_paths(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_paths(v, paths) for v in value]
    if isinstance(value, str):
        for name, path in paths.items():
            if value == path or value.startswith(f"{path}/"):
                return f"<{name}>{value[len(path) :]}"
    return value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


def comparable_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's settings as they bear on its result, without its seed: the resolved config less
    what ``shiftlab.identity`` leaves out of a run's identity, with paths masked, flattened. Each
    ``_target_`` reads as the hash reads it (by stable name; an ablation's not at all), so a run
    from before a class moved, or before the ablations were classes, is in its group."""
    paths = {str(k): str(v) for k, v in (config.get("paths") or {}).items()}
    paths = dict(sorted(paths.items(), key=lambda item: -len(item[1])))  # longest first
    kept = {k: v for k, v in config.items() if k not in NOT_SETTINGS}
    kept = without_shipped_evaluation(without_unnamed(stable_targets(kept)))
    flat = flatten(_mask_paths(kept, paths))
    for key in (*SEED_KEYS, *(f"trainer.{k}" for k in DISPLAY_ONLY)):
        flat.pop(key, None)
    # mitigation=none is the training every run had before mitigations, and leaves the settings
    # hash as it was: its runs group with the older runs of the same settings.
    if (config.get("mitigation") or {}).get("name", NO_MITIGATION) == NO_MITIGATION:
        flat = without_mitigation(flat)
    return flat


def without_mitigation(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Flat settings without the mitigation's, wherever a node named ``mitigation`` sits: what
    a method's runs share with the runs of ``none`` they are compared with."""
    return {k: v for k, v in settings.items() if "mitigation" not in k.split(".")}


def group_key(run: Run) -> str:
    text = json.dumps(
        {
            "settings": run.settings,
            "manifest_sha256": run.metrics.get("manifest_sha256"),
            "code_version": run.code_version,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Unusable(Exception):
    pass


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise _Unusable(f"{path.name} is missing")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise _Unusable(f"{path.name} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise _Unusable(f"{path.name} holds no JSON object")
    return data


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise _Unusable("config.yaml is missing")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise _Unusable(f"config.yaml is not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise _Unusable("config.yaml holds no mapping")
    return data


def _check_metrics(metrics: dict[str, Any]) -> None:
    missing = [k for k in ("metrics", "dataset", "source", "target", "seed") if k not in metrics]
    if missing:
        raise _Unusable(f"metrics.json lacks {', '.join(missing)}")
    for domain in (metrics["source"], metrics["target"]):
        if f"test/{domain}/auroc" not in metrics["metrics"]:
            raise _Unusable(f"metrics.json lacks test/{domain}/auroc")


def _domain_test(predictions: pd.DataFrame, domain: str, score: str) -> DomainTest:
    rows = predictions[predictions["domain"] == domain]
    if rows.empty:
        raise _Unusable(f"predictions.csv has no test rows of domain {domain!r}")
    labels = rows["label"].to_numpy()
    if set(np.unique(labels)) != {0, 1}:
        raise _Unusable(f"predictions.csv: domain {domain!r} lacks a class (labels {set(labels)})")
    return DomainTest(
        scores=rows[score].to_numpy(dtype=np.float64),
        labels=labels.astype(np.int64),
        patients=rows["patient_id"].to_numpy(dtype=str),
        probabilities=(
            rows["probability"].to_numpy(dtype=np.float64) if "probability" in rows else None
        ),
    )


def _read_predictions(path: Path, metrics: dict[str, Any]) -> SeedTests:
    if not path.is_file():
        raise _Unusable("predictions.csv is missing")
    try:
        predictions = pd.read_csv(
            path, dtype={"patient_id": str, "domain": str, "sample_id": str, "split": str}
        )
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise _Unusable(f"predictions.csv is unreadable ({error})") from None
    # The logit ranks the samples as the network does; the stored probability is its float32
    # sigmoid, which can tie distinct logits.
    score = "logit" if "logit" in predictions else "probability"
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions]
    if score not in predictions:
        missing.append("logit (or probability)")
    if missing:
        raise _Unusable(f"predictions.csv lacks column(s) {', '.join(missing)}")
    every_row = predictions
    if "split" in predictions:  # the test set (a record may add source validation rows)
        predictions = predictions[predictions["split"] == "test"]
    if predictions[score].isna().any() or predictions["label"].isna().any():
        raise _Unusable("predictions.csv has empty scores or labels")
    tests = SeedTests(
        seed=int(metrics["seed"]),
        source=_domain_test(predictions, metrics["source"], score),
        target=_domain_test(predictions, metrics["target"], score),
    )
    _check_agreement(predictions, metrics, score)
    if "threshold" not in metrics:  # a record from before the metrics beyond AUROC
        return tests
    threshold, bins = _check_deployment(every_row, metrics)
    return replace(tests, threshold=threshold, ece_bins=bins)


def _check_deployment(predictions: pd.DataFrame, metrics: dict[str, Any]) -> tuple[float, int]:
    """The threshold and ECE bins of a record with the metrics beyond AUROC, once its predictions
    give its numbers: the threshold chosen again on the source validation rows, and every test
    domain's sensitivity, specificity, ECE and Brier score recomputed
    (``shiftlab.deployment_metrics``). The threshold returned is the recomputed one, so that it
    meets the test logits as this reading of the file gives them."""
    chosen = metrics["threshold"]
    try:
        rule, recorded, bins = str(chosen["rule"]), float(chosen["value"]), int(metrics["ece_bins"])
        target = chosen.get("target_sensitivity")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _Unusable("metrics.json's threshold or ece_bins is incomplete") from None
    missing = [c for c in ("split", "logit", "probability") if c not in predictions]
    if missing:
        raise _Unusable(f"predictions.csv lacks column(s) {', '.join(missing)}")
    source = metrics["source"]
    val = predictions[(predictions["split"] == "val") & (predictions["domain"] == source)]
    if set(val["label"]) != {0, 1}:
        raise _Unusable(
            f"predictions.csv lacks source validation rows of both classes (split val, domain "
            f"{source}), on which metrics.json's threshold was chosen"
        )
    try:
        threshold, recomputed = record_metrics(predictions, source, rule, target, bins)
    except ValueError as error:
        raise _Unusable(f"metrics.json's threshold: {error}") from None
    checks = {"threshold": (threshold.value, recorded)}
    checks |= {key: (value, metrics["metrics"].get(key)) for key, value in recomputed.items()}
    for name, (value, stated) in checks.items():
        if stated is None or not abs(value - float(stated)) <= AGREEMENT:
            raise _Unusable(f"predictions.csv gives {name} {value:.4f}, metrics.json says {stated}")
    return threshold.value, bins


def _check_agreement(predictions: pd.DataFrame, metrics: dict[str, Any], score: str) -> None:
    """The record's AUROCs must be those of its predictions, by the one definition of
    ``shiftlab.auroc`` (the rank statistic of the logits)."""
    for domain in (metrics["source"], metrics["target"]):
        rows = predictions[predictions["domain"] == domain]
        recorded = float(metrics["metrics"][f"test/{domain}/auroc"])
        recomputed = auroc(rows[score].to_numpy(dtype=np.float64), rows["label"])
        if not abs(recomputed - recorded) <= AGREEMENT:
            raise _Unusable(
                f"predictions.csv gives AUROC {recomputed:.4f} on {domain}, "
                f"metrics.json says {recorded:.4f}"
            )


def load_run(run_dir: str | os.PathLike[str], state: str | None = None) -> Run:
    """Read one run directory; never raises for a broken record (its problem is recorded)."""
    run_dir = Path(run_dir)
    if state is None:
        from shiftlab.runs.states import run_state  # the grid's own rules: lock, done, config.yaml

        state = run_state(run_dir)
    run = Run(run_dir=run_dir, state=state)
    if state != "done":
        with contextlib.suppress(_Unusable):  # what the run was, where its config says so
            run.config = _read_config(run_dir / "config.yaml")
        return run
    try:
        run.metrics = _read_json(run_dir / "metrics.json")
        _check_metrics(run.metrics)
        run.config = _read_config(run_dir / "config.yaml")
        run.tests = _read_predictions(run_dir / "predictions.csv", run.metrics)
    except _Unusable as problem:
        run.problem = str(problem)
        return run
    run.settings = comparable_settings(run.config)
    run.group = group_key(run)
    return run


def read_folder(folder: str | os.PathLike[str]) -> list[Run]:
    """Every run below ``folder``, read (a broken record is a run with a problem, not an error)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ShiftlabError(f"{folder} is not a folder of run records (it does not exist).")
    run_dirs = find_run_dirs(folder)
    if not run_dirs:
        raise ShiftlabError(
            f"no run directory below {folder} (none holds done, metrics.json, attempts.json or "
            "config.yaml). Point at the runs folder of a grid, e.g. outputs/runs."
        )
    return [load_run(run_dir) for run_dir in run_dirs]


@dataclass
class Group:
    """Runs of identical settings but their seeds: the unit every statistic is computed over."""

    key: str
    runs: list[Run]

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def dataset(self) -> str:
        return str(self.first.metrics["dataset"])

    @property
    def modality(self) -> str:
        return str(self.first.metrics.get("modality", ""))

    @property
    def model(self) -> str:
        return str(self.first.metrics.get("model", ""))

    @property
    def source(self) -> str:
        return str(self.first.metrics["source"])

    @property
    def target(self) -> str:
        return str(self.first.metrics["target"])

    @property
    def shift(self) -> dict[str, Any]:
        return self.first.shift

    @property
    def mitigation(self) -> dict[str, Any]:
        return self.first.mitigation

    @property
    def scenario(self) -> tuple[str, str, str, str, str]:
        """What a reader takes for "the same row": dataset, direction, ablation and mitigation.
        Groups of one scenario (another network, epochs, manifest …) are shown apart, never
        averaged."""
        label = str(self.shift.get("label", self.shift.get("name", "none")))
        method = self.mitigation
        mitigation = NO_MITIGATION if method["name"] == NO_MITIGATION else method["label"]
        return (self.dataset, self.source, self.target, label, mitigation)

    @property
    def seeds(self) -> list[int]:
        return [int(run.seed) for run in self.runs if run.seed is not None]


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Used runs by group key (seeds ascending); marks a repeated seed of a group a duplicate."""
    by_key: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: str(r.run_dir)):
        if run.status != "used" or run.group is None:
            continue
        members = by_key.setdefault(run.group, [])
        twin = next((m for m in members if m.seed == run.seed), None)
        if twin is not None:
            run.duplicate_of = twin.run_dir
            continue
        members.append(run)
    groups = [
        Group(key, sorted(members, key=lambda r: r.seed or 0)) for key, members in by_key.items()
    ]
    return sorted(groups, key=lambda g: (g.scenario, g.key))


SHOWN_VALUE = 32  # longer setting values are counted, not quoted, in a note


def differing_settings(groups: Sequence[Group], limit: int = 6) -> str:
    """In words, the settings in which groups of one scenario differ (at most ``limit``): the
    manifest and code version first, then settings with short values (quoted), then the rest."""
    flats = [
        {
            "manifest_sha256": str(g.first.metrics.get("manifest_sha256"))[:12],
            "code_version": g.first.code_version,
            **g.first.settings,
        }
        for g in groups
    ]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    values = {k: list(dict.fromkeys(str(f.get(k, "<absent>")) for f in flats)) for k in keys}
    differing = [k for k in keys if len(values[k]) > 1]
    short = [
        k for k in differing if all(len(v) <= SHOWN_VALUE and "\n" not in v for v in values[k])
    ]
    ordered = [k for k in differing if k in ("manifest_sha256", "code_version")]
    ordered += [k for k in short if k not in ordered] + [k for k in differing if k not in short]
    parts = [
        f"{k} ({' vs '.join(values[k])})" if k in short else f"{k} ({len(values[k])} values)"
        for k in ordered[:limit]
    ]
    more = len(ordered) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")
