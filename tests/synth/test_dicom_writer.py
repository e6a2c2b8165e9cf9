"""A header template writes, for any values of its slots, the bytes pydicom's ``save_as`` writes.

``DicomTemplate`` has pydicom encode a dataset once and re-encodes only the elements a file
changes; the oracle here is pydicom itself: the same dataset with the same values, written by
``save_as(enforce_file_format=True)``. The values vary in length (UIDs of odd and even length
move every later element and change the file meta's group length; instance numbers gain digits;
pixel data of another size) and in kind (floats, lists of floats, text, an integer decimal
string that pydicom itself encodes).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import CTImageStorage

from shiftlab.synth.common import SyntheticPatient, image_dataset, set_instance
from shiftlab.synth.dicom_writer import DicomTemplate

SLOTS = (
    "PatientID",
    "StudyInstanceUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "PixelSpacing",
    "ImagePositionPatient",
    "SliceLocation",
    "PixelData",
)


def header() -> FileDataset:
    patient = SyntheticPatient(
        "ge", 0, np.random.default_rng(0), "SYN_GE_0000", "1.2.3.4", "1.2.3.4.5"
    )
    ds = image_dataset(CTImageStorage, "CT", patient, "GE MEDICAL SYSTEMS", "LightSpeed VCT")
    set_instance(ds, patient.series_uid, 0)
    ds.SeriesDescription = "chest ax lung"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.75, 0.75]
    ds.ImagePositionPatient = [-10.5, 20.25, -100.0]
    ds.SliceLocation = -100.0
    ds.Rows, ds.Columns = 4, 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(32)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    ds.VOILUTSequence = [item]  # a sequence after the slots' first elements, kept as written
    return ds


def saved(ds: FileDataset) -> bytes:
    encoded = DicomBytesIO()
    ds.save_as(encoded, enforce_file_format=True)
    return encoded.getvalue()


FILES = [
    {  # the template's own values
        "PatientID": "SYN_GE_0000",
        "StudyInstanceUID": "1.2.3.4",
        "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.1",
        "InstanceNumber": 1,
        "PixelSpacing": [0.75, 0.75],
        "ImagePositionPatient": [-10.5, 20.25, -100.0],
        "SliceLocation": -100.0,
        "PixelData": bytes(32),
    },
    {  # longer and odd-length UIDs and text, a number with more digits, other pixels
        "PatientID": "SYN_SIEMENS_0123",
        "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.12345",
        "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.98765432109876543210987654321098765432",
        "InstanceNumber": 10,
        "PixelSpacing": [0.771484375, 0.771484375],
        "ImagePositionPatient": [-123.456, 45.001, -200.125],
        "SliceLocation": -200.125,
        "PixelData": bytes(range(200)),
    },
    {  # shorter values, and an integer decimal string (left to pydicom)
        "PatientID": "P",
        "StudyInstanceUID": "1.2",
        "SOPInstanceUID": "1.23",
        "InstanceNumber": 100,
        "PixelSpacing": [1, 1],
        "ImagePositionPatient": [0.0, -0.0, 1e-05],
        "SliceLocation": 3,
        "PixelData": b"\x01\x02\x03\x04",
    },
]


@pytest.mark.parametrize("values", FILES, ids=["template's", "longer", "shorter"])
def test_a_file_is_the_bytes_save_as_writes(values: dict[str, object]) -> None:
    template = DicomTemplate(header(), SLOTS)
    expected = copy.deepcopy(header())
    for keyword, value in values.items():
        setattr(expected, keyword, value)
    assert template.encode(values) == saved(expected)


def test_a_template_refuses_what_it_cannot_leave_open_and_files_without_every_slot() -> None:
    with pytest.raises(ValueError, match="no element 'SliceThickness'"):
        DicomTemplate(header(), ["SliceThickness"])
    with pytest.raises(ValueError, match="'VOILUTSequence' is a sequence"):
        DicomTemplate(header(), ["VOILUTSequence"])
    template = DicomTemplate(header(), SLOTS)
    with pytest.raises(ValueError, match="needs values for"):
        template.encode({k: v for k, v in FILES[1].items() if k != "PixelData"})
