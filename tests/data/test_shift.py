"""The ablations: target injection draws only from the target's training split, in the asked
fraction; training-image noise has the asked standard deviation, and nothing else changes."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.sets import SyntheticSet

from shiftlab.data.datamodule import ShiftDataModule
from shiftlab.data.shift import injection_sizes, stratified_order, training_set
from shiftlab.errors import ShiftlabError, instantiate
from shiftlab.train import train


def datamodule(data: SyntheticSet, tmp_path: Path, *overrides: str) -> ShiftDataModule:
    return instantiate(data.compose(tmp_path / "out", *overrides).data)


def sample_ids(frame: pd.DataFrame) -> set[str]:
    return set(frame["sample_id"])


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_injection_draws_target_train_only_in_the_asked_fraction(
    small_set: SyntheticSet, tmp_path: Path, mode: str
) -> None:
    plain = datamodule(small_set, tmp_path)
    source_train = plain.frame("ge", "train")
    target_train = plain.frame("siemens", "train")
    n = len(source_train)
    drawn = {}
    for fraction in (0.1, 0.3, 0.5):
        dm = datamodule(
            small_set,
            tmp_path,
            "shift=injection",
            f"shift.fraction={fraction}",
            f"shift.mode={mode}",
        )
        train_set = dm.training
        injected = train_set.injected
        # Only the target's training split is drawn from; nothing else of the target trains.
        assert (injected["vendor"] == "siemens").all() and (injected["split"] == "train").all()
        assert sample_ids(injected) <= sample_ids(target_train)
        trained = train_set.frame
        assert (trained["split"] == "train").all()
        assert sample_ids(trained) - sample_ids(source_train) == sample_ids(injected)
        # The requested share of the training set, with the documented sizes.
        kept, n_target = injection_sizes(n, fraction, mode)
        assert len(injected) == n_target and len(trained) == kept + n_target
        assert len(trained) == (n if mode == "replace" else n + n_target)
        assert abs(len(injected) / len(trained) - fraction) <= 1 / len(trained)
        if mode == "replace":
            assert sample_ids(train_set.dropped) == sample_ids(source_train) - sample_ids(trained)
        else:
            assert train_set.dropped.empty and sample_ids(source_train) <= sample_ids(trained)
        # Stratified by label: each class within one sample of its share of the target's train.
        share = target_train["label"].mean()
        assert abs(injected["label"].sum() - share * len(injected)) <= 1
        # The evaluation splits are those of the unshifted run, the target's test split included.
        for domain in ("ge", "siemens"):
            for split in ("val", "test"):
                assert dm.frame(domain, split).equals(plain.frame(domain, split))
        assert dm.test_domains == plain.test_domains and dm.val_domains == plain.val_domains
        drawn[fraction] = sample_ids(injected)
    # A larger fraction keeps the samples of a smaller one (same split_seed).
    assert drawn[0.1] <= drawn[0.3] <= drawn[0.5]


def test_fraction_zero_is_the_unshifted_training_set(
    small_set: SyntheticSet, tmp_path: Path
) -> None:
    plain = datamodule(small_set, tmp_path)
    zero = datamodule(small_set, tmp_path, "shift=injection", "shift.fraction=0")
    assert zero.training.frame.equals(plain.training.frame)
    assert zero.training.injected.empty and zero.training.dropped.empty


def test_injection_is_drawn_with_split_seed(small_set: SyntheticSet, tmp_path: Path) -> None:
    dm = datamodule(small_set, tmp_path)
    source, target = dm.frame("ge", "train"), dm.frame("siemens", "train")
    shift = {"name": "injection", "fraction": 0.3, "mode": "replace"}
    picks = [sample_ids(training_set(source, target, shift, seed).injected) for seed in (0, 0, 1)]
    assert picks[0] == picks[1] != picks[2]


def test_too_few_target_samples_is_a_clear_error(small_set: SyntheticSet, tmp_path: Path) -> None:
    with pytest.raises(ShiftlabError, match=r"needs \d+ target training samples.*siemens"):
        datamodule(small_set, tmp_path, "shift=injection", "shift.fraction=0.9", "shift.mode=add")
    with pytest.raises(ShiftlabError, match=r"must be in \[0, 1\)"):
        datamodule(small_set, tmp_path, "shift=injection", "shift.fraction=1.5")


def test_stratified_order_keeps_every_prefix_in_proportion() -> None:
    frame = pd.DataFrame({"label": [0] * 70 + [1] * 30, "paths": [f"p{i:03d}" for i in range(100)]})
    ordered = stratified_order(frame, np.random.default_rng(0))
    assert sorted(ordered["paths"]) == list(frame["paths"])
    positives = ordered["label"].cumsum().to_numpy()
    for k in range(1, 101):
        assert abs(positives[k - 1] - 0.3 * k) <= 1, k


def test_injected_ids_are_in_the_run_record(small_set: SyntheticSet, tmp_path: Path) -> None:
    overrides = ("shift=injection", "shift.fraction=0.2", "model=smallcnn", "trainer.max_epochs=1")
    cfg = small_set.compose(tmp_path / "out", *overrides)
    expected = instantiate(cfg.data).injection_table()
    with contextlib.redirect_stdout(io.StringIO()):
        result = train(cfg, tmp_path / "run")
    table = pd.read_csv(tmp_path / "run" / "injected.csv")
    assert set(table["role"]) == {"injected", "dropped"}
    assert set(table["sample_id"]) == set(expected["sample_id"])
    injected = table[table["role"] == "injected"]
    assert (injected["vendor"] == "siemens").all() and (injected["split"] == "train").all()
    shift = json.loads((tmp_path / "run" / "metrics.json").read_text())["shift"]
    assert shift == result["shift"]
    assert shift["name"] == "injection" and shift["target_samples"] == len(injected)
    assert shift["achieved_fraction"] == pytest.approx(0.2, abs=1 / shift["train_samples"])
    # The test predictions cover the whole target test split, as without injection.
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    target_test = small_set.manifest().query("vendor == 'siemens' and split == 'test'")
    assert set(predictions.query("domain == 'siemens'")["sample_id"]) == set(
        target_test["sample_id"]
    )


def training_batch(dm: ShiftDataModule, training: bool, epoch: int = 0) -> tuple[torch.Tensor, ...]:
    """A training batch before and after the datamodule's on-device augmentation.

    The global generator (data order, flips) is reset, so two calls see the same batch.
    """
    torch.manual_seed(0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    clean = batch["image"].clone()
    dm.trainer = SimpleNamespace(training=training, current_epoch=epoch)
    return clean, dm.on_after_batch_transfer(batch, 0)["image"]


@pytest.mark.parametrize("alpha", [5, 50])
def test_noise_std_on_a_training_batch_matches_alpha(
    small_set: SyntheticSet, tmp_path: Path, alpha: int
) -> None:
    dm = datamodule(small_set, tmp_path, "shift=noise", f"shift.alpha={alpha}", "data.hflip=false")
    clean, noisy = training_batch(dm, training=True)
    # alpha is in percent of the training images' pixel standard deviation.
    rows = dm.manifest.index.get_indexer(dm.training.frame.index)
    pixels = np.asarray(dm.arrays[np.sort(rows)], dtype=np.float64)
    assert dm.train_pixel_std == pytest.approx(pixels.std(), rel=1e-6)
    expected = alpha / 100 * pixels.std()
    assert dm.noise.std == pytest.approx(expected)
    noise = (noisy - clean).double()
    assert noise.mean().item() == pytest.approx(0.0, abs=0.02 * expected)
    assert noise.std().item() == pytest.approx(expected, rel=0.02)
    # One fixed standard deviation on every image, not a random one or a random subset.
    per_image = noise.flatten(1).std(dim=1)
    assert torch.allclose(per_image, torch.full_like(per_image, expected), rtol=0.1)


def test_noise_is_seeded_and_only_on_training_batches(
    small_set: SyntheticSet, tmp_path: Path
) -> None:
    overrides = ("shift=noise", "shift.alpha=20", "data.hflip=false")
    dm = datamodule(small_set, tmp_path, *overrides)
    clean, evaluated = training_batch(dm, training=False)
    assert torch.equal(clean, evaluated), "validation and test images get no noise"
    first = training_batch(datamodule(small_set, tmp_path, *overrides), training=True)[1]
    again = training_batch(datamodule(small_set, tmp_path, *overrides), training=True)[1]
    other_seed = training_batch(
        datamodule(small_set, tmp_path, *overrides, "seed=1"), training=True
    )[1]
    other_epoch = training_batch(
        datamodule(small_set, tmp_path, *overrides), training=True, epoch=1
    )[1]
    assert torch.equal(first, again)
    assert not torch.equal(first, other_seed) and not torch.equal(first, other_epoch)


def test_noise_alpha_zero_and_unit_reference(small_set: SyntheticSet, tmp_path: Path) -> None:
    zero = datamodule(small_set, tmp_path, "shift=noise", "shift.alpha=0")
    noisy = training_batch(zero, training=True)[1]
    flipped = training_batch(datamodule(small_set, tmp_path), training=True)[1]
    assert torch.equal(noisy, flipped), "alpha 0 is the unshifted run, flips and all"
    unit = datamodule(small_set, tmp_path, "shift=noise", "shift.alpha=30", "shift.reference=unit")
    training_batch(unit, training=True)
    assert unit.noise.std == pytest.approx(0.3)
