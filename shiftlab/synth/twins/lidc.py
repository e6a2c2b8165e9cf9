"""Miniature synthetic twin of LIDC-IDRI (TCIA): lung CT crops with the readers' XML reads.

Layout, as TCIA's download (NBIA Data Retriever, descriptive directory names) lays it out:

    LIDC-IDRI/LIDC-IDRI-0001/01-01-2000-NA-NA-30178/3000566.000000-NA-03192/1-001.dcm ...
    LIDC-IDRI/LIDC-IDRI-0001/01-01-2000-NA-NA-30178/3000566.000000-NA-03192/069.xml
    LIDC-XML-only/tcia-lidc-xml/185/069.xml        (the separate XML-only archive, same reads)
    TWIN.txt                                        (written last)

Each patient has one CT series (a 56 x 56 crop of lung, 15-24 slices) and one LidcReadMessage
XML file in the published schema (namespace http://www.nih.gov) with 2-4 reading sessions.
Patients are of a malignant or a benign kind: every nodule that counts has that kind's ratings
(median >= 4 or <= 2), so a patient's samples share one label. The messiness the recipe must
handle: readers disagree on ratings, a reader misses a nodule, indeterminate nodules (median
rating 3: excluded), nodules read by one reader only (excluded: fewer than 3 readers), a series
read by only 2 radiologists (all its nodules excluded), nodules < 3 mm (a single point, no
characteristics), nonNodule marks, an exclusion outline (inclusion FALSE), a chest radiograph
study with its IdriReadMessage XML, and four vendors ("GE MEDICAL SYSTEMS", "SIEMENS",
"Philips", "TOSHIBA") with different noise, kernels, slice thickness and stored-value encodings.

The weak signal: malignant nodules are larger (4-6 mm radius) and lobulated, benign ones small
(2.5-3.5 mm) and smooth. Not known publicly and invented here: the order of elements inside
ResponseHeader beyond SeriesInstanceUid/StudyInstanceUID, the XML file numbers and the
LIDC-XML-only group folder of a series, the reader id strings, the scanner models.
"""

from __future__ import annotations

import math
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import ComputedRadiographyImageStorage, generate_uid
from scipy.ndimage import gaussian_filter

from shiftlab.files import write_bytes_atomic
from shiftlab.synth.common import (
    SyntheticPatient,
    image_dataset,
    seeded_rng,
    set_instance,
)
from shiftlab.synth.dicom_writer import write_dicom_atomic
from shiftlab.synth.twins.ct_dicom import CTScanner, write_ct_series, write_twin_marker

NAMESPACE = "http://www.nih.gov"
MATRIX = 56
# (vendor, patients): 12 per default domain, a few on the two other vendors of LIDC-IDRI.
VENDOR_PATIENTS = (("ge", 12), ("siemens", 12), ("philips", 3), ("toshiba", 2))
SCANNERS = {
    "ge": CTScanner("GE MEDICAL SYSTEMS", "LightSpeed Plus", "STANDARD", -1024.0, True, 16),
    "siemens": CTScanner("SIEMENS", "Sensation 16", "B30f", -1024.0, False, 12),
    "philips": CTScanner("Philips", "Brilliance 16P", "D", -1000.0, False, 12),
    "toshiba": CTScanner("TOSHIBA", "Aquilion", "FC01", 0.0, True, 16),
}
# (slice thickness mm, slices, noise HU, in-plane blur px, HU offset) per vendor.
ACQUISITION = {
    "ge": (1.25, 24, 28.0, 0.0, -3.0),
    "siemens": (2.0, 15, 12.0, 0.7, 4.0),
    "philips": (1.5, 20, 18.0, 0.4, 2.0),
    "toshiba": (2.0, 15, 15.0, 0.5, -1.0),
}
# In-plane nodule sites (column, row), far enough apart that no two nodules' reads match.
SITES = ((17.0, 17.0), (38.0, 18.0), (18.0, 38.0), (38.0, 38.0))
XML_GROUPS = ("157", "185", "186", "187", "188", "189")
# The recipe's default rule, restated to compute what each twin nodule should become.
MIN_READERS, MALIGNANT_MIN, BENIGN_MAX = 3, 4.0, 2.0


@dataclass(frozen=True)
class TwinNodule:
    """One object in a twin series and who read it."""

    kind: str  # malignant | benign | indeterminate | single (read by one radiologist)
    x_px: float
    y_px: float
    z_offset_mm: float  # above the first slice
    radius_mm: float
    readers: tuple[int, ...]
    ratings: tuple[int, ...]  # malignancy, one per reader in `readers`

    @property
    def expected_label(self) -> int | None:
        """The label the default recipe rule must give this nodule (None: excluded)."""
        if len(self.readers) < MIN_READERS:
            return None
        median = float(np.median(self.ratings))
        return 1 if median >= MALIGNANT_MIN else 0 if median <= BENIGN_MAX else None


@dataclass(frozen=True)
class TwinPatient:
    number: int  # LIDC-IDRI-<number>
    vendor: str
    n_readers: int
    pixel_spacing: float
    origin: tuple[float, float, float]
    nodules: tuple[TwinNodule, ...]

    @property
    def patient_id(self) -> str:
        return f"LIDC-IDRI-{self.number:04d}"


def _ratings(rng: np.random.Generator, kind: str, n: int) -> tuple[int, ...]:
    """Disagreeing ratings whose median falls in ``kind``'s range under the default rule."""
    choices = {
        "malignant": ([3, 4, 5], [0.2, 0.45, 0.35]),
        "benign": ([1, 2, 3], [0.35, 0.45, 0.2]),
        "indeterminate": ([2, 3, 4], [0.25, 0.5, 0.25]),
        "single": ([2, 3, 4, 5], [0.25, 0.25, 0.25, 0.25]),
    }[kind]
    while True:
        ratings = tuple(int(r) for r in rng.choice(choices[0], size=n, p=choices[1]))
        median = float(np.median(ratings))
        wanted = {
            "malignant": median >= MALIGNANT_MIN,
            "benign": median <= BENIGN_MAX,
            "indeterminate": BENIGN_MAX < median < MALIGNANT_MIN,
            "single": True,
        }[kind]
        if wanted and (n == 1 or len(set(ratings)) > 1):  # readers disagree
            return ratings


def plan(seed: int = 0) -> list[TwinPatient]:
    """Every twin patient: vendor, readers, nodules and their ratings (deterministic)."""
    slots = [(vendor, i) for vendor, count in VENDOR_PATIENTS for i in range(count)]
    order = seeded_rng(seed, "lidc-order").permutation(len(slots))
    patients = []
    for number, slot in enumerate(order, start=1):
        vendor, i = slots[slot]
        rng = seeded_rng(seed, "lidc", vendor, i)
        kind = "malignant" if i % 2 == 0 else "benign"
        n_readers = 2 if (vendor == "ge" and i == 5) else 3 if i % 4 == 3 else 4
        thickness, n_slices = ACQUISITION[vendor][:2]
        span = thickness * (n_slices - 1)
        sites = [SITES[k] for k in rng.permutation(len(SITES))]
        everyone = tuple(range(n_readers))
        wanted = [kind] + ([kind] if rng.random() < 0.35 else [])
        wanted += ["indeterminate"] if i % 3 == 0 else []
        wanted += ["single"] if i % 4 == 1 else []
        nodules = []
        for nodule_kind, (x, y) in zip(wanted, sites, strict=False):
            readers = everyone
            if nodule_kind == "single":
                readers = (int(rng.integers(n_readers)),)
            elif n_readers == 4 and rng.random() < 0.3:  # one radiologist missed it
                missed = int(rng.integers(n_readers))
                readers = tuple(r for r in everyone if r != missed)
            radius = {
                "malignant": (4.0, 6.0),
                "benign": (2.5, 3.5),
                "indeterminate": (3.0, 4.5),
                "single": (2.0, 2.6),
            }[nodule_kind]
            nodules.append(
                TwinNodule(
                    kind=nodule_kind,
                    x_px=float(x + rng.uniform(-1.5, 1.5)),
                    y_px=float(y + rng.uniform(-1.5, 1.5)),
                    z_offset_mm=float(span / 2 + rng.uniform(-0.2, 0.2) * span),
                    radius_mm=float(rng.uniform(*radius)),
                    readers=readers,
                    ratings=_ratings(rng, nodule_kind, len(readers)),
                )
            )
        spacing = round(float(rng.uniform(300, 420)) / 512, 6)
        origin = (
            round(float(rng.uniform(-180, -120)), 3),
            round(float(rng.uniform(-200, -140)), 3),
            round(float(rng.uniform(-260, -60)), 2),
        )
        patients.append(TwinPatient(number, vendor, n_readers, spacing, origin, tuple(nodules)))
    return patients


def _render(rng: np.random.Generator, patient: TwinPatient) -> np.ndarray:
    """Lung parenchyma with the nodules, in HU."""
    thickness, n_slices, noise, blur, offset = ACQUISITION[patient.vendor]
    ps = patient.pixel_spacing
    z, y, x = np.meshgrid(
        np.arange(n_slices) * thickness,
        np.arange(MATRIX) * ps,
        np.arange(MATRIX) * ps,
        indexing="ij",
    )
    texture = gaussian_filter(rng.standard_normal(z.shape), (1.0, 2.0, 2.0))
    hu = -850.0 + 25.0 * texture / texture.std() + rng.uniform(5, 20) * y / (MATRIX * ps)
    for nodule in patient.nodules:
        dx, dy, dz = x - nodule.x_px * ps, y - nodule.y_px * ps, z - nodule.z_offset_mm
        distance = np.sqrt(dx * dx + dy * dy + dz * dz)
        radius = np.full(distance.shape, nodule.radius_mm)
        if nodule.kind == "malignant":  # lobulated outline
            lobes, phase = int(rng.integers(3, 6)), rng.uniform(0, 2 * math.pi)
            radius = radius * (
                1 + rng.uniform(0.15, 0.3) * np.sin(lobes * np.arctan2(dy, dx) + phase)
            )
        occupancy = np.clip((radius - distance) / 0.8 + 0.5, 0, 1)
        density = rng.uniform(-20, 40)
        hu += occupancy * (density - hu)
    if blur > 0:
        hu = gaussian_filter(hu, (0, blur, blur))
    grain = rng.standard_normal(hu.shape)
    if blur > 0:
        grain = gaussian_filter(grain, (0, blur, blur))
    return (hu + noise * grain / grain.std() + offset).astype(np.float32)


def _sub(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{NAMESPACE}}}{tag}")
    if text is not None:
        element.text = str(text)
    return element


def _roi(parent: ET.Element, z: float, sop_uid: str, points: list[tuple[int, int]], include: bool):
    roi = _sub(parent, "roi")
    _sub(roi, "imageZposition", f"{z:.3f}")
    _sub(roi, "imageSOP_UID", sop_uid)
    _sub(roi, "inclusion", "TRUE" if include else "FALSE")
    for x, y in points:
        edge = _sub(roi, "edgeMap")
        _sub(edge, "xCoord", x)
        _sub(edge, "yCoord", y)


def _outline(cx: float, cy: float, radius_px: float) -> list[tuple[int, int]]:
    """Integer boundary pixels of a circle, as a reader's edge map lists them."""
    n = max(8, int(2 * math.pi * radius_px))
    points = [
        (round(cx + radius_px * math.cos(a)), round(cy + radius_px * math.sin(a)))
        for a in np.linspace(0, 2 * math.pi, n, endpoint=False)
    ]
    return list(dict.fromkeys(points))


def _characteristics(parent: ET.Element, rng: np.random.Generator, kind: str, rating: int):
    chars = _sub(parent, "characteristics")
    rough = kind == "malignant"
    values = {
        "subtlety": int(rng.integers(3, 6)),
        "internalStructure": 1,
        "calcification": 6,
        "sphericity": int(rng.integers(2, 4) if rough else rng.integers(4, 6)),
        "margin": int(rng.integers(2, 4) if rough else rng.integers(4, 6)),
        "lobulation": int(rng.integers(2, 5) if rough else 1),
        "spiculation": int(rng.integers(1, 4) if rough else 1),
        "texture": 5,
        "malignancy": rating,
    }
    for name, value in values.items():
        _sub(chars, name, value)


def _reads_xml(
    rng: np.random.Generator,
    patient: TwinPatient,
    study_uid: str,
    series_uid: str,
    slice_z: np.ndarray,
    sop_uids: list[str],
) -> bytes:
    """The LidcReadMessage of one series: one readingSession per radiologist."""
    uid = generate_uid(entropy_srcs=[series_uid, "reads"])
    root = ET.Element(f"{{{NAMESPACE}}}LidcReadMessage", {"uid": uid})
    header = _sub(root, "ResponseHeader")
    for tag, value in (
        ("Version", "1.8.1"),
        ("MessageId", 1000 + patient.number),
        ("DateRequest", "2000-01-01"),
        ("TimeRequest", "00:00:00"),
        ("RequestingSite", "removed"),
        ("ServicingSite", "removed"),
        ("TaskDescription", "Second unblinded read"),
        ("CtImageFile", "removed"),
        ("SeriesInstanceUid", series_uid),
        ("DateService", "2000-01-01"),
        ("TimeService", "00:00:00"),
        ("ResponseDescription", "1 - Reading complete"),
        ("StudyInstanceUID", study_uid),
    ):
        _sub(header, tag, value)
    ps = patient.pixel_spacing
    for reader in range(patient.n_readers):
        session = _sub(root, "readingSession")
        _sub(session, "annotationVersion", "3.12")
        _sub(session, "servicingRadiologistID", f"anon-{reader + 1}")
        for j, nodule in enumerate(n for n in patient.nodules if reader in n.readers):
            rating = nodule.ratings[nodule.readers.index(reader)]
            read = _sub(session, "unblindedReadNodule")
            _sub(read, "noduleID", f"IL{patient.number:03d}_{reader}{j:02d}")
            _characteristics(read, rng, nodule.kind, rating)
            cx, cy = nodule.x_px + rng.uniform(-1, 1), nodule.y_px + rng.uniform(-1, 1)
            scale = rng.uniform(0.85, 1.15)
            outlined = []
            for k, z in enumerate(slice_z):
                dz = z - slice_z[0] - nodule.z_offset_mm
                if abs(dz) >= nodule.radius_mm:
                    continue
                r_px = scale * math.sqrt(nodule.radius_mm**2 - dz * dz) / ps
                if r_px >= 0.7:
                    _roi(read, float(z), sop_uids[k], _outline(cx, cy, r_px), True)
                    outlined.append(k)
            if nodule.kind == "malignant" and reader == 0 and outlined:
                k = outlined[len(outlined) // 2]  # a hole inside the outline: inclusion FALSE
                _roi(read, float(slice_z[k]), sop_uids[k], _outline(cx, cy, 0.8), False)
        # A nodule < 3 mm: one point, no characteristics. Then a lesion judged a non-nodule.
        k = int(rng.integers(len(slice_z)))
        small = _sub(session, "unblindedReadNodule")
        _sub(small, "noduleID", f"small-{patient.number:03d}-{reader}")
        _roi(small, float(slice_z[k]), sop_uids[k], [(MATRIX // 2 + reader, 4)], True)
        if rng.random() < 0.6:
            k = int(rng.integers(len(slice_z)))
            non = _sub(session, "nonNodule")
            _sub(non, "nonNoduleID", f"non-{patient.number:03d}-{reader}")
            _sub(non, "imageZposition", f"{float(slice_z[k]):.3f}")
            _sub(non, "imageSOP_UID", sop_uids[k])
            locus = _sub(non, "locus")
            _sub(locus, "xCoord", MATRIX - 5)
            _sub(locus, "yCoord", MATRIX // 2 + reader)
    ET.register_namespace("", NAMESPACE)
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def _idri_xml(study_uid: str, series_uid: str) -> bytes:
    """A chest-radiograph read (IdriReadMessage): the recipe must skip it."""
    root = ET.Element(f"{{{NAMESPACE}}}IdriReadMessage")
    header = _sub(root, "ResponseHeader")
    _sub(header, "SeriesInstanceUid", series_uid)
    _sub(header, "StudyInstanceUID", study_uid)
    ET.register_namespace("", NAMESPACE)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def _write_radiograph(case: Path, patient: TwinPatient, seed: int) -> tuple[str, str]:
    """A small CR study beside the CT, as many LIDC-IDRI patients have one."""
    settings = [str(seed), patient.patient_id, "cxr"]
    cr = SyntheticPatient(
        vendor=patient.vendor,
        index=patient.number,
        rng=seeded_rng(seed, "lidc-cxr", patient.number),
        patient_id=patient.patient_id,
        study_uid=generate_uid(entropy_srcs=[*settings, "study"]),
        series_uid=generate_uid(entropy_srcs=[*settings, "series"]),
    )
    ds = image_dataset(ComputedRadiographyImageStorage, "CR", cr, "GE MEDICAL SYSTEMS", "")
    pixels = (cr.rng.random((64, 64)) * 1000 + 1000).astype(np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    set_instance(ds, cr.series_uid, 0)
    ds.PixelData = pixels.tobytes()
    folder = case / f"01-01-2000-NA-NA-{cr.study_uid[-5:]}" / f"1.000000-NA-{cr.series_uid[-5:]}"
    write_dicom_atomic(ds, folder / "1-1.dcm")
    write_bytes_atomic(folder / "071.xml", _idri_xml(cr.study_uid, cr.series_uid))
    return cr.study_uid, cr.series_uid


def generate(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the twin under ``out_dir`` (see the module docstring); deterministic from ``seed``."""
    out = Path(out_dir)
    (out / "TWIN.txt").unlink(missing_ok=True)
    for folder in ("LIDC-IDRI", "LIDC-XML-only"):
        shutil.rmtree(out / folder, ignore_errors=True)
    for patient in plan(seed):
        rng = seeded_rng(seed, "lidc-pixels", patient.number)
        thickness, n_slices = ACQUISITION[patient.vendor][:2]
        settings = [str(seed), patient.patient_id]
        series = SyntheticPatient(
            vendor=patient.vendor,
            index=patient.number,
            rng=rng,
            patient_id=patient.patient_id,
            study_uid=generate_uid(entropy_srcs=[*settings, "study"]),
            series_uid=generate_uid(entropy_srcs=[*settings, "series"]),
        )
        case = out / "LIDC-IDRI" / patient.patient_id
        folder = (
            case
            / f"01-01-2000-NA-NA-{series.study_uid[-5:]}"
            / f"{3000500 + patient.number}.000000-NA-{series.series_uid[-5:]}"
        )
        sop_uids = write_ct_series(
            folder,
            series,
            SCANNERS[patient.vendor],
            _render(rng, patient),
            patient.origin,
            patient.pixel_spacing,
            thickness,
            lambda k: f"1-{k + 1:03d}.dcm",
            {
                "StudyDescription": "",
                "SeriesDescription": "",
                "SeriesNumber": 3000500 + patient.number,
                "BodyPartExamined": "CHEST",
                "WindowCenter": -600,
                "WindowWidth": 1600,
            },
        )
        slice_z = np.round(patient.origin[2] + thickness * np.arange(n_slices), 3)
        xml = _reads_xml(rng, patient, series.study_uid, series.series_uid, slice_z, sop_uids)
        name = f"{100 + patient.number:03d}.xml"
        write_bytes_atomic(folder / name, xml)
        group = XML_GROUPS[(patient.number - 1) // 6 % len(XML_GROUPS)]
        write_bytes_atomic(out / "LIDC-XML-only" / "tcia-lidc-xml" / group / name, xml)
        if patient.number == 1:
            _write_radiograph(case, patient, seed)
    write_twin_marker(
        out,
        "LIDC-IDRI (TCIA)",
        "LIDC-IDRI/ holds the CT series with each series' XML reads beside them, "
        "LIDC-XML-only/ the same reads as in the separate XML archive.",
    )
    return out
