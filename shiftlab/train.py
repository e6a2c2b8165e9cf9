"""Train on the source domain, test on every domain, write the run record.

python -m shiftlab.train                                   # synthetic MRI, ge -> siemens
python -m shiftlab.train dataset=mri_breast source=ge target=siemens seed=3
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

from shiftlab.data.datamodule import ShiftDataModule
from shiftlab.data.prepare import ensure_manifest
from shiftlab.errors import exit_on_user_error, instantiate
from shiftlab.models.classifier import ShiftClassifier
from shiftlab.record import RunRecord
from shiftlab.settings import register_resolvers, settings, settings_hash

CHECKPOINT_RULE = "highest source-validation AUROC, earliest epoch on ties"


def _quiet_library_noise() -> None:
    """Drop messages that say nothing about this run (advertising, a torch API deprecation inside
    Lightning, the worker-count hint that does not apply to a memory-mapped cache)."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not record.getMessage().startswith("💡 Tip")
    )


def _predictions(model: ShiftClassifier, datamodule: ShiftDataModule) -> pd.DataFrame:
    parts = {
        key: torch.cat([batch[key] for batch in model.test_predictions])
        for key in ("row", "domain_index", "logit")
    }
    rows = datamodule.manifest.iloc[parts["row"].numpy()]
    return pd.DataFrame(
        {
            "sample_id": rows["sample_id"].to_numpy(),
            "patient_id": rows["patient_id"].to_numpy(),
            "vendor": rows["vendor"].to_numpy(),
            "domain": [model.domains["test"][i] for i in parts["domain_index"].tolist()],
            "split": "test",
            "label": rows["label"].to_numpy(),
            "logit": parts["logit"].numpy(),
            "probability": torch.sigmoid(parts["logit"]).numpy(),
        }
    )


def _best_epoch(checkpoint: ModelCheckpoint) -> int:
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    return int(state["epoch"])


def _result(
    cfg: DictConfig,
    datamodule: ShiftDataModule,
    checkpoint: ModelCheckpoint,
    evaluated: list[dict[str, float]],
    timings: dict[str, float],
) -> dict[str, Any]:
    """The content of metrics.json: per-domain AUROC, ΔAUC, and what they depend on."""
    source, target = datamodule.domains.source, datamodule.domains.target
    metrics = {
        key: float(value)
        for per_loader in evaluated
        for key, value in per_loader.items()
        if key.endswith("/auroc")
    }
    metrics["test/delta_auroc"] = metrics[f"test/{target}/auroc"] - metrics[f"test/{source}/auroc"]
    return {
        "metrics": metrics,
        "scenario": f"{cfg.dataset.name}/{source}->{target}",
        "dataset": cfg.dataset.name,
        "modality": cfg.dataset.modality,
        "source": source,
        "target": target,
        "model": cfg.model.name,
        "seed": int(cfg.seed),
        "split_seed": int(cfg.split_seed),
        "config_hash": settings_hash(cfg),
        "manifest_sha256": datamodule.manifest_sha256,
        "checkpoint": {
            "rule": CHECKPOINT_RULE,
            "epoch": _best_epoch(checkpoint),
            "val_source_auroc": float(checkpoint.best_model_score),
        },
        "samples": datamodule.counts(),
        "timings_s": {name: round(seconds, 2) for name, seconds in timings.items()},
    }


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """One run: returns the metrics it wrote to ``run_dir/metrics.json``."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    ensure_manifest(cfg)
    datamodule: ShiftDataModule = instantiate(cfg.data)  # validates the domains
    record = RunRecord(run_dir)
    record.start(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = ShiftClassifier(
        net=instantiate(cfg.model.net),
        val_domains=datamodule.val_domains,
        test_domains=datamodule.test_domains,
        **cfg.optim,
    )
    checkpoint: ModelCheckpoint = instantiate(
        cfg.callbacks.checkpoint, dirpath=str(run_dir / "checkpoints")
    )
    logger = None
    failed = True
    try:
        logger = instantiate(cfg.logger, save_dir=str(run_dir))
        # What reaches the logger (and W&B): settings with paths masked, never patient data.
        logger.log_hyperparams(settings(cfg))
        trainer: L.Trainer = instantiate(
            cfg.trainer, default_root_dir=str(run_dir), logger=logger, callbacks=[checkpoint]
        )
        fit_started = time.perf_counter()
        trainer.fit(model, datamodule=datamodule)
        test_started = time.perf_counter()
        # Both evaluations use the selected checkpoint, so val and test numbers describe one model.
        validated = trainer.validate(model, datamodule=datamodule, ckpt_path="best", verbose=False)
        tested = trainer.test(model, datamodule=datamodule, ckpt_path="best", verbose=False)
        finished = time.perf_counter()
        timings = {
            "setup": fit_started - started,
            "fit": test_started - fit_started,
            "test": finished - test_started,
            "total": finished - started,
        }
        result = _result(cfg, datamodule, checkpoint, [*validated, *tested], timings)
        record.write_predictions(_predictions(model, datamodule))
        record.write_metrics(result)
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(result["metrics"])
        record.finish()
        failed = False
    finally:
        if isinstance(logger, WandbLogger):
            import wandb  # only when W&B is in use: importing it costs a second

            wandb.finish(exit_code=1 if failed else 0)
    return result


def summary(result: dict[str, Any]) -> str:
    m, source, target = result["metrics"], result["source"], result["target"]
    return (
        f"{result['scenario']}  model={result['model']}  seed={result['seed']}\n"
        f"  test AUROC  source {source}: {m[f'test/{source}/auroc']:.3f}\n"
        f"  test AUROC  target {target}: {m[f'test/{target}/auroc']:.3f}\n"
        f"  ΔAUC (target - source): {m['test/delta_auroc']:+.3f}"
    )


register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    _quiet_library_noise()
    with exit_on_user_error():
        result = train(cfg, run_dir)
    print(summary(result))
    print(f"  run record: {run_dir}")


if __name__ == "__main__":
    main()
