"""Writing DICOM files: the bytes pydicom writes, without encoding a whole dataset per file, and
never a half-written file.

A synthetic set writes thousands of files whose headers differ in a few elements (UIDs, the
instance number, the slice position, the pixels). ``DicomTemplate`` has pydicom encode one
dataset as a file (``save_as(enforce_file_format=True)``) and read it back to find where those
elements lie; each file then encodes only its own values of them between the template's bytes,
as pydicom's ``write_data_element`` would. The file is byte for byte the one ``save_as`` writes
for the same dataset (``tests/synth/test_dicom_writer.py``), at a fraction of the cost: encoding
a whole dataset per file was about half of a synthetic set's generation time.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from shiftlab.files import write_via_temporary

_PREFIX = 132  # the 128-byte preamble and b"DICM"
_GROUP_LENGTH = 0x00020000  # (0002,0000) File Meta Information Group Length, UL
_GROUP_LENGTH_END = _PREFIX + 12  # explicit VR: tag 4, VR 2, length 2, value 4
# save_as copies the dataset's SOP Instance UID into the file meta (enforce_file_format).
_META_COPIES = {"SOPInstanceUID": "MediaStorageSOPInstanceUID"}
_PLAIN_TEXT = ("AE", "CS", "LO", "SH")  # text pydicom writes as it is, padded with a space


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
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax != ExplicitVRLittleEndian:
            raise ValueError(
                f"a template encodes explicit VR little endian, the dataset's transfer syntax is "
                f"{syntax!r}: set ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian"
            )
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
    """One element as pydicom writes it (explicit VR little endian).

    The values a synthetic file gives its slots (UIDs, IDs, instance numbers, positions as
    floats, pixels) are encoded here as pydicom's ``write_data_element`` encodes them, which
    costs a few microseconds instead of tens; any other value is left to pydicom.
    """
    data = _plain_value(vr, value)
    long_length = vr in EXPLICIT_VR_LENGTH_32
    if data is None or (not long_length and len(data) > 0xFFFF):
        encoded = DicomBytesIO()
        encoded.is_little_endian, encoded.is_implicit_VR = True, False
        write_data_element(encoded, DataElement(tag, vr, value))
        return encoded.getvalue()
    if long_length:
        header = struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(data))
    else:
        header = struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(data))
    return header + data


def _plain_value(vr: str, value: object) -> bytes | None:
    """The value field pydicom writes for a plain value of a few VRs (padded to even length:
    NUL for UI and bytes, a space for text and decimal strings; UL in 4 bytes); None for any
    other."""
    if vr in ("OB", "OW") and isinstance(value, bytes):
        return value + b"\0" if len(value) % 2 else value
    if vr == "UL" and type(value) is int and 0 <= value < 2**32:
        return value.to_bytes(4, "little")
    if vr == "UI" and isinstance(value, str) and value.isascii():
        text, pad = value, b"\0"
    elif vr in _PLAIN_TEXT and isinstance(value, str) and value.isascii() and "\\" not in value:
        text, pad = value, b" "
    elif vr == "IS" and type(value) is int:
        text, pad = str(value), b" "
    elif vr == "DS" and (numbers := _plain_floats(value)) is not None:
        text, pad = "\\".join(numbers), b" "  # a DS of a float is written as its repr
    else:
        return None
    data = text.encode("ascii")
    return data + pad if len(data) % 2 else data


def _plain_floats(value: object) -> list[str] | None:
    """The reprs of a float or a list of floats, each a valid DS (at most 16 characters)."""
    values = value if isinstance(value, list) else [value]
    if not values or any(type(number) is not float for number in values):
        return None
    numbers = [repr(number) for number in values]
    return numbers if all(len(number) <= 16 for number in numbers) else None
