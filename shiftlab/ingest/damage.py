"""Say what is wrong with a damaged DICOM file: empty, cut short, or holding a corrupted element.

pydicom reads as far as it can and stops quietly at the end of a file, so a file cut inside its
header parses into a Dataset that merely lacks its later attributes, and a flipped byte in an
element's tag or length makes it skip to a position far past the end. Ingest asks here why a
file it cannot use is that way, so that skipped.csv says what happened rather than what is
missing as a consequence. The reasons, by kind (``shiftlab.ingest.accounting.reason_kind``):

- ``empty file``: zero bytes.
- ``truncated header``: the file ends inside its 128-byte preamble, its file meta information
  (whose length the first meta element gives, PS3.10 7.1), an element of its data set before
  the pixel data, or before an attribute it needs (elements come in ascending tag order,
  PS3.5 7.1, so a file whose last element precedes a missing tag was cut before it).
- ``truncated``: the pixel data runs past the end of the file (cut inside the pixels).
- ``corrupted element``: an element runs past the end of the file with a tag that is no DICOM
  tag, or with a length its value could not have: 2 GiB or more, or more than the largest
  single value of its VR (PS3.5 Table 6.2-1) for an attribute of value multiplicity 1 (e.g. 65519
  bytes for InstitutionName, a LO of at most 64 characters); or, in a file that lacks what it
  needs, an element whose tag is no DICOM tag (the parse went astray there).
- ``missing tag``: the file is whole, the attribute is not there.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

from pydicom.datadict import dictionary_has_tag, dictionary_VM, dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import VR

_PREAMBLE_BYTES = 128
_PREFIX = b"DICM"
# The file meta group length element (0002,0000), UL, explicit VR little endian: 12 bytes after
# the prefix; the rest of the meta information follows it (PS3.10 7.1).
_GROUP_LENGTH_ELEMENT = b"\x02\x00\x00\x00UL\x04\x00"
_META_START = _PREAMBLE_BYTES + len(_PREFIX)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_IMPLAUSIBLE_LENGTH = 1 << 31
_VRS = frozenset(VR.__members__)
_PIXEL_DATA = Tag(0x7FE0, 0x0010)
# Tag, VR, two reserved bytes and a 4-byte length: the header of an OB/OW element (PS3.5 7.1.2).
_LONG_ELEMENT_HEADER_BYTES = 12
_PIXEL_DATA_LITTLE, _PIXEL_DATA_BIG = bytes.fromhex("e07f1000"), bytes.fromhex("7fe00010")
# Largest single value of each VR with a limit, in bytes (PS3.5 Table 6.2-1; PN: three
# component groups of 64 characters and their delimiters).
_MAX_VALUE_BYTES = {
    "AE": 16,
    "AS": 4,
    "AT": 4,
    "CS": 16,
    "DA": 8,
    "DS": 16,
    "DT": 26,
    "FD": 8,
    "FL": 4,
    "IS": 12,
    "LO": 64,
    "LT": 10240,
    "PN": 194,
    "SH": 16,
    "SL": 4,
    "SS": 2,
    "ST": 1024,
    "TM": 16,
    "UI": 64,
    "UL": 4,
    "US": 2,
}


def _name(tag: BaseTag) -> str:
    keyword = keyword_for_tag(tag)
    return f"{keyword} {tag}" if keyword else str(tag)


def _plausible_tag(tag: BaseTag, ds: Dataset) -> bool:
    """A tag of the DICOM dictionary, or a private tag as PS3.5 7.8.1 allows them: in an odd
    group above 0007, a group length (gggg,0000), a private creator (gggg,0010-00FF), or a data
    element (gggg,xx00-xxFF) whose creator (gggg,00xx) the file holds."""
    if keyword_for_tag(tag):
        return True
    if not tag.group % 2 or tag.group <= 0x0007 or tag.group == 0xFFFF:
        return False
    if tag.element == 0 or _is_private_creator(tag):
        return True
    return tag.element >= 0x1000 and Tag(tag.group, tag.element >> 8) in ds


def _is_private_creator(tag: BaseTag) -> bool:
    return bool(tag.group % 2) and 0x0010 <= tag.element <= 0x00FF


def _garbled(element: RawDataElement, ds: Dataset) -> str | None:
    """What makes an element impossible whatever its length: its tag, or its VR."""
    tag = Tag(element.tag)
    if not _plausible_tag(tag, ds):
        return (
            f"corrupted element: {tag} is not a DICOM tag (its value at byte {element.value_tell})"
        )
    if element.VR is not None and element.VR not in _VRS:
        return (
            f"corrupted element: {_name(tag)} has no valid VR (its value at byte "
            f"{element.value_tell})"
        )
    return None


def _plausible_length(tag: BaseTag, length: int) -> bool:
    if length >= _IMPLAUSIBLE_LENGTH:
        return False
    if _is_private_creator(tag):  # LO, value multiplicity 1 (PS3.5 7.8.1)
        return length <= _MAX_VALUE_BYTES["LO"] + 1
    if not dictionary_has_tag(tag) or dictionary_VM(tag) != "1":
        return True
    limit = _MAX_VALUE_BYTES.get(dictionary_VR(tag))
    return limit is None or length <= limit + 1  # +1: values are padded to an even length


def not_dicom_reason(path: Path, size: int) -> str:
    """Why pydicom found no DICOM file: empty, cut inside the preamble, a damaged prefix, or
    something else."""
    if size == 0:
        return "empty file"
    with path.open("rb") as handle:
        head = handle.read(_META_START + 2)
    if head[_META_START:] == _GROUP_LENGTH_ELEMENT[:2]:
        return (
            f"corrupted element: the {_PREFIX.decode()} prefix at byte {_PREAMBLE_BYTES} is "
            "damaged (file meta information follows it)"
        )
    # A preamble is most often zeros; a file of nothing but zeros that ends before the DICM
    # prefix is a DICOM file cut short, not a stray file of another kind.
    if size < _META_START and not head.strip(b"\x00"):
        return (
            f"truncated header: the file ends at byte {size}, inside the "
            f"{_PREAMBLE_BYTES}-byte preamble"
        )
    return "not a DICOM file (no DICM prefix or file meta information)"


def _meta_problem(path: Path, size: int) -> str:
    """Why no data set was read after a file's meta information: the file ends inside it or
    right after it, or (where the pixel data's tag still follows) the meta is corrupted."""
    with path.open("rb") as handle:
        head = handle.read(_META_START + len(_GROUP_LENGTH_ELEMENT) + 4)
    if _pixel_data_tag_at(path) is not None:
        return (
            "corrupted element: no data set could be read after the file meta information, "
            "yet the file goes on to its pixel data"
        )
    if head[_PREAMBLE_BYTES:_META_START] == _PREFIX:
        group_length = head[_META_START : _META_START + len(_GROUP_LENGTH_ELEMENT)]
        if len(head) < _META_START + len(_GROUP_LENGTH_ELEMENT) + 4:
            return (
                f"truncated header: the file ends at byte {size}, inside its file meta information"
            )
        if group_length == _GROUP_LENGTH_ELEMENT:
            end = len(head) + struct.unpack("<I", head[-4:])[0]
            if end > size:
                return (
                    f"truncated header: the file ends at byte {size}, inside its file meta "
                    f"information (which runs to byte {end})"
                )
    return f"truncated header: the file ends at byte {size}, with no data set after its meta"


def _pixel_data_tag_at(path: Path, little_endian: bool | None = None) -> int | None:
    """Where the PixelData tag's bytes last occur after the preamble and prefix (in either byte
    order when the file's is not known), or None."""
    patterns = {True: [_PIXEL_DATA_LITTLE], False: [_PIXEL_DATA_BIG]}.get(
        little_endian, [_PIXEL_DATA_LITTLE, _PIXEL_DATA_BIG]
    )
    with path.open("rb") as handle:
        handle.seek(_META_START)
        data = handle.read()
    found = max(data.rfind(pattern) for pattern in patterns)
    return None if found < 0 else _META_START + found


def _overrun(path: Path, ds: Dataset, element: RawDataElement, size: int) -> str:
    """Why an element runs past the end of the file: the file was cut inside it, or its tag,
    VR or length is corrupted."""
    tag, end = Tag(element.tag), element.value_tell + element.length
    garbled = _garbled(element, ds)
    if garbled:
        return garbled
    if tag == _PIXEL_DATA:
        return f"truncated: PixelData ends at byte {end} but the file has {size} bytes"
    # A file cut inside its header ends before its pixel data. Where the pixel data was read,
    # or its tag still follows, the file is whole and this element's length is wrong (unless a
    # sequence holds it: an icon image sequence carries a PixelData of its own).
    vr = element.VR or (dictionary_VR(tag) if dictionary_has_tag(tag) else None)
    pixel_data_follows = _PIXEL_DATA in ds or (
        vr != "SQ" and _pixel_data_tag_at(path, _little_endian(ds)) is not None
    )
    if pixel_data_follows or not _plausible_length(tag, element.length):
        return (
            f"corrupted element: {_name(tag)} declares {element.length} bytes, past the end of "
            f"the file ({size} bytes)"
        )
    return f"truncated header: the file ends at byte {size}, inside {_name(tag)} (to byte {end})"


def _little_endian(ds: Dataset) -> bool | None:
    return getattr(ds, "original_encoding", (None, None))[1]


def read_error_reason(path: Path, error: Exception, message: str) -> str:
    """Why pydicom raised while reading a file (``message``: the error's text, shortened).

    A parser that runs out of bytes read a file cut inside its header, unless the file goes on
    to its pixel data: then an element's length sent the parser astray. Other errors come from
    values that cannot be decoded (an unknown VR, a length that does not fit the VR).
    """
    ran_out = isinstance(error, (EOFError, struct.error)) or "No tag to read" in message
    if ran_out:
        size = path.stat().st_size
        pixel_data_at = _pixel_data_tag_at(path)
        if pixel_data_at is None:
            where = "inside an element"
        elif size - pixel_data_at < _LONG_ELEMENT_HEADER_BYTES:
            where = "inside the PixelData element header"
        else:
            return (
                f"corrupted element: the header does not parse up to its pixel data "
                f"({type(error).__name__}: {message})"
            )
        error_text = f"{type(error).__name__}: {message}"
        return f"truncated header: the file ends at byte {size} {where} ({error_text})"
    if isinstance(error, OSError):
        return f"unreadable DICOM: {type(error).__name__}: {message}"
    return f"corrupted element: {type(error).__name__}: {message}"


def structure_damage(path: Path, ds: Dataset, size: int) -> str | None:
    """Why a parsed file is cut short or corrupted, or None when its structure is whole."""
    if not ds.keys():
        return _meta_problem(path, size)
    end: int | None = None
    # Tags, not `for element in ds`: iterating a Dataset would read the deferred values.
    for tag in sorted(ds.keys()):
        element = ds.get_item(tag, keep_deferred=True)
        if not isinstance(element, RawDataElement) or element.length == _UNDEFINED_LENGTH:
            end = None  # converted already, or its end is known only by parsing its items
            continue
        end = element.value_tell + element.length
        if end > size:
            return _overrun(path, ds, element, size)
    if end is not None and end < size and _PIXEL_DATA not in ds:
        # pydicom stops without a word where fewer bytes are left than an element header needs.
        return (
            f"truncated header: the file ends at byte {size}, inside the element header after "
            f"{_name(Tag(max(ds.keys())))}"
        )
    return None


def _stray(ds: Dataset) -> str | None:
    """The first element whose tag or VR cannot be right (where the parse went astray)."""
    for tag in sorted(ds.keys()):
        element = ds.get_item(tag, keep_deferred=True)
        if isinstance(element, RawDataElement) and _garbled(element, ds):
            return _garbled(element, ds)
    return None


def missing_reason(ds: Dataset, size: int, missing: Sequence[str]) -> str:
    """Why a whole-looking file lacks attributes it needs: cut before them, parsed astray, or
    written without them."""
    last = Tag(max(ds.keys()))
    first_missing = min(Tag(keyword) for keyword in missing)
    if _PIXEL_DATA not in ds and last < first_missing:
        return (
            f"truncated header: the file ends at byte {size}, after {_name(last)} and before "
            f"{_name(first_missing)}"
        )
    plural = "s" if len(missing) > 1 else ""
    return _stray(ds) or f"missing tag{plural} {', '.join(missing)}"


def no_pixels_reason(ds: Dataset) -> str:
    """Why a file has no PixelData: parsed astray, or not an image."""
    return _stray(ds) or "no PixelData (not an image)"
