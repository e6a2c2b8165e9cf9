"""NoduleX: the lung-nodule patch CNN of Causey et al. (2018), as far as it could be confirmed.

Causey et al., "Highly accurate model for prediction of lung nodule malignancy with CT scans",
Scientific Reports (2018), arXiv:1802.01756; code: github.com/jcausey-astate/NoduleX_code.

Confirmed from that code (``keras_CNN/keras_retrain_model.py``, ``load_tumor_image_data.py``):

- input: 5 consecutive axial slices used as the channels of 2D convolutions (channels first),
  47x47 pixels for the published ``CNN47`` model (the script's default patch size is 21);
- intensities: HU window -1000..4096 mapped linearly to [0, 1] and clipped (``--window``);
- a Keras 1 ``Sequential`` model ending in a 2-class softmax, trained with categorical
  cross-entropy, Adadelta, batch 64, up to 200 epochs, rotations up to 180 degrees and 25 % shifts;
  the last layer before the class layer is what the scripts export as the feature vector that the
  paper combines with radiomic features in a random forest.

Not confirmed: the layer list itself. It lives only in ``data/CNN_models/CNN47.json`` of the
separately downloaded data archive, which is not in the repository, and the paper's methods text
was not among the sources searched. The training script is Keras's ``cifar10_cnn.py`` example
adapted (same variable names, same augmentation block); it imports ``Convolution2D``,
``MaxPooling2D``, ``ZeroPadding2D``, ``Dense``, ``Dropout``, ``Flatten`` but no
``BatchNormalization``, so the original most likely had no BatchNorm. Widths, kernel sizes, depth
and dropout rates are unknown.

What is built instead: that example's VGG-style pattern, one block deeper to fit 47 pixels.
Three blocks of two padded 3x3 convolutions and a 2x max-pool (widths 32, 64, 128: 47 -> 23 ->
11 -> 5), then adaptive average pooling to a fixed 3x3 grid (so any patch size works while the
coarse centre-versus-margin layout of a centred nodule survives), a dense layer with ReLU and
dropout, and one logit instead of the 2-way softmax (equivalent for BCE).

Deviations, both switchable:

- ``norm``: BatchNorm after every convolution (default on). AlexNet features trained from scratch
  on the synthetic data did not learn without it (``mrnet2d.py``); not yet measured for NoduleX.
- ``dims=3``: a true 3D variant, not in the paper. The (batch, depth, height, width) input gets a
  channel axis and runs through the same blocks with 3x3x3 convolutions. Height and width are
  pooled in every block; depth only while it is at least ``MIN_DEPTH_TO_POOL``, so a 5-slice slab
  keeps its slice resolution while a 32-voxel cube is pooled isotropically (32 -> 16 -> 8 -> 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

# Depth below which the 3D variant stops pooling the slice axis.
MIN_DEPTH_TO_POOL = 8


class NoduleX(nn.Module):
    def __init__(
        self,
        in_channels: int = 5,
        dims: int = 2,
        widths: Sequence[int] = (32, 64, 128),
        hidden: int = 256,
        grid: int = 3,
        dropout: float = 0.5,
        norm: bool = True,
    ) -> None:
        """``in_channels``: slices the 2.5D variant takes as channels; the 3D variant convolves
        across slices from a single channel, so it takes any depth and does not use it."""
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        self.dims = dims
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        batch_norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        blocks: list[nn.Module] = []
        channels = in_channels if dims == 2 else 1
        for width in widths:
            layers: list[nn.Module] = []
            for _ in range(2):
                layers.append(conv(channels, width, kernel_size=3, padding=1, bias=not norm))
                if norm:
                    layers.append(batch_norm(width))
                layers.append(nn.ReLU(inplace=True))
                channels = width
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.pool = (nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d)(grid)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * grid**dims, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 2:
            return F.max_pool2d(x, 2)
        depth_kernel = 2 if x.shape[2] >= MIN_DEPTH_TO_POOL else 1
        return F.max_pool3d(x, (depth_kernel, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, slices, height, width) -> one logit per patch, shape (batch,)."""
        if self.dims == 3:
            x = x.unsqueeze(1)
        for block in self.blocks:
            x = self._downsample(block(x))
        return self.head(self.pool(x)).squeeze(1)
