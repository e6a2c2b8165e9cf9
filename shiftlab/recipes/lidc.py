"""LIDC-IDRI (TCIA): malignant vs benign lung nodules from the readers' own XML reads.

Published format: one XML file per CT series, root element ``LidcReadMessage`` in the XML
namespace ``http://www.nih.gov`` (files without the namespace are read too). Elements used:

- ``ResponseHeader/SeriesInstanceUid`` (spelled so): the series the reads belong to;
- up to four ``readingSession`` elements, one per radiologist (blinded, then unblinded read);
- in each, ``unblindedReadNodule`` elements: ``noduleID`` (the reader's own id, not shared
  across readers), ``characteristics/malignancy`` (1-5, present for nodules >= 3 mm only) and
  one ``roi`` per slice with ``imageZposition`` (mm, the z of that slice's
  ImagePositionPatient), ``imageSOP_UID``, ``inclusion`` (TRUE, or FALSE for a hole) and the
  outline as ``edgeMap/xCoord`` (column) and ``edgeMap/yCoord`` (row) in pixels;
- ``nonNodule`` elements (lesions >= 3 mm the reader judged not to be nodules) and nodules
  < 3 mm (no characteristics, a single point) carry no malignancy and are ignored.

Files whose root is ``IdriReadMessage`` (reads of the chest radiographs in the same collection)
or anything else are skipped.

Label rule. Readers never share nodule ids, so one nodule's reads are matched by position: two
reads of different readers are the same nodule when their centres lie within
``distance_factor`` x the larger of the two in-plane radii (at least ``min_distance_px``
pixels) in-plane, and within the larger half-extent along z plus ``z_tolerance_mm``. Each reader
contributes at most one read to a nodule (greedy, nearest first). A nodule read by at least
``min_readers`` radiologists (default 3 of 4, the LUNA16 convention) is labelled by the median
of their malignancy ratings: >= ``malignant_min`` (4) -> 1, <= ``benign_max`` (2) -> 0, anything
between (3, and 2.5 / 3.5 for an even number of reads) is excluded as indeterminate.

Samples are keyed by SeriesInstanceUID, one per kept nodule, named ``noduleNN`` (numbered over
all matched nodules of the series in z, y, x order, so names do not change with the rule's
thresholds), with the centre as extra columns ``center_x_px``, ``center_y_px`` (pixel column and
row, mean over the readers) and ``center_z_mm`` (patient z), plus ``n_readers`` and
``malignancy_median``. The CT patch preprocessing reads the centre with
``center_units: pixel_xy``.

Caveats: the centre of a read is the mean of its included outlines' bounding-box centres (not a
filled-mask centroid); in-plane matching is in pixels because the XML carries no pixel spacing;
radiologists rated malignancy without pathology, so the label is a consensus of suspicion, not
ground truth; a series with several XML files (re-submitted reads) keeps the first file in path
order unless ``duplicates="error"``.
"""

from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shiftlab.errors import ShiftlabError
from shiftlab.labels import LabelledSample, LabelTable, not_found

NAMESPACE = "http://www.nih.gov"
CT_ROOT = "LidcReadMessage"
DUPLICATE_POLICIES = ("first", "error")


@dataclass(frozen=True)
class NoduleRead:
    """One radiologist's read of one nodule >= 3 mm, reduced to what matching needs."""

    reader: int  # index of the readingSession within its file
    nodule_id: str
    malignancy: int
    x_px: float  # column
    y_px: float  # row
    z_mm: float
    radius_px: float  # half the larger side of the largest outline's bounding box
    half_depth_mm: float  # half the z extent of the outlines


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _strip_namespaces(root: ET.Element) -> None:
    for element in root.iter():
        element.tag = _local(element.tag)


def _float(element: ET.Element, path: str) -> float | None:
    text = element.findtext(path)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _malignancy(nodule: ET.Element) -> int | None:
    """The 1-5 rating, or None for a nodule without one (< 3 mm, or left blank)."""
    rating = _float(nodule, "characteristics/malignancy")
    if rating is None or rating != int(rating) or not 1 <= rating <= 5:
        return None
    return int(rating)


def _read_nodule(reader: int, nodule: ET.Element, path: Path) -> NoduleRead | None:
    malignancy = _malignancy(nodule)
    if malignancy is None:
        return None
    boxes, zs = [], []
    for roi in nodule.findall("roi"):
        if (roi.findtext("inclusion") or "TRUE").strip().upper() != "TRUE":
            continue  # an exclusion outline (a hole) says nothing about the centre
        z = _float(roi, "imageZposition")
        points = [
            (x, y)
            for edge in roi.findall("edgeMap")
            if (x := _float(edge, "xCoord")) is not None
            and (y := _float(edge, "yCoord")) is not None
        ]
        if z is None or not points:
            continue
        xy = np.asarray(points)
        boxes.append((xy.min(axis=0), xy.max(axis=0)))
        zs.append(z)
    if not boxes:
        warnings.warn(
            f"{path}: reader {reader + 1} nodule {nodule.findtext('noduleID')!r} has a "
            "malignancy rating but no usable outline; ignored.",
            stacklevel=3,
        )
        return None
    centres = np.asarray([(low + high) / 2 for low, high in boxes])
    radius = max(float((high - low).max()) / 2 for low, high in boxes)
    return NoduleRead(
        reader=reader,
        nodule_id=(nodule.findtext("noduleID") or "").strip(),
        malignancy=malignancy,
        x_px=float(centres[:, 0].mean()),
        y_px=float(centres[:, 1].mean()),
        z_mm=float(np.mean(zs)),
        radius_px=radius,
        half_depth_mm=(max(zs) - min(zs)) / 2,
    )


def parse_reads(path: str | os.PathLike[str]) -> tuple[str, list[NoduleRead]] | None:
    """The SeriesInstanceUID and the rated nodule reads of one LIDC XML file.

    None when the file is not a CT read (an ``IdriReadMessage`` of a radiograph, other XML).
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise ShiftlabError(f"LIDC XML file {path} is not well-formed XML: {error}") from error
    if _local(root.tag) != CT_ROOT:
        return None
    _strip_namespaces(root)
    series_uid = (root.findtext("ResponseHeader/SeriesInstanceUid") or "").strip()
    if not series_uid:
        raise ShiftlabError(
            f"LIDC XML file {path} has no ResponseHeader/SeriesInstanceUid; expected the "
            "LidcReadMessage format of LIDC-IDRI (one file per CT series)."
        )
    reads = []
    for reader, session in enumerate(root.findall("readingSession")):
        for nodule in session.findall("unblindedReadNodule"):
            read = _read_nodule(reader, nodule, path)
            if read is not None:
                reads.append(read)
    return series_uid, reads


def _same_nodule(
    read: NoduleRead,
    centre: np.ndarray,
    radius_px: float,
    half_depth_mm: float,
    distance_factor: float,
    min_distance_px: float,
    z_tolerance_mm: float,
) -> float | None:
    """In-plane distance (px) from ``read`` to a nodule's centre if they match, else None."""
    in_plane = float(np.hypot(read.x_px - centre[0], read.y_px - centre[1]))
    reach = max(distance_factor * max(read.radius_px, radius_px), min_distance_px)
    depth = max(read.half_depth_mm, half_depth_mm) + z_tolerance_mm
    if in_plane <= reach and abs(read.z_mm - centre[2]) <= depth:
        return in_plane
    return None


def match_nodules(
    reads: Iterable[NoduleRead],
    distance_factor: float = 1.0,
    min_distance_px: float = 3.0,
    z_tolerance_mm: float = 3.0,
) -> list[list[NoduleRead]]:
    """Group reads of different readers that lie on the same nodule (see the module docstring).

    Reads are taken reader by reader; each joins the nearest matching nodule that has no read
    of its reader yet, or starts a new one. Returns nodules sorted by centre (z, y, x).
    """
    nodules: list[list[NoduleRead]] = []
    for read in sorted(reads, key=lambda r: (r.reader, r.z_mm, r.y_px, r.x_px, r.nodule_id)):
        best, best_distance = None, float("inf")
        for nodule in nodules:
            if any(other.reader == read.reader for other in nodule):
                continue
            distance = _same_nodule(
                read,
                _centre(nodule),
                max(r.radius_px for r in nodule),
                max(r.half_depth_mm for r in nodule),
                distance_factor,
                min_distance_px,
                z_tolerance_mm,
            )
            if distance is not None and distance < best_distance:
                best, best_distance = nodule, distance
        if best is None:
            nodules.append([read])
        else:
            best.append(read)
    return sorted(nodules, key=lambda n: tuple(_centre(n)[::-1]))


def _centre(nodule: list[NoduleRead]) -> np.ndarray:
    """Mean (x px, y px, z mm) of a nodule's reads."""
    return np.asarray([(r.x_px, r.y_px, r.z_mm) for r in nodule]).mean(axis=0)


def nodule_label(
    ratings: list[int], min_readers: int, malignant_min: float, benign_max: float
) -> int | None:
    """1 (malignant), 0 (benign) or None (too few readers, or an indeterminate median)."""
    if len(ratings) < min_readers:
        return None
    median = float(np.median(ratings))
    if median >= malignant_min:
        return 1
    if median <= benign_max:
        return 0
    return None


def _check_settings(root: Path, duplicates: str, malignant_min: float, benign_max: float) -> None:
    """Refuse a missing folder or contradictory settings before any file is read."""
    if not root.is_dir():
        raise not_found(
            "LIDC XML folder",
            root,
            "the LIDC-IDRI DICOM tree (TCIA's download holds one XML per CT series beside its "
            "DICOM files) or the unpacked LIDC-XML-only archive (tcia-lidc-xml/<group>/<n>.xml)",
        )
    if duplicates not in DUPLICATE_POLICIES:
        raise ShiftlabError(
            f"dataset.labels.duplicates={duplicates!r}; choose one of {DUPLICATE_POLICIES}."
        )
    if benign_max >= malignant_min:
        raise ShiftlabError(
            f"dataset.labels: benign_max ({benign_max}) must be below malignant_min "
            f"({malignant_min})."
        )


def _xml_files(root: Path, xml_glob: str) -> list[Path]:
    """The XML files under ``root``, in path order (it decides which duplicate is kept)."""
    files = sorted(p for p in root.glob(xml_glob) if p.is_file())
    if not files:
        raise ShiftlabError(
            f"no LIDC XML files under {root} matching {xml_glob!r}; expected one "
            "LidcReadMessage XML file per CT series (e.g. 069.xml)."
        )
    return files


def _kept_nodules(
    nodules: list[list[NoduleRead]], min_readers: int, malignant_min: float, benign_max: float
) -> list[LabelledSample]:
    """The nodules the label rule keeps, named by their number among all the series' nodules."""
    kept = []
    for number, nodule in enumerate(nodules, start=1):
        ratings = [r.malignancy for r in nodule]
        label = nodule_label(ratings, min_readers, malignant_min, benign_max)
        if label is None:
            continue
        x, y, z = _centre(nodule)
        kept.append(
            LabelledSample(
                name=f"nodule{number:02d}",
                label=label,
                extra={
                    "center_x_px": round(float(x), 3),
                    "center_y_px": round(float(y), 3),
                    "center_z_mm": round(float(z), 3),
                    "n_readers": len(nodule),
                    "malignancy_median": float(np.median(ratings)),
                },
            )
        )
    return kept


def read_labels(
    path: str | os.PathLike[str],
    xml_glob: str = "**/*.xml",
    min_readers: int = 3,
    malignant_min: float = 4.0,
    benign_max: float = 2.0,
    distance_factor: float = 1.0,
    min_distance_px: float = 3.0,
    z_tolerance_mm: float = 3.0,
    duplicates: str = "first",
) -> LabelTable:
    """Every kept nodule of every CT read file found under ``path`` (see the module docstring).

    ``path`` is searched with ``xml_glob``: point it at the DICOM tree of TCIA's download (the
    XML lies beside each series' DICOM files) or at the separate LIDC-XML-only tree.
    """
    root = Path(path)
    _check_settings(root, duplicates, malignant_min, benign_max)
    files = _xml_files(root, xml_glob)
    read_files: dict[str, Path] = {}
    samples: dict[str, list[LabelledSample]] = {}
    for file in files:
        parsed = parse_reads(file)
        if parsed is None:
            continue
        series_uid, reads = parsed
        if series_uid in read_files:
            message = (
                f"two LIDC XML files read series {series_uid}: {read_files[series_uid]} and {file}"
            )
            if duplicates == "error":
                raise ShiftlabError(f"{message}. Narrow dataset.labels.xml_glob.")
            warnings.warn(f"{message}; keeping the first.", stacklevel=2)
            continue
        read_files[series_uid] = file
        nodules = match_nodules(reads, distance_factor, min_distance_px, z_tolerance_mm)
        kept = _kept_nodules(nodules, min_readers, malignant_min, benign_max)
        if kept:
            samples[series_uid] = kept
    if not read_files:
        raise ShiftlabError(
            f"none of the {len(files)} XML files under {root} matching {xml_glob!r} is a LIDC "
            f"CT read (root element {CT_ROOT}); found e.g. {files[0]}."
        )
    return LabelTable(key_tag="SeriesInstanceUID", samples=samples)
