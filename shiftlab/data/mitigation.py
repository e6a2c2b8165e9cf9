"""The mitigations: published remedies for the drop, one per run (``mitigation=`` in
conf/mitigation/), composable with every ablation (``shift=``), dataset and network.

Each mitigation is a class that Hydra builds from its config (``_target_``); like an ablation
(``shiftlab.data.shift``) it checks its settings when it is made (a ShiftlabError names the key,
what it takes and what to do) and acts through its methods, which the datamodule and the
training spine call:

- ``NoMitigation`` (``mitigation=none``): empirical risk minimisation, the run as it always was.
- ``AppearanceAugmentation`` (``augment``): MONAI's intensity transforms on the source training
  images, on the fly (BigAug; ``augment``).
- ``HistogramStandardisation`` (``histogram``): Nyúl–Udupa landmarks learnt on the source's
  training split, every domain's images mapped to them (``standardise``).
- ``AdaBN`` (``adabn``): BatchNorm statistics re-estimated on each test domain's images before it
  is tested (``test_callbacks``); transductive.
- ``MixStyleTraining`` (``mixstyle``): feature statistics mixed in the network's early blocks
  while training (``network``).

None of them reads a label: what a mitigation sees of the data is images (the cache's arrays, a
batch's ``image``). ``record`` is the run record's ``mitigation``: ``name``, ``label``,
``transductive`` (whether the test images themselves changed the model, as AdaBN's do) and the
settings and what was learnt from the images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch import nn

from shiftlab.data.shift import pixel_std
from shiftlab.errors import ShiftlabError, instantiate, setting_number
from shiftlab.models.adabn import TestDomainBatchNorm, batchnorm_layers
from shiftlab.models.mixstyle import early_blocks, insert_mixstyle
from shiftlab.seeding import AUGMENT_STREAM, derived_seed

# augment: config key -> MONAI transform, in the order they apply (acquisition, contrast,
# resolution, noise), whatever the order of the config.
TRANSFORMS = {
    "bias_field": "RandBiasField",
    "gibbs": "RandGibbsNoise",
    "contrast": "RandAdjustContrast",
    "histogram_shift": "RandHistogramShift",
    "smooth": "RandGaussianSmooth",
    "sharpen": "RandGaussianSharpen",
    "noise": "RandGaussianNoise",
}
NOISE_REFERENCES = ("train_std", "unit")
# histogram, per modality: which pixels of an image its landmarks are read from (none: the
# modality's intensities are a standard scale already, and nothing is mapped).
PIXELS = ("above_mean", "all", "none")
# Images read from the cache at a time while landmarks are learnt.
CHUNK = 256


def _plain(value: Any) -> Any:
    """Settings as plain lists and dicts (a config's ListConfig and DictConfig included)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


class Mitigation:
    """What a mitigation changes in a run; this base changes nothing. Each mitigation says what
    it changes by overriding the methods below, and checks its settings in ``__init__``, which
    ends with ``_keep``."""

    name: ClassVar[str]
    # Whether the test images themselves (never their labels) change the model tested.
    transductive: ClassVar[bool] = False

    def _keep(self, **settings: Any) -> None:
        """Keep the settings as the config gave them (a key it left out stays out), once
        checked to be this mitigation's."""
        if settings["name"] != self.name:
            raise ShiftlabError(
                f"mitigation.name={settings['name']!r}, but mitigation._target_ builds "
                f"{type(self).__name__}, the mitigation named {self.name!r}. Choose the "
                f"mitigation with mitigation=<name> ({list(MITIGATIONS)}) and leave "
                "mitigation.name as it is."
            )
        self.settings = {key: _plain(v) for key, v in settings.items() if v is not None}

    def learn(self, arrays: np.ndarray, rows: np.ndarray) -> None:
        """Learn what the mitigation needs from the images of the source's training split: the
        cache's ``arrays`` at ``rows``. Called once the cache is built, before training."""

    def standardise(self, image: torch.Tensor) -> torch.Tensor:
        """Every batch of every domain and split, training included, before anything else."""
        return image

    def augment(self, image: torch.Tensor, epoch: int) -> torch.Tensor:
        """Training batches only, after the random flips."""
        return image

    def network(self, net: nn.Module) -> nn.Module:
        """The network the run trains, changed (or refused) by the mitigation."""
        return net

    def test_callbacks(self) -> list[L.Callback]:
        """Lightning callbacks of the trainer that tests the selected checkpoint."""
        return []

    def record(self) -> dict[str, Any]:
        """The mitigation as it was applied, for the run record's ``mitigation``."""
        return {**self.settings, "transductive": self.transductive}


class NoMitigation(Mitigation):
    """``mitigation=none``: empirical risk minimisation on the source, as shiftlab always did."""

    name: ClassVar[str] = "none"

    def __init__(self, *, name: str = "none", label: str | None = None) -> None:
        self._keep(name=name, label=label)


class AppearanceAugmentation(Mitigation):
    """``mitigation=augment``: random appearance changes of the source training images.

    Reference: Zhang et al., "Generalizing Deep Learning for Medical Image Segmentation to Unseen
    Domains via Deep Stacked Transformation" (BigAug), IEEE TMI 39(7), 2020. BigAug stacks nine
    transformations, each applied with probability 0.5: image quality (sharpness, blurriness,
    noise), appearance (brightness, contrast, intensity perturbation) and spatial ones. The
    paper's own table was not among the sources searched; its ranges as an unofficial
    reimplementation gives them (github.com/kari-jg/BigAug_torchio, ``apply_BigAug.py``): blur σ
    0.25-1.5, sharpening σ₁, σ₂ 0.25-1.5 and α 10-30, Gaussian noise σ 0.1-1 on z-normalised
    images, gamma 0.5-4.5. MONAI's RandGaussianSmooth, RandGaussianSharpen and
    RandAdjustContrast have these ranges as their defaults.

    What shiftlab does where the paper is silent or does not apply:

    - appearance only: the issue is the scanner's appearance, and random flips are already on;
      MONAI's transforms for what a scanner changes (bias field, Gibbs ringing, gamma, histogram
      shift, smoothing, sharpening, noise), with BigAug's ranges where it has the transform and
      MONAI's defaults elsewhere, except Gibbs ringing's α, at most 0.5 (MONAI allows 1, which
      leaves only the centre of k-space at 64 pixels);
    - per modality, the transforms its physics produces (``modalities`` in the config): MR all
      seven; CT, whose Hounsfield units are calibrated, only smoothing, sharpening and noise
      (reconstruction kernels and dose); X-ray (DX, CR, MG) all but Gibbs ringing (the vendor's
      display processing, the heel effect, detail enhancement, quantum noise);
    - the noise's σ in units of the training pixels' standard deviation (``reference:
      train_std``, as ``shift=noise`` measures it): BigAug's σ is in units of z-normalised
      intensities, while shiftlab's CT and X-ray images are on their window's [0, 1] scale;
    - applied on the fly to the training batches after the preprocessing cache (the cache and
      every validation and test batch stay as they are), per sample, the sample's slices or
      channels as the channels of one 2D image: each transform acts in-plane, with one draw for
      the whole sample, as a scanner changes a whole series alike;
    - the draws follow ``shiftlab.seeding``: each training batch's from (seed, epoch, batch),
      so a run resumed at an epoch draws what the run left alone drew.
    """

    name: ClassVar[str] = "augment"

    def __init__(
        self,
        *,
        name: str = "augment",
        modality: str | None,
        seed: int,
        prob: float,
        modalities: Mapping[str, Mapping[str, Mapping[str, Any]]],
        label: str | None = None,
    ) -> None:
        self.prob = setting_number(prob, "mitigation.prob", "a probability in [0, 1]")
        if not 0.0 <= self.prob <= 1.0:
            raise ShiftlabError(f"mitigation.prob={prob}: a probability is in [0, 1].")
        modalities = _plain(modalities)
        if modality not in modalities:
            raise ShiftlabError(
                f"mitigation=augment has no transforms for modality {modality!r} (it has them "
                f"for {sorted(modalities)}). Give them, e.g. "
                f"+mitigation.modalities.{modality}='${{mitigation.modalities.MR}}'."
            )
        self.modality, self.seed = str(modality), int(seed)
        self.transforms: dict[str, dict[str, Any]] = dict(modalities[modality] or {})
        unknown = sorted(set(self.transforms) - set(TRANSFORMS))
        if unknown:
            raise ShiftlabError(
                f"mitigation.modalities.{modality} names {unknown}; the transforms are "
                f"{list(TRANSFORMS)}."
            )
        noise = self.transforms.get("noise", {})
        if noise.get("reference", "train_std") not in NOISE_REFERENCES:
            raise ShiftlabError(
                f"mitigation.modalities.{modality}.noise.reference={noise['reference']!r}: "
                f"choose one of {list(NOISE_REFERENCES)}."
            )
        self.train_pixel_std: float | None = None
        self.compose, _ = self._compose(noise_scale=1.0)  # checks every transform's settings
        self.noise_std: float | None = None  # the noise's σ once the training pixels are measured
        self._epoch: int | None = None
        self._batch = 0
        self._keep(name=name, modality=modality, prob=prob, modalities=modalities, label=label)

    def _compose(self, noise_scale: float) -> tuple[Any, float | None]:
        """The MONAI transforms of this modality, in ``TRANSFORMS`` order, and the noise's σ:
        the configured one, multiplied by ``noise_scale`` where its reference is train_std."""
        from monai import transforms  # a run without augmentation never imports MONAI

        chain, noise_std = [], None
        for key, class_name in TRANSFORMS.items():
            if key not in self.transforms:
                continue
            settings = {"prob": self.prob, **(self.transforms[key] or {})}
            if key == "noise":
                reference = settings.pop("reference", "train_std")
                scale = noise_scale if reference == "train_std" else 1.0
                settings["std"] = noise_std = float(settings.get("std", 0.1)) * scale
            try:
                chain.append(getattr(transforms, class_name)(**settings))
            except (TypeError, ValueError, AssertionError) as error:
                raise ShiftlabError(
                    f"mitigation.modalities.{self.modality}.{key}={self.transforms[key]}: "
                    f"MONAI's {class_name} refuses them ({error}). See its documentation for "
                    "the settings it takes."
                ) from None
        return transforms.Compose(chain), noise_std

    def learn(self, arrays: np.ndarray, rows: np.ndarray) -> None:
        self.train_pixel_std = pixel_std(arrays, rows)
        self.compose, self.noise_std = self._compose(noise_scale=self.train_pixel_std)

    def augment(self, image: torch.Tensor, epoch: int) -> torch.Tensor:
        from monai.utils import convert_to_tensor

        if epoch != self._epoch:
            self._epoch, self._batch = epoch, 0
        self.compose.set_random_state(
            seed=derived_seed(self.seed, epoch, self._batch, AUGMENT_STREAM)
        )
        self._batch += 1
        samples = [self.compose(sample) for sample in image]
        out = torch.stack([convert_to_tensor(s, track_meta=False) for s in samples])
        return out.to(device=image.device, dtype=image.dtype)

    def record(self) -> dict[str, Any]:
        """The settings with this modality's transforms only (in the order they apply)."""
        applied = {key: self.transforms[key] for key in TRANSFORMS if key in self.transforms}
        settings = {key: value for key, value in super().record().items() if key != "modalities"}
        return settings | {
            "transforms": applied,
            "train_pixel_std": self.train_pixel_std,
            "noise_std": self.noise_std,
        }


def landmarks_of(images: torch.Tensor, quantiles: torch.Tensor, pixels: str) -> torch.Tensor:
    """Each image's intensities at ``quantiles`` (in [0, 1]; linear between order statistics,
    as ``torch.quantile``), read from its pixels above its mean (``above_mean``: Nyúl–Udupa's
    foreground; every pixel of a constant image) or from every pixel (``all``).
    ``images``: (batch, ...) -> (batch, len(quantiles)), float64.

    The whole batch at once: the pixels above an image's mean are the top of its sorted values,
    so its quantiles are read from that end of the sorted row."""
    values = images.flatten(1).double()
    ordered = values.sort(dim=1).values
    n = values.shape[1]
    start = torch.zeros(len(values), dtype=torch.long, device=values.device)
    if pixels == "above_mean":
        start = (values <= values.mean(dim=1, keepdim=True)).sum(dim=1)
        start = torch.where(start < n, start, 0)
    quantiles = quantiles.to(device=values.device, dtype=torch.float64)
    position = start[:, None] + quantiles[None, :] * (n - start - 1)[:, None]
    low = position.floor().long()
    high = position.ceil().long()
    fraction = position - low
    return ordered.gather(1, low) * (1 - fraction) + ordered.gather(1, high) * fraction


def piecewise_linear(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """``fp[..., i]`` at ``xp[..., i]`` (increasing along the last axis), linear in between and
    beyond the ends along the first and last segments; a segment of zero width (tied landmarks)
    maps flat. ``x``: (..., N) with ``xp``: (..., K); ``fp``: (K,) or like ``xp``."""
    fp = fp.expand_as(xp)
    index = torch.searchsorted(xp[..., 1:-1].contiguous(), x.contiguous(), right=True)
    x0, x1 = xp.gather(-1, index), xp.gather(-1, index + 1)
    y0, y1 = fp.gather(-1, index), fp.gather(-1, index + 1)
    width = x1 - x0
    slope = torch.where(width > 0, (y1 - y0) / torch.where(width > 0, width, 1.0), 0.0)
    return y0 + slope * (x - x0)


class HistogramStandardisation(Mitigation):
    """``mitigation=histogram``: every image's intensities mapped to one standard histogram.

    Reference: Nyúl, Udupa and Zhang, "New variants of a method of MRI scale standardization",
    IEEE TMI 19(2), 2000 (after Nyúl and Udupa, "On standardizing the MR image intensity
    scale", Magn Reson Med 42(6), 1999). Training: each image's landmarks (percentiles of its
    foreground intensities: the ends ``range_percentiles`` and, between them, the ``landmarks``,
    deciles by default) are mapped linearly so that its ends fall on the ``scale`` ends; the
    standard landmarks are their means over the training images. Transformation: an image's own
    landmarks are mapped piecewise linearly onto the standard ones. As implemented by
    github.com/jcreinhold/intensity-normalization (``normalize/nyul.py``: ends 1 and 99, deciles;
    ``normalize/base.py``: foreground = pixels above the image's mean).

    What shiftlab does where the paper is silent or does not apply (``pixels``, per modality):

    - learnt on the source domain's training split (never a target image), applied on the fly
      to every batch of every domain after the preprocessing cache (after MR's per-volume
      z-score), on the device;
    - the standard scale is [0, 1] (the paper's is 1-4095, a 12-bit image's), the network's
      input; intensities beyond the ends continue along the first and last segments;
    - MR: landmarks over the foreground, the pixels above the image's mean (``above_mean``);
    - X-ray (DX, CR, MG): its grey levels are each vendor's display processing, with no
      absolute scale either, so the same standardisation applies, with landmarks over every
      pixel (``all``): a radiograph's dark lung fields are content, not background;
    - CT (``none``): Hounsfield units are the standard scale already (water 0, air -1000 on
      every calibrated scanner), windowed alike for every vendor by the preprocessing; that is
      Nyúl–Udupa's goal reached by calibration, so nothing is learnt or mapped (a learnt map
      would undo the calibration), the images stay as they are, the console and the record say
      so (``standardised: false``), and the run is the ``none`` run under another name.
    """

    name: ClassVar[str] = "histogram"

    def __init__(
        self,
        *,
        name: str = "histogram",
        modality: str | None,
        range_percentiles: Sequence[float],
        landmarks: Sequence[float],
        scale: Sequence[float],
        pixels: Mapping[str, str],
        label: str | None = None,
    ) -> None:
        pixels = _plain(pixels)
        if modality not in pixels:
            raise ShiftlabError(
                f"mitigation=histogram has no rule for modality {modality!r} (it has one for "
                f"{sorted(pixels)}). Give one: +mitigation.pixels.{modality}="
                f"<{' | '.join(PIXELS)}>."
            )
        if pixels[modality] not in PIXELS:
            raise ShiftlabError(
                f"mitigation.pixels.{modality}={pixels[modality]!r}: choose one of {list(PIXELS)}."
            )
        ends = [
            setting_number(v, "mitigation.range_percentiles", "a percentile")
            for v in range_percentiles
        ]
        inner = [setting_number(v, "mitigation.landmarks", "a percentile") for v in landmarks]
        percentiles = [ends[0], *inner, ends[-1]] if len(ends) == 2 else []
        if not percentiles or not all(0 <= a < b <= 100 for a, b in pairwise(percentiles)):
            raise ShiftlabError(
                f"mitigation.range_percentiles={list(range_percentiles)} and "
                f"mitigation.landmarks={list(landmarks)}: expected two ends and landmarks "
                "between them, increasing, in [0, 100] (e.g. [1, 99] and the deciles)."
            )
        bounds = [setting_number(v, "mitigation.scale", "an intensity") for v in scale]
        if len(bounds) != 2 or not bounds[0] < bounds[1]:
            raise ShiftlabError(f"mitigation.scale={list(scale)}: expected [low, high], low < high")
        self.modality, self.pixels = modality, str(pixels[modality])
        self.quantiles = torch.tensor(percentiles, dtype=torch.float64) / 100
        self.scale = (bounds[0], bounds[1])
        self.standard: torch.Tensor | None = None
        self.images_learnt_from = 0
        self._keep(
            name=name,
            modality=modality,
            range_percentiles=range_percentiles,
            landmarks=landmarks,
            scale=scale,
            pixels=pixels,
            label=label,
        )

    @property
    def standardised(self) -> bool:
        """Whether this modality's images are mapped (not those on a standard scale already)."""
        return self.pixels != "none"

    def landmarks(self, images: torch.Tensor) -> torch.Tensor:
        """Each image's landmarks, ends included: (batch, ...) -> (batch, landmarks), float64."""
        return landmarks_of(images, self.quantiles, self.pixels)

    def learn(self, arrays: np.ndarray, rows: np.ndarray) -> None:
        """The standard landmarks: each training image's landmarks with its ends mapped to the
        scale's, averaged. An image whose ends coincide (no spread) tells nothing, and is left
        out."""
        if not self.standardised:
            print(
                f"mitigation=histogram: {self.modality} intensities are on a standard scale "
                "already (Hounsfield units); the images are left as they are."
            )
            return
        low, high = self.scale
        total, used = torch.zeros(len(self.quantiles), dtype=torch.float64), 0
        rows = np.sort(np.asarray(rows))
        for start in range(0, len(rows), CHUNK):
            block = np.asarray(arrays[rows[start : start + CHUNK]])
            marks = self.landmarks(torch.from_numpy(block))
            spread = marks[:, -1:] - marks[:, :1]
            kept = spread[:, 0] > 0
            scaled = low + (marks[kept] - marks[kept, :1]) / spread[kept] * (high - low)
            total += scaled.sum(dim=0)
            used += int(kept.sum())
        if not used:
            raise ShiftlabError(
                f"mitigation=histogram: none of the {len(rows)} source training images has "
                "intensities spread between its range_percentiles; there is no histogram to learn."
            )
        self.standard, self.images_learnt_from = total / used, used

    def standardise(self, image: torch.Tensor) -> torch.Tensor:
        if not self.standardised:
            return image
        if self.standard is None:
            raise RuntimeError("HistogramStandardisation.learn must run before standardise")
        marks = self.landmarks(image)
        mapped = piecewise_linear(image.flatten(1).double(), marks, self.standard.to(marks.device))
        return mapped.view_as(image).to(image.dtype)

    def record(self) -> dict[str, Any]:
        """The settings with this modality's pixel rule only, and what was learnt."""
        standard = None if self.standard is None else [float(v) for v in self.standard]
        return super().record() | {
            "pixels": self.pixels,
            "standardised": self.standardised,
            "standard_landmarks": standard,
            "images_learnt_from": self.images_learnt_from,
        }


class AdaBN(Mitigation):
    """``mitigation=adabn``: each test domain tested with BatchNorm statistics re-estimated on
    its own unlabelled test images (``shiftlab.models.adabn``: Li et al. 2016, and what shiftlab
    does where they are silent). Transductive: the test images themselves, never their labels,
    change the model tested. A network without BatchNorm is refused."""

    name: ClassVar[str] = "adabn"
    transductive: ClassVar[bool] = True

    def __init__(self, *, name: str = "adabn", label: str | None = None) -> None:
        self._keep(name=name, label=label)

    def network(self, net: nn.Module) -> nn.Module:
        if not batchnorm_layers(net):
            raise ShiftlabError(
                f"mitigation=adabn re-estimates BatchNorm statistics, and the network "
                f"({type(net).__name__}) has no BatchNorm layer (MRNet2D with pretrained weights "
                "and model.net.norm=null, or NoduleX with model.net.norm=false, have none). Turn "
                "BatchNorm on with model.net.norm=true, or choose another mitigation "
                "(augment, histogram, mixstyle)."
            )
        return net

    def test_callbacks(self) -> list[L.Callback]:
        return [TestDomainBatchNorm()]


class MixStyleTraining(Mitigation):
    """``mitigation=mixstyle``: MixStyle layers after the network's first ``blocks`` blocks,
    active while training, the identity in evaluation (``shiftlab.models.mixstyle``: Zhou et
    al. 2021, and what shiftlab does where they are silent)."""

    name: ClassVar[str] = "mixstyle"

    def __init__(
        self,
        *,
        name: str = "mixstyle",
        p: float,
        alpha: float,
        blocks: int,
        label: str | None = None,
    ) -> None:
        self.p = setting_number(p, "mitigation.p", "a probability in [0, 1]")
        self.alpha = setting_number(
            alpha, "mitigation.alpha", "a Beta distribution's parameter > 0"
        )
        if not 0.0 <= self.p <= 1.0:
            raise ShiftlabError(f"mitigation.p={p}: a probability is in [0, 1].")
        if self.alpha <= 0:
            raise ShiftlabError(f"mitigation.alpha={alpha}: Beta(alpha, alpha) needs alpha > 0.")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            raise ShiftlabError(
                f"mitigation.blocks={blocks!r}: the number of early blocks to follow, >= 1 "
                "(2: after the first and second, as Zhou et al. place it)."
            )
        self.blocks = blocks
        self._keep(name=name, p=p, alpha=alpha, blocks=blocks, label=label)

    def network(self, net: nn.Module) -> nn.Module:
        try:
            available = len(early_blocks(net))
        except ValueError as error:
            raise ShiftlabError(
                f"mitigation=mixstyle: {error}. Use one of these networks, or another mitigation."
            ) from None
        if self.blocks > available:
            raise ShiftlabError(
                f"mitigation.blocks={self.blocks}: {type(net).__name__} has {available} early "
                f"blocks to follow. Use mitigation.blocks=1 to {available}."
            )
        insert_mixstyle(net, self.blocks, self.p, self.alpha)
        return net


# The mitigations by ``name``, for a mitigation config without ``_target_`` (a plain mapping
# given to the datamodule).
MITIGATIONS: dict[str, type[Mitigation]] = {
    kind.name: kind
    for kind in (
        NoMitigation,
        AppearanceAugmentation,
        HistogramStandardisation,
        AdaBN,
        MixStyleTraining,
    )
}


def mitigation_from(config: Mitigation | Mapping[str, Any] | None) -> Mitigation:
    """The mitigation that ``config`` describes: built by Hydra from its ``_target_``, else by
    its ``name``; none at all is ``NoMitigation``."""
    if config is None:
        return NoMitigation()
    if isinstance(config, Mitigation):
        return config
    if "_target_" in config:
        return instantiate(config)
    settings = dict(config)
    kind = MITIGATIONS.get(settings.get("name"))
    if kind is None:
        raise ShiftlabError(
            f"mitigation={settings.get('name')!r} is not a mitigation; choose one of "
            f"{list(MITIGATIONS)}."
        )
    return kind(**settings)
