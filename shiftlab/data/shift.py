"""The two ablations of the study, as changes to the training set only (``shift=`` in conf/shift/).

Each ablation is a class that Hydra builds from its config (``_target_``); like a MONAI transform
it checks its settings when it is made (a ShiftlabError names the key, what it takes and what to
do) and acts through its methods, which the datamodule calls:

- ``NoShift`` (``shift=none``): the training set as it is.
- ``TargetInjection`` (``shift=injection``): a share of the training set comes from the target
  domain's *train* split, drawn stratified by label with ``split_seed``. The target's validation
  and test splits, and every evaluation, are untouched; model selection stays on the source's
  validation split. The rows it changed go to the run's ``injected.csv``.
- ``TrainingNoise`` (``shift=noise``): Gaussian noise with one fixed standard deviation is added to
  every training image (never to validation or test images), from a generator seeded by ``seed``.

``settings`` is the ablation's config as given (``name``, ``label`` and its own keys, without
``_target_``): the run record's ``shift``, which the report reads by ``name``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from shiftlab.errors import ShiftlabError, instantiate, setting_number
from shiftlab.seeding import NOISE_STREAM, EpochGenerator

MODES = ("replace", "add")
REFERENCES = ("train_std", "unit")
# Columns of the rows an injection changed, in injected.csv.
CHANGED_COLUMNS = ["sample_id", "patient_id", "vendor", "split", "label"]


def _round(x: float) -> int:
    """Half up, not to even: 0.5 of a sample is one sample in every mode."""
    return math.floor(x + 0.5)


def injection_sizes(n_source: int, fraction: float, mode: str) -> tuple[int, int]:
    """(source samples kept, target samples drawn) for a source training split of ``n_source``.

    ``replace`` keeps the training-set size; ``add`` keeps every source sample and adds target
    samples until they are ``fraction`` of the larger set.
    """
    if mode == "replace":
        n_target = _round(fraction * n_source)
        return n_source - n_target, n_target
    return n_source, _round(fraction * n_source / (1.0 - fraction))


def stratified_order(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The rows shuffled so that every prefix holds each label in proportion, within one sample.

    Each label's rows get random ranks r = 0..n-1 and the key (r + 0.5) / n; sorting by the key
    interleaves the labels evenly. Taking the first k rows is then a stratified sample of size
    k, and the sample of a smaller k is part of that of a larger one.
    """
    labels = frame["label"].to_numpy()
    keys = np.empty(len(frame))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keys[members] = (rng.permutation(len(members)) + 0.5) / len(members)
    return frame.iloc[np.lexsort((labels, keys))]


@dataclass(frozen=True)
class TrainingSet:
    """The training rows of a run, and which of them an injection changed."""

    frame: pd.DataFrame
    injected: pd.DataFrame  # target training rows added to the training set
    dropped: pd.DataFrame  # source training rows they replaced (replace mode)

    def changes(self) -> pd.DataFrame:
        """The rows an injection changed: target rows added, source rows they replaced."""
        parts = [
            self.injected[CHANGED_COLUMNS].assign(role="injected"),
            self.dropped[CHANGED_COLUMNS].assign(role="dropped"),
        ]
        return pd.concat(parts, ignore_index=True)


def pixel_std(arrays: np.ndarray, rows: np.ndarray, chunk: int = 256) -> float:
    """Standard deviation of every pixel of the given cache rows, pooled (float64, one pass)."""
    count, mean, m2 = 0, 0.0, 0.0
    rows = np.sort(np.asarray(rows))
    for start in range(0, len(rows), chunk):
        block = np.asarray(arrays[rows[start : start + chunk]], dtype=np.float64)
        n, block_mean = block.size, float(block.mean())
        block_m2 = float(((block - block_mean) ** 2).sum())
        # Chan et al.'s pairwise update of mean and sum of squared deviations.
        delta = block_mean - mean
        total = count + n
        mean += delta * n / total
        m2 += block_m2 + delta**2 * count * n / total
        count = total
    return math.sqrt(m2 / count) if count else 0.0


class BatchNoise:
    """Adds N(0, std²) to every pixel of every training image.

    The generator restarts from (seed, epoch) at each epoch, so the noise of an epoch is the
    same whether or not the run was interrupted and resumed before it. ``train_pixel_std`` is
    the training pixels' spread that ``std`` was measured against (None: not measured).
    """

    def __init__(self, std: float, seed: int, train_pixel_std: float | None = None) -> None:
        self.std, self.seed = float(std), int(seed)
        self.train_pixel_std = train_pixel_std
        self._generator_for = EpochGenerator(seed, NOISE_STREAM)

    def __call__(self, image: torch.Tensor, epoch: int) -> torch.Tensor:
        if self.std == 0.0:
            return image
        generator = self._generator_for(image.device, epoch)
        noise = torch.randn(
            image.shape, generator=generator, device=image.device, dtype=image.dtype
        )
        return image + self.std * noise


class Ablation:
    """What an ablation changes in a run; this base changes nothing. Each ablation says what it
    changes by overriding ``training_set``, ``training_noise``, ``record`` or ``tables``, and
    checks its settings in ``__init__``, which ends with ``_keep``."""

    name: ClassVar[str]

    def _keep(self, **settings: Any) -> None:
        """Keep the settings as the config gave them (a key it left out stays out), once checked
        to be this ablation's."""
        if settings["name"] != self.name:
            raise ShiftlabError(
                f"shift.name={settings['name']!r}, but shift._target_ builds "
                f"{type(self).__name__}, the ablation named {self.name!r}. Choose the ablation "
                f"with shift=<name> ({list(ABLATIONS)}) and leave shift.name as it is."
            )
        self.settings = {key: value for key, value in settings.items() if value is not None}

    def training_set(
        self,
        source_train: pd.DataFrame,
        target_train: pd.DataFrame,
        split_seed: int,
        target: str = "target",
    ) -> TrainingSet:
        """The rows to train on, ordered by file path like every split (so the data order
        depends on the seed, not on which rows were drawn first)."""
        empty = source_train.iloc[:0]
        return TrainingSet(source_train, empty, empty)

    def training_noise(self, arrays: np.ndarray, rows: np.ndarray, seed: int) -> BatchNoise | None:
        """The noise added to the training batches (None: none), given the cache's ``arrays``
        and the training set's ``rows`` of it."""
        return None

    def record(self, training: TrainingSet, noise: BatchNoise | None) -> dict[str, Any]:
        """The ablation as it was applied, for the run record's ``shift``."""
        return dict(self.settings)

    def tables(self, training: TrainingSet) -> dict[str, pd.DataFrame]:
        """Tables the ablation adds to the run record, by file name."""
        return {}


class NoShift(Ablation):
    """``shift=none``: the source domain's training split as it is, its images untouched."""

    name: ClassVar[str] = "none"

    def __init__(self, *, name: str = "none", label: str | None = None) -> None:
        self._keep(name=name, label=label)


class TargetInjection(Ablation):
    """``shift=injection``: ``fraction`` of the training set drawn from the target's train split;
    ``mode`` replace keeps the training set's size, add grows it (conf/shift/injection.yaml)."""

    name: ClassVar[str] = "injection"

    def __init__(
        self,
        *,
        name: str = "injection",
        fraction: float,
        mode: str,
        label: str | None = None,
    ) -> None:
        self.fraction = setting_number(fraction, "shift.fraction", "a share in [0, 1)")
        if mode not in MODES:
            raise ShiftlabError(f"shift.mode={mode!r}: choose one of {list(MODES)}.")
        if not 0.0 <= self.fraction < 1.0:
            raise ShiftlabError(
                f"shift.fraction={self.fraction}: the target's share must be in [0, 1) "
                "(e.g. shift.fraction=0.3; 1 would leave no source sample to train on)."
            )
        self.mode = str(mode)
        self._keep(name=name, fraction=fraction, mode=mode, label=label)

    def training_set(
        self,
        source_train: pd.DataFrame,
        target_train: pd.DataFrame,
        split_seed: int,
        target: str = "target",
    ) -> TrainingSet:
        """The source's training split with target training rows injected, drawn stratified by
        label with ``split_seed``."""
        fraction, mode = self.fraction, self.mode
        n_kept, n_target = injection_sizes(len(source_train), fraction, mode)
        if n_target > len(target_train):
            hint = " or shift.mode=replace" if mode == "add" else ""
            raise ShiftlabError(
                f"injection of fraction {fraction} ({mode}) needs {n_target} target training "
                f"samples; domain {target!r} has {len(target_train)} in its train split. Use a "
                f"smaller shift.fraction{hint}."
            )
        # Separate streams for the two draws, both from split_seed (like the splits themselves).
        injected = stratified_order(target_train, np.random.default_rng([split_seed, 1]))
        injected = injected[:n_target]
        order = stratified_order(source_train, np.random.default_rng([split_seed, 2]))
        dropped = order[: len(source_train) - n_kept]
        kept = order[len(dropped) :]
        frame = pd.concat([kept, injected]).sort_values("paths")
        return TrainingSet(frame, injected.sort_values("paths"), dropped.sort_values("paths"))

    def record(self, training: TrainingSet, noise: BatchNoise | None) -> dict[str, Any]:
        size = len(training.frame)
        return self.settings | {
            "train_samples": size,
            "source_samples": size - len(training.injected),
            "target_samples": len(training.injected),
            "dropped_source_samples": len(training.dropped),
            "achieved_fraction": len(training.injected) / size if size else 0.0,
        }

    def tables(self, training: TrainingSet) -> dict[str, pd.DataFrame]:
        return {"injected.csv": training.changes()}


class TrainingNoise(Ablation):
    """``shift=noise``: N(0, std²) on every training image, std = ``alpha`` percent of
    ``reference`` (the training pixels' std, or 1.0 for ``unit``; conf/shift/noise.yaml)."""

    name: ClassVar[str] = "noise"

    def __init__(
        self,
        *,
        name: str = "noise",
        alpha: float,
        reference: str,
        label: str | None = None,
    ) -> None:
        self.alpha = setting_number(alpha, "shift.alpha", "a strength >= 0, in percent")
        if self.alpha < 0:
            raise ShiftlabError(
                f"shift.alpha={alpha}: a noise strength is >= 0 (percent of "
                "shift.reference; 0 adds no noise)."
            )
        if reference not in REFERENCES:
            raise ShiftlabError(f"shift.reference={reference!r}: choose one of {list(REFERENCES)}.")
        self.reference = str(reference)
        self._keep(name=name, alpha=alpha, reference=reference, label=label)

    def training_noise(self, arrays: np.ndarray, rows: np.ndarray, seed: int) -> BatchNoise:
        train_std = pixel_std(arrays, rows)
        scale = train_std if self.reference == "train_std" else 1.0
        return BatchNoise(self.alpha / 100.0 * scale, seed, train_std)

    def record(self, training: TrainingSet, noise: BatchNoise | None) -> dict[str, Any]:
        if noise is None:  # not set up: nothing measured yet
            return self.settings | {"train_pixel_std": None, "noise_std": None}
        return self.settings | {"train_pixel_std": noise.train_pixel_std, "noise_std": noise.std}


# The ablations by ``name``, for a shift config without ``_target_`` (written before the
# ablations were classes, or a plain mapping given to the datamodule).
ABLATIONS: dict[str, type[Ablation]] = {
    kind.name: kind for kind in (NoShift, TargetInjection, TrainingNoise)
}


def ablation(shift: Ablation | Mapping[str, Any] | None) -> Ablation:
    """The ablation that ``shift`` describes: built by Hydra from its ``_target_``, else by its
    ``name``; no shift at all is ``NoShift``."""
    if shift is None:
        return NoShift()
    if isinstance(shift, Ablation):
        return shift
    if "_target_" in shift:
        return instantiate(shift)
    settings = dict(shift)
    kind = ABLATIONS.get(settings.get("name"))
    if kind is None:
        raise ShiftlabError(
            f"shift={settings.get('name')!r} is not an ablation; choose one of {list(ABLATIONS)}."
        )
    return kind(**settings)


def training_set(
    source_train: pd.DataFrame,
    target_train: pd.DataFrame,
    shift: Ablation | Mapping[str, Any],
    split_seed: int,
    target: str = "target",
) -> TrainingSet:
    """The source's training split, with target training rows injected when the shift says so."""
    return ablation(shift).training_set(source_train, target_train, split_seed, target)
