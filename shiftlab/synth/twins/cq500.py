"""Miniature synthetic twin of CQ500 (qure.ai): non-contrast head CTs and the three reads.

Layout, as the unzipped per-scan archives of the download lay it out (the twin puts the scan
folders under ``CQ500/`` and ``reads.csv`` beside that folder):

    reads.csv
    CQ500/CQ500CT0 CQ500CT0/Unknown Study/CT PLAIN THIN/CT000000.dcm ...
    CQ500/CQ500CT0 CQ500CT0/Unknown Study/CT Plain/CT000000.dcm ...
    CQ500/CQ500CT0 CQ500CT0/Unknown Study/CT BONE/CT000000.dcm ...
    TWIN.txt                                                   (written last)

PatientID and PatientName are "CQ500CT<n>" (the folder is "<name> <id>"); a series folder is
"CT <SeriesDescription>". ``reads.csv`` has the published columns (name "CQ500-CT-<n>",
Category, and R1/R2/R3 x ICH, IPH, IVH, SDH, EDH, SAH, BleedLocation-Left/Right, ChronicBleed,
Fracture, CalvarialFracture, OtherFracture, MassEffect, MidlineShift), 0/1 values.

Each scan is a 64 x 64 slab of a head phantom (scalp, skull, brain, ventricles) with, for a
haemorrhage, a hyperdense blob (50-70 HU, 5-12 mm) in the brain: the weak signal. 12 scans per
vendor ("GE MEDICAL SYSTEMS", "Philips"), half with haemorrhage. The messiness: several
reconstructions per scan, with the series descriptions of the real scans (``SCANS``): the
series folders of all 490 downloaded scans are listed in public code (muschellij2/cq500_code,
``R/checking_cq500_ss.csv``, one PNG per series named ``CQ500CT<n>_CT-<description>``). Besides
a thin and a thick plain series and a bone-kernel one, scans hold contrast-enhanced series
("POST CONTRAST", "5mm POST CONTRAST", "4cc sec 150cc D3D on", "ORAL IV", "55mm Contrast",
"Thin Contrast", "C" beside "PLAIN THIN"), a sharp "Thin Details" kernel and an "I To S"
reformat, while plain series may say only their thickness ("0.625mm", "2.55mm"), their kernel
("Thin Stnd") or "PRE CONTRAST". On five scans per vendor the only plain series is thin and a
contrast or reformatted one is thick: a rule that takes the fewest slices of what is not bone or
post-contrast takes the wrong series there. Also a scan with only its thick series, readers who
disagree (one or two of three voting ICH), and a reads.csv row whose scan is not in the
download. The vendors differ in noise, kernel, HU offset and stored-value encoding. The thin
series has 2.5 mm slices (real thin series are 0.625 mm) to stay tiny. Not known publicly and
invented: which scanner wrote which descriptions, which series of a real scan the twin leaves
out, what an "I To S" series holds (here thick soft-tissue slices), the file numbering
(CT000000.dcm ... as seen in public code), the scanner model names, Category values beyond
B1/B2.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid
from scipy.ndimage import gaussian_filter

from shiftlab.synth.common import SyntheticPatient, seeded_rng, write_csv
from shiftlab.synth.twins.ct_dicom import CTScanner, write_ct_series, write_twin_marker

MATRIX = 64
THIN_MM, THIN_SLICES = 2.5, 24
THICK_MM = 5.0
VENDOR_PATIENTS = (("ge", 12), ("philips", 12))
SCANNERS = {
    "ge": CTScanner("GE MEDICAL SYSTEMS", "BrightSpeed", "STANDARD", -1024.0, True, 16),
    "philips": CTScanner("Philips", "MX 16-slice", "UB", -1000.0, False, 12),
}
SHARP_KERNEL = {"ge": ("BONEPLUS", "DETAIL"), "philips": ("YC", "YB")}  # bone, detail
# (noise HU, in-plane blur px, HU offset) of the soft-tissue reconstruction per vendor.
ACQUISITION = {"ge": (5.0, 0.0, 0.0), "philips": (3.0, 0.6, 3.0)}


@dataclass(frozen=True)
class Reconstruction:
    """What a series description stands for in the twin."""

    thick: bool  # 5 mm slices, else 2.5 mm
    kernel: str = "soft"  # "soft", "detail" (sharper) or "bone"
    contrast: bool = False
    reformat: bool = False  # not an original reconstruction (here: the thick plain slices)

    @property
    def plain(self) -> bool:
        """The plain (non-contrast, soft-tissue) axial head CT the reads are about."""
        return self.kernel == "soft" and not self.contrast and not self.reformat


# Every description the twin writes, as the real scans (CQ500CT<n>) name their series folders.
RECONSTRUCTIONS = {
    "PLAIN THIN": Reconstruction(thick=False),
    "Plain": Reconstruction(thick=True),
    "Thin Plain": Reconstruction(thick=False),
    "55mm Plain": Reconstruction(thick=True),
    "PRE CONTRAST THIN": Reconstruction(thick=False),
    "PRE CONTRAST 5MM STD": Reconstruction(thick=True),
    "0.625mm": Reconstruction(thick=False),
    "2.55mm": Reconstruction(thick=False),
    "Thin Stnd": Reconstruction(thick=False),
    "BONE": Reconstruction(thick=True, kernel="bone"),
    "Thin Bone": Reconstruction(thick=False, kernel="bone"),
    "BONE THIN": Reconstruction(thick=False, kernel="bone"),
    "PRE CONTRAST BONE": Reconstruction(thick=True, kernel="bone"),
    "Thin Details": Reconstruction(thick=False, kernel="detail"),
    "POST CONTRAST": Reconstruction(thick=True, contrast=True),
    "5mm POST CONTRAST": Reconstruction(thick=True, contrast=True),
    "4cc sec 150cc D3D on": Reconstruction(thick=True, contrast=True),
    "ORAL IV": Reconstruction(thick=True, contrast=True),
    "55mm Contrast": Reconstruction(thick=True, contrast=True),
    "Thin Contrast": Reconstruction(thick=False, contrast=True),
    "C": Reconstruction(thick=True, contrast=True),
    "C THIN": Reconstruction(thick=False, contrast=True),
    "I To S": Reconstruction(thick=True, reformat=True),
}
# The usual series of a scan per vendor: thin plain, thick plain, bone (as CQ500CT67 and CQ500CT62).
DEFAULT_SERIES = {
    "ge": ("PLAIN THIN", "Plain", "BONE"),
    "philips": ("Thin Plain", "55mm Plain", "Thin Bone"),
}
# The series of the scans at these positions of each vendor, each like a real scan (or part).
SCANS = {
    2: ("PLAIN THIN", "Plain", "BONE", "POST CONTRAST"),  # CQ500CT27
    3: ("Plain", "BONE"),  # the thick series only
    4: ("PRE CONTRAST THIN", "PRE CONTRAST 5MM STD", "PRE CONTRAST BONE", "5mm POST CONTRAST"),
    5: ("2.55mm", "ORAL IV"),  # CQ500CT136
    6: ("PLAIN THIN", "C", "C THIN"),  # CQ500CT369
    7: ("0.625mm", "4cc sec 150cc D3D on"),  # as CQ500CT2 (0.625mm), CQ500CT0 (4cc ...)
    8: ("Thin Stnd", "Thin Details", "I To S"),  # as CQ500CT106, CQ500CT6, CQ500CT105
    9: ("Thin Plain", "55mm Contrast", "Thin Contrast"),  # CQ500CT150 without its 55mm Plain
    10: ("PLAIN THIN", "BONE THIN"),  # CQ500CT16
}
FINDINGS = (
    "ICH",
    "IPH",
    "IVH",
    "SDH",
    "EDH",
    "SAH",
    "BleedLocation-Left",
    "BleedLocation-Right",
    "ChronicBleed",
    "Fracture",
    "CalvarialFracture",
    "OtherFracture",
    "MassEffect",
    "MidlineShift",
)
READERS = ("R1", "R2", "R3")
COLUMNS = ("name", "Category", *(f"{r}:{f}" for r in READERS for f in FINDINGS))
SUBTYPES = ("IPH", "IVH", "SDH", "EDH", "SAH")
MISSING_SCAN = 491  # a reads.csv row whose scan folder is not in the (partial) download


@dataclass(frozen=True)
class TwinScan:
    number: int  # CQ500-CT-<number>
    vendor: str
    votes: tuple[int, int, int]  # ICH per reader
    series: tuple[str, ...]  # SeriesDescription of each reconstruction (RECONSTRUCTIONS)

    @property
    def label(self) -> int:
        return int(sum(self.votes) >= 2)

    @property
    def patient_id(self) -> str:
        return f"CQ500CT{self.number}"

    @property
    def plain(self) -> str:
        """The description of the series the preset must take: the plain series, the thick one
        when the scan has one."""
        plain = [d for d in self.series if RECONSTRUCTIONS[d].plain]
        return max(plain, key=lambda d: RECONSTRUCTIONS[d].thick)


def plan(seed: int = 0) -> list[TwinScan]:
    """Every twin scan: vendor, the three ICH votes and its reconstructions (deterministic)."""
    slots = [(vendor, i) for vendor, count in VENDOR_PATIENTS for i in range(count)]
    order = seeded_rng(seed, "cq500-order").permutation(len(slots))
    scans = []
    for number, slot in enumerate(order):
        vendor, i = slots[slot]
        rng = seeded_rng(seed, "cq500", vendor, i)
        bleed = i % 2 == 0
        n_votes = (3 if rng.random() < 0.6 else 2) if bleed else (1 if i % 4 == 1 else 0)
        votes = tuple(int(v) for v in rng.permutation([1] * n_votes + [0] * (3 - n_votes)))
        series = SCANS.get(i, DEFAULT_SERIES[vendor])
        scans.append(TwinScan(number, vendor, votes, series))
    return scans


def _head(rng: np.random.Generator, scan: TwinScan, spacing: float) -> np.ndarray:
    """The phantom on the thin grid (THIN_SLICES, MATRIX, MATRIX), in HU."""
    z, y, x = np.meshgrid(
        (np.arange(THIN_SLICES) - THIN_SLICES / 2) * THIN_MM,
        (np.arange(MATRIX) - MATRIX / 2) * spacing,
        (np.arange(MATRIX) - MATRIX / 2) * spacing,
        indexing="ij",
    )
    half_lr, half_ap = rng.uniform(68, 78), rng.uniform(88, 98)
    taper = np.sqrt(np.clip(1 - ((z - rng.uniform(-10, 10)) / 110) ** 2, 0.2, 1))
    # Elliptic "radius": 1 on the outer surface of the head.
    r = np.sqrt((x / half_lr) ** 2 + (y / half_ap) ** 2) / taper
    mm_inside = (1 - r) * min(half_lr, half_ap)  # roughly, depth below the surface in mm
    hu = np.full(z.shape, -1000.0)
    hu = np.where(mm_inside > 0, 40.0, hu)  # scalp
    hu = np.where(mm_inside > 3, rng.uniform(1100, 1400), hu)  # skull
    brain = mm_inside > 3 + rng.uniform(5, 7)
    texture = gaussian_filter(rng.standard_normal(z.shape), (1, 2, 2))
    hu = np.where(brain, 32.0 + 3.0 * texture / texture.std(), hu)
    for side in (-1, 1):  # lateral ventricles
        ventricle = ((x - side * 8) / 6) ** 2 + (y / 18) ** 2 + (z / 20) ** 2 < 1
        hu = np.where(ventricle & brain, 6.0, hu)
    if scan.label:
        radius = rng.uniform(5, 12)
        centre = (rng.uniform(-40, 40), rng.uniform(-50, 50), rng.uniform(-15, 15))
        d = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
        blob = np.clip((radius - d) / 2 + 0.5, 0, 1) * brain
        hu += blob * (rng.uniform(50, 70) - hu)
    return hu


def _reconstruct(
    rng: np.random.Generator, hu: np.ndarray, vendor: str, recon: Reconstruction
) -> np.ndarray:
    """Slice thickness (average of thin slices), kernel and noise of one reconstruction."""
    if recon.thick:
        hu = hu.reshape(-1, int(THICK_MM / THIN_MM), MATRIX, MATRIX).mean(axis=1)
    noise, blur, offset = ACQUISITION[vendor]
    if recon.kernel != "soft":  # sharp kernel: edge overshoot and more noise
        bone = recon.kernel == "bone"
        hu = hu + (0.8 if bone else 0.4) * (hu - gaussian_filter(hu, (0, 1.0, 1.0)))
        noise, blur = noise * (6 if bone else 3), 0.0
    elif blur > 0:
        hu = gaussian_filter(hu, (0, blur, blur))
    grain = rng.standard_normal(hu.shape)
    if blur > 0:
        grain = gaussian_filter(grain, (0, blur, blur))
    scale = math.sqrt(THIN_MM / THICK_MM) if recon.thick else 1.0
    image = hu + scale * noise * grain / grain.std() + offset
    if recon.contrast:  # enhancing vessels and dura: brighter soft tissue
        image = image + 25.0 * ((image > 20) & (image < 90))
    return image.astype(np.float32)


def _reads_row(rng: np.random.Generator, number: int, votes: tuple[int, ...]) -> dict:
    row = {"name": f"CQ500-CT-{number}", "Category": "B1" if number % 3 else "B2"}
    subtype = str(rng.choice(SUBTYPES))
    side = str(rng.choice(["Left", "Right"]))
    large = rng.random() < 0.3
    for reader, vote in zip(READERS, votes, strict=True):
        marks = dict.fromkeys(FINDINGS, 0)
        if vote:
            marks.update({"ICH": 1, subtype: 1, f"BleedLocation-{side}": 1})
            marks["MassEffect"] = int(large)
        marks["Fracture"] = marks["CalvarialFracture"] = int(rng.random() < 0.05)
        row.update({f"{reader}:{finding}": value for finding, value in marks.items()})
    return row


def generate(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the twin under ``out_dir`` (see the module docstring); deterministic from ``seed``."""
    out = Path(out_dir)
    (out / "TWIN.txt").unlink(missing_ok=True)
    shutil.rmtree(out / "CQ500", ignore_errors=True)
    rows = []
    for scan in plan(seed):
        rng = seeded_rng(seed, "cq500-pixels", scan.number)
        spacing = round(float(rng.uniform(205, 235)) / MATRIX, 6)
        origin_z = round(float(rng.uniform(-40, 40)), 2)
        origin = (-spacing * MATRIX / 2, -spacing * MATRIX / 2, origin_z)
        hu = _head(rng, scan, spacing)
        settings = [str(seed), scan.patient_id]
        study_uid = generate_uid(entropy_srcs=[*settings, "study"])
        for number, description in enumerate(scan.series, start=2):
            recon = RECONSTRUCTIONS[description]
            series = SyntheticPatient(
                vendor=scan.vendor,
                index=scan.number,
                rng=rng,
                patient_id=scan.patient_id,
                study_uid=study_uid,
                series_uid=generate_uid(entropy_srcs=[*settings, description]),
            )
            scanner = SCANNERS[scan.vendor]
            if recon.kernel != "soft":
                bone_kernel, detail_kernel = SHARP_KERNEL[scan.vendor]
                kernel = bone_kernel if recon.kernel == "bone" else detail_kernel
                scanner = CTScanner(**{**scanner.__dict__, "kernel": kernel})
            image = _reconstruct(rng, hu, scan.vendor, recon)
            is_bone = recon.kernel == "bone"
            thickness = THICK_MM if recon.thick else THIN_MM
            first_z = origin[2] + (thickness - THIN_MM) / 2  # a thick slice's centre
            folder = (
                out
                / "CQ500"
                / f"{scan.patient_id} {scan.patient_id}"
                / "Unknown Study"
                / f"CT {description}"
            )
            write_ct_series(
                folder,
                series,
                scanner,
                image,
                (origin[0], origin[1], first_z),
                spacing,
                thickness,
                lambda k: f"CT{k:06d}.dcm",
                {
                    "PatientName": scan.patient_id,
                    "SeriesDescription": description,
                    "SeriesNumber": number,
                    "BodyPartExamined": "HEAD",
                    "WindowCenter": 500 if is_bone else 40,
                    "WindowWidth": 2000 if is_bone else 80,
                },
            )
        rows.append(_reads_row(rng, scan.number, scan.votes))
    rng = seeded_rng(seed, "cq500-missing")
    rows.append(_reads_row(rng, MISSING_SCAN, (1, 1, 0)))
    rows.sort(key=lambda r: int(r["name"].rsplit("-", 1)[1]))
    write_csv(out / "reads.csv", rows, COLUMNS)
    write_twin_marker(
        out,
        "CQ500 (qure.ai)",
        "CQ500/ holds the scans (several reconstructions each), reads.csv the three reads.",
    )
    return out
