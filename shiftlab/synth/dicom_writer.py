"""Writing DICOM files so that an interrupted generator never leaves a half-written file."""

import os
from pathlib import Path

from pydicom.dataset import FileDataset


def write_dicom_atomic(ds: FileDataset, path: Path) -> None:
    """Write ``ds`` in its transfer syntax, via a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # concurrent generators never collide
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
