import pytest

from shiftlab.ingest.vendors import VENDORS, normalise_vendor

REAL_SPELLINGS = [
    ("GE MEDICAL SYSTEMS", "ge"),
    ("GE Healthcare", "ge"),
    ("G.E. Medical Systems", "ge"),
    ("GEMS", "ge"),
    ("ge medical systems, llc", "ge"),
    ("SIEMENS", "siemens"),
    ("Siemens Healthineers", "siemens"),
    ("Siemens", "siemens"),
    ("Philips Medical Systems, Inc.", "philips"),
    ("Philips Healthcare", "philips"),
    ("PHILIPS-HEALTHCARE", "philips"),
    ("TOSHIBA_MEC", "canon"),
    ("Toshiba", "canon"),
    ("Canon Medical Systems", "canon"),
    ("FUJIFILM Corporation", "fujifilm"),
    ("FUJI PHOTO FILM Co., ltd.", "fujifilm"),
    ("Agfa", "agfa"),
    ("Agfa-Gevaert", "agfa"),
    ("AGFA GEVAERT N.V.", "agfa"),
    ("HOLOGIC, Inc.", "hologic"),
    ("LORAD", "hologic"),
    ("Planmed", "planmed"),
    ("IMS GIOTTO S.p.A.", "ims"),
    ("IMS s.r.l.", "ims"),
    ("Carestream Health", "carestream"),
    ("KONICA MINOLTA", "konica"),
    ("Samsung Medison", "samsung"),
    ("Hitachi Medical Corporation", "hitachi"),
    ("  siemens  ", "siemens"),
]


@pytest.mark.parametrize(("manufacturer", "vendor"), REAL_SPELLINGS)
def test_real_spellings(manufacturer: str, vendor: str) -> None:
    assert normalise_vendor(manufacturer) == vendor


@pytest.mark.parametrize("manufacturer", ["", None, "   ", "Acme Imaging", "GEN", "Gevaert"])
def test_empty_and_unrecognised_are_unknown(manufacturer: str | None) -> None:
    assert normalise_vendor(manufacturer) == "unknown"


def test_every_vendor_is_listed() -> None:
    assert set(VENDORS) == {
        "ge", "siemens", "philips", "imaging_dynamics", "canon", "fujifilm", "agfa", "hologic",
        "planmed", "ims", "carestream", "konica", "samsung", "hitachi", "unknown",
    }  # fmt: skip
