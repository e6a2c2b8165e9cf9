"""Walking a DICOM tree and grouping its files into series (``scan_dicom_tree``).

A series keeps the slices that agree with its majority (patient, study, modality, and for a
volume the geometry: orientation, Rows x Columns, PixelSpacing); the others are skipped with
their reason. A series kept with a caveat (uneven slice spacing, no UIDs) carries it in
``SeriesHeader.notes``, for flagged.csv.
"""

from __future__ import annotations

import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shiftlab.errors import ShiftlabError
from shiftlab.files import is_temporary
from shiftlab.ingest.headers import (
    SeriesHeader,
    Slice,
    absent_uids,
    geometry_difference,
    read_slice,
)
from shiftlab.labels import FILE_STEM

# How files are grouped into sample sources: a series (MRI, CT) or each image on its own
# (radiographs and mammograms, where one series can hold several views).
GROUP_BY = ("SeriesInstanceUID", "SOPInstanceUID")


def _slice_order(slices: list[Slice]) -> list[Slice]:
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
    by_series: dict[str, list[Slice]] = defaultdict(list)
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
        kept: list[Slice] = []
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


def _agreeing(slices: list[Slice], skipped: list[tuple[str, str]]) -> list[Slice]:
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


def _same_geometry(slices: list[Slice], skipped: list[tuple[str, str]]) -> list[Slice]:
    """The slices of a volume that share the geometry of more than half of them.

    Slices of another orientation, size or pixel spacing cannot be stacked into one volume with
    the rest: they are skipped. Without such a majority the whole series is skipped.
    """
    if len(slices) < 2:
        return slices
    reference = _majority([item.geometry for item in slices])
    differences = [geometry_difference(item.geometry, reference) for item in slices]
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


def _identity_notes(header: SeriesHeader) -> list[str]:
    """A caveat for an image kept without UIDs: duplicates of it cannot be recognised."""
    absent = absent_uids(header)
    if not absent:
        return []
    return [f"no {', '.join(absent)}: identified by its file (de-identified?)"]


def _lone_multiframe(slices: list[Slice], skipped: list[tuple[str, str]]) -> list[Slice]:
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


def _positions(slices: list[Slice]) -> list[float | None]:
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
