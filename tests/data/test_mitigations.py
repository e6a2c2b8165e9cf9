"""The mitigations (conf/mitigation/, shiftlab/data/mitigation.py): each changes training or
evaluation as its paper describes and nothing else, none of them reads a target label, and
``mitigation=none`` is the run as it was (same settings hash, same predictions).

Real pieces: the tiny synthetic set generated and ingested through the real configs, Hydra
composition, the datamodule's own batches, and Lightning runs of SmallCNN.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.compose import compose_train
from helpers.sets import TINY_DATA
from omegaconf import open_dict
from torch import nn

from shiftlab.data.datamodule import ShiftDataModule
from shiftlab.data.mitigation import (
    AppearanceAugmentation,
    HistogramStandardisation,
    MixStyleTraining,
    piecewise_linear,
)
from shiftlab.errors import ShiftlabError, instantiate
from shiftlab.evaluate import check_mitigation, load_trained_run
from shiftlab.identity import settings_hash
from shiftlab.models.adabn import (
    BATCHNORM_BUFFERS,
    estimate_batchnorm_statistics,
    load_batchnorm_statistics,
)
from shiftlab.models.densenet import DenseNet121
from shiftlab.models.mixstyle import MixStyle, insert_mixstyle
from shiftlab.models.mrnet2d import MRNet2D
from shiftlab.models.nodulex import NoduleX
from shiftlab.models.smallcnn import SmallCNN
from shiftlab.train import train

METHODS = ("none", "augment", "histogram", "adabn", "mixstyle")
RUN = ("model=smallcnn", "trainer.max_epochs=1")
SOURCE, TARGET = "ge", "siemens"  # synthetic_mri's default direction
# The settings hash of the default run before mitigations existed (tests/test_config_location.py).
DEFAULT_HASH = "ae9f379d5d40"


def compose(tiny: Path, tmp_path: Path, *overrides: str):
    return compose_train(tiny / "data", tmp_path / "out", *TINY_DATA, *overrides)


def datamodule(tiny: Path, tmp_path: Path, *overrides: str) -> ShiftDataModule:
    dm = instantiate(compose(tiny, tmp_path, *overrides).data)
    dm.setup("fit")
    return dm


def cache_rows(dm: ShiftDataModule, domain: str, split: str) -> np.ndarray:
    """The cache rows of a domain's split."""
    return dm.manifest.index.get_indexer(dm.frame(domain, split).index)


def through_hooks(dm: ShiftDataModule, batch: dict, training: bool, epoch: int = 0) -> torch.Tensor:
    """A batch's images as the model gets them (``on_after_batch_transfer``)."""
    dm.trainer = SimpleNamespace(training=training, current_epoch=epoch)
    return dm.on_after_batch_transfer({**batch, "image": batch["image"].clone()}, 0)["image"]


def training_epoch(dm: ShiftDataModule, epoch: int) -> list[torch.Tensor]:
    """Every training batch of ``epoch`` as the model gets it, in the loader's order."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return [through_hooks(dm, batch, training=True, epoch=epoch) for batch in loader]


# --- none: the run as it was ---------------------------------------------------------------


def test_none_keeps_the_settings_hash_and_every_other_method_has_its_own(
    tiny: Path, tmp_path: Path
) -> None:
    plain = compose_train(tmp_path / "data", tmp_path / "out")
    assert settings_hash(plain) == DEFAULT_HASH
    explicit = compose_train(tmp_path / "data", tmp_path / "out", "mitigation=none")
    assert settings_hash(explicit) == DEFAULT_HASH
    hashes = {
        method: settings_hash(compose(tiny, tmp_path, *RUN, f"mitigation={method}"))
        for method in METHODS
    }
    assert len(set(hashes.values())) == len(METHODS)


# --- adabn -------------------------------------------------------------------------------


def test_adabn_estimate_changes_the_batchnorm_statistics_and_nothing_else() -> None:
    torch.manual_seed(0)
    net = SmallCNN(in_channels=3)
    for _ in range(3):  # statistics of a "source": unit-variance images
        net(torch.randn(8, 3, 16, 16))
    net.eval()
    before = {key: value.clone() for key, value in net.state_dict().items()}
    target = [2.0 * torch.randn(8, 3, 16, 16) + 1.0 for _ in range(3)]  # shifted and wider
    estimate = estimate_batchnorm_statistics(net, target)
    assert not net.training, "the network's modes are left as they were"
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), f"{key}: the network itself is left as it was"

    load_batchnorm_statistics(net, estimate)
    after = net.state_dict()
    changed = {key for key in after if not torch.equal(after[key], before[key])}
    statistics = {key for key in after if key.rsplit(".", 1)[-1] in BATCHNORM_BUFFERS}
    moments = {key for key in statistics if key.endswith(("running_mean", "running_var"))}
    assert moments <= changed <= statistics, "every BatchNorm mean and variance, nothing else"
    # The first BatchNorm layer's input does not depend on any other: its statistics are the
    # mean of the convolution's responses over all target images, and the mean of the batches'
    # variances (equal batch sizes, a cumulative average).
    with torch.no_grad():
        responses = [net.features[0](images) for images in target]
    expected_mean = torch.cat(responses).mean(dim=(0, 2, 3))
    expected_var = torch.stack([r.var(dim=(0, 2, 3)) for r in responses]).mean(dim=0)
    torch.testing.assert_close(after["features.1.running_mean"], expected_mean)
    torch.testing.assert_close(after["features.1.running_var"], expected_var)


def test_adabn_refuses_a_network_without_batchnorm(tiny: Path, tmp_path: Path) -> None:
    cfg = compose(tiny, tmp_path, "model=mrnet2d", "model.net.norm=false", "mitigation=adabn")
    with pytest.raises(ShiftlabError, match=r"no BatchNorm layer.*model\.net\.norm=true"):
        train(cfg, tmp_path / "run")


# --- histogram ---------------------------------------------------------------------------


def nyul_standard(images: np.ndarray, percentiles: list[float]) -> np.ndarray:
    """Nyúl–Udupa's standard landmarks written out with NumPy: each image's foreground (above its
    mean) percentiles, its ends mapped to [0, 1], averaged over the images."""
    mapped = []
    for image in images.astype(np.float64):
        marks = np.percentile(image[image > image.mean()], percentiles)
        mapped.append((marks - marks[0]) / (marks[-1] - marks[0]))
    return np.mean(mapped, axis=0)


def test_histogram_learns_its_standard_on_the_source_and_maps_every_domains_batches(
    tiny: Path, tmp_path: Path
) -> None:
    dm = datamodule(tiny, tmp_path, "mitigation=histogram")
    standardiser = dm.mitigation
    assert isinstance(standardiser, HistogramStandardisation) and standardiser.standardised
    percentiles = [1, *range(10, 100, 10), 99]
    source_train = dm.arrays[cache_rows(dm, SOURCE, "train")]
    expected = nyul_standard(np.asarray(source_train), percentiles)
    np.testing.assert_allclose(standardiser.standard.numpy(), expected, atol=1e-5)
    assert standardiser.standard[0] == 0.0 and standardiser.standard[-1] == 1.0
    # Every batch of every domain goes through it, in evaluation as in training.
    [test_batch] = list(dm.test_dataloader()[1])
    seen = through_hooks(dm, test_batch, training=False)
    torch.testing.assert_close(seen, standardiser.standardise(test_batch["image"]))
    assert not torch.equal(seen, test_batch["image"])
    record = standardiser.record()
    assert record["standard_landmarks"] == pytest.approx(list(expected), abs=1e-5)
    assert record["images_learnt_from"] == len(source_train)


def test_histogram_maps_each_images_landmarks_onto_the_standard() -> None:
    """101 pixels per image: every percentile is one of its pixels, which must land exactly on
    the standard landmark; the pixels beyond the ends continue along the end segments."""
    xray = HistogramStandardisation(
        modality="DX",
        range_percentiles=[1, 99],
        landmarks=[10, 50, 90],
        scale=[0, 1],
        pixels={"DX": "all"},
    )
    rng = np.random.default_rng(0)
    source = rng.gamma(2.0, size=(20, 1, 101)).astype(np.float32)
    xray.learn(source, np.arange(20))
    standard = xray.standard
    assert standard[0] == 0 and standard[-1] == 1 and bool((standard.diff() > 0).all())
    images = torch.from_numpy(np.stack([source[0], 3.0 * source[1] + 5.0]))  # any domain
    out = xray.standardise(images)
    for image, mapped in zip(images, out, strict=True):
        order = image.flatten().argsort()
        at_landmarks = mapped.flatten()[order[[1, 10, 50, 90, 99]]].double()
        torch.testing.assert_close(at_landmarks, standard)
        assert mapped.flatten()[order[0]] < 0 and mapped.flatten()[order[-1]] > 1


def test_histogram_leaves_ct_on_its_hounsfield_scale() -> None:
    """CT's documented equivalent: Hounsfield units are the standard scale; nothing is mapped."""
    ct = HistogramStandardisation(
        modality="CT",
        range_percentiles=[1, 99],
        landmarks=[50],
        scale=[0, 1],
        pixels={"CT": "none"},
    )
    ct.learn(np.random.default_rng(0).random((4, 5, 8, 8), dtype=np.float32), np.arange(4))
    image = torch.rand(2, 5, 8, 8)
    assert torch.equal(ct.standardise(image), image)
    assert ct.record()["standardised"] is False


def test_piecewise_linear_extends_the_end_segments() -> None:
    xp, fp = torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0.0, 0.5, 1.0])
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0])
    expected = torch.tensor([-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
    torch.testing.assert_close(piecewise_linear(x, xp, fp), expected)


# --- augment -----------------------------------------------------------------------------


def test_augment_changes_training_batches_only(tiny: Path, tmp_path: Path) -> None:
    plain = datamodule(tiny, tmp_path)
    augmented = datamodule(tiny, tmp_path, "mitigation=augment")
    assert isinstance(augmented.mitigation, AppearanceAugmentation)
    # Validation and test batches of every domain: exactly those of mitigation=none.
    for split in ("val_dataloader", "test_dataloader"):
        for ours, theirs in zip(getattr(augmented, split)(), getattr(plain, split)(), strict=True):
            for a, b in zip(ours, theirs, strict=True):
                seen = through_hooks(augmented, a, training=False)
                assert torch.equal(seen, through_hooks(plain, b, training=False))
                assert torch.equal(seen, a["image"])
    # Training batches: the same samples and flips, then appearance changes.
    changed = [
        not torch.equal(ours, theirs)
        for ours, theirs in zip(training_epoch(augmented, 0), training_epoch(plain, 0), strict=True)
    ]
    assert all(changed)
    assert augmented.mitigation.record()["noise_std"] == pytest.approx(
        augmented.mitigation.train_pixel_std
    )


def test_augment_draws_follow_seed_epoch_and_batch(tiny: Path, tmp_path: Path) -> None:
    """The same seed draws the same; a run resumed at epoch 1 draws what the run left alone drew
    in its epoch 1; another seed draws otherwise."""
    whole = datamodule(tiny, tmp_path, "mitigation=augment")
    epochs = [training_epoch(whole, 0), training_epoch(whole, 1)]
    resumed = datamodule(tiny, tmp_path, "mitigation=augment")
    for a, b in zip(training_epoch(resumed, 1), epochs[1], strict=True):
        assert torch.equal(a, b)
    again = datamodule(tiny, tmp_path, "mitigation=augment")
    assert all(torch.equal(a, b) for a, b in zip(training_epoch(again, 0), epochs[0], strict=True))
    other = datamodule(tiny, tmp_path, "mitigation=augment", "seed=1")
    assert not torch.equal(training_epoch(other, 0)[0], epochs[0][0])


# --- mixstyle ----------------------------------------------------------------------------

# Without dropout, so that a training-mode output changes only where MixStyle mixes.
NETWORKS = {
    "smallcnn": (lambda: SmallCNN(in_channels=3, dropout=0.0), (4, 3, 32, 32)),
    "mrnet2d": (lambda: MRNet2D(first_conv_stride=2), (2, 3, 64, 64)),
    "nodulex": (lambda: NoduleX(in_channels=5, dropout=0.0), (4, 5, 47, 47)),
    "nodulex3d": (lambda: NoduleX(dims=3, dropout=0.0), (2, 8, 32, 32)),
    "densenet121": (lambda: DenseNet121(), (2, 1, 64, 64)),
}


@pytest.mark.parametrize("network", list(NETWORKS))
def test_mixstyle_is_the_identity_in_eval_and_changes_features_in_training(network: str) -> None:
    make, shape = NETWORKS[network]
    torch.manual_seed(0)
    plain = make()
    mixed = make()
    mixed.load_state_dict(plain.state_dict())
    layers = insert_mixstyle(mixed, blocks=2, p=1.0, alpha=0.1)
    assert len(layers) == 2 and set(mixed.state_dict()) == set(plain.state_dict())
    images = torch.randn(*shape)
    plain.eval(), mixed.eval()
    with torch.no_grad():
        assert torch.equal(mixed(images), plain(images)), "the identity in evaluation mode"
    plain.train(), mixed.train()
    with torch.no_grad():
        torch.manual_seed(1)
        trained_plain = plain(images)
        torch.manual_seed(1)
        trained_mixed = mixed(images)
        torch.manual_seed(1)
        again = mixed(images)
    assert not torch.allclose(trained_mixed, trained_plain), "features mixed in training"
    assert torch.equal(trained_mixed, again), "its draws follow torch's seeded generator"


def test_mixstyle_mixes_statistics_between_samples() -> None:
    """Each output sample has the per-channel mean of a mix of its own and another sample's."""
    torch.manual_seed(0)
    x = torch.randn(6, 4, 8, 8) * torch.arange(1, 7).view(6, 1, 1, 1) + 3.0
    layer = MixStyle(p=1.0, alpha=0.1).train()
    out = layer(x)
    means, out_means = x.mean(dim=(2, 3)), out.mean(dim=(2, 3))
    # Every output mean lies between its own and some other sample's (a convex mix).
    for i in range(6):
        between = [
            ((out_means[i] - means[i]) * (out_means[i] - means[j]) <= 1e-5).all() for j in range(6)
        ]
        assert any(between)
    assert not torch.allclose(out, x)


# --- settings are checked when made ------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("mitigation=mixstyle", "mitigation.p=2"), r"mitigation.p=2.*\[0, 1\]"),
        (("mitigation=mixstyle", "mitigation.blocks=9"), r"blocks=9.*SmallCNN has 3"),
        (("mitigation=augment", "+mitigation.modalities.MR.blur={}"), r"names \['blur'\]"),
        (("mitigation=augment", "mitigation.modalities.MR.gibbs.alpha=[0,2]"), "RandGibbsNoise"),
        (("mitigation=histogram", "mitigation.landmarks=[50,20]"), "increasing"),
        (("mitigation=histogram", "~mitigation.pixels.MR"), r"no rule for modality 'MR'"),
    ],
)
def test_settings_that_cannot_work_are_refused_with_what_to_do(
    tiny: Path, tmp_path: Path, overrides: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ShiftlabError, match=message):
        train(compose(tiny, tmp_path, *RUN, *overrides), tmp_path / "run")


def test_mixstyle_refuses_a_network_it_does_not_know() -> None:
    with pytest.raises(ShiftlabError, match=r"early blocks of SmallCNN.*not of Sequential"):
        MixStyleTraining(p=0.5, alpha=0.1, blocks=2).network(nn.Sequential(nn.Conv2d(1, 1, 3)))


# --- runs: none of them reads a target label ---------------------------------------------


def poisoned_manifest(tiny: Path, folder: Path) -> Path:
    """The tiny set's manifest with every target label flipped (train, val and test), its hash
    recorded as ingest records it: a run that read a target label would train or test
    otherwise."""
    original = next((tiny / "data").glob("synthetic_mri/*/manifest/split_seed0"))
    shutil.copytree(original, folder)
    manifest = pd.read_csv(folder / "manifest.csv", dtype=str, keep_default_na=False)
    target = manifest["vendor"] == TARGET
    manifest.loc[target, "label"] = manifest.loc[target, "label"].map({"0": "1", "1": "0"})
    manifest.to_csv(folder / "manifest.csv", index=False)
    meta = json.loads((folder / "manifest.json").read_text())
    meta["sha256"] = hashlib.sha256((folder / "manifest.csv").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def runs(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Every method trained once on the tiny set as it is and once with the target's labels
    flipped, and the run of a config without any mitigation node (as before mitigations)."""
    base = tmp_path_factory.mktemp("mitigation-runs")
    poisoned = poisoned_manifest(tiny, base / "poisoned-manifest")
    # Caches of their own: the shared tiny set's folder is not written to.
    common = (*RUN, f"paths.cache_dir='{base / 'cache'}'")
    made = {}
    variants = {
        "labels": (),
        "flipped": (f"dataset.manifest_dir='{poisoned}'",),
    }
    with contextlib.redirect_stdout(io.StringIO()):
        for method in METHODS:
            for variant, overrides in variants.items():
                cfg = compose(tiny, base, *common, f"mitigation={method}", *overrides)
                train(cfg, base / variant / method)
                made[method, variant] = base / variant / method
        # The config as it was before mitigations: neither the group nor the datamodule's key.
        cfg = compose(tiny, base, *common, "~mitigation")
        with open_dict(cfg.data):
            del cfg.data["mitigation"]
        assert "mitigation" not in cfg and "mitigation" not in cfg.data
        train(cfg, base / "before")
        made["before", "labels"] = base / "before"
    return made


def predictions(run: Path) -> pd.DataFrame:
    frame = pd.read_csv(run / "predictions.csv")
    return frame.sort_values(["split", "domain", "sample_id"]).reset_index(drop=True)


@pytest.mark.parametrize("method", METHODS)
def test_no_method_reads_a_target_label(runs: dict, method: str) -> None:
    """Training and every prediction are those of the run whose target labels were flipped:
    only the label column (and so the target's metrics) differs."""
    honest, flipped = predictions(runs[method, "labels"]), predictions(runs[method, "flipped"])
    assert (honest["sample_id"] == flipped["sample_id"]).all()
    np.testing.assert_array_equal(honest["logit"], flipped["logit"])
    target = honest["domain"] == TARGET
    assert (honest.loc[target, "label"] != flipped.loc[target, "label"]).all()
    assert (honest.loc[~target, "label"] == flipped.loc[~target, "label"]).all()


def test_none_is_the_run_as_it_was_before_mitigations(runs: dict) -> None:
    none, before = runs["none", "labels"], runs["before", "labels"]
    np.testing.assert_array_equal(predictions(none)["logit"], predictions(before)["logit"])
    record = json.loads((none / "metrics.json").read_text())
    assert record["mitigation"] == {"name": "none", "label": "none", "transductive": False}
    assert record["config_hash"] == json.loads((before / "metrics.json").read_text())["config_hash"]


def test_adabn_changes_only_the_target_test_and_says_it_is_transductive(runs: dict) -> None:
    """Training is untouched (validation and the source's test are those of none, bit for bit);
    the target is tested with its own statistics; the record says the method is transductive."""
    none, adabn = predictions(runs["none", "labels"]), predictions(runs["adabn", "labels"])
    target = (adabn["domain"] == TARGET) & (adabn["split"] == "test")
    np.testing.assert_array_equal(adabn.loc[~target, "logit"], none.loc[~target, "logit"])
    assert not np.array_equal(adabn.loc[target, "logit"], none.loc[target, "logit"])
    record = json.loads((runs["adabn", "labels"] / "metrics.json").read_text())["mitigation"]
    assert record["name"] == "adabn" and record["transductive"] is True


@pytest.mark.parametrize("method", ["augment", "histogram", "mixstyle"])
def test_training_time_methods_are_not_transductive(runs: dict, method: str) -> None:
    record = json.loads((runs[method, "labels"] / "metrics.json").read_text())["mitigation"]
    assert record["name"] == method and record["transductive"] is False


def test_external_validation_refuses_a_run_whose_test_the_method_changes(runs: dict) -> None:
    """``python -m shiftlab.evaluate`` tests a network as it is: right for none, augment and
    mixstyle; a histogram or adabn run would give numbers its method never gives."""
    for method in ("histogram", "adabn"):
        with pytest.raises(ShiftlabError, match=f"mitigation={method}, which changes the test"):
            check_mitigation(load_trained_run(runs[method, "labels"]))
    for method in ("none", "augment", "mixstyle"):
        check_mitigation(load_trained_run(runs[method, "labels"]))
