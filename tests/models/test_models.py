"""The networks: the (batch, slices, height, width) -> (batch,) contract, gradients, configs."""

from __future__ import annotations

import copy
from pathlib import Path

import hydra
import pytest
import torch
from helpers.compose import compose_train
from omegaconf import OmegaConf
from torch import nn
from torchvision.models import densenet121

from shiftlab.config import CONF_DIR
from shiftlab.models.densenet import DenseNet121
from shiftlab.models.first_conv import adapt_first_conv
from shiftlab.models.nodulex import NoduleX
from shiftlab.models.smallcnn import SmallCNN

CASES = {
    "nodulex": (lambda: NoduleX(), (4, 5, 47, 47)),
    "nodulex3d-slab": (lambda: NoduleX(dims=3), (2, 5, 47, 47)),
    "nodulex3d-cube": (lambda: NoduleX(dims=3), (2, 32, 32, 32)),
    "densenet121": (lambda: DenseNet121(), (2, 1, 64, 64)),
    "smallcnn-ct-patch": (lambda: SmallCNN(in_channels=5), (4, 5, 47, 47)),
}


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("case", CASES)
def test_forward_gives_one_logit_and_finite_gradients(case: str) -> None:
    build, shape = CASES[case]
    net = build().train()
    logits = net(torch.rand(shape))
    assert logits.shape == (shape[0],)
    nn.functional.binary_cross_entropy_with_logits(logits, torch.rand(shape[0])).backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


def test_nodulex_3d_pools_depth_only_while_large() -> None:
    net = NoduleX(dims=3)
    slab, cube = torch.rand(1, 1, 5, 47, 47), torch.rand(1, 1, 32, 32, 32)
    for block in net.blocks:
        slab, cube = net._downsample(block(slab)), net._downsample(block(cube))
    assert slab.shape[2:] == (5, 5, 5)
    assert cube.shape[2:] == (4, 4, 4)


def test_densenet_first_conv_takes_one_channel() -> None:
    assert DenseNet121().densenet.features.conv0.in_channels == 1


def test_adapted_first_conv_is_the_rgb_model_on_grey_images() -> None:
    rgb = densenet121(weights=None).eval()
    grey = copy.deepcopy(rgb)
    grey.features.conv0 = adapt_first_conv(rgb.features.conv0, in_channels=1)
    assert torch.equal(grey.features.conv0.weight, rgb.features.conv0.weight.sum(1, keepdim=True))
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        expected = rgb(image.expand(-1, 3, -1, -1))
        assert torch.allclose(grey(image), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "cls", "dims"),
    [("nodulex", NoduleX, 2), ("nodulex3d", NoduleX, 3), ("densenet121", DenseNet121, None)],
)
def test_model_config_instantiates(name: str, cls: type, dims: int | None) -> None:
    cfg = OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")
    assert cfg.name == name
    net = hydra.utils.instantiate(cfg.net)
    assert type(net) is cls
    if dims is not None:
        assert net.dims == dims


@pytest.mark.parametrize(("dataset", "channels"), [("synthetic_mri", 3), ("synthetic_ct", 5)])
def test_smallcnn_takes_the_channels_of_the_dataset(
    dataset: str, channels: int, tmp_path: Path
) -> None:
    cfg = compose_train(tmp_path, tmp_path, f"dataset={dataset}", "model=smallcnn")
    net = hydra.utils.instantiate(cfg.model.net)
    assert net.features[0].in_channels == channels
