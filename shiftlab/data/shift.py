"""The two ablations of the study, as changes to the training set only (``shift=`` in conf/shift/).

- **injection**: a share of the training set comes from the target domain's *train* split, drawn
  stratified by label with ``split_seed``. The target's validation and test splits, and every
  evaluation, are untouched; model selection stays on the source's validation split.
- **noise**: Gaussian noise with one fixed standard deviation is added to every training image
  (never to validation or test images), from a generator seeded by ``seed``.

``shift=none`` leaves the training set as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from shiftlab.errors import ShiftlabError
from shiftlab.seeding import NOISE_STREAM, EpochGenerator

KINDS = ("none", "injection", "noise")
MODES = ("replace", "add")
REFERENCES = ("train_std", "unit")


def check_shift(shift: Mapping[str, Any]) -> None:
    """Raise a ShiftlabError naming the valid choices when a shift setting is out of range."""
    kind = shift.get("name")
    if kind not in KINDS:
        raise ShiftlabError(f"shift={kind!r} is not an ablation; choose one of {list(KINDS)}.")
    if kind == "injection":
        fraction, mode = _number(shift, "fraction", "a share in [0, 1)"), shift["mode"]
        if mode not in MODES:
            raise ShiftlabError(f"shift.mode={mode!r}: choose one of {list(MODES)}.")
        if not 0.0 <= fraction < 1.0:
            raise ShiftlabError(
                f"shift.fraction={fraction}: the target's share must be in [0, 1) "
                "(e.g. shift.fraction=0.3; 1 would leave no source sample to train on)."
            )
    if kind == "noise":
        alpha = _number(shift, "alpha", "a strength >= 0, in percent")
        if alpha < 0:
            raise ShiftlabError(
                f"shift.alpha={shift['alpha']}: a noise strength is >= 0 (percent of "
                "shift.reference; 0 adds no noise)."
            )
        if shift["reference"] not in REFERENCES:
            raise ShiftlabError(
                f"shift.reference={shift['reference']!r}: choose one of {list(REFERENCES)}."
            )


def _number(shift: Mapping[str, Any], key: str, expected: str) -> float:
    """A shift setting as a finite number, or a ShiftlabError that says what is expected."""
    try:
        value = float(shift[key])
    except (KeyError, TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ShiftlabError(f"shift.{key}={shift.get(key)!r}: expected a number, {expected}.")
    return value


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


def training_set(
    source_train: pd.DataFrame,
    target_train: pd.DataFrame,
    shift: Mapping[str, Any],
    split_seed: int,
    target: str = "target",
) -> TrainingSet:
    """The source's training split, with target training rows injected when the shift says so.

    Rows come back ordered by file path, like every split, so the data order depends on the
    seed and not on which rows were drawn first.
    """
    empty = source_train.iloc[:0]
    if shift.get("name") != "injection":
        return TrainingSet(source_train, empty, empty)
    fraction, mode = float(shift["fraction"]), str(shift["mode"])
    n_kept, n_target = injection_sizes(len(source_train), fraction, mode)
    if n_target > len(target_train):
        hint = " or shift.mode=replace" if mode == "add" else ""
        raise ShiftlabError(
            f"injection of fraction {fraction} ({mode}) needs {n_target} target training "
            f"samples; domain {target!r} has {len(target_train)} in its train split. Use a "
            f"smaller shift.fraction{hint}."
        )
    # Separate streams for the two draws, both from split_seed (like the splits themselves).
    injected = stratified_order(target_train, np.random.default_rng([split_seed, 1]))[:n_target]
    order = stratified_order(source_train, np.random.default_rng([split_seed, 2]))
    dropped = order[: len(source_train) - n_kept]
    kept = order[len(dropped) :]
    frame = pd.concat([kept, injected]).sort_values("paths")
    return TrainingSet(frame, injected.sort_values("paths"), dropped.sort_values("paths"))


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


def noise_std(alpha: float, reference: str, train_std: float) -> float:
    """alpha in percent of the reference: the training pixels' std, or 1.0 (``unit``)."""
    return alpha / 100.0 * (train_std if reference == "train_std" else 1.0)


class TrainingNoise:
    """Adds N(0, std²) to every pixel of every training image.

    The generator restarts from (seed, epoch) at each epoch, so the noise of an epoch is the
    same whether or not the run was interrupted and resumed before it.
    """

    def __init__(self, std: float, seed: int) -> None:
        self.std, self.seed = float(std), int(seed)
        self._generator_for = EpochGenerator(seed, NOISE_STREAM)

    def __call__(self, image: torch.Tensor, epoch: int) -> torch.Tensor:
        if self.std == 0.0:
            return image
        generator = self._generator_for(image.device, epoch)
        noise = torch.randn(
            image.shape, generator=generator, device=image.device, dtype=image.dtype
        )
        return image + self.std * noise
