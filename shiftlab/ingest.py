"""Ingest: turn a DICOM tree and the dataset's label file into the manifest.

This is the only stage that reads DICOM headers. It must survive real downloads: any folder
layout, any file names, stray non-DICOM files, half-downloaded or damaged files, files without
pixel data or without a decoder for their compression, duplicates, and series that mix
modalities or slice geometries. A file that cannot be used is skipped and listed with its reason
in skipped.csv (counted by kind in manifest.json); no file stops the run. Every scanned file ends
up in a sample, in skipped.csv, or in a series listed in unused.csv (no label, not chosen);
samples kept with a caveat (vendor unknown, uneven slice spacing) are listed in flagged.csv.

    python -m shiftlab.ingest dataset=<name> [split_seed=N]
"""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import hydra
import numpy as np
import pandas as pd
import pydicom
from omegaconf import DictConfig, OmegaConf
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID
from tqdm import tqdm

from shiftlab.config import CONF_DIR, register_resolvers
from shiftlab.data.multiframe import (
    frame_attributes,
    frames_problem,
    is_multiframe,
    number_of_frames,
)
from shiftlab.dicom_damage import (
    missing_reason,
    no_pixels_reason,
    not_dicom_reason,
    read_error_reason,
    structure_damage,
)
from shiftlab.domains import usable_domains, usable_pairs
from shiftlab.errors import ShiftlabError, exit_on_user_error, instantiate
from shiftlab.files import is_temporary
from shiftlab.labels import FILE_STEM, LabelledSample, LabelTable
from shiftlab.manifest import (
    COLUMNS,
    PATH_SEPARATOR,
    ManifestInfo,
    assign_splits,
    count_table,
    csv_bytes,
    write_if_changed,
    write_manifest,
)
from shiftlab.pseudonym import load_or_create_key, pseudonym
from shiftlab.reader_warnings import reader_warnings
from shiftlab.vendors import UNKNOWN, normalise_vendor

SKIPPED_NAME = "skipped.csv"
# Series scanned but not made into samples (no label, not chosen, every sample dropped): one row
# per series with its first file and file count, so that every scanned file is accounted for.
UNUSED_NAME = "unused.csv"
# Series made into samples with a caveat (vendor unknown, uneven slice spacing).
FLAGGED_NAME = "flagged.csv"
# Every file must have these; PatientID may be empty when the label file names the patient.
# An image that is a sample of its own (group_by SOPInstanceUID) needs none: releases
# de-identified down to their pixel attributes keep no UIDs (VinDr-CXR), and its file identifies it.
_REQUIRED_TAGS = ("StudyInstanceUID", "SeriesInstanceUID")
# The source_uid of an image without SOPInstanceUID: its path, after this prefix.
_BY_FILE = "file:"
# How files are grouped into sample sources: a series (MRI, CT) or each image on its own
# (radiographs and mammograms, where one series can hold several views).
GROUP_BY = ("SeriesInstanceUID", "SOPInstanceUID")
SERIES_PER_KEY = ("all", "most_slices", "fewest_slices")
# Written last by a twin generator: a twin without it is incomplete and generated again.
TWIN_MARKER = "TWIN.txt"
# Elements longer than this are not read, only located: pixel data is skipped like with
# stop_before_pixels, yet its declared length can still be checked against the file size.
_DEFER_BYTES = 1024


@dataclass
class SeriesHeader:
    """The header values of one series that the manifest needs, as raw text."""

    patient_id: str
    study_uid: str
    series_uid: str
    # The value files are grouped by: the SeriesInstanceUID, or the SOPInstanceUID of an image.
    source_uid: str
    manufacturer: str
    model_name: str
    field_strength: float | None
    modality: str
    # Paths relative to the DICOM root, in slice order.
    files: list[str] = field(default_factory=list)
    # Raw text of further attributes asked for by keyword (e.g. a label file's key tag).
    extra: dict[str, str] = field(default_factory=dict)
    # Caveats found while grouping its files (e.g. uneven slice spacing), for flagged.csv.
    notes: list[str] = field(default_factory=list)
    # Slices held by its one file (a NIfTI volume); None: one slice per file.
    n_slices: int | None = None
    # The SOPInstanceUID of each of its files (DICOM), for duplicates across samples.
    sop_uids: list[str] = field(default_factory=list)

    def raw(self, keyword: str) -> str:
        """The raw text of `keyword` for this series (a standard field, an `extra` one, or the
        pseudo keyword FileStem: its first file's name without extension)."""
        if keyword == FILE_STEM:
            return PurePosixPath(self.files[0]).name.split(".")[0] if self.files else ""
        standard = {
            "PatientID": self.patient_id,
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
            "Manufacturer": self.manufacturer,
            "ManufacturerModelName": self.model_name,
            "Modality": self.modality,
        }
        return standard[keyword] if keyword in standard else self.extra.get(keyword, "")


# (orientation, (Rows, Columns), PixelSpacing) of one image, None where absent or unreadable.
Geometry = tuple[tuple[float, ...] | None, tuple[int, int] | None, tuple[float, ...] | None]
# Orientation cosines and pixel spacings closer than this are the same.
_GEOMETRY_TOLERANCE = 1e-3


@dataclass
class _Slice:
    path: str
    header: SeriesHeader
    sop_uid: str
    position: float | None
    instance_number: int | None
    geometry: Geometry = (None, None, None)
    # Positions along the normal of a multi-frame file's frames, which are its slices
    # (Enhanced CT/MR), in stored order; empty for a file of one image.
    frame_positions: tuple[float | None, ...] = ()


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _slice_position(ds: Dataset) -> float | None:
    """ImagePositionPatient projected on the slice normal (row x column direction)."""
    try:
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        position = np.asarray([float(v) for v in ds.ImagePositionPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    if orientation.shape != (6,) or position.shape != (3,):
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    return float(position @ normal)


def _instance_number(ds: Dataset) -> int | None:
    try:
        return int(ds.InstanceNumber)
    except (AttributeError, TypeError, ValueError):
        return None


def _numbers(ds: Dataset, keyword: str, n: int, digits: int = 3) -> tuple[float, ...] | None:
    try:
        values = tuple(round(float(v), digits) for v in ds[keyword].value)
    except Exception:  # absent, empty, or not numbers (a damaged header)
        return None
    return values if len(values) == n and all(np.isfinite(values)) else None


def _geometry(ds: Dataset) -> Geometry:
    """What must agree between the slices of one volume: orientation, size, pixel spacing."""
    try:
        size: tuple[int, int] | None = (int(ds.Rows), int(ds.Columns))
    except Exception:
        size = None
    return (
        _numbers(ds, "ImageOrientationPatient", 6),
        size,
        _numbers(ds, "PixelSpacing", 2),
    )


@functools.cache
def _decoder_problem(transfer_syntax: str) -> str | None:
    """Why pixel data in this transfer syntax cannot be decoded here, or None when it can.

    Checked at ingest, from the file meta alone, so that a compressed archive without its
    decoder plugin is reported per file now rather than as a failure inside a later cache build.
    """
    uid = UID(transfer_syntax)
    if not uid.is_valid:  # not digits and dots: a damaged value, not an unknown syntax
        return f"corrupted element: TransferSyntaxUID {transfer_syntax!r} is not a valid UID"
    if not uid.is_transfer_syntax:
        return f"no decoder: {transfer_syntax!r} is not a known transfer syntax"
    if not uid.is_compressed:
        return None
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"no decoder: pydicom cannot decode {uid.name} ({uid}) pixel data"
    if decoder.is_available:
        return None
    plugins = "; ".join(decoder.missing_dependencies) or "no plugin installed"
    return f"no decoder: {uid.name} ({uid}) pixel data needs a decoder plugin ({plugins})"


def _field_strength(ds: Dataset) -> float | None:
    try:
        return float(ds.MagneticFieldStrength)
    except (AttributeError, TypeError, ValueError):
        return None


def _read_header(path: Path) -> Dataset:
    """Read a header without loading pixel data, accepting legacy files that lack a preamble.

    Older archives hold files without the 128-byte preamble and file meta information; they are
    read with force=True and kept only if they parse as an image series, so that arbitrary
    non-DICOM files are still reported as such.
    """
    try:
        return pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except InvalidDicomError as not_dicom:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=True)
                is_image = "SeriesInstanceUID" in ds and "PixelData" in ds
        except Exception:
            raise not_dicom from None
        if not is_image:
            raise
        return ds


def read_slice(path: Path, relative: str, extra_tags: Sequence[str], group_by: str) -> _Slice | str:
    """Read one file's header; return the slice, or the reason it cannot be used."""
    if PATH_SEPARATOR in relative:
        return f"file name contains {PATH_SEPARATOR!r}, the manifest's path separator"
    try:
        size = path.stat().st_size
        ds = _read_header(path)
        damaged = structure_damage(path, ds, size)
        if damaged:
            return damaged
        required = () if group_by == "SOPInstanceUID" else (*_REQUIRED_TAGS, group_by)
        missing = [k for k in dict.fromkeys(required) if not _text(ds, k)]
        if missing:
            return missing_reason(ds, size, missing)
        if "PixelData" not in ds:
            return no_pixels_reason(ds)
        transfer_syntax = _text(getattr(ds, "file_meta", Dataset()), "TransferSyntaxUID")
        undecodable = _decoder_problem(transfer_syntax) if transfer_syntax else None
        if undecodable:
            return undecodable
        frames = _frames(ds, group_by) if is_multiframe(ds) else None
        if isinstance(frames, str):
            return frames
        geometry, positions = frames or (_geometry(ds), (_slice_position(ds),))
        header = SeriesHeader(
            patient_id=_text(ds, "PatientID"),
            study_uid=_text(ds, "StudyInstanceUID"),
            series_uid=_text(ds, "SeriesInstanceUID"),
            source_uid=_text(ds, group_by) or _BY_FILE + relative,
            manufacturer=_text(ds, "Manufacturer"),
            model_name=_text(ds, "ManufacturerModelName"),
            field_strength=_field_strength(ds),
            modality=_text(ds, "Modality"),
            extra={keyword: _text(ds, keyword) for keyword in extra_tags},
            n_slices=len(positions) if len(positions) > 1 else None,
        )
        return _Slice(
            path=relative,
            header=header,
            sop_uid=_text(ds, "SOPInstanceUID"),
            position=positions[0],
            instance_number=_instance_number(ds),
            geometry=geometry,
            frame_positions=positions if len(positions) > 1 else (),
        )
    except InvalidDicomError:
        return not_dicom_reason(path, size)
    # pydicom raises many exception types on damaged files; one bad file must not stop a scan.
    except Exception as error:
        return read_error_reason(path, error, _short(str(error)))


def _frames(ds: Dataset, group_by: str) -> tuple[Geometry, tuple[float | None, ...]] | str:
    """The geometry the frames of a multi-frame file share and their positions along the
    normal (``shiftlab.data.multiframe``), or why they cannot be the slices of one volume."""
    n = number_of_frames(ds)
    if n > 1 and group_by == "SOPInstanceUID":
        return (
            f"multi-frame image ({n} frames) where each image is one sample "
            "(dataset.ingest.group_by=SOPInstanceUID)"
        )
    problem = frames_problem(ds)
    if problem:
        return problem
    frames = frame_attributes(ds)
    reference = _geometry(frames[0])
    for frame in frames:
        difference = _geometry_difference(_geometry(frame), reference)
        if difference:
            return f"frame geometry differs within the file: {difference}"
    return reference, tuple(_slice_position(frame) for frame in frames)


def _short(message: str, limit: int = 160) -> str:
    """An error message without the raw bytes some parsers quote (they can be header text)."""
    message = re.sub(r"""b(['"]).*?\1""", "<bytes>", " ".join(message.split()))
    return message if len(message) <= limit else message[: limit - 1] + "…"


def _slice_order(slices: list[_Slice]) -> list[_Slice]:
    """Order by position along the normal when every slice has one, else by InstanceNumber."""
    if all(s.position is not None for s in slices):
        return sorted(slices, key=lambda s: (s.position, s.instance_number or 0, s.path))
    return sorted(
        slices,
        key=lambda s: (s.instance_number is None, s.instance_number or 0, s.path),
    )


def _list_files(dicom_root: Path) -> list[Path]:
    """Every file under ``dicom_root`` but temporary files (``shiftlab.files``): a write in
    progress, or the leftover of a writer killed mid-file, is never data."""
    files = []
    for folder, subfolders, names in os.walk(dicom_root):
        subfolders.sort()
        files.extend(Path(folder) / name for name in sorted(names) if not is_temporary(name))
    return files


def scan_dicom_tree(
    dicom_root: Path, extra_tags: Iterable[str] = (), group_by: str = "SeriesInstanceUID"
) -> tuple[list[SeriesHeader], list[tuple[str, str]]]:
    """Read the header of every file under `dicom_root` and group the files into series.

    Returns the series (sorted by the `group_by` UID, files in slice order, relative to
    `dicom_root` with "/") and the skipped files as (relative path, reason): every file is in
    exactly one of the two. Besides files that cannot be read (see `read_slice`), a file is
    skipped when it repeats a SOPInstanceUID already seen (in its series or another), or
    disagrees with the most common PatientID, StudyInstanceUID or Modality of its series, or,
    in a series of slices, with its most common geometry (orientation, Rows x Columns,
    PixelSpacing). A series without a geometry shared by more than half of its slices (a
    three-plane localiser) is skipped whole. `extra_tags` are further attribute keywords whose
    raw text is kept per series (in `SeriesHeader.extra`). With `group_by` SOPInstanceUID every
    image file is a series of its own.
    """
    if group_by not in GROUP_BY:
        raise ShiftlabError(f"dataset.ingest.group_by={group_by!r}; choose one of {GROUP_BY}.")
    dicom_root = Path(dicom_root)
    extra_tags = tuple(k for k in extra_tags if k != FILE_STEM)
    skipped: list[tuple[str, str]] = []
    by_series: dict[str, list[_Slice]] = defaultdict(list)
    files = _list_files(dicom_root)
    for path in tqdm(files, desc="scanning", unit="file", disable=not sys.stderr.isatty()):
        relative = path.relative_to(dicom_root).as_posix()
        result = read_slice(path, relative, extra_tags, group_by)
        if isinstance(result, str):
            skipped.append((relative, result))
        else:
            by_series[result.header.source_uid].append(result)

    series = []
    claimed: dict[str, str] = {}  # SOPInstanceUID -> the file that has it
    for series_uid in sorted(by_series):
        kept: list[_Slice] = []
        for item in _slice_order(by_series[series_uid]):
            if item.sop_uid and item.sop_uid in claimed:
                skipped.append((item.path, f"duplicate SOPInstanceUID of {claimed[item.sop_uid]}"))
                continue
            claimed[item.sop_uid] = item.path
            kept.append(item)
        kept = _agreeing(kept, skipped)
        kept = _lone_multiframe(kept, skipped)
        if group_by == "SeriesInstanceUID":
            kept = _same_geometry(kept, skipped)
        if not kept:
            continue
        header = kept[0].header
        header.files = [item.path for item in kept]
        header.sop_uids = [item.sop_uid for item in kept]
        header.notes = [*_identity_notes(header), *_spacing_notes(_positions(kept))]
        series.append(header)
    return series, sorted(skipped)


def _majority(values: Sequence) -> object:
    """The most common value; ties go to the one seen first (slice order)."""
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)


def _agreeing(slices: list[_Slice], skipped: list[tuple[str, str]]) -> list[_Slice]:
    """The slices that share their series' most common PatientID, study and modality."""
    kept = slices
    for keyword in ("PatientID", "StudyInstanceUID", "Modality") if slices else ():
        values = [item.header.raw(keyword) for item in kept]
        common = _majority(values)
        if all(v == common for v in values):
            continue
        for item, value in zip(kept, values, strict=True):
            if value != common:
                if keyword == "Modality":
                    reason = f"Modality differs from its series: {value!r} vs {common!r}"
                else:  # no raw identifier in a reason: skipped.csv may be shown to others
                    reason = f"{keyword} differs from the rest of its series"
                skipped.append((item.path, reason))
        kept = [item for item, value in zip(kept, values, strict=True) if value == common]
    return kept


def _close(a: tuple | None, b: tuple | None) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(
        abs(x - y) <= _GEOMETRY_TOLERANCE for x, y in zip(a, b, strict=True)
    )


def _shown(values: tuple | None) -> str:
    return "absent" if values is None else "x".join(f"{v:g}" for v in values)


def _geometry_difference(geometry: Geometry, reference: Geometry) -> str:
    """What differs between two geometries, in words (empty when they agree)."""
    names = ("orientation", "Rows x Columns", "PixelSpacing")
    parts = [
        f"{name} {_shown(value)} vs {_shown(expected)}"
        for name, value, expected in zip(names, geometry, reference, strict=True)
        if not _close(value, expected)
    ]
    return "; ".join(parts)


def _same_geometry(slices: list[_Slice], skipped: list[tuple[str, str]]) -> list[_Slice]:
    """The slices of a volume that share the geometry of more than half of them.

    Slices of another orientation, size or pixel spacing cannot be stacked into one volume with
    the rest: they are skipped. Without such a majority the whole series is skipped.
    """
    if len(slices) < 2:
        return slices
    reference = _majority([item.geometry for item in slices])
    differences = [_geometry_difference(item.geometry, reference) for item in slices]
    n_agreeing = sum(not d for d in differences)
    if 2 * n_agreeing <= len(slices):
        n_kinds = len({item.geometry for item in slices})
        reason = (
            f"inconsistent slice geometry: no orientation, size and pixel spacing is shared by "
            f"more than half of the {len(slices)} slices of its series ({n_kinds} different; "
            "e.g. a multi-plane localiser)"
        )
        skipped.extend((item.path, reason) for item in slices)
        return []
    for item, difference in zip(slices, differences, strict=True):
        if difference:
            skipped.append((item.path, f"slice geometry differs from its series: {difference}"))
    return [item for item, difference in zip(slices, differences, strict=True) if not difference]


def _absent_uids(header: SeriesHeader) -> list[str]:
    absent = [k for k in _REQUIRED_TAGS if not header.raw(k)]
    return absent + (["SOPInstanceUID"] if header.source_uid.startswith(_BY_FILE) else [])


def _identity_notes(header: SeriesHeader) -> list[str]:
    """A caveat for an image kept without UIDs: duplicates of it cannot be recognised."""
    absent = _absent_uids(header)
    if not absent:
        return []
    return [f"no {', '.join(absent)}: identified by its file (de-identified?)"]


def _lone_multiframe(slices: list[_Slice], skipped: list[tuple[str, str]]) -> list[_Slice]:
    """The slices of a series, less its multi-frame files unless one is the series' only file:
    such a file is a whole volume, which cannot be stacked with other files."""
    if len(slices) < 2:
        return slices
    reason = (
        f"multi-frame file in a series of {len(slices)} files: its frames are read as slices "
        "only when it is the one file of its series"
    )
    skipped.extend((item.path, reason) for item in slices if item.frame_positions)
    return [item for item in slices if not item.frame_positions]


def _positions(slices: list[_Slice]) -> list[float | None]:
    """Slice positions along the normal in slice order: one per file, or the frames of a
    multi-frame file in the order they are decoded (ascending, when all have one)."""
    if len(slices) == 1 and slices[0].frame_positions:
        positions = list(slices[0].frame_positions)
        return positions if None in positions else sorted(positions)
    return [item.position for item in slices]


def _spacing_notes(positions: list[float | None]) -> list[str]:
    """Caveats on the slice positions of a volume that is kept: repeated or uneven spacing."""
    if len(positions) < 3 or any(p is None for p in positions):
        return []
    gaps = np.diff(np.asarray(positions, dtype=float))
    typical = float(np.median(gaps))
    notes = []
    if (gaps < 1e-3).any():
        notes.append(f"{int((gaps < 1e-3).sum())} slice(s) repeat the position of another")
    if typical > 1e-3 and gaps.max() > 1.5 * typical:
        notes.append(
            f"uneven slice spacing: gaps up to {gaps.max():.3g} mm, typically {typical:.3g} mm "
            "(a missing slice?)"
        )
    return notes


@dataclass(frozen=True)
class SeriesSelection:
    """Which labelled series become samples (``dataset.ingest`` in a dataset config).

    ``series_filter`` maps DICOM keywords to regular expressions that a series' raw value must
    contain (``re.search``), e.g. ``{SeriesDescription: "(?i)t2"}`` to keep the T2 series of a
    multi-sequence study. ``series_prefer`` maps a keyword to patterns in order of preference:
    of the series that pass the filter and share a label key, only those matching the earliest
    pattern that any of them matches are kept (a series matching none comes last), e.g. the
    reconstruction that says "plain" before one named only by its slice thickness.
    ``series_per_key`` then decides what happens when several series carry the same label key
    (a study with several reconstructions): keep ``all``, or only the one with the
    ``most_slices`` or ``fewest_slices`` (ties: the lowest UID).
    """

    group_by: str = "SeriesInstanceUID"
    series_filter: Mapping[str, str] = field(default_factory=dict)
    series_prefer: Mapping[str, Sequence[str]] = field(default_factory=dict)
    series_per_key: str = "all"

    @classmethod
    def from_config(cls, options: Mapping | None) -> SeriesSelection:
        options = dict(options or {})
        known = {"group_by", "series_filter", "series_prefer", "series_per_key"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ShiftlabError(
                f"dataset.ingest has unknown option(s) {unknown}; use {', '.join(sorted(known))}."
            )
        selection = cls(**options)
        if selection.series_per_key not in SERIES_PER_KEY:
            raise ShiftlabError(
                f"dataset.ingest.series_per_key={selection.series_per_key!r}; "
                f"choose one of {SERIES_PER_KEY}."
            )
        patterns = [("series_filter", k, p) for k, p in selection.series_filter.items()]
        for keyword, ordered in selection.series_prefer.items():
            if isinstance(ordered, str):
                raise ShiftlabError(
                    f"dataset.ingest.series_prefer.{keyword} is one pattern; expected a list of "
                    f"patterns, most preferred first, e.g. [{ordered!r}]."
                )
            patterns += [("series_prefer", keyword, p) for p in ordered]
        for option, keyword, pattern in patterns:
            if tag_for_keyword(keyword) is None:
                raise ShiftlabError(f"dataset.ingest.{option}: {keyword!r} is not a DICOM keyword.")
            try:
                re.compile(pattern)
            except re.error as error:
                raise ShiftlabError(
                    f"dataset.ingest.{option}.{keyword}: bad regular expression "
                    f"{pattern!r} ({error})."
                ) from error
        return selection

    @property
    def active(self) -> bool:
        """Whether some series may not be chosen."""
        return bool(self.series_filter or self.series_prefer) or self.series_per_key != "all"

    @property
    def keywords(self) -> tuple[str, ...]:
        """The attributes the selection reads, and SeriesDescription for its report."""
        extra = ("SeriesDescription",) if self.active else ()
        return tuple(dict.fromkeys((*self.series_filter, *self.series_prefer, *extra)))

    def _rank(self, header: SeriesHeader) -> tuple[int, ...]:
        """Per series_prefer keyword, the index of the first pattern the series matches."""
        return tuple(
            next((i for i, p in enumerate(ordered) if re.search(p, header.raw(k))), len(ordered))
            for k, ordered in self.series_prefer.items()
        )

    def apply(self, series: Sequence[SeriesHeader], key_tag: str) -> list[SeriesHeader]:
        """The series that pass the filter and are preferred for their label key, one per label
        key unless ``series_per_key=all``."""
        kept = [
            s for s in series if all(re.search(p, s.raw(k)) for k, p in self.series_filter.items())
        ]
        if self.series_prefer:
            best_rank: dict[str, tuple[int, ...]] = {}
            for header in kept:
                key = header.raw(key_tag)
                best_rank[key] = min(best_rank.get(key, self._rank(header)), self._rank(header))
            kept = [s for s in kept if self._rank(s) == best_rank[s.raw(key_tag)]]
        if self.series_per_key == "all":
            return kept
        sign = -1 if self.series_per_key == "most_slices" else 1
        best: dict[str, SeriesHeader] = {}
        for header in sorted(kept, key=lambda s: (sign * len(s.files), s.source_uid)):
            best.setdefault(header.raw(key_tag), header)
        return sorted(best.values(), key=lambda s: s.source_uid)


def reason_kind(reason: str) -> str:
    """The kind of a skipped.csv reason, without its details (for the counts)."""
    if re.match(r"sample .*: slice_index", reason):
        return "slice_index outside its series"
    kind = re.split(r": | \(", reason, maxsplit=1)[0]
    return re.sub(r"^(duplicate SOPInstanceUID) of .*", r"\1", kind)


def vendor_note(manufacturer: str) -> str | None:
    """The flagged.csv caveat of a sample whose vendor is unknown, or None."""
    if normalise_vendor(manufacturer) != UNKNOWN:
        return None
    if not manufacturer.strip():
        return "vendor unknown: Manufacturer missing or empty"
    return f"vendor unknown: Manufacturer {manufacturer!r} is not in shiftlab/vendors.py"


@dataclass
class _Accounts:
    """Where every scanned file went, and the series kept with a caveat."""

    unused: list[tuple[str, int, str]]  # (first file, number of files, reason)
    flagged: list[tuple[str, str]]  # (first file, caveat)
    files: dict[str, int]


def _account(
    series: Sequence[SeriesHeader],
    chosen: Sequence[SeriesHeader],
    unlabelled: Sequence[SeriesHeader],
    df: pd.DataFrame,
    n_skipped_files: int,
    key_tag: str,
) -> _Accounts:
    in_samples = {f for joined in df["paths"] for f in joined.split(PATH_SEPARATOR)}
    chosen_ids, unlabelled_ids = {id(s) for s in chosen}, {id(s) for s in unlabelled}
    unused, flagged = [], []
    n_used = n_unused = 0
    for header in series:
        first = header.files[0]
        if first in in_samples:
            n_used += len(header.files)
            notes = [vendor_note(header.manufacturer), *header.notes]
            flagged.extend((first, note) for note in notes if note)
            continue
        if id(header) not in chosen_ids:
            reason = "not chosen (dataset.ingest: series_filter or series_per_key)"
        elif id(header) in unlabelled_ids:
            reason = f"no label: its {key_tag} is not in the label file"
        else:
            reason = "no sample could be made from it (reasons in skipped.csv)"
        unused.append((first, len(header.files), reason))
        n_unused += len(header.files)
    files = {
        "scanned": n_used + n_unused + n_skipped_files,
        "in_samples": n_used,
        "skipped": n_skipped_files,
        "in_unused_series": n_unused,
    }
    return _Accounts(sorted(unused), sorted(flagged), files)


def print_skipped(skipped: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Print skipped.csv's reasons counted by kind, most common first; return the counts."""
    kinds = Counter(reason_kind(reason) for _, reason in skipped)
    for kind, n in sorted(kinds.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {n:>8}  {kind}")
    return dict(sorted(kinds.items()))


def _choice_by_description(
    series: Sequence[SeriesHeader], chosen: Sequence[SeriesHeader]
) -> dict[str, dict[str, int]]:
    """Per SeriesDescription, how many series dataset.ingest chose and how many it dropped."""
    chosen_ids = {id(s) for s in chosen}
    counts: dict[str, dict[str, int]] = {}
    for header in series:
        row = counts.setdefault(header.raw("SeriesDescription"), {"chosen": 0, "dropped": 0})
        row["chosen" if id(header) in chosen_ids else "dropped"] += 1
    return dict(sorted(counts.items()))


_DESCRIPTIONS_SHOWN = 40


def _print_choice_by_description(counts: Mapping[str, Mapping[str, int]]) -> None:
    """The table of _choice_by_description, most chosen first, so the choice can be checked."""
    if not counts:
        return
    print("series by SeriesDescription (dataset.ingest):")
    print(f"  {'chosen':>8}  {'dropped':>8}  SeriesDescription")
    rows = sorted(counts.items(), key=lambda item: (-item[1]["chosen"], -item[1]["dropped"]))
    for description, row in rows[:_DESCRIPTIONS_SHOWN]:
        shown = description or "(empty)"
        print(f"  {row['chosen']:>8}  {row['dropped']:>8}  {shown}")
    if len(rows) > _DESCRIPTIONS_SHOWN:
        hidden = len(rows) - _DESCRIPTIONS_SHOWN
        print(f"  ... {hidden} more (series_by_description in manifest.json)")


def _unmatched_labels(
    labels: LabelTable,
    series: Sequence[SeriesHeader],
    chosen: Sequence[SeriesHeader],
    dicom_root: Path,
    skipped: Sequence[tuple[str, str]],
) -> dict[str, int]:
    """Why label keys matched no chosen series, counted: only a series that dataset.ingest did
    not choose carries the key, only skipped files carry it (their headers are read again
    here, as far as they can be), or no scanned file does."""
    chosen_keys = {s.raw(labels.key_tag) for s in chosen}
    scanned_keys = {s.raw(labels.key_tag) for s in series}
    unmatched = set(labels.samples) - chosen_keys
    elsewhere = unmatched - scanned_keys
    in_skipped = (
        elsewhere & _skipped_file_keys(dicom_root, skipped, labels.key_tag) if elsewhere else set()
    )
    return {
        "series_not_chosen": len(unmatched & scanned_keys),
        "only_skipped_files": len(in_skipped),
        "no_scanned_file": len(elsewhere - in_skipped),
    }


def _skipped_file_keys(
    dicom_root: Path, skipped: Sequence[tuple[str, str]], key_tag: str
) -> set[str]:
    """The label keys that skipped files carry, where their headers can be read."""
    if key_tag == FILE_STEM:
        return {PurePosixPath(path).name.split(".")[0] for path, _ in skipped}
    keys = set()
    for path, _ in skipped:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(
                    dicom_root / path, stop_before_pixels=True, specific_tags=[key_tag]
                )
            keys.add(_text(ds, key_tag))
        except Exception:  # a file too damaged to read carries no key that can be seen
            continue
    return keys - {""}


def _print_unmatched(unmatched: Mapping[str, int], n_keys: int, key_tag: str, unit: str) -> None:
    print(f"labels unmatched:   {sum(unmatched.values())} of {n_keys}")
    why = {
        "series_not_chosen": f"match only {unit} not chosen by dataset.ingest",
        "only_skipped_files": "match only skipped files (reasons in skipped.csv)",
        "no_scanned_file": f"name no scanned file (by {key_tag})",
    }
    for name, n in unmatched.items():
        if n:
            print(f"  {n:>8}  {why[name]}")


def _slice_outside(sample: LabelledSample, n_slices: int) -> str | None:
    """Why a slice-level sample cannot be made from its series, if it cannot.

    Label files that give slice numbers without the series length (Duke's boxes) can name a
    slice past the end of a short series.
    """
    if "slice_index" not in sample.extra:
        return None
    index = int(sample.extra["slice_index"])
    if 0 <= index < n_slices:
        return None
    return f"sample {sample.name}: slice_index {index} outside the series' {n_slices} slices"


def _manifest_rows(
    series: Sequence[SeriesHeader], labels: LabelTable, key: bytes
) -> tuple[pd.DataFrame, pd.Series, list[SeriesHeader], list[tuple[str, str]]]:
    """Labelled samples as manifest rows (no split yet), their raw patient ids, the unlabelled
    series, and the samples dropped (first file, reason): no patient id, or a slice the series
    does not have. A series gives one row per sample its label file names for it."""
    rows, raw_patients, unlabelled, dropped = [], [], [], []
    for header in series:
        samples = labels.samples.get(header.raw(labels.key_tag))
        if not samples:
            unlabelled.append(header)
            continue
        for sample in samples:
            patient = sample.patient or header.patient_id
            if not patient:
                dropped.append(
                    (header.files[0], "no PatientID, and the label file names no patient")
                )
                continue
            outside = _slice_outside(sample, header.n_slices or len(header.files))
            if outside:
                dropped.append((header.files[0], outside))
                continue
            raw_patients.append(patient)
            source = header.source_uid
            sample_key = f"{source}#{sample.name}" if sample.name else source
            rows.append(
                {
                    "sample_id": pseudonym(key, sample_key, "s-"),
                    "patient_id": pseudonym(key, patient, "p-"),
                    "study_id": pseudonym(key, header.study_uid or source, "st-"),
                    "series_id": pseudonym(key, header.series_uid or source, "se-"),
                    "paths": PATH_SEPARATOR.join(header.files),
                    "n_slices": header.n_slices or len(header.files),
                    "label": sample.label,
                    "manufacturer": header.manufacturer,
                    "vendor": normalise_vendor(header.manufacturer),
                    "model_name": header.model_name,
                    "field_strength": (
                        np.nan if header.field_strength is None else header.field_strength
                    ),
                    "modality": header.modality,
                    "split": "",
                    **sample.extra,
                }
            )
    df = pd.DataFrame(rows, columns=[*COLUMNS, *labels.extra_columns])
    return df, pd.Series(raw_patients, index=df.index, dtype=str), unlabelled, dropped


def _no_match_error(series: Sequence[SeriesHeader], labels: LabelTable, label_path: str) -> str:
    series_example = series[0].raw(labels.key_tag) if series else "(no series)"
    label_example = next(iter(labels.samples), "(empty label file)")
    return (
        f"no series matched a label: labels from {label_path} are keyed by "
        f"{labels.key_tag}, e.g. {label_example!r}, while the scanned series have e.g. "
        f"{labels.key_tag} = {series_example!r}. Check dataset.labels.key_tag and key_column."
    )


def _no_vendor_error(
    df: pd.DataFrame, chosen: Sequence[SeriesHeader], unit: str, hint: str, flagged: Path
) -> str:
    """Why no labelled sample has a known vendor, so that no domain can be formed."""
    n = len(df)
    given = df["manufacturer"].fillna("").str.strip()
    causes = []
    if (given == "").any():
        causes.append(f"{int((given == '').sum())} of {n} labelled {unit} have no Manufacturer")
    if (given != "").any():
        example = sorted(set(given[given != ""]))[0]
        causes.append(
            f"{int((given != '').sum())} of {n} have a Manufacturer that shiftlab/vendors.py "
            f"does not know (e.g. {example!r}; add its spelling there)"
        )
    in_samples = set(df["paths"])
    n_anonymous = sum(
        1 for h in chosen if PATH_SEPARATOR.join(h.files) in in_samples and _absent_uids(h)
    )
    if n_anonymous:
        causes.append(
            f"{n_anonymous} carry no Study/Series/SOP Instance UIDs either (files de-identified "
            "down to their pixel attributes)"
        )
    return (
        f"no vendor could be formed: {'; '.join(causes)}. Domains are scanner vendors read from "
        f"Manufacturer, so no source and target exist in these files (notes in {flagged}). "
        f"{hint}"
    ).strip()


def _read_labels(dataset_cfg: DictConfig) -> LabelTable:
    labels = instantiate(dataset_cfg.labels)
    if not isinstance(labels, LabelTable):
        raise ShiftlabError(
            f"dataset.labels ({dataset_cfg.labels._target_}) returned "
            f"{type(labels).__name__}, expected a shiftlab.labels.LabelTable."
        )
    if labels.key_tag != FILE_STEM and tag_for_keyword(labels.key_tag) is None:
        raise ShiftlabError(
            f"dataset.labels.key_tag {labels.key_tag!r} is not a DICOM attribute keyword "
            f"(e.g. SeriesInstanceUID, PatientID, AccessionNumber) nor {FILE_STEM!r}."
        )
    return labels


def _print_usable_pairs(df: pd.DataFrame, groups: Mapping | None) -> None:
    domains, pairs = usable_domains(df, groups), usable_pairs(df, groups)
    present = set(df["vendor"])
    unusable = sorted(present - set(domains))
    print(f"usable domains:     {', '.join(domains) or 'none'} (both classes in train, val, test)")
    if unusable:
        print(f"not usable:         {', '.join(unusable)} (a split lacks a class)")
    print(f"usable pairs:       {', '.join(pairs) or 'none'} (source=<a> target=<b>)")


def finish_manifest(
    df: pd.DataFrame,
    raw_patients: pd.Series,
    dataset_cfg: DictConfig,
    split_seed: int,
    meta: Mapping[str, object],
) -> ManifestInfo:
    """Split by patient (unless the table came with splits), write the manifest, print counts
    and the usable domain pairs."""
    fractions = OmegaConf.to_container(dataset_cfg.split_fractions, resolve=True)
    if (df["split"] == "").any():
        # Splits are drawn on raw patient ids so that they do not depend on the pseudonym key.
        splits_on_raw = df.assign(patient_id=raw_patients)
        df["split"] = assign_splits(splits_on_raw, fractions, int(split_seed))
    meta = {
        "dataset": str(dataset_cfg.name),
        "split_seed": int(split_seed),
        "split_fractions": fractions,
        "sample_unit": str(dataset_cfg.get("sample_unit", "series")),
        **meta,
    }
    info = write_manifest(df, Path(dataset_cfg.manifest_dir), meta)
    print()
    print(count_table(df))
    print()
    _print_usable_pairs(df, dataset_cfg.domains.get("groups"))
    print(f"manifest:           {info.csv_path} ({info.n_samples} samples)")
    print(f"sha256:             {info.sha256}")
    print(f"changed:            {'yes' if info.changed else 'no (same bytes as on disk)'}")
    return info


def ensure_twin(dataset: DictConfig) -> None:
    """Write a preset's miniature official-layout twin unless it is complete already.

    Twin generators write TWIN_MARKER last, so a half-written twin is generated again.
    """
    if not dataset.get("twin_generator"):
        raise ShiftlabError(
            f"dataset {dataset.name!r} has no miniature twin (no dataset.twin_generator); "
            "twin=true is for the real presets (mri_breast, mri_prostate, mri_brain, "
            "ct_lung_nodule, ct_head, xray_chest, xray_chest_vindr, xray_mammo)."
        )
    if not (Path(dataset.root) / TWIN_MARKER).exists():
        print(f"generating the miniature twin of {dataset.name} into {dataset.root} ...")
        instantiate(dataset.twin_generator)


def run_ingest(dataset_cfg: DictConfig, paths_cfg: DictConfig, split_seed: int) -> ManifestInfo:
    """``_run_ingest``, with the DICOM reader's warnings shown once each, values pseudonymised
    (``shiftlab.reader_warnings``): a warning can quote a header's UIDs."""
    with reader_warnings("ingest", key=lambda: load_or_create_key(paths_cfg.pseudonym_key)):
        return _run_ingest(dataset_cfg, paths_cfg, split_seed)


def _run_ingest(dataset_cfg: DictConfig, paths_cfg: DictConfig, split_seed: int) -> ManifestInfo:
    """Scan, label, pseudonymise, split and write the manifest of one dataset; print a summary.

    A dataset with a ``user_manifest`` (a table written by hand) is imported from it instead,
    and so is a BIDS folder (``bids``: the table is built from its files) and a table built by
    a recipe from a published label file (``sample_table``: PadChest).
    Re-running with the same inputs rewrites nothing (same bytes, same mtimes).
    """
    if dataset_cfg.get("user_manifest"):
        from shiftlab.user_manifest import import_user_manifest

        return import_user_manifest(dataset_cfg, paths_cfg, split_seed)
    if dataset_cfg.get("bids"):
        from shiftlab.recipes.bids import import_bids

        return import_bids(dataset_cfg, paths_cfg, split_seed)
    if dataset_cfg.get("sample_table"):  # a recipe builds the table (PadChest's label table)
        from shiftlab.user_manifest import import_user_manifest

        table = instantiate(dataset_cfg.sample_table)
        return import_user_manifest(dataset_cfg, paths_cfg, split_seed, table)
    dicom_root = Path(dataset_cfg.dicom_root)
    if not dicom_root.is_dir():
        raise ShiftlabError(
            f"DICOM folder not found: {dicom_root} (dataset {dataset_cfg.name}).\n"
            f"{str(dataset_cfg.get('download', '')).strip()}"
        )
    labels = _read_labels(dataset_cfg)
    options = dataset_cfg.get("ingest")
    selection = SeriesSelection.from_config(
        OmegaConf.to_container(options, resolve=True) if options else {}
    )
    manifest_dir = Path(dataset_cfg.manifest_dir)
    skipped_path = manifest_dir / SKIPPED_NAME

    series, skipped = scan_dicom_tree(
        dicom_root,
        extra_tags=(labels.key_tag, *selection.keywords),
        group_by=selection.group_by,
    )
    n_files = sum(len(s.files) for s in series) + len(skipped)
    unit = "images" if selection.group_by == "SOPInstanceUID" else "series"
    print(f"files scanned:      {n_files} under {dicom_root}")
    print(f"{unit + ' found:':<20}{len(series)}")
    if not series:
        write_if_changed(skipped_path, csv_bytes(pd.DataFrame(skipped, columns=["path", "reason"])))
        raise ShiftlabError(f"no DICOM image series found under {dicom_root}; see {skipped_path}.")
    chosen = selection.apply(series, labels.key_tag)
    if len(chosen) < len(series):
        print(f"{unit + ' not chosen:':<20}{len(series) - len(chosen)} (dataset.ingest)")
    by_description = _choice_by_description(series, chosen) if selection.active else {}
    _print_choice_by_description(by_description)

    key = load_or_create_key(paths_cfg.pseudonym_key)
    df, raw_patients, unlabelled, dropped = _manifest_rows(chosen, labels, key)
    unmatched = _unmatched_labels(labels, series, chosen, dicom_root, skipped)
    print(f"skipped files:      {len(skipped)} (reasons in {skipped_path})")
    accounts = _account(series, chosen, unlabelled, df, len(skipped), labels.key_tag)
    if dropped:
        print(f"samples dropped:    {len(dropped)} (reasons in {skipped_path})")
    n_skipped_files = len(skipped)
    skipped = sorted([*skipped, *dropped])
    skipped_by_kind = print_skipped(skipped)
    write_if_changed(skipped_path, csv_bytes(pd.DataFrame(skipped, columns=["path", "reason"])))
    unused = pd.DataFrame(accounts.unused, columns=["path", "n_files", "reason"])
    write_if_changed(manifest_dir / UNUSED_NAME, csv_bytes(unused))
    flagged = pd.DataFrame(accounts.flagged, columns=["path", "note"])
    write_if_changed(manifest_dir / FLAGGED_NAME, csv_bytes(flagged))
    files = accounts.files
    print(
        f"files accounted:    {files['scanned']} = {files['in_samples']} in samples + "
        f"{n_skipped_files} skipped + {files['in_unused_series']} in unused series "
        f"({manifest_dir / UNUSED_NAME})"
    )
    n_unknown = int((df["vendor"] == UNKNOWN).sum())
    if n_unknown:
        print(f"vendor unknown:     {n_unknown} samples (see {manifest_dir / FLAGGED_NAME})")
    if len(flagged):
        print(
            f"caveats:            {len(flagged)} on kept series (in {manifest_dir / FLAGGED_NAME})"
        )
    print(f"{'unlabelled ' + unit + ':':<20}{len(unlabelled)} (dropped)")
    _print_unmatched(unmatched, len(labels.samples), labels.key_tag, unit)
    if df.empty:
        raise ShiftlabError(_no_match_error(chosen, labels, str(dataset_cfg.labels.get("path"))))
    if (df["vendor"] == UNKNOWN).all():
        hint = str(dataset_cfg.get("no_vendor_hint") or "").strip()
        raise ShiftlabError(_no_vendor_error(df, chosen, unit, hint, manifest_dir / FLAGGED_NAME))
    meta = {
        "label_key_tag": labels.key_tag,
        "n_files_scanned": n_files,
        "n_files_skipped": len(skipped),
        "n_series_unlabelled": len(unlabelled),
        "pseudonym_key_id": pseudonym(key, "shiftlab-key-id", "k-"),
        # Every scanned file: in a sample, skipped (skipped.csv) or in an unused series.
        "files": files,
        "skipped_by_kind": skipped_by_kind,
        "n_series_unused": len(unused),
        "n_flagged": len(flagged),
        "n_samples_vendor_unknown": n_unknown,
        "labels_unmatched": unmatched,
    }
    if len(chosen) < len(series):
        meta["n_series_not_chosen"] = len(series) - len(chosen)
    if by_description:
        meta["series_by_description"] = by_description
    return finish_manifest(df, raw_patients, dataset_cfg, split_seed, meta)


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="ingest")
def main(cfg: DictConfig) -> None:
    """Command-line entry: user errors become one line on stderr and exit status 2."""
    with exit_on_user_error():
        if cfg.get("twin"):
            ensure_twin(cfg.dataset)
        run_ingest(cfg.dataset, cfg.paths, cfg.split_seed)


if __name__ == "__main__":
    main()
