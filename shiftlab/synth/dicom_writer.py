"""Writing DICOM files so that an interrupted generator never leaves a half-written file."""

from pathlib import Path

from pydicom.dataset import FileDataset

from shiftlab.files import write_via_temporary


def write_dicom_atomic(ds: FileDataset, path: Path) -> None:
    """Write ``ds`` in its transfer syntax, whole or not at all (``shiftlab.files``)."""
    write_via_temporary(path, lambda temporary: ds.save_as(temporary, enforce_file_format=True))
