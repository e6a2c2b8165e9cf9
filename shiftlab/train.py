"""Train on the source domain, test on every domain, write the run record.

python -m shiftlab.train                                   # synthetic MRI, ge -> siemens
python -m shiftlab.train dataset=mri_breast source=ge target=siemens seed=3
python -m shiftlab.train experiment=paper_grid             # the study's grid (conf/experiment/)

``train`` is one run in the study's order: check the settings, prepare the data, build, fit,
select the checkpoint, test, record (a failure is recorded beside the run, ``recorded_attempt``
in shiftlab/runs/failure.py). ``run`` leaves out a run whose record is complete (not trained
again) or that another live process trains (skipped, shiftlab/runs/states.py); an incomplete one
resumes from its last.ckpt. ``main`` is the Hydra command, ``cli`` the console script.
"""

from __future__ import annotations

import atexit
import gc
import logging
import multiprocessing
import os
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from shiftlab.config import CONF_DIR, register_resolvers
from shiftlab.data.datamodule import ShiftDataModule
from shiftlab.data.prepare import ensure_manifest
from shiftlab.deployment_metrics import record_metrics
from shiftlab.domains import explained
from shiftlab.errors import ShiftlabError, exit_on_user_error, instantiate
from shiftlab.identity import settings, settings_hash
from shiftlab.loggers.local_paths import mask_local_paths
from shiftlab.loggers.wandb import wandb_run_id
from shiftlab.models.classifier import ShiftClassifier
from shiftlab.runs.failure import FiniteLoss, check_finite_metrics, recorded_attempt
from shiftlab.runs.gpu_slots import pin_gpu
from shiftlab.runs.provenance import provenance, trained_by
from shiftlab.runs.record import RunRecord, check_writable
from shiftlab.runs.states import RunLock, describe
from shiftlab.schema import check_train_config
from shiftlab.seeding import StepSeed

CHECKPOINT_RULE = "highest source-validation AUROC, earliest epoch on ties"


def quiet_library_noise() -> None:
    """Drop messages that say nothing about this run (advertising, a torch API deprecation inside
    Lightning, the worker-count hint that does not apply to a memory-mapped cache)."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not record.getMessage().startswith("💡 Tip")
    )


def _joined(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}


def _prediction_rows(
    datamodule: ShiftDataModule, parts: dict[str, torch.Tensor], domains: list[str], split: str
) -> pd.DataFrame:
    rows = datamodule.manifest.iloc[parts["row"].numpy()]
    return pd.DataFrame(
        {
            "sample_id": rows["sample_id"].to_numpy(),
            "patient_id": rows["patient_id"].to_numpy(),
            "vendor": rows["vendor"].to_numpy(),
            "domain": domains,
            "split": split,
            "label": rows["label"].to_numpy(),
            # float64 holds each float32 logit exactly, so the CSV gives back the very values
            # the AUROC ranked; the probability is computed in float64 too (no float32 ties).
            "logit": parts["logit"].double().numpy(),
            "probability": torch.sigmoid(parts["logit"].double()).numpy(),
        }
    )


def predictions_table(model: ShiftClassifier, datamodule: ShiftDataModule) -> pd.DataFrame:
    """``predictions.csv``: every test sample of every test domain, then the source validation
    samples (split val) that the decision threshold is chosen on, so that every number of the
    record can be recomputed from this table alone."""
    test, val = _joined(model.test_predictions), _joined(model.source_val_predictions)
    test_domains = [model.domains["test"][i] for i in test["domain_index"].tolist()]
    source = [model.domains["val"][0]] * len(val["row"])  # validation dataloader 0: the source
    return pd.concat(
        [
            _prediction_rows(datamodule, test, test_domains, "test"),
            _prediction_rows(datamodule, val, source, "val"),
        ],
        ignore_index=True,
    )


def _best_epoch(checkpoint: ModelCheckpoint) -> int:
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    return int(state["epoch"])


def run_result(
    cfg: DictConfig,
    datamodule: ShiftDataModule,
    checkpoint: ModelCheckpoint,
    evaluated: list[dict[str, float]],
    predictions: pd.DataFrame,
    clock: RunClock,
    config_hash: str,
) -> dict[str, Any]:
    """The content of metrics.json: per-domain AUROC, ΔAUC, the metrics beyond AUROC (computed
    from ``predictions``, the table written to predictions.csv), and what they depend on."""
    source, target = datamodule.domains.source, datamodule.domains.target
    metrics = {
        key: float(value)
        for per_loader in evaluated
        for key, value in per_loader.items()
        if key.endswith("/auroc")
    }
    metrics["test/delta_auroc"] = metrics[f"test/{target}/auroc"] - metrics[f"test/{source}/auroc"]
    evaluation = cfg.evaluation
    threshold, deployment = record_metrics(
        predictions,
        source,
        evaluation.threshold.rule,
        evaluation.threshold.target_sensitivity,
        evaluation.ece_bins,
    )
    return {
        "metrics": metrics | deployment,
        # Sensitivity and specificity are those at this threshold; ECE has ece_bins bins.
        "threshold": threshold.record(),
        "ece_bins": int(evaluation.ece_bins),
        "scenario": f"{cfg.dataset.name}/{source}->{target}",
        "dataset": cfg.dataset.name,
        "modality": cfg.dataset.modality,
        "source": source,
        "target": target,
        "model": cfg.model.name,
        "seed": int(cfg.seed),
        "split_seed": int(cfg.split_seed),
        "config_hash": config_hash,
        "manifest_sha256": datamodule.manifest_sha256,
        "checkpoint": {
            "rule": CHECKPOINT_RULE,
            "epoch": _best_epoch(checkpoint),
            "val_source_auroc": float(checkpoint.best_model_score),
        },
        "samples": datamodule.counts(),
        # Samples whose pixels could not be decoded: in no split of this run (pseudonymous ids).
        "samples_excluded": datamodule.excluded.to_dict("records"),
        "shift": datamodule.shift_record(),
        # The mitigation as applied; transductive: the test images (never labels) adapted it.
        "mitigation": datamodule.mitigation.record(),
        "timings_s": clock.timings_s(),
        # Start-up of this run: from train() to the first training step (None: no step to take).
        "first_step_s": clock.first_step_s(),
        # A debug run checks the code path: the report leaves it out.
        **({"debug": str(cfg.debug)} if cfg.get("debug") else {}),
    }


def wandb_summary(result: dict[str, Any]) -> dict[str, Any]:
    """Run summary in W&B: every metric, plus in-domain / cross-domain AUROC under names that
    are the same in every scenario (so one W&B table compares the whole grid), the shift and
    which mitigation (its name, label and whether it is transductive)."""
    metrics, shift = result["metrics"], result["shift"]
    mitigation = result.get("mitigation", {})
    return {
        **metrics,
        "test/in_domain_auroc": metrics[f"test/{result['source']}/auroc"],
        "test/cross_domain_auroc": metrics[f"test/{result['target']}/auroc"],
        **{f"shift/{key}": value for key, value in shift.items()},
        **{
            f"mitigation/{key}": mitigation[key]
            for key in ("name", "label", "transductive")
            if key in mitigation
        },
    }


class TrainLossEcho(L.Callback):
    """A debug run (conf/debug/) prints each epoch's mean training loss: an overfitting check
    reads it falling, whatever the progress bar or logger shows."""

    def on_train_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        loss = trainer.callback_metrics.get("train/loss_epoch")
        if loss is not None and trainer.is_global_zero:
            print(f"epoch {trainer.current_epoch}: train loss {float(loss):.4f}", flush=True)


def check_trainer_settings(cfg: DictConfig) -> None:
    """Trainer settings a run cannot go through with, refused before anything is made: Lightning's
    own fast_dev_run turns off checkpoints and loggers, of which a run record is made (the
    preset debug=fast_dev_run does the same check with them); a GPU asked for (trainer=gpu)
    where torch sees none."""
    if cfg.trainer.get("fast_dev_run"):
        raise ShiftlabError(
            f"trainer.fast_dev_run={cfg.trainer.fast_dev_run} turns off the checkpoints and the "
            "logger that a run record is made of. Use debug=fast_dev_run instead: one batch of "
            "training, validation and test, with its record under <output_dir>/debug/."
        )
    # Lightning's own test of what accelerator=gpu takes (CUDA or Apple's MPS).
    gpus = CUDAAccelerator.is_available() or MPSAccelerator.is_available()
    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not gpus:
        raise ShiftlabError(
            f"trainer.accelerator={cfg.trainer.accelerator}, but torch sees no GPU here "
            f"(torch {torch.__version__}). Run on a machine with one, or leave trainer=gpu out "
            "(accelerator auto: the GPU where there is one)."
        )


class RunClock(L.Callback):
    """The run's timings, in one place: the phases that ``train`` ends in turn (``ends``), and,
    as a callback, the start of the first training step (where the run's start-up ends)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.phase_ends: dict[str, float] = {}
        self.first_step: float | None = None

    def ends(self, phase: str) -> None:
        self.phase_ends[phase] = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.first_step is None:
            self.first_step = time.perf_counter()

    def timings_s(self) -> dict[str, float]:
        """Seconds of each phase, and of them all, as the record keeps them."""
        marks = [self.started, *self.phase_ends.values()]
        seconds = {phase: marks[i + 1] - marks[i] for i, phase in enumerate(self.phase_ends)}
        seconds["total"] = marks[-1] - self.started
        return {phase: round(value, 2) for phase, value in seconds.items()}

    def first_step_s(self) -> float | None:
        """From the start of ``train`` to the first training step (None: no step to take)."""
        return None if self.first_step is None else round(self.first_step - self.started, 2)


def check_run(cfg: DictConfig, run_dir: Path) -> None:
    """Everything a run cannot go through with, refused before anything is made: settings of the
    wrong type (seed=abc, optim.lr=fast, ...), trainer settings, a folder it cannot write."""
    check_train_config(cfg)
    check_trainer_settings(cfg)
    check_writable(run_dir)


def prepare_data(cfg: DictConfig) -> ShiftDataModule:
    """The run's data: its manifest made where it is missing, and the datamodule, whose domains
    are checked against the usable domains and pairs of this manifest."""
    ensure_manifest(cfg)
    try:
        return instantiate(cfg.data)
    except ShiftlabError as error:
        raise explained(error, cfg) from None


def start_record(
    record: RunRecord,
    cfg: DictConfig,
    config_hash: str,
    resume: tuple[Path, int] | None,
    made_by: dict[str, Any],
) -> None:
    """This attempt's entry in the run record: where and by which code it runs."""
    record.start(
        cfg,
        config_hash,
        resume,
        started_at=time.time(),
        host=socket.gethostname(),
        pid=os.getpid(),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        code_version=made_by["code_version"],
    )


def build_model(cfg: DictConfig, datamodule: ShiftDataModule) -> ShiftClassifier:
    """The run's LightningModule, its network initialised from ``cfg.seed`` (and changed by the
    mitigation: MixStyle layers, or a refusal); its optimiser and schedule are ``cfg.optim`` and
    ``cfg.scheduler``, built when training starts."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return ShiftClassifier(
        net=datamodule.mitigation.network(instantiate(cfg.model.net)),
        val_domains=datamodule.val_domains,
        test_domains=datamodule.test_domains,
        optimizer=OmegaConf.to_container(cfg.optim, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        channels_last=cfg.runtime.channels_last,
        compile_net=cfg.runtime.compile,
    )


def build_loggers(cfg: DictConfig, run_dir: Path, wandb_id: str | None = None) -> list[Logger]:
    """The run record's CSV curves first (``csv/metrics.csv``, which ``RunRecord`` keeps per
    attempt), then every other logger of ``cfg.logger``; a W&B logger gets ``wandb_id`` as its run
    id unless its config names one."""
    loggers = [instantiate(cfg.logger.csv, save_dir=str(run_dir))]
    for name, config in cfg.logger.items():
        if name == "csv":
            continue
        extra: dict[str, Any] = {"save_dir": str(run_dir)}
        is_wandb = issubclass(get_class(config._target_), WandbLogger)
        if wandb_id and is_wandb and not config.get("id"):
            extra["id"] = wandb_id
        loggers.append(instantiate(config, **extra))
    return loggers


def build_checkpoints(cfg: DictConfig, run_dir: Path) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """The checkpoint tested (best on source validation) and the one resumed from (last)."""
    dirpath = str(Path(run_dir) / "checkpoints")
    checkpoint: ModelCheckpoint = instantiate(cfg.callbacks.checkpoint, dirpath=dirpath)
    last: ModelCheckpoint = instantiate(cfg.callbacks.last, dirpath=dirpath)
    return checkpoint, last


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    loggers: list[Logger],
    callbacks: list[L.Callback],
    **overrides: Any,
) -> L.Trainer:
    return instantiate(
        cfg.trainer,
        default_root_dir=str(run_dir),
        logger=loggers,
        callbacks=callbacks,
        **overrides,
    )


def evaluation_trainer(
    trainer: L.Trainer,
    cfg: DictConfig,
    run_dir: Path,
    loggers: list[Logger],
    model: ShiftClassifier,
    best: str,
    test_callbacks: list[L.Callback],
) -> tuple[L.Trainer | None, str | None]:
    """The trainer that evaluates the selected checkpoint ``best``, and the checkpoint to give it.

    A distributed run is evaluated by global rank 0 alone, on its device, outside the process
    group (DDP's samplers would split, and pad, the evaluation sets and the predictions table):
    rank 0 loads the weights into ``model`` and gets a single-device trainer with
    ``test_callbacks`` (the mitigation's), the others None.
    """
    if trainer.world_size == 1:
        return trainer, best
    device, is_writer = trainer.strategy.root_device, trainer.is_global_zero
    torch.distributed.destroy_process_group()
    if not is_writer:
        return None, None
    single = build_trainer(
        cfg,
        run_dir,
        loggers,
        test_callbacks,
        devices=1,
        num_nodes=1,
        strategy=SingleDeviceStrategy(device),
        plugins=[LightningEnvironment()],
    )
    model.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
    return single, None  # the weights are loaded; the new trainer has no checkpoint callback


def write_result(
    record: RunRecord,
    result: dict[str, Any],
    predictions: pd.DataFrame,
    datamodule: ShiftDataModule,
    loggers: list[Logger],
) -> None:
    """The run's result into its record (``done`` last) and the W&B summary."""
    check_finite_metrics(result["metrics"])  # a nan AUROC is a failure, not a result
    record.write_predictions(predictions)
    for name, table in datamodule.shift_tables().items():
        record.write_table(name, table)
    record.write_metrics(result)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(mask_local_paths(wandb_summary(result)))
    record.finish()


def train(cfg: DictConfig, run_dir: str | Path, config_hash: str | None = None) -> dict[str, Any]:
    """One run, as the study runs it: check the settings, prepare the data, build the model, fit
    it on the source domain, select the checkpoint (best on source validation), test it on every
    domain, record. Returns the metrics it wrote to ``run_dir/metrics.json``. ``config_hash``:
    ``settings_hash(cfg)`` where the caller has it already (it resolves the whole config)."""
    clock = RunClock()
    run_dir = Path(run_dir)
    check_run(cfg, run_dir)
    datamodule = prepare_data(cfg)
    record = RunRecord(run_dir)
    config_hash = config_hash or settings_hash(cfg)
    resume = record.resume_point(config_hash)  # read by every process before any writes
    writer = rank_zero_only.rank == 0  # a distributed run's record: global rank 0 writes it
    made_by = provenance()  # code version and package versions, for the record
    if writer:
        start_record(record, cfg, config_hash, resume, made_by)
    model = build_model(cfg, datamodule)
    checkpoint, last = build_checkpoints(cfg, run_dir)
    with recorded_attempt(record, cfg, writer) as loggers:
        # A resumed attempt continues the W&B run of the attempt that began its training.
        loggers += build_loggers(cfg, run_dir, wandb_run_id(config_hash, record.attempts()))
        for logger in loggers:  # settings with the data locations masked, never patient data
            logger.log_hyperparams(settings(cfg))
        callbacks = [checkpoint, last, clock, FiniteLoss(), StepSeed(cfg.seed)]
        callbacks += datamodule.mitigation.test_callbacks()  # AdaBN's, at test time
        callbacks += [TrainLossEcho()] if cfg.get("debug") else []
        trainer = build_trainer(cfg, run_dir, loggers, callbacks)
        clock.ends("setup")
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume and str(resume[0]))
        clock.ends("fit")
        # Validation and test both use the selected checkpoint: one model behind all numbers.
        evaluator, best = evaluation_trainer(
            trainer,
            cfg,
            run_dir,
            loggers,
            model,
            checkpoint.best_model_path,
            datamodule.mitigation.test_callbacks(),
        )
        if evaluator is None:  # another process of a distributed run: rank 0 evaluates
            return {}
        validated = evaluator.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)
        tested = evaluator.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
        clock.ends("test")
        predictions = predictions_table(model, datamodule)
        evaluated = [*validated, *tested]
        result = run_result(cfg, datamodule, checkpoint, evaluated, predictions, clock, config_hash)
        result |= {"resumed_from_epoch": resume and resume[1], **made_by}
        result["code_version"] = trained_by(record.attempts()) or made_by["code_version"]
        write_result(record, result, predictions, datamodule, loggers)
    return result


# The metrics beyond AUROC that a run prints (docs/statistics.md), as it names them.
DEPLOYMENT_SUMMARY = {
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "ece": "ECE",
    "brier": "Brier score",
}


def summary(result: dict[str, Any]) -> str:
    """What a run prints when it ends: both AUROCs and ΔAUC, what a model deployed with the
    source's threshold would do on each (sensitivity, specificity, calibration), and a
    mitigation other than none (``adabn``'s target AUROC is that of an adapted model)."""
    m, source, target = result["metrics"], result["source"], result["target"]
    lines = [
        f"{result['scenario']}  model={result['model']}  seed={result['seed']}",
        f"  test AUROC  source {source}: {m[f'test/{source}/auroc']:.3f}",
        f"  test AUROC  target {target}: {m[f'test/{target}/auroc']:.3f}",
        f"  ΔAUC (target - source): {m['test/delta_auroc']:+.3f}",
    ]
    threshold = result.get("threshold")
    if threshold:  # records from before the deployment metrics have none
        notes = {
            "sensitivity": f"  (threshold chosen on {source} validation: {threshold['rule']})",
            "ece": f"  ({result['ece_bins']} bins)",
        }
        for metric, label in DEPLOYMENT_SUMMARY.items():
            values = f"{m[f'test/{source}/{metric}']:.3f} -> {m[f'test/{target}/{metric}']:.3f}"
            lines.append(f"  {label} {source} -> {target}: {values}{notes.get(metric, '')}")
    mitigation = result.get("mitigation") or {}
    if mitigation.get("name", "none") != "none":
        adapted = " (transductive: adapted on each target's test images)"
        lines.append(
            f"  mitigation: {mitigation['label']}{adapted if mitigation['transductive'] else ''}"
        )
    if result.get("debug"):
        lines.append(f"  a debug run (debug={result['debug']}): it checks the code path, no result")
    return "\n".join(lines)


register_resolvers()


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any] | None:
    """``train`` unless the run is done (its metrics come back) or a live process trains it
    (None). Only global rank 0 of a distributed run takes the run's lock."""
    run_dir = Path(run_dir)
    config_hash = settings_hash(cfg)
    finished = RunRecord(run_dir).finished(config_hash)
    if finished is not None:
        print(f"already done, not trained again: {run_dir}")
        return finished
    check_writable(run_dir)
    if rank_zero_only.rank != 0:
        return train(cfg, run_dir, config_hash)
    with RunLock(run_dir) as lock:
        if lock.holder is not None:
            print(f"running elsewhere ({describe(lock.holder)}), skipped: {run_dir}")
            return None
        return train(cfg, run_dir, config_hash)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    quiet_library_noise()
    # In a multirun a failed run is reported and the sweep goes on (shiftlab.grid lists failures).
    result = None
    with exit_on_user_error(stop=HydraConfig.get().mode != RunMode.MULTIRUN):
        launcher = cfg.get("launcher") or {}
        if launcher.get("slot_dir"):  # launcher=local_gpus: this worker's own GPU, before CUDA
            print(f"GPU {pin_gpu(int(launcher.gpus), launcher.slot_dir)}: {run_dir}")
        result = run(cfg, run_dir)
    if result:
        print(summary(result))
        print(f"  run record: {run_dir}")


def exit_without_teardown() -> None:
    """End a finished command-line process without the interpreter's teardown.

    Freeing the ten thousand modules that torch, Lightning and their imports load takes the
    interpreter longer than the whole run's setup (1.5-2.7 s on 2 cores, ``benchmarks/startup.py``),
    paid by every run that is its own process (a single run, a SLURM array task). What a normal
    exit does that matters is done here: the exit handlers run (logging, W&B, multiprocessing) and
    the standard streams are flushed. While another thread or a child process is alive (a joblib
    launcher's workers, loader workers), or under a profiler or debugger (which write their
    results after the program), the interpreter shuts down as usual instead.
    """
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return
    current = threading.current_thread()
    if any(t is not current and not t.daemon for t in threading.enumerate()):
        return
    if multiprocessing.active_children():
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def cli() -> None:
    """``python -m shiftlab.train``: the run(s), then a quick exit.

    The objects of the imports (torch, Lightning, ...) live as long as the process: frozen, they
    are left out of every later garbage collection, of which a full one otherwise scans them all
    (0.3 s, measured in the setup of a SmallCNN run).
    """
    gc.freeze()
    main()
    exit_without_teardown()


if __name__ == "__main__":
    cli()
