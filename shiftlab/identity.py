"""A run's identity: its settings with machine-specific locations masked, and their hash.

Run directories are named by the hash (not by timestamps), so two launches of the same settings
find each other's runs, on any machine. Where files live (``paths``, shown as ``<data_dir>`` …
wherever they are interpolated), how the run is logged (``logger``) or launched (``launcher``),
what the trainer only displays (``DISPLAY_ONLY``) and Hydra's own settings do not change a result
and are left out. The same settings are what reaches W&B, where every other value that is a local
path, or text that holds one, is masked too (``shiftlab.loggers.local_paths``): a folder name can
be a PatientID.

The hash reads each class or function a config names by ``_target_`` through its stable name
(``STABLE_NAMES``), not through where its code lives, so moving a class renames no run directory
and rebuilds no cache (``stable_targets``; the cache key reads the preprocessing settings the
same way). It reads the optimiser settings of shiftlab 0.1.0's shape where they mean the same
(``hashed_settings``), so run directories made before ``optim`` named its class keep theirs, and
leaves out the ``_target_`` of the ablations, known by their name before they were classes
(``TARGETS_LEFT_OUT``), and leaves out a mitigation that is ``none`` (``without_no_mitigation``),
so the run directories made before mitigations existed keep theirs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

NOT_SETTINGS = ("hydra", "paths", "logger", "launcher")
# Trainer options that change what is printed or how often curves are logged, never the model.
DISPLAY_ONLY = ("enable_progress_bar", "enable_model_summary", "log_every_n_steps")


def settings_template(cfg: DictConfig) -> DictConfig:
    """The settings before they are resolved: ``cfg`` without Hydra's, the logger's and the
    launcher's settings, and with every path masked (``<data_dir>`` …)."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    # Dropped before resolving: nothing interpolates them, and the launcher's settings may ask
    # the machine (its GPU count), which a run's identity must not depend on.
    for key in ("hydra", "logger", "launcher"):
        raw.pop(key, None)
    raw["paths"] = {key: f"<{key}>" for key in raw.get("paths", {})}
    return OmegaConf.create(raw)


def settings_of(resolved: dict[str, Any]) -> dict[str, Any]:
    """The settings from the resolved ``settings_template``, less what only changes the display.
    ``resolved`` is left as it is."""
    values = {key: value for key, value in resolved.items() if key not in NOT_SETTINGS}
    trainer = values.get("trainer")
    if trainer is not None:
        values["trainer"] = {k: v for k, v in trainer.items() if k not in DISPLAY_ONLY}
    return values


def settings(cfg: DictConfig) -> dict[str, Any]:
    return settings_of(OmegaConf.to_container(settings_template(cfg), resolve=True))


# How ``optim`` read before it named its class (shiftlab 0.1.0): Adam's ``lr`` and
# ``weight_decay``, and ``scheduler: cosine | none``, now the ``scheduler`` group. These are the
# group's options as shipped; a run of Adam with one of them hashes in the old shape, so the run
# directories of 0.1.0 keep their names and a relaunch finds them (tests/test_schema.py).
ADAM = "torch.optim.Adam"
SCHEDULERS_OF_0_1 = {
    "cosine": {
        "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
        "_partial_": True,
        "interval": "step",
        "run_length_argument": "T_max",
    },
    "none": {"_target_": None},
}


# The stable name of every shiftlab class or function that a shipped config names by ``_target_``.
# A stable name is fixed once: for everything shiftlab had when stable names came in (after
# 0.1.0), it is the module path the object had then, so the run directories and caches made
# before anything moved keep their names. Moving an object: change ``_target_`` in the configs
# and the key here, never the value (tests/test_identity.py checks that every shipped
# ``_target_`` is listed and importable). A ``_target_`` outside shiftlab (torch, Lightning, a
# user's own class) enters as it is.
STABLE_NAMES: dict[str, str] = {
    path: path
    for path in (
        "shiftlab.data.datamodule.ShiftDataModule",
        "shiftlab.data.mitigation.AdaBN",
        "shiftlab.data.mitigation.AppearanceAugmentation",
        "shiftlab.data.mitigation.HistogramStandardisation",
        "shiftlab.data.mitigation.MixStyleTraining",
        "shiftlab.data.mitigation.NoMitigation",
        "shiftlab.data.preprocess.CTPatchPreprocessor",
        "shiftlab.data.preprocess.CTVolumePreprocessor",
        "shiftlab.data.preprocess.MRIPreprocessor",
        "shiftlab.data.preprocess.MRISlicePreprocessor",
        "shiftlab.data.preprocess.MammoPreprocessor",
        "shiftlab.data.preprocess.XRayPreprocessor",
        "shiftlab.data.shift.NoShift",
        "shiftlab.data.shift.TargetInjection",
        "shiftlab.data.shift.TrainingNoise",
        "shiftlab.labels.read_label_table",
        "shiftlab.models.densenet.DenseNet121",
        "shiftlab.models.mrnet2d.MRNet2D",
        "shiftlab.models.nodulex.NoduleX",
        "shiftlab.models.smallcnn.SmallCNN",
        "shiftlab.recipes.adni.read_labels",
        "shiftlab.recipes.cq500.read_labels",
        "shiftlab.recipes.duke_breast_mri.read_labels",
        "shiftlab.recipes.lidc.read_labels",
        "shiftlab.recipes.padchest.sample_table",
        "shiftlab.recipes.prostate_mri_us_biopsy.read_labels",
        "shiftlab.recipes.vindr_cxr.read_labels",
        "shiftlab.recipes.vindr_mammo.read_labels",
        "shiftlab.schema.SettingsCheck",
        "shiftlab.synth.ct.generate",
        "shiftlab.synth.mri.generate",
        "shiftlab.synth.xray.generate",
        *(
            f"shiftlab.synth.twins.{twin}.generate"
            for twin in (
                "adni",
                "bids",
                "cq500",
                "duke_breast_mri",
                "lidc",
                "padchest",
                "prostate_mri_us_biopsy",
                "vindr_cxr",
                "vindr_mammo",
            )
        ),
    )
} | {
    "shiftlab.runs.states.OutputCheck": "shiftlab.runs.OutputCheck",
    "shiftlab.loggers.wandb.MaskedWandbLogger": "shiftlab.wandb_logger.MaskedWandbLogger",
}
# Stable names of classes that runs were told apart without: the ablations (conf/shift/) were
# plain settings known by ``shift.name`` until they became classes built by ``_target_``,
# so their ``_target_`` says nothing that ``name`` does not. The hash leaves it out wherever it
# is (``shift`` and ``data.shift``), and the run directories made before keep their names.
TARGETS_LEFT_OUT = frozenset(
    {
        "shiftlab.data.shift.NoShift",
        "shiftlab.data.shift.TargetInjection",
        "shiftlab.data.shift.TrainingNoise",
    }
)


def stable_targets(value: Any) -> Any:
    """``value`` with every ``_target_`` that ``STABLE_NAMES`` lists replaced by its stable name."""
    if isinstance(value, dict):
        return {
            key: STABLE_NAMES.get(item, item) if key == "_target_" else stable_targets(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [stable_targets(item) for item in value]
    return value


def without_unnamed(value: Any) -> Any:
    """``value`` (its targets by stable name) without a ``_target_`` of ``TARGETS_LEFT_OUT``."""
    if isinstance(value, dict):
        return {
            key: without_unnamed(item)
            for key, item in value.items()
            if not (key == "_target_" and item in TARGETS_LEFT_OUT)
        }
    if isinstance(value, list):
        return [without_unnamed(item) for item in value]
    return value


# The settings of the metrics beyond AUROC (``evaluation``, conf/train.yaml) as shipped. They came
# after run directories were named by the hash, and they only add numbers to a record (the model,
# its training and its AUROCs are those of the same run without them), so a run with them keeps
# the hash and folder it had: a relaunch finds the runs made before. Any other evaluation
# settings give other numbers in metrics.json, so they are hashed: a record never holds numbers of
# settings other than its own (conf/train.yaml's node must equal this; tests/models/
# test_deployment_metrics.py).
EVALUATION_AS_SHIPPED = {"threshold": {"rule": "youden", "target_sensitivity": 0.9}, "ece_bins": 15}


def without_shipped_evaluation(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without ``evaluation`` where it is ``EVALUATION_AS_SHIPPED``."""
    if values.get("evaluation") != EVALUATION_AS_SHIPPED:
        return values
    return {key: value for key, value in values.items() if key != "evaluation"}


def without_no_mitigation(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the mitigation (``mitigation`` and ``data.mitigation``) where it is
    ``none``: mitigations came after run directories were named by the hash, and a run without
    one is the run as it was, so it keeps the hash and folder it had (tests/test_config_location.py
    pins them)."""
    if (values.get("mitigation") or {}).get("name") != "none":
        return values
    kept = {key: value for key, value in values.items() if key != "mitigation"}
    if isinstance(kept.get("data"), dict):
        kept["data"] = {key: value for key, value in kept["data"].items() if key != "mitigation"}
    return kept


def hashed_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The settings as the hash reads them: every ``_target_`` by its stable name (none for the
    classes of ``TARGETS_LEFT_OUT``), the shipped evaluation settings and a ``none`` mitigation
    left out, and an Adam run with a scheduler that 0.1.0 had in the shape ``optim`` had then."""
    values = without_shipped_evaluation(without_unnamed(stable_targets(values)))
    values = without_no_mitigation(values)
    optim, scheduler = values.get("optim"), values.get("scheduler")
    if not (isinstance(optim, dict) and isinstance(scheduler, dict)):
        return values
    if optim.get("_target_") != ADAM or optim.get("_partial_") is not True:
        return values
    if set(optim) != {"_target_", "_partial_", "lr", "weight_decay"}:
        return values
    name = next((n for n, shape in SCHEDULERS_OF_0_1.items() if shape == scheduler), None)
    if name is None:
        return values
    old = {"lr": optim["lr"], "weight_decay": optim["weight_decay"], "scheduler": name}
    return {**{k: v for k, v in values.items() if k != "scheduler"}, "optim": old}


def hash_of(values: dict[str, Any]) -> str:
    """The settings hash of ``settings``' values."""
    text = json.dumps(hashed_settings(values), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def settings_hash(cfg: DictConfig) -> str:
    return hash_of(settings(cfg))
