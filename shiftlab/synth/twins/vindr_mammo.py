"""Miniature twin of VinDr-Mammo 1.0.0: its folder layout and label files, synthetic images.

Layout written under ``out_dir`` (the PhysioNet release lives in ``vindr-mammo/1.0.0``)::

    vindr-mammo/1.0.0/images/<study_id>/<image_id>.dicom     4 views per exam (L/R x CC/MLO)
    vindr-mammo/1.0.0/breast-level_annotations.csv           one row per image
    vindr-mammo/1.0.0/finding_annotations.csv                one row per finding box
    TWIN.txt                                                 written last

Ids are 32-hex-digit strings as in the release. Column names and value spellings ("BI-RADS 4",
"DENSITY C", "L"/"R", "CC"/"MLO", split "training"/"test", finding categories as a list text
such as "['Mass']") follow public code that reads the release. Not reproduced: ``metadata.csv``
(a per-image table of DICOM attributes) and the release's checksum and licence files.

Exams per vendor (SIEMENS and Planmed, the default domains, 16 each; 4 IMS exams, with both
IMS spellings, as a third vendor): about half "normal" (both breasts BI-RADS 1, now and then one
breast BI-RADS 2, whose images the label rule leaves out), about half "suspicious" (one breast
BI-RADS 4 or 5 holding a dense mass, the other BI-RADS 1 or 2), and two "follow-up" exams per
default vendor with only BI-RADS 2-3 breasts, which drop out entirely.

Images are tall and <= 128 px: a breast against the chest wall (a pectoral muscle in MLO views),
fibroglandular texture that grows with density, a dense mass in BI-RADS 4-5 breasts (a weak
learnable signal). Each vendor renders and encodes in its own way: SIEMENS MONOCHROME2 12 bit
with a window, one series per image; Planmed MONOCHROME1 14 bit with a window, one series per
exam (its four images share a SeriesInstanceUID, so only grouping by SOPInstanceUID keeps them
apart); IMS MONOCHROME2 14 bit with two windows, one series per breast. Left breasts have the
chest wall on the image's left, right breasts on its right (PatientOrientation A\\R, P\\L). Per
vendor encodings and model names are illustrative, not measured on the release. Headers carry no
PatientID: patient identity comes from the label recipe (study_id).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation, generate_uid
from scipy.ndimage import gaussian_filter

from shiftlab.synth.common import (
    SyntheticPatient,
    image_dataset,
    seeded_rng,
    set_grey_pixels,
    set_instance,
    write_csv,
)
from shiftlab.synth.dicom_writer import write_dicom_atomic

RELEASE = Path("vindr-mammo") / "1.0.0"
TWIN_MARKER = "TWIN.txt"
BREAST_COLUMNS = (
    "study_id",
    "series_id",
    "image_id",
    "laterality",
    "view_position",
    "height",
    "width",
    "breast_birads",
    "breast_density",
    "split",
)
FINDING_COLUMNS = (
    *BREAST_COLUMNS[:-1],
    "finding_categories",
    "finding_birads",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
    "split",
)
VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
DENSITIES = ("A", "B", "C", "D")
# VinDr-Mammo's training/test proportion (4,000 / 1,000 exams): every fifth exam is "test" here.
TEST_EVERY = 5


@dataclass(frozen=True)
class MammoVendor:
    """A mammography system: header strings, matrix, encoding and rendering."""

    manufacturers: tuple[str, ...]  # spellings, used in turn by exam
    model_names: tuple[str, ...]
    rows: int
    columns: int
    bits_stored: int
    photometric: str
    windows: int  # WindowCenter/WindowWidth pairs written (the first spans the stored range)
    series: str  # "image" | "breast" | "study": what one SeriesInstanceUID covers
    gamma: float
    noise: float
    blur: float


VENDORS: dict[str, MammoVendor] = {
    "siemens": MammoVendor(
        manufacturers=("SIEMENS",),
        model_names=("MAMMOMAT Inspiration",),
        rows=128,
        columns=100,
        bits_stored=12,
        photometric="MONOCHROME2",
        windows=1,
        series="image",
        gamma=1.0,
        noise=0.02,
        blur=0.6,
    ),
    "planmed": MammoVendor(
        manufacturers=("Planmed",),
        model_names=("Planmed Nuance",),
        rows=120,
        columns=96,
        bits_stored=14,
        photometric="MONOCHROME1",
        windows=1,
        series="study",
        gamma=1.4,
        noise=0.035,
        blur=1.0,
    ),
    "ims": MammoVendor(
        manufacturers=("IMS GIOTTO S.p.A.", "IMS s.r.l."),
        model_names=("GIOTTO IMAGE 3DL", "GIOTTO CLASS"),
        rows=128,
        columns=104,
        bits_stored=14,
        photometric="MONOCHROME2",
        windows=2,
        series="breast",
        gamma=0.8,
        noise=0.03,
        blur=0.8,
    ),
}
DEFAULT_EXAMS = {"siemens": 16, "planmed": 16, "ims": 4}
FOLLOW_UP_EXAMS = 2  # per vendor with at least 8 exams: BI-RADS 2-3 only, dropped by the rule
MASS_CONTRAST = 0.45


def _hex_id(seed: int, *keys: object) -> str:
    return hashlib.md5(repr(("vindr-mammo-twin", seed, *keys)).encode()).hexdigest()


def _exam_birads(rng: np.random.Generator, kind: str) -> dict[str, int]:
    """BI-RADS of the left and right breast for an exam of ``kind``."""
    if kind == "normal":
        if rng.random() < 0.7:
            return {"L": 1, "R": 1}
        return dict(zip("LR", (int(b) for b in rng.permutation([1, 2])), strict=True))
    if kind == "suspicious":
        sick, other = rng.permutation(["L", "R"])
        return {str(sick): int(rng.choice([4, 4, 5])), str(other): int(rng.choice([1, 1, 2]))}
    return {"L": int(rng.choice([2, 3])), "R": 3}  # follow-up: nothing the rule keeps


def _exam_kinds(n_exams: int, rng: np.random.Generator) -> list[str]:
    follow_up = FOLLOW_UP_EXAMS if n_exams >= 8 else 0
    rest = n_exams - follow_up
    kinds = ["normal"] * (rest - rest // 2) + ["suspicious"] * (rest // 2)
    kinds += ["follow-up"] * follow_up
    return [kinds[i] for i in rng.permutation(n_exams)]


def render_mammogram(
    rng: np.random.Generator,
    vendor: MammoVendor,
    view: str,
    laterality: str,
    density: int,
    mass: bool,
) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """Displayed image in [0, 1] (bright = dense) and the mass box (xmin, ymin, xmax, ymax)."""
    rows, cols = vendor.rows, vendor.columns
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    x, y = x / cols, y / rows  # chest wall at x = 0 (left breast as stored)
    centre = rng.uniform(0.45, 0.55) if view == "CC" else rng.uniform(0.5, 0.6)
    depth = rng.uniform(0.7, 0.85)
    half_height = rng.uniform(0.36, 0.42) if view == "CC" else rng.uniform(0.42, 0.48)
    r2 = (x / depth) ** 2 + ((y - centre) / half_height) ** 2
    thickness = np.sqrt(np.clip(1 - r2, 0, None))
    breast = thickness > 0
    texture = gaussian_filter(rng.standard_normal((rows, cols)), 2.0)
    texture = texture / texture.std()
    fibro = (0.06 + 0.04 * density) * np.clip(texture + 0.3 * density - 0.3, 0, None)
    image = breast * (0.25 + 0.3 * thickness**0.5 + fibro * thickness)
    if view == "MLO":  # the pectoral muscle: a bright triangle in the upper chest-wall corner
        muscle = (x < rng.uniform(0.25, 0.35) * (1 - y / rng.uniform(0.45, 0.6))) & breast
        image = np.where(muscle, np.maximum(image, 0.75 + 0.05 * texture), image)
    box = None
    if mass:
        while True:
            mx, my = rng.uniform(0.15, 0.55), centre + rng.uniform(-0.25, 0.25) * half_height
            if breast[int(my * rows), int(mx * cols)]:
                break
        radius = rng.uniform(0.06, 0.09)
        d = np.hypot((x - mx) * cols / rows, y - my)
        image = image + MASS_CONTRAST * np.exp(-0.5 * (d / radius) ** 2) * breast
        half = 2 * radius
        box = (
            int(max((mx - half * rows / cols) * cols, 0)),
            int(max((my - half) * rows, 0)),
            int(min((mx + half * rows / cols) * cols, cols - 1)),
            int(min((my + half) * rows, rows - 1)),
        )
    image = gaussian_filter(image, vendor.blur) + vendor.noise * rng.standard_normal((rows, cols))
    image = np.clip(image, 0, 1) ** vendor.gamma
    if laterality == "R":  # stored with the chest wall on the right
        image = image[:, ::-1]
        if box is not None:
            box = (cols - 1 - box[2], box[1], cols - 1 - box[0], box[3])
    return image, box


def _dataset(
    vendor: MammoVendor,
    exam: int,
    image: np.ndarray,
    uids: SyntheticPatient,
    sop_index: int,
    laterality: str,
    view: str,
) -> FileDataset:
    manufacturer = vendor.manufacturers[exam % len(vendor.manufacturers)]
    model_name = vendor.model_names[exam % len(vendor.model_names)]
    ds = image_dataset(
        DigitalMammographyXRayImageStorageForPresentation, "MG", uids, manufacturer, model_name
    )
    del ds.PatientID, ds.PatientName  # the release names exams, not patients
    set_instance(ds, uids.series_uid, sop_index)
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.PatientOrientation = ["A", "R"] if laterality == "L" else ["P", "L"]
    ds.BodyPartExamined = "BREAST"
    top = 2**vendor.bits_stored - 1
    stored = np.round(image * top)
    if vendor.photometric == "MONOCHROME1":
        stored = top - stored
    ds.ImagerPixelSpacing = [0.085 * 3000 / image.shape[0]] * 2
    set_grey_pixels(ds, stored, vendor.photometric, vendor.bits_stored)
    # The first window spans the stored range (what a reader applies); a second, narrower one is
    # an alternative the console offers, as some systems write.
    centres = [2 ** (vendor.bits_stored - 1), round(0.6 * top)][: vendor.windows]
    widths = [2**vendor.bits_stored, round(0.5 * top)][: vendor.windows]
    ds.WindowCenter = centres if len(centres) > 1 else centres[0]
    ds.WindowWidth = widths if len(widths) > 1 else widths[0]
    ds.VOILUTFunction = "LINEAR"
    return ds


def generate(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    exams_per_vendor: dict[str, int] | None = None,
) -> Path:
    """Write the twin under ``out_dir`` (deterministic from ``seed``); return ``out_dir``."""
    out = Path(out_dir)
    release = out / RELEASE
    counts = dict(DEFAULT_EXAMS if exams_per_vendor is None else exams_per_vendor)
    breast_rows: list[dict] = []
    finding_rows: list[dict] = []
    for vendor_name, n_exams in counts.items():
        vendor = VENDORS[vendor_name]
        kinds = _exam_kinds(n_exams, seeded_rng(seed, "vindr-mammo", vendor_name, "kinds"))
        for exam, kind in enumerate(kinds):
            rng = seeded_rng(seed, "vindr-mammo", vendor_name, exam)
            study_id = _hex_id(seed, vendor_name, exam)
            study_uid = generate_uid(entropy_srcs=[study_id, "study"])
            birads = _exam_birads(rng, kind)
            density = int(rng.integers(len(DENSITIES)))
            split = "test" if exam % TEST_EVERY == TEST_EVERY - 1 else "training"
            for view_index, (laterality, view) in enumerate(VIEWS):
                series_key = {"image": view_index, "breast": laterality, "study": 0}[vendor.series]
                series_uid = generate_uid(entropy_srcs=[study_id, "series", str(series_key)])
                image_id = _hex_id(seed, vendor_name, exam, laterality, view)
                category = birads[laterality]
                image, box = render_mammogram(
                    rng, vendor, view, laterality, density, mass=category >= 4
                )
                uids = SyntheticPatient(vendor_name, exam, rng, "", study_uid, series_uid)
                ds = _dataset(vendor, exam, image, uids, view_index, laterality, view)
                path = release / "images" / study_id / f"{image_id}.dicom"
                write_dicom_atomic(ds, path)
                row = {
                    "study_id": study_id,
                    "series_id": hashlib.md5(series_uid.encode()).hexdigest(),
                    "image_id": image_id,
                    "laterality": laterality,
                    "view_position": view,
                    "height": image.shape[0],
                    "width": image.shape[1],
                    "breast_birads": f"BI-RADS {category}",
                    "breast_density": f"DENSITY {DENSITIES[density]}",
                    "split": split,
                }
                breast_rows.append(row)
                finding = {
                    **row,
                    "finding_categories": "['No Finding']",
                    "finding_birads": "",
                    "xmin": "",
                    "ymin": "",
                    "xmax": "",
                    "ymax": "",
                }
                if box is not None:
                    finding.update(
                        finding_categories="['Mass']",
                        finding_birads=f"BI-RADS {category}",
                        xmin=f"{box[0]:.2f}",
                        ymin=f"{box[1]:.2f}",
                        xmax=f"{box[2]:.2f}",
                        ymax=f"{box[3]:.2f}",
                    )
                finding_rows.append(finding)
    write_csv(release / "breast-level_annotations.csv", breast_rows, BREAST_COLUMNS)
    write_csv(release / "finding_annotations.csv", finding_rows, FINDING_COLUMNS)
    (out / TWIN_MARKER).write_text(
        "Miniature synthetic twin of VinDr-Mammo 1.0.0 (PhysioNet), not real data: a few "
        "synthetic four-view mammography exams written as DICOM in the release's folder "
        "layout, with label files in its published schema, generated by "
        f"shiftlab.synth.twins.vindr_mammo (seed {seed}) so that the xray_mammo preset can be "
        "run end to end without the download.\n"
    )
    return out
