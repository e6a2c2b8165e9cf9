"""Miniature twin of VinDr-CXR 1.0.0: its folder layout and label files, synthetic images.

Layout written under ``out_dir`` (the PhysioNet release lives in ``vindr-cxr/1.0.0``)::

    vindr-cxr/1.0.0/train/<image_id>.dicom
    vindr-cxr/1.0.0/test/<image_id>.dicom
    vindr-cxr/1.0.0/annotations/image_labels_train.csv   3 rows per image (rad_id), may disagree
    vindr-cxr/1.0.0/annotations/image_labels_test.csv    1 consensus row per image, no rad_id
    TWIN.txt                                             written last

``image_id`` is a 32-hex-digit id, as in the release. The label columns and their order follow
public code that reads the release (28 findings and diagnoses, then "No finding"; the test file
spells "Other disease" where the training file has "Other diseases"). Not reproduced: the
bounding-box files ``annotations_train.csv`` / ``annotations_test.csv``, which the label recipe
does not read.

Images are chest radiographs from ``shiftlab.synth.xray`` (a nodule with a calcified core for
positive images: a weak learnable signal), <= 128 px, written by several detector models per
vendor so the twin holds what preprocessing must undo: MONOCHROME1 and MONOCHROME2, 12, 14 and
16 stored bits, a VOI LUT, a window, or no VOI attributes at all. Vendors: GE and Philips (the
preset's default domains) and a few Carestream images (a third vendor).

Headers: de-identified exactly as the release was. The dataset's own code
(vinbigdata-medical/vindr-cxr, ``de-identification/anonymize.py``, first published as
``PHI-De-Identification/anonymize.py``) removes every data-set element whose tag is not in its
``tags.csv`` (``RELEASE_TAGS`` below: patient sex, age, size and weight, and the Image Pixel,
VOI window, rescale and lossy-compression attributes), sets the file meta's
MediaStorageSOPInstanceUID to the MD5 of the original one (the file's name, ``image_id``) and its
ImplementationClassUID to "1.2.3.4". So the files carry no Manufacturer, no model name, no
Modality, no Study/Series/SOP Instance UID, no PatientID and no VOI LUT Sequence: a twin image
written with a VOI LUT loses it, as the release's did. The vendors differ only in their pixels;
no domain can be formed from the files (the xray_chest_vindr preset stops and says so).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom import config
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import FileDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

from shiftlab.synth.common import (
    SyntheticPatient,
    image_dataset,
    seeded_rng,
    set_grey_pixels,
    set_instance,
    write_csv,
)
from shiftlab.synth.dicom_writer import write_dicom_atomic
from shiftlab.synth.severity import interpolate_vendors
from shiftlab.synth.xray import VENDORS as XRAY_VENDORS
from shiftlab.synth.xray import XrayVendor, encode, render_radiograph

RELEASE = Path("vindr-cxr") / "1.0.0"
TWIN_MARKER = "TWIN.txt"
# Label columns of image_labels_train.csv after image_id and rad_id, in the release's order.
FINDINGS = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Clavicle fracture",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged PA",
    "ILD",
    "Infiltration",
    "Lung cavity",
    "Lung cyst",
    "Lung Opacity",
    "Mediastinal shift",
    "Nodule/Mass",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "Rib fracture",
    "Other lesion",
    "COPD",
    "Lung tumor",
    "Pneumonia",
    "Tuberculosis",
    "Other diseases",
)
NO_FINDING = "No finding"
# The test file's label columns: the same, but "Other diseases" is spelled "Other disease".
TEST_FINDINGS = tuple("Other disease" if c == "Other diseases" else c for c in FINDINGS)
# Findings a positive reader ticks in the twin (the image always holds a nodule).
TWIN_FINDINGS = ("Nodule/Mass", "Lung Opacity", "Calcification", "Other lesion", "Lung tumor")
READERS = tuple(f"R{i}" for i in range(1, 18))  # the release's 17 radiologists
# VinDr-CXR's training/test proportion (15,000 / 3,000): every fourth image goes to test/ here.
TEST_EVERY = 4


@dataclass(frozen=True)
class DetectorModel:
    """One detector model of a vendor and how it encodes its images."""

    manufacturer: str
    model_name: str
    matrix: int
    bits_stored: int
    photometric: Literal["MONOCHROME1", "MONOCHROME2"]
    # "lut": VOI LUT Sequence; "window": WindowCenter/Width over the stored range; "none": neither
    # (a reader then uses the full stored range, which gives the same image).
    voi: Literal["lut", "window", "none"]


# Manufacturer spellings as detectors write them; model names are illustrative.
MODELS: dict[str, tuple[DetectorModel, ...]] = {
    "ge": (
        DetectorModel("GE Healthcare", "Definium 6000", 128, 14, "MONOCHROME1", "lut"),
        DetectorModel("GE MEDICAL SYSTEMS", "Optima XR220amx", 112, 12, "MONOCHROME2", "none"),
    ),
    "philips": (
        DetectorModel(
            "Philips Medical Systems", "DigitalDiagnost", 120, 12, "MONOCHROME2", "window"
        ),
        DetectorModel("Philips", "DigitalDiagnost C90", 128, 16, "MONOCHROME1", "window"),
    ),
    "carestream": (
        DetectorModel("Carestream Health", "DRX-Evolution", 96, 16, "MONOCHROME2", "none"),
    ),
}
DEFAULT_IMAGES = {"ge": 16, "philips": 16, "carestream": 4}
# The data-set attributes the release keeps: de-identification/tags.csv of
# vinbigdata-medical/vindr-cxr, whose keyword column holds these tags as integers.
RELEASE_TAGS = frozenset(
    tag_for_keyword(keyword)
    for keyword in (
        "PatientSex",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "PhotometricInterpretation",
        "Rows",
        "Columns",
        "PixelSpacing",
        "PixelAspectRatio",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "SmallestImagePixelValue",
        "LargestImagePixelValue",
        "WindowCenter",
        "WindowWidth",
        "RescaleIntercept",
        "RescaleSlope",
        "PixelData",
        "LossyImageCompression",
        "LossyImageCompressionRatio",
        "LossyImageCompressionMethod",
        "SamplesPerPixel",
        "NumberOfFrames",
    )
)
SEVERITY = 0.45  # shiftlab.synth.xray's calibrated vendor shift
LESION_CONTRAST = 4.0


def _image_id(seed: int, vendor: str, index: int) -> str:
    return hashlib.md5(f"vindr-cxr-twin/{seed}/{vendor}/{index}".encode()).hexdigest()


def _acquisitions() -> dict[str, dict[str, float]]:
    """Rendering per vendor: GE and Philips from shiftlab.synth.xray, the third in between."""
    table = {name: vendor.acquisition for name, vendor in XRAY_VENDORS.items()}
    shifted = interpolate_vendors(table, SEVERITY)
    shifted["carestream"] = interpolate_vendors(table, 0.0)["ge"]
    return shifted


def _dataset(
    model: DetectorModel,
    image: np.ndarray,
    acquisition: dict[str, float],
    uids: SyntheticPatient,
    rng: np.random.Generator,
) -> FileDataset:
    xray_vendor = XrayVendor(
        manufacturer=model.manufacturer,
        model_name=model.model_name,
        bits_stored=model.bits_stored,
        photometric=model.photometric,
        voi="lut" if model.voi == "lut" else "window",
        acquisition=acquisition,
    )
    stored, voi = encode(image, xray_vendor, acquisition)
    if model.voi == "none":  # the window spanned the stored range: without it nothing changes
        voi = type(voi)()
    ds = image_dataset(
        DigitalXRayImageStorageForPresentation, "DX", uids, model.manufacturer, model.model_name
    )
    ds.PatientSex = str(rng.choice(["M", "F"]))
    ds.PatientAge = f"{int(rng.integers(20, 85)):03d}Y"
    set_instance(ds, uids.series_uid, 0)
    ds.PixelSpacing = [430.0 / stored.shape[0]] * 2
    set_grey_pixels(ds, stored, model.photometric, model.bits_stored)
    ds.update(voi)
    return ds


def deidentify_like_the_release(ds: FileDataset, image_id: str) -> None:
    """What the release's anonymize.py does to a file: keep only RELEASE_TAGS in the data set,
    name the instance by ``image_id`` (the MD5 of its original UID) in the file meta."""
    ds.file_meta.ImplementationClassUID = "1.2.3.4"
    del ds.file_meta.MediaStorageSOPInstanceUID  # re-created, so that it is not validated
    ds.file_meta.MediaStorageSOPInstanceUID = image_id
    for tag in list(ds.keys()):
        if tag not in RELEASE_TAGS:
            del ds[tag]


def _readings(rng: np.random.Generator, positive: bool) -> list[set[str]]:
    """Three readers' findings; the majority agrees with ``positive``, one may dissent."""
    dissent = rng.random() < 0.4
    readings = []
    for reader in range(3):
        finds = positive != (dissent and reader == 2)
        readings.append(
            set(rng.choice(TWIN_FINDINGS, size=int(rng.integers(1, 3)), replace=False))
            if finds
            else set()
        )
    return readings


def _row(image_id: str, findings: set[str], columns: tuple[str, ...], **first: str) -> dict:
    row = {"image_id": image_id, **first}
    row.update({c: int(c in findings) for c in columns})
    row[NO_FINDING] = int(not findings)
    return row


def generate(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    images_per_vendor: dict[str, int] | None = None,
) -> Path:
    """Write the twin under ``out_dir`` (deterministic from ``seed``); return ``out_dir``.

    Each vendor's images are half positive, half negative; every fourth goes to ``test/``
    (consensus label), the others to ``train/`` with three readers, 40% of them with one
    dissenting reader (the majority label is the true one).
    """
    out = Path(out_dir)
    release = out / RELEASE
    counts = dict(DEFAULT_IMAGES if images_per_vendor is None else images_per_vendor)
    acquisitions = _acquisitions()
    train_rows: list[dict] = []
    test_rows: list[dict] = []
    for vendor, n_images in counts.items():
        labels = seeded_rng(seed, "vindr-cxr", vendor, "labels").permutation(
            [i % 2 for i in range(n_images)]
        )
        for index in range(n_images):
            rng = seeded_rng(seed, "vindr-cxr", vendor, index)
            image_id = _image_id(seed, vendor, index)
            model = MODELS[vendor][int(rng.integers(len(MODELS[vendor])))]
            acquisition = acquisitions[vendor]
            positive = bool(labels[index])
            image = render_radiograph(rng, acquisition, model.matrix, positive, LESION_CONTRAST)
            uids = SyntheticPatient(
                vendor=vendor,
                index=index,
                rng=rng,
                patient_id="",
                study_uid=generate_uid(entropy_srcs=[str(seed), image_id, "study"]),
                series_uid=generate_uid(entropy_srcs=[str(seed), image_id, "series"]),
            )
            is_test = index % TEST_EVERY == TEST_EVERY - 1
            folder = release / ("test" if is_test else "train")
            ds = _dataset(model, image, acquisition, uids, rng)
            with config.disable_value_validation():  # its MD5 "UID" is written as released
                deidentify_like_the_release(ds, image_id)
                write_dicom_atomic(ds, folder / f"{image_id}.dicom")
            if is_test:
                found = set(rng.choice(TWIN_FINDINGS, size=2, replace=False)) if positive else set()
                test_rows.append(_row(image_id, found, TEST_FINDINGS))
            else:
                for reader, found in zip(
                    rng.choice(READERS, size=3, replace=False),
                    _readings(rng, positive),
                    strict=True,
                ):
                    train_rows.append(_row(image_id, found, FINDINGS, rad_id=str(reader)))
    annotations = release / "annotations"
    write_csv(
        annotations / "image_labels_train.csv",
        train_rows,
        ["image_id", "rad_id", *FINDINGS, NO_FINDING],
    )
    write_csv(
        annotations / "image_labels_test.csv", test_rows, ["image_id", *TEST_FINDINGS, NO_FINDING]
    )
    (out / TWIN_MARKER).write_text(
        "Miniature synthetic twin of VinDr-CXR 1.0.0 (PhysioNet), not real data: a few "
        "synthetic chest radiographs written as DICOM in the release's folder layout, with "
        "label files in its published schema, generated by shiftlab.synth.twins.vindr_cxr "
        f"(seed {seed}), de-identified as the release is (no Manufacturer, no UIDs), so that "
        "the xray_chest_vindr preset can be tried end to end without the download.\n"
    )
    return out
