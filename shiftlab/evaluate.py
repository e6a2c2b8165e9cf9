"""External validation: a trained run's selected checkpoint tested on every domain of another
dataset or site, preprocessed as that dataset's config says.

    python -m shiftlab.evaluate run=<run dir> dataset=<preset or custom>            # its test split
    python -m shiftlab.evaluate run=<run dir> dataset=<preset or custom> split=all  # every split

The other dataset is made ready as for a run (generated, or its twin, on first use; a real one
must be ingested) and read through the same preprocessing cache. Every vendor of its manifest
whose evaluated samples hold both classes is a domain. The record goes beside the run, in
``<run dir>/evaluations/<dataset>-<split>-<hash>/``: ``config.yaml``, ``metrics.json``
(``test/<domain>/auroc``, as in a run record), ``predictions.csv`` (a run's columns) and, last,
``done``; each file written atomically. The hash names the run (its settings hash and checkpoint)
and the evaluation's settings, so the same run and dataset always land in the same folder, with
the same bytes, and a finished evaluation is not repeated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from shiftlab.auroc import auroc
from shiftlab.config import CONF_DIR, register_resolvers
from shiftlab.data import cache
from shiftlab.data.loading import cached_dataset, collate_for, loader_options
from shiftlab.data.prepare import ensure_manifest
from shiftlab.errors import ShiftlabError, exit_on_user_error, instantiate
from shiftlab.files import remove_temporaries, write_text_atomic
from shiftlab.identity import settings
from shiftlab.manifest import SPLITS, load_manifest
from shiftlab.models.classifier import ShiftClassifier
from shiftlab.runs.provenance import provenance
from shiftlab.runs.record import DONE, RunRecord, check_writable

EVALUATIONS = "evaluations"
SPLIT_CHOICES = {"test": ("test",), "all": SPLITS}
# Projection radiographs whether read from a plate (CR) or a detector (DX): one kind of input.
MODALITY_KIND = {"CR": "DX"}
# Not part of an evaluation's identity: the network is the run's, and ``run`` is where it lies.
NOT_EVALUATION_SETTINGS = ("run", "model")


@dataclass(frozen=True)
class TrainedRun:
    """A finished run: its resolved config, its record and its selected checkpoint."""

    dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    checkpoint: Path


def _checkpoint(run_dir: Path, epoch: int) -> Path:
    """The checkpoint the run tested (source-validation best, ``metrics.json``'s epoch)."""
    folder = run_dir / "checkpoints"
    candidates = sorted(p for p in folder.glob("*.ckpt") if p.name != "last.ckpt")
    for path in candidates:
        if int(torch.load(path, map_location="cpu", weights_only=False)["epoch"]) == epoch:
            return path
    found = ", ".join(p.name for p in candidates) or "none"
    raise ShiftlabError(
        f"the checkpoint the run selected (epoch {epoch}) is not in {folder} (found: {found}). "
        "Train the run again (delete its directory, same command) to recreate it."
    )


def load_trained_run(run_dir: str | Path) -> TrainedRun:
    """Read a finished run directory; a ShiftlabError says what is missing."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file() or not (run_dir / "config.yaml").is_file():
        raise ShiftlabError(
            f"run={run_dir} is not a run directory (no metrics.json and config.yaml in it). Give "
            "the folder of a trained run, e.g. run=outputs/runs/<dataset>/<source>-<target>/"
            "<model>-seed<seed>-<hash>."
        )
    if not (run_dir / DONE).is_file():
        raise ShiftlabError(
            f"run={run_dir} has not finished (no done marker): finish it first by running its "
            "python -m shiftlab.train command again (it resumes)."
        )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=False)
    checkpoint = _checkpoint(run_dir, int(metrics["checkpoint"]["epoch"]))
    return TrainedRun(run_dir, config, metrics, checkpoint)


def check_mitigation(run: TrainedRun) -> None:
    """Refuse a run whose mitigation acts at test time (``shiftlab.data.mitigation``): a
    histogram standardisation learnt on its source, or AdaBN's statistics re-estimated per test
    domain. Tested without it, the network would give numbers that the run's method never
    gives."""
    mitigation = run.metrics.get("mitigation") or {}
    name = mitigation.get("name")
    if name == "adabn" or (name == "histogram" and mitigation.get("standardised")):
        raise ShiftlabError(
            f"run {run.dir.name} was trained with mitigation={name}, which changes the test "
            "itself (histogram: every image mapped to the landmarks learnt on the run's source; "
            "adabn: BatchNorm statistics re-estimated on each test domain). External validation "
            "tests the network as it is, so it does not evaluate such a run: evaluate a run of "
            "mitigation none, augment or mixstyle, whose networks are tested as they are."
        )


def sample_shape(preprocess: Mapping) -> tuple[int, ...]:
    """The shape of one preprocessed sample: the network's input, less the batch."""
    return tuple(cache.build_preprocessor(preprocess).shape)


def _kind(modality: str) -> str:
    return MODALITY_KIND.get(modality, modality)


def check_fits(run: TrainedRun, dataset: DictConfig) -> tuple[int, ...]:
    """The sample shape of ``dataset``, when the run's network can take its samples: the same
    modality and the same preprocessed shape as the run trained on. Else a ShiftlabError that
    says what was expected, what was found, and what to do."""
    trained = run.config["dataset"]
    expected_modality = str(trained.get("modality") or run.metrics.get("modality"))
    expected_shape = sample_shape(trained["preprocess"])
    preprocess = OmegaConf.to_container(dataset.preprocess, resolve=True)
    modality, shape = str(dataset.get("modality")), sample_shape(preprocess)
    if (_kind(modality), shape) == (_kind(expected_modality), expected_shape):
        return shape
    expected = f"{expected_modality} samples of shape {expected_shape}"
    found = f"{modality} samples of shape {shape}"
    advice = (
        f"Evaluate on a dataset of modality {expected_modality} (a preset, or dataset=custom "
        f"with dataset.modality={expected_modality})"
    )
    if _kind(modality) == _kind(expected_modality):
        differing = [
            f"dataset.preprocess.{key}={_override_value(value)}"
            for key, value in trained["preprocess"].items()
            if key != "_target_" and preprocess.get(key) != value
        ]
        same_kind = preprocess.get("_target_") == trained["preprocess"].get("_target_")
        advice = (
            f"Preprocess it as the run did: add {' '.join(differing)}"
            if same_kind and differing
            else f"Preprocess it to shape {expected_shape} as the run did (the run's "
            f"dataset.preprocess: {trained['preprocess']})"
        )
    raise ShiftlabError(
        f"the network of run {run.dir.name} ({run.metrics.get('model')}, trained on "
        f"{run.metrics.get('dataset')}) takes {expected}; dataset {dataset.name} gives {found}, "
        f"so nothing was evaluated. {advice}"
    )


def _override_value(value: Any) -> str:
    """A value as a command-line override writes it (lists without spaces, strings bare)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def evaluation_settings(cfg: DictConfig) -> dict[str, Any]:
    """The evaluation's settings (paths masked as in a run's identity), less the run's location
    and the unused network group."""
    return {k: v for k, v in settings(cfg).items() if k not in NOT_EVALUATION_SETTINGS}


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def evaluation_hash(run: TrainedRun, cfg: DictConfig) -> str:
    """Names the evaluation: the run (settings hash, selected epoch) and the evaluation settings."""
    return _hash(
        {
            "run": run.metrics["config_hash"],
            "checkpoint_epoch": run.metrics["checkpoint"]["epoch"],
            "evaluation": evaluation_settings(cfg),
        }
    )


def evaluation_dir(run: TrainedRun, cfg: DictConfig) -> Path:
    return run.dir / EVALUATIONS / f"{cfg.dataset.name}-{cfg.split}-{evaluation_hash(run, cfg)}"


@dataclass(frozen=True)
class ExternalSamples:
    """The other dataset's samples to evaluate, per domain, and what was left out."""

    manifest: pd.DataFrame
    manifest_sha256: str
    arrays: np.ndarray
    domains: dict[str, pd.DataFrame]  # vendor -> rows, ordered by file path
    left_out: dict[str, str]  # vendor -> why (one class)
    excluded: int  # samples whose pixels cannot be decoded


def _class_counts(frame: pd.DataFrame) -> dict[str, int]:
    positive = int((frame["label"] == 1).sum())
    return {"n": len(frame), "positive": positive, "negative": len(frame) - positive}


def external_samples(cfg: DictConfig) -> ExternalSamples:
    """The other dataset ready as for a run (manifest, preprocessing cache), by vendor."""
    ensure_manifest(cfg)
    dataset = cfg.dataset
    manifest, meta = load_manifest(dataset.manifest_dir, dataset.name)
    built = cache.load_or_build(
        manifest,
        str(meta["sha256"]),
        Path(dataset.dicom_root),
        OmegaConf.to_container(dataset.preprocess, resolve=True),
        Path(cfg.paths.cache_dir),
    )
    evaluated = manifest["split"].isin(SPLIT_CHOICES[cfg.split])
    evaluated &= ~manifest["sample_id"].isin(built.excluded["sample_id"])
    domains, left_out = {}, {}
    for vendor in sorted(set(manifest["vendor"])):
        # Ordered as a run orders a test domain (ShiftDataModule.frame): by file path.
        rows = manifest[evaluated & (manifest["vendor"] == vendor)].sort_values("paths")
        if rows["label"].nunique() == 2:
            domains[vendor] = rows
        else:
            counts = _class_counts(rows)
            left_out[vendor] = (
                f"{counts['negative']} negative, {counts['positive']} positive: "
                "AUROC needs both classes"
            )
    if not domains:
        raise ShiftlabError(
            f"no vendor of dataset {dataset.name} has both classes in split={cfg.split} "
            f"({'; '.join(f'{v}: {why}' for v, why in left_out.items())}). Try split=all."
        )
    return ExternalSamples(
        manifest, str(meta["sha256"]), built.arrays, domains, left_out, len(built.excluded)
    )


def load_network(run: TrainedRun, domains: list[str]) -> ShiftClassifier:
    """The run's network with the weights of its selected checkpoint, testing ``domains``."""
    model = ShiftClassifier(
        net=instantiate(run.config["model"]["net"]),
        val_domains=[],
        test_domains=domains,
        channels_last=bool((run.config.get("runtime") or {}).get("channels_last", False)),
    )
    state = torch.load(run.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict(state)
    return model


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Without Lightning's device lines and tips (an evaluation's output is its AUROCs) and a
    torch deprecation raised inside Lightning."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            yield
    finally:
        logger.setLevel(level)


def predict(run: TrainedRun, samples: ExternalSamples) -> pd.DataFrame:
    """Logits of every evaluated sample, in a run's predictions.csv format, tested as the run
    tested: its accelerator, precision and evaluation batch size, one device."""
    names = list(samples.domains)
    model = load_network(run, names)
    trainer_cfg = run.config.get("trainer") or {}
    batch_size = int((run.config.get("data") or {}).get("eval_batch_size", 128))
    loaders = []
    for rows in samples.domains.values():
        dataset = cached_dataset(
            samples.arrays,
            samples.manifest.index.get_indexer(rows.index),
            rows["label"].to_numpy(),
        )
        loaders.append(
            DataLoader(
                dataset, batch_size=batch_size, collate_fn=collate_for(dataset), **loader_options(0)
            )
        )
    with _quiet_lightning():
        trainer = L.Trainer(
            accelerator=trainer_cfg.get("accelerator", "auto"),
            precision=trainer_cfg.get("precision", "32-true"),
            deterministic=trainer_cfg.get("deterministic", "warn"),
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.test(model, dataloaders=loaders, verbose=False)
    parts = {
        key: torch.cat([batch[key] for batch in model.test_predictions])
        for key in ("row", "domain_index", "logit")
    }
    rows = samples.manifest.iloc[parts["row"].numpy()]
    logits = parts["logit"].double()  # holds each float32 logit exactly
    return pd.DataFrame(
        {
            "sample_id": rows["sample_id"].to_numpy(),
            "patient_id": rows["patient_id"].to_numpy(),
            "vendor": rows["vendor"].to_numpy(),
            "domain": [names[i] for i in parts["domain_index"].tolist()],
            "split": rows["split"].to_numpy(),
            "label": rows["label"].to_numpy(),
            "logit": logits.numpy(),
            "probability": torch.sigmoid(logits).numpy(),
        }
    )


def _result(
    cfg: DictConfig,
    run: TrainedRun,
    samples: ExternalSamples,
    predictions: pd.DataFrame,
    shape: tuple[int, ...],
    config_hash: str,
) -> dict[str, Any]:
    """The content of metrics.json. Nothing in it depends on time or place, so the same run and
    dataset give the same bytes."""
    by_domain = {name: predictions[predictions["domain"] == name] for name in samples.domains}
    metrics = {
        f"test/{name}/auroc": auroc(rows["logit"].to_numpy(), rows["label"].to_numpy())
        for name, rows in by_domain.items()
    }
    trained = run.metrics
    return {
        "metrics": metrics,
        "config_hash": config_hash,
        "evaluated_on": {
            "dataset": cfg.dataset.name,
            "modality": cfg.dataset.modality,
            "split": cfg.split,
            "split_seed": int(cfg.split_seed),
            "manifest_sha256": samples.manifest_sha256,
            "settings_hash": _hash(evaluation_settings(cfg)),
            "sample_shape": list(shape),
        },
        "run": {
            key: trained.get(key)
            for key in (
                "config_hash",
                "scenario",
                "dataset",
                "modality",
                "source",
                "target",
                "model",
                "seed",
                "manifest_sha256",
                "code_version",
            )
        },
        "checkpoint": trained["checkpoint"] | {"file": f"checkpoints/{run.checkpoint.name}"},
        "samples": {name: _class_counts(rows) for name, rows in by_domain.items()},
        "domains_left_out": samples.left_out,
        "samples_excluded": samples.excluded,
        **provenance(),
    }


def _record_config(cfg: DictConfig) -> str:
    """The resolved config as used; ``run`` is written as where the run lies from the record."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("model", None)
    config["run"] = "../.."
    return OmegaConf.to_yaml(OmegaConf.create(config))


def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], Path, bool]:
    """Evaluate ``cfg.run`` on ``cfg.dataset``: the metrics, the record's folder, and whether
    the record was there already (then nothing is recomputed)."""
    if cfg.split not in SPLIT_CHOICES:
        raise ShiftlabError(f"split must be one of {', '.join(SPLIT_CHOICES)}; got {cfg.split!r}")
    run = load_trained_run(cfg.run)
    check_mitigation(run)
    shape = check_fits(run, cfg.dataset)  # before any data is generated or decoded
    config_hash = evaluation_hash(run, cfg)
    folder = evaluation_dir(run, cfg)
    record = RunRecord(folder)
    stored = record.finished(config_hash)
    if stored is not None:
        return stored, folder, True
    try:
        check_writable(folder)
    except ShiftlabError:
        raise ShiftlabError(
            f"cannot write the evaluation record into the run directory {run.dir}. Copy the run "
            "directory (config.yaml, metrics.json, done, checkpoints/) to a folder you can write "
            "and give that as run=."
        ) from None
    samples = external_samples(cfg)
    predictions = predict(run, samples)
    result = _result(cfg, run, samples, predictions, shape, config_hash)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE).unlink(missing_ok=True)
    remove_temporaries(folder)  # left by a process killed while writing
    write_text_atomic(folder / "config.yaml", _record_config(cfg))
    record.write_predictions(predictions)
    record.write_metrics(result)
    record.finish()
    return result, folder, False


def summary(result: dict[str, Any], folder: Path) -> str:
    trained, on = result["run"], result["evaluated_on"]
    lines = [
        f"{trained['scenario']}  model={trained['model']}  seed={trained['seed']}  "
        f"checkpoint epoch {result['checkpoint']['epoch']}",
        f"  tested on {on['dataset']} ({on['modality']}), split={on['split']}:",
    ]
    for name, counts in result["samples"].items():
        lines.append(
            f"  AUROC {name}: {result['metrics'][f'test/{name}/auroc']:.3f}  "
            f"(n={counts['n']}: {counts['positive']} positive, {counts['negative']} negative)"
        )
    for name, why in result["domains_left_out"].items():
        lines.append(f"  left out {name}: {why}")
    if result["samples_excluded"]:
        lines.append(f"  {result['samples_excluded']} samples left out: pixels not decodable")
    lines.append(f"  evaluation record: {folder}")
    return "\n".join(lines)


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        if OmegaConf.is_missing(cfg, "run"):
            raise ShiftlabError(
                "run= is required: the folder of a trained run, e.g. python -m shiftlab.evaluate "
                "run=outputs/runs/<dataset>/<source>-<target>/<model>-seed<seed>-<hash> "
                "dataset=<preset or custom>"
            )
        result, folder, stored = evaluate(cfg)
    if stored:
        print(f"already evaluated, not evaluated again: {folder}")
    print(summary(result, folder))


if __name__ == "__main__":
    main()
