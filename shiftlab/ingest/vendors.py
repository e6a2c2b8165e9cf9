"""Map the free-text DICOM Manufacturer (0008,0070) to one vendor name per company.

Scanners write their maker however their firmware likes ("GE MEDICAL SYSTEMS", "GEMS",
"G.E. Medical Systems" ...), and domains are defined by vendor, so every spelling of one company
has to land on the same name. All spellings live in the one table below.
"""

from __future__ import annotations

import re

# (pattern, vendor), first match wins. Patterns are matched against the normalised text (lower
# case, dots dropped, any other punctuation turned into single spaces) and must match whole
# words: a bare "ge" inside "agfa gevaert" or "siemens" must not count as GE. Companies that
# were bought keep their old spellings here (Toshiba Medical is now Canon, Lorad is Hologic's
# mammography line, Kodak's medical imaging became Carestream).
VENDOR_ALIASES: tuple[tuple[str, str], ...] = (
    (r"agfa", "agfa"),
    (r"siemens", "siemens"),
    # PadChest's table strips the spaces ("PhilipsMedicalSystems", "ImagingDynamicsCompanyLtd":
    # shiftlab/recipes/padchest.py says where from), so these also match the run-together forms.
    (r"philips|philipsmedicalsystems|philipshealthcare", "philips"),
    (r"imaging dynamics|imagingdynamics|imagingdynamicscompanyltd", "imaging_dynamics"),
    (r"toshiba|canon", "canon"),
    (r"fujifilm|fuji", "fujifilm"),
    (r"hologic|lorad", "hologic"),
    (r"planmed", "planmed"),
    (r"ims|giotto", "ims"),
    (r"carestream|kodak", "carestream"),
    (r"konica|minolta", "konica"),
    (r"samsung", "samsung"),
    (r"hitachi", "hitachi"),
    (r"ge|gems|general electric", "ge"),
)

UNKNOWN = "unknown"
VENDORS: tuple[str, ...] = (*dict.fromkeys(vendor for _, vendor in VENDOR_ALIASES), UNKNOWN)

_COMPILED = tuple((re.compile(rf"\b(?:{pattern})\b"), vendor) for pattern, vendor in VENDOR_ALIASES)


def _normalise_text(text: str) -> str:
    """Lower case, "G.E." -> "ge", and every other run of punctuation or "_" -> one space."""
    text = text.lower().replace(".", "")
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def normalise_vendor(manufacturer: str | None) -> str:
    """Return the vendor for a raw Manufacturer value; "unknown" when empty or not recognised."""
    text = _normalise_text(manufacturer or "")
    for pattern, vendor in _COMPILED:
        if pattern.search(text):
            return vendor
    return UNKNOWN
