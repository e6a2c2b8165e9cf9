"""Decode one series from DICOM and bring it to the network's fixed input shape.

The steps are MONAI transforms where MONAI has them (resizing, intensity normalisation); only the
DICOM decoding is ours, because the slice order and file list already come from the manifest and
rescale slope/intercept must be applied per file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.transforms import NormalizeIntensity, Resize, ScaleIntensityRangePercentiles

from shiftlab.errors import ShiftlabError

INTENSITY_METHODS = ("zscore", "percentile")


def read_series(files: Sequence[Path]) -> np.ndarray:
    """Stored values -> modality values (slope/intercept applied), shape (slices, rows, cols)."""
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as error:  # any decoder or file error: say which file, then stop
            raise ShiftlabError(f"cannot decode pixels of {path}: {error}") from error
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        slices.append(pixels * slope + intercept)
    shapes = {s.shape for s in slices}
    if len(shapes) != 1:
        raise ShiftlabError(f"slices of one series differ in size {sorted(shapes)}: {files[0]}")
    return np.stack(slices)


class SeriesPreprocessor:
    """Resample a decoded series to (slices, size, size) and normalise its intensities.

    ``intensity``: ``zscore`` (per volume; MRI has no absolute scale) or ``percentile`` (robust
    0.5-99.5 percentile scaling to [0, 1], clipped).
    """

    def __init__(self, slices: int, size: int, intensity: str = "zscore") -> None:
        if intensity not in INTENSITY_METHODS:
            raise ShiftlabError(
                f"dataset.preprocess.intensity={intensity!r}; choose one of {INTENSITY_METHODS}"
            )
        self.shape = (slices, size, size)
        self.resize = Resize(spatial_size=self.shape, mode="trilinear")
        self.normalise = (
            NormalizeIntensity()
            if intensity == "zscore"
            else ScaleIntensityRangePercentiles(
                lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True
            )
        )

    @classmethod
    def from_config(cls, cfg: Mapping) -> SeriesPreprocessor:
        return cls(
            slices=int(cfg["slices"]), size=int(cfg["size"]), intensity=str(cfg["intensity"])
        )

    def __call__(self, volume: np.ndarray) -> np.ndarray:
        # MONAI transforms take channel-first arrays: add a channel axis, drop it at the end.
        image = torch.as_tensor(volume, dtype=torch.float32)[None]
        image = self.normalise(self.resize(image))
        return np.asarray(image[0], dtype=np.float32)
