"""Miniature twin of PadChest (BIMCV): its folder layout and label table, synthetic 16-bit PNGs.

Layout written under ``out_dir`` (the BIMCV-PadChest-FULL share, each ``N.zip`` unpacked into
``N/``)::

    BIMCV-PadChest-FULL/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz
    BIMCV-PadChest-FULL/0/<ImageID>.png     16-bit greyscale PNG, written with SimpleITK
    BIMCV-PadChest-FULL/1/<ImageID>.png
    BIMCV-PadChest-FULL/54/<ImageID>.png    the authors' folder for images added later
    TWIN.txt                                 written last

The table has the published columns in the authors' order, the unnamed index column first and
every value written as text (``nan``, ``None``), as ``generatePublicFile`` in
auriml/Rx-thorax-automatic-captioning ``util.py`` writes it; its quirks are the real ones that a
recipe must handle (sources in ``shiftlab/recipes/padchest.py``):

- ``Manufacturer_DICOM`` run together: ``PhilipsMedicalSystems``, ``ImagingDynamicsCompanyLtd``;
- ``Labels`` as Python list literals shared by the PA and lateral images of a study, a label
  with a leading space, ``['normal']``, ``['exclude']``, ``['normal', 'suboptimal study']``,
  ``['unchanged']`` (a finding in the authors' taxonomy), ``[]`` and an empty cell;
- lateral (``L``) and supine (``AP_horizontal``, Philips only) images beside the PA ones, and a
  projection predicted by ``resnet-50.t7``;
- patients with several studies;
- an image listed in the table whose file is missing, and a PNG cut short (public loaders list
  real PadChest files that are "truncated" or missing: mlmed/torchxrayvision
  ``torchxrayvision/datasets.py``, PC_Dataset).

Pixel values: the table's ``BitsStored_DICOM`` is 12 or 10 (BIMCV-CSUSP/BIMCV-COVID-19,
``padchest-covid/subsetsByPatology-tsv/neumo_infiltrates_f.tsv``) while the files are 16-bit
PNG; no public source says whether the PNGs keep the stored values (BIMCV's own ``dcm2png.py`` in
that repository copies them unchanged) or were stretched (a third-party note reads "original
intensity: 6e4+"). The twin holds both: Philips images keep 12- or 10-bit values, Imaging
Dynamics images span the 16-bit range. Both vendors write MONOCHROME2, as every row does.

Images are chest radiographs from ``shiftlab.synth.xray`` (a nodule with a calcified core when
the study has a finding: a weak learnable signal), <= 128 px, rendered as that module's two
vendors at a moderate shift (Imaging Dynamics as its "ge", Philips as its "philips").
"""

from __future__ import annotations

import gzip
import io
import os
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from shiftlab.files import write_bytes_atomic, write_via_temporary
from shiftlab.recipes.padchest import TABLE_NAME
from shiftlab.synth.common import seeded_rng
from shiftlab.synth.severity import interpolate_vendors
from shiftlab.synth.xray import VENDORS as XRAY_VENDORS
from shiftlab.synth.xray import render_radiograph, tone_curve

RELEASE = Path("BIMCV-PadChest-FULL")
TWIN_MARKER = "TWIN.txt"
# The published columns in the order generatePublicFile writes them (after the index column).
COLUMNS = (
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "ViewPosition_DICOM",
    "Projection",
    "MethodProjection",
    "Pediatric",
    "Modality_DICOM",
    "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM",
    "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM",
    "BitsStored_DICOM",
    "WindowCenter_DICOM",
    "WindowWidth_DICOM",
    "Rows_DICOM",
    "Columns_DICOM",
    "XRayTubeCurrent_DICOM",
    "Exposure_DICOM",
    "ExposureInuAs_DICOM",
    "ExposureTime",
    "RelativeXRayExposure_DICOM",
    "ReportID",
    "Report",
    "MethodLabel",
    "Labels",
    "Localizations",
    "LabelsLocalizationsBySentence",
    "labelCUIS",
    "LocalizationsCUIS",
)
MANUFACTURERS = {
    "philips": "PhilipsMedicalSystems",
    "imaging_dynamics": "ImagingDynamicsCompanyLtd",
}
# shiftlab.synth.xray's calibrated vendors stand in for the two makers.
RENDERED_AS = {"philips": "philips", "imaging_dynamics": "ge"}
MATRIX = {"philips": 112, "imaging_dynamics": 128}
SEVERITY = 0.45
LESION_CONTRAST = 4.0
PATIENTS_PER_VENDOR = 12
# Findings as PadChest spells them (a leading space is one of the table's quirks).
FINDINGS = (
    "pneumonia",
    " alveolar pattern",
    "nodule",
    "COPD signs",
    "cardiomegaly",
    "pleural effusion",
    "chronic changes",
    "NSG tube",
)
# Studies whose label makes them unusable for the task, added to patients 0-3 of each vendor.
UNUSABLE_LABELS = ("['exclude']", "['normal', 'suboptimal study']", "[]", "")
FOLDERS = (0, 1, 54)


@dataclass
class Study:
    vendor: str
    patient: str
    study_id: str
    labels: str  # the Labels cell as written
    finding: bool  # whether the images show the planted finding
    projections: tuple[str, ...]
    images: list[dict] = field(default_factory=list)


def _number(rng: np.random.Generator, digits: int) -> str:
    return "".join(str(d) for d in [int(rng.integers(1, 10)), *rng.integers(0, 10, digits - 1)])


def _suffix(rng: np.random.Generator) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), 6))


def _labels_of(rng: np.random.Generator, finding: bool) -> str:
    if not finding:
        return "['normal']"
    picked = rng.choice(FINDINGS, size=int(rng.integers(1, 4)), replace=False)
    return repr([str(p) for p in picked])


def _studies(seed: int, vendor: str) -> list[Study]:
    """Each vendor's patients: half with findings; every third has a second study; patients 0-3
    also have a study whose labels make it unusable; a few Philips studies are supine."""
    studies = []
    for index in range(PATIENTS_PER_VENDOR):
        rng = seeded_rng(seed, "padchest", vendor, index)
        patient = _number(rng, 38)
        finding = index % 2 == 1
        labels = [_labels_of(rng, finding) for _ in range(2 if index % 3 == 0 else 1)]
        if index == 3:
            labels[-1] = "['unchanged']"  # a finding in the authors' taxonomy
        plans = [(text, finding, ("PA", "L")) for text in labels]
        if index < len(UNUSABLE_LABELS):
            plans.append((UNUSABLE_LABELS[index], False, ("PA", "L")))
        if vendor == "philips" and index in (4, 7):
            plans.append((_labels_of(rng, finding), finding, ("AP_horizontal",)))
        for text, shows, projections in plans:
            studies.append(Study(vendor, patient, _number(rng, 38), text, shows, projections))
    return studies


def _encode(display: np.ndarray, vendor: str, bits: int) -> np.ndarray:
    """16-bit PNG values: the stored ``bits`` (Philips) or the full 16-bit range."""
    top = 2**16 - 1 if vendor == "imaging_dynamics" else 2**bits - 1
    return np.round(display * top).astype(np.uint16)


def _row(study: Study, image_id: str, projection: str, bits: int, size: int, rng) -> dict:
    philips = study.vendor == "philips"
    lateral = projection == "L"
    view = (
        "nan"
        if philips
        else {"PA": "POSTEROANTERIOR", "L": "LATERAL"}.get(projection, "ANTEROPOSTERIOR")
    )
    window = ("2047.0", "4095.0") if bits == 12 else ("5.115000e+02", "1.023000e+03")
    empty = rng.random() < 0.2
    return {
        "ImageID": image_id,
        "ImageDir": 0,
        "StudyDate_DICOM": f"20{int(rng.integers(9, 18)):02d}{int(rng.integers(1, 13)):02d}15",
        "StudyID": study.study_id,
        "PatientID": study.patient,
        "PatientBirth": f"{int(rng.integers(1925, 1995))}.0",
        "PatientSex_DICOM": str(rng.choice(["M", "F"])),
        "ViewPosition_DICOM": view,
        "Projection": projection,
        "MethodProjection": "resnet-50.t7"
        if rng.random() < 0.1
        else "Manual review of DICOM fields",
        "Pediatric": "No",
        "Modality_DICOM": "CR",
        "Manufacturer_DICOM": MANUFACTURERS[study.vendor],
        "PhotometricInterpretation_DICOM": "MONOCHROME2",
        "PixelRepresentation_DICOM": 0,
        "PixelAspectRatio_DICOM": "['1', '1']" if philips else "None",
        "SpatialResolution_DICOM": "0.143" if philips else "None",
        "BitsStored_DICOM": bits,
        "WindowCenter_DICOM": window[0] if philips else ("None" if empty else "2256"),
        "WindowWidth_DICOM": window[1] if philips else ("None" if empty else "2949"),
        "Rows_DICOM": size,
        "Columns_DICOM": size,
        "XRayTubeCurrent_DICOM": "None" if philips else 400,
        "Exposure_DICOM": "None" if philips else (20 if lateral else 4),
        "ExposureInuAs_DICOM": "None" if philips else (20000 if lateral else 4000),
        "ExposureTime": "None" if philips else (50 if lateral else 10),
        "RelativeXRayExposure_DICOM": int(rng.integers(100, 2000)) if philips else "None",
        "ReportID": int(rng.integers(1_000_000, 9_999_999)),
        "Report": "sin hallazg signific ." if study.labels == "['normal']" else "vease hallazg .",
        "MethodLabel": "Physician" if rng.random() < 0.3 else "RNN_model",
        "Labels": study.labels if study.labels else np.nan,
        "Localizations": "[]",
        "LabelsLocalizationsBySentence": f"[{study.labels}]" if study.labels else np.nan,
        "labelCUIS": "[]",
        "LocalizationsCUIS": "[]",
    }


def _write_png(path: Path, pixels: np.ndarray) -> None:
    image = sitk.GetImageFromArray(pixels)
    # SimpleITK picks the format by the extension: the temporary name keeps ".png" last.
    write_via_temporary(path, lambda tmp: sitk.WriteImage(image, str(tmp)), extension=".png")


def _write_table(path: Path, rows: list[dict], seed: int) -> None:
    """The gzipped CSV, written as pandas writes it with its (non-contiguous) index."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.index = np.sort(seeded_rng(seed, "padchest", "index").choice(10 * len(rows), len(rows)))
    text = frame.to_csv(index=True)
    buffer = io.BytesIO()
    # mtime 0 and no file name: the same rows give the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as stream:
        stream.write(text.encode())
    write_bytes_atomic(path, buffer.getvalue())


def generate(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the twin under ``out_dir`` (deterministic from ``seed``); return ``out_dir``."""
    out = Path(out_dir)
    release = out / RELEASE
    table = {name: vendor.acquisition for name, vendor in XRAY_VENDORS.items()}
    acquisitions = interpolate_vendors(table, SEVERITY)
    studies = [s for vendor in MANUFACTURERS for s in _studies(seed, vendor)]
    rows: list[dict] = []
    for number, study in enumerate(studies):
        rng = seeded_rng(seed, "padchest", "study", number)
        acquisition = acquisitions[RENDERED_AS[study.vendor]]
        for projection in study.projections:
            image_id = f"{study.study_id}_{_suffix(rng)}.png"
            bits = 10 if study.vendor == "philips" and number % 4 == 0 else 12
            size = MATRIX[study.vendor]
            image = render_radiograph(rng, acquisition, size, study.finding, LESION_CONTRAST)
            pixels = _encode(tone_curve(image, acquisition), study.vendor, bits)
            row = _row(study, image_id, projection, bits, size, rng)
            row["ImageDir"] = FOLDERS[len(rows) % len(FOLDERS)]
            rows.append(row)
            study.images.append({"path": release / str(row["ImageDir"]) / image_id, "px": pixels})
    _write_images(studies)
    _write_table(release / TABLE_NAME, rows, seed)
    (out / TWIN_MARKER).write_text(
        "Miniature synthetic twin of PadChest (BIMCV), not real data: a few synthetic chest "
        "radiographs written as 16-bit PNG in the BIMCV-PadChest-FULL folder layout, with the "
        "label table in its published schema, generated by shiftlab.synth.twins.padchest "
        f"(seed {seed}) so that the xray_chest preset can be run end to end without the "
        "download.\n"
    )
    return out


def _write_images(studies: list[Study]) -> None:
    """Every image, but for the quirks: Philips' first PA image with a finding is listed and
    missing; Imaging Dynamics' second-study PA of patient 0 is cut short."""
    missing = next(s for s in studies if s.vendor == "philips" and s.finding).images[0]
    cut = [s for s in studies if s.vendor == "imaging_dynamics"][1].images[0]
    for study in studies:
        for image in study.images:
            if image is missing:
                continue
            _write_png(image["path"], image["px"])
            if image is cut:
                data = image["path"].read_bytes()
                image["path"].write_bytes(data[: len(data) // 2])
