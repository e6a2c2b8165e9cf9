"""Writing DICOM files: the bytes pydicom writes, without encoding a whole dataset per file, and
never a half-written file.

A synthetic set writes thousands of files whose headers differ in a few elements (UIDs, the
instance number, the slice position, the pixels). ``DicomTemplate`` has pydicom encode one
dataset as a file (``save_as(enforce_file_format=True)``) and read it back to find where those
elements lie; each file then encodes only its own values of them (pydicom's
``write_data_element``) between the template's bytes. The file is byte for byte the one
``save_as`` writes for the same dataset (``tests/synth/test_dicom_writer.py``), at a fraction of
the cost: encoding a whole dataset was most of a synthetic set's generation time.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from shiftlab.files import write_files_via_temporary, write_via_temporary

_PREFIX = 132  # the 128-byte preamble and b"DICM"
_GROUP_LENGTH = 0x00020000  # (0002,0000) File Meta Information Group Length, UL
_GROUP_LENGTH_END = _PREFIX + 12  # explicit VR: tag 4, VR 2, length 2, value 4
# save_as copies the dataset's SOP Instance UID into the file meta (enforce_file_format).
_META_COPIES = {"SOPInstanceUID": "MediaStorageSOPInstanceUID"}


def write_dicom_atomic(ds: FileDataset, path: Path) -> None:
    """Write ``ds`` in its transfer syntax, whole or not at all (``shiftlab.files``)."""
    write_via_temporary(path, lambda temporary: ds.save_as(temporary, enforce_file_format=True))


class DicomTemplate:
    """The file ``ds.save_as(enforce_file_format=True)`` writes, with some elements left open.

    ``slots`` are the keywords of the top-level elements that each file gives its own value
    (never a sequence); ``SOPInstanceUID`` also sets the file meta's Media Storage SOP Instance
    UID, as ``save_as`` does. ``ds`` holds every element, the slots with any value of their VR:
    its other elements are encoded once, here, and shared by every file.
    """

    def __init__(self, ds: FileDataset, slots: Sequence[str]) -> None:
        encoded = DicomBytesIO()
        ds.save_as(encoded, enforce_file_format=True)
        data = encoded.getvalue()
        written = pydicom.dcmread(BytesIO(data))  # where each element lies, and its written VR
        places = []  # (start, end, keyword whose value goes there, tag, VR)
        for keyword in slots:
            places.append((*_place(written, keyword), keyword))
            if keyword in _META_COPIES:
                places.append((*_place(written.file_meta, _META_COPIES[keyword]), keyword))
        places.sort()
        group_length = int.from_bytes(data[_GROUP_LENGTH_END - 4 : _GROUP_LENGTH_END], "little")
        meta_end = _GROUP_LENGTH_END + group_length
        self._slots = frozenset(slots)
        self._places = [
            (keyword, tag, vr, start < meta_end) for start, _, tag, vr, keyword in places
        ]
        # The bytes between the slots; the group length (first in the file meta) is recomputed.
        starts = [start for start, *_ in places]
        ends = [end for _, end, *_ in places]
        self._head = data[:_PREFIX]
        self._fixed = [
            data[a:b] for a, b in zip([_GROUP_LENGTH_END, *ends], [*starts, len(data)], strict=True)
        ]
        # The group length less the meta slots' own lengths.
        self._meta_fixed = group_length - sum(
            end - start for start, end, *_ in places if start < meta_end
        )

    def encode(self, values: Mapping[str, object]) -> bytes:
        """The file's bytes with ``values`` (keyword -> value, one for every slot) in the slots."""
        if values.keys() != self._slots:
            raise ValueError(
                f"a file of this template needs values for {sorted(self._slots)}, "
                f"got {sorted(values)}"
            )
        parts = [self._head, b"", self._fixed[0]]
        meta = self._meta_fixed
        for (keyword, tag, vr, in_meta), fixed in zip(self._places, self._fixed[1:], strict=True):
            element = _element_bytes(tag, vr, values[keyword])
            meta += len(element) if in_meta else 0
            parts += (element, fixed)
        parts[1] = _element_bytes(_GROUP_LENGTH, "UL", meta)
        return b"".join(parts)


def _place(written: Dataset, keyword: str) -> tuple[int, int, int, str]:
    """Where the element ``keyword`` of a dataset read from bytes lies: start, end, tag, VR."""
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in written:
        raise ValueError(f"the template has no element {keyword!r} to leave open")
    raw = written.get_item(tag)
    if raw.VR == "SQ" or raw.length == 0xFFFFFFFF:
        raise ValueError(f"{keyword!r} is a sequence: a template leaves open plain elements only")
    header = 12 if raw.VR in EXPLICIT_VR_LENGTH_32 else 8  # explicit VR little endian
    return raw.value_tell - header, raw.value_tell + raw.length, tag, raw.VR


def _element_bytes(tag: int, vr: str, value: object) -> bytes:
    """One element as pydicom writes it (explicit VR little endian)."""
    if isinstance(value, list):
        value = tuple(value)  # hashable (a list again when encoded)
    if isinstance(value, bytes):  # pixels: never the same twice
        return _encode_element(tag, vr, value)
    return _encode_repeated_element(tag, vr, value)


def _encode_element(tag: int, vr: str, value: object) -> bytes:
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    write_data_element(
        encoded, DataElement(tag, vr, list(value) if isinstance(value, tuple) else value)
    )
    return encoded.getvalue()


# A series' UIDs recur in each of its files, slice positions and numbers in every series.
_encode_repeated_element = functools.lru_cache(maxsize=4096)(_encode_element)


def write_dicom_files(files: Iterable[tuple[Path, bytes]]) -> None:
    """Write encoded DICOM files, each whole or not at all (``shiftlab.files``)."""
    write_files_via_temporary(files)
