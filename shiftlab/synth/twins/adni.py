"""Miniature twin of ADNI (LONI IDA): T1 brain MRI of AD, MCI and normal participants.

Layout written (LONI IDA's download layout: descriptions with spaces and punctuation turned
into "_", one folder per acquisition date and per image id; the file name pattern follows
ADNI's, its timestamp part is made up)::

    <out_dir>/ADNIMERGE.csv
    <out_dir>/ADNI/002_S_0295/MPRAGE/2006-04-18_08_20_30.0/I13722/
        ADNI_002_S_0295_MR_MPRAGE_br_raw_20060418082030000_1_S13408_I13722.dcm ...

ADNIMERGE.csv holds a subset of the real columns (RID, COLPROT, ORIGPROT, PTID, SITE, VISCODE,
EXAMDATE, DX_bl, AGE, PTGENDER, PTEDUCAT, APOE4, MMSE, CDRSB, DX), one row per visit, with the
real spellings (DX_bl: CN, SMC, EMCI, LMCI, AD; DX: CN, MCI, Dementia). It is written as R's
write.csv writes a data frame, which is how the ADNIMERGE R package's tables reach a CSV (e.g.
cschneuw/optimus data/adnimerge/adnimerge.R): text quoted, numbers bare, a missing value as the
literal NA (write.csv's default). Every second participant missed the month-6 assessment, so
stable CN and AD participants have rows whose DX, MMSE and CDRSB are NA.

Messiness copied from ADNI: three vendors (Siemens and GE, the default domains, and Philips);
T1 series named by scanner and phase ("MPRAGE", "MPRAGE Repeat", "IR-SPGR", "Accelerated Sagittal
IR-FSPGR"); every session also has a T2-type series (PD/T2, FLAIR) that the preset's
series_filter drops; MCI, SMC and a CN participant who converts to MCI at month 12, all of which
the label rule leaves out; some participants have a repeat scan or a month-12 scan; one
participant of the table has no images. AD shows as larger ventricles and a smaller brain.
Matrices are tiny (48 / 56 / 64 px, 12 sagittal slices).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shiftlab.synth.common import seeded_rng
from shiftlab.synth.twins.mr_series import (
    AXIAL,
    SAGITTAL,
    Scanner,
    Series,
    blob,
    render,
    texture,
    uid,
    write_series,
    write_twin_marker,
)

LABEL_FILE = "ADNIMERGE.csv"
COLUMNS = (
    "RID",
    "COLPROT",
    "ORIGPROT",
    "PTID",
    "SITE",
    "VISCODE",
    "EXAMDATE",
    "DX_bl",
    "AGE",
    "PTGENDER",
    "PTEDUCAT",
    "APOE4",
    "MMSE",
    "CDRSB",
    "DX",
)
SLICES = 12
# Baseline groups of the default vendors; "CNtoMCI" is CN at baseline, MCI from month 12.
GROUPS = ("AD",) * 5 + ("CN",) * 5 + ("LMCI", "EMCI", "SMC", "CNtoMCI")
VISIT_DX = {"AD": "Dementia", "CN": "CN", "LMCI": "MCI", "EMCI": "MCI", "SMC": "CN"}


@dataclass(frozen=True)
class Vendor:
    scanners: tuple[Scanner, ...]
    t1: tuple[str, ...]  # T1 descriptions, by protocol
    other: str  # the session's T2-type series
    sites: tuple[int, ...]
    groups: tuple[str, ...]


VENDORS = {
    "siemens": Vendor(
        (
            Scanner("SIEMENS", "Symphony", 1.5, 64, 1000, 1.0, 0.035, 0.6),
            Scanner("SIEMENS", "TrioTim", 3.0, 64, 1400, 1.1, 0.03, 0.5),
        ),
        ("MPRAGE", "Accelerated Sagittal MPRAGE"),
        "Axial PD-T2 TSE",
        (2, 5, 100),
        GROUPS,
    ),
    "ge": Vendor(
        (
            Scanner("GE MEDICAL SYSTEMS", "GENESIS_SIGNA", 1.5, 48, 2400, 0.8, 0.03, 0.2),
            Scanner("GE MEDICAL SYSTEMS", "SIGNA EXCITE", 1.5, 48, 2000, 0.85, 0.03, 0.3),
        ),
        ("IR-SPGR", "Accelerated Sagittal IR-FSPGR"),
        "Axial PD/T2 FSE",
        (11, 22, 130),
        GROUPS,
    ),
    "philips": Vendor(
        (Scanner("Philips Medical Systems", "Intera", 1.5, 56, 1600, 0.9, 0.04, 0.4),),
        ("MPRAGE",),
        "Axial T2-FLAIR",
        (23,),
        ("AD",) * 3 + ("CN",) * 3,
    ),
}


def _folder(description: str) -> str:
    return re.sub(r"[^A-Za-z0-9\-]", "_", description)


def _head(rng: np.random.Generator, n: int, atrophy: float) -> np.ndarray:
    """T1-like sagittal head, (SLICES, n, n): bright white matter, grey cortex, dark CSF."""
    detail = texture(rng, (SLICES, n, n), (1.0, n / 20, n / 20))
    volume = np.zeros((SLICES, n, n))
    for k in range(SLICES):
        lateral = abs(k - (SLICES - 1) / 2) / (SLICES / 2)  # 0 at the midline, 1 at the side
        scale = np.sqrt(max(1 - lateral**2, 0.05))
        head = blob((n, n), (0.0, 0.0), 0.9 * scale)
        brain = blob((n, n), (-0.05, 0.0), (0.78 - 0.06 * atrophy) * scale)
        white = blob((n, n), (-0.05, 0.0), (0.55 - 0.08 * atrophy) * scale)
        ventricles = blob((n, n), (-0.05, 0.05), (0.12 + 0.1 * atrophy) * (1 - lateral))
        signal = 0.25 * head + 0.3 * brain + 0.25 * white - 0.6 * ventricles * white
        volume[k] = np.clip(signal + 0.03 * detail[k] * brain, 0, None)
    return volume


def _write_scan(
    out: Path,
    seed: int,
    subject: str,
    scanner: Scanner,
    description: str,
    when: str,
    atrophy: float,
    t1: bool = True,
) -> None:
    """One series in ADNI's layout (a sagittal T1, or with ``t1=False`` an axial T2-type one);
    ``when`` is "YYYY-MM-DD_HH_MM_SS"."""
    rng = seeded_rng(seed, "adni-scan", subject, description, when)
    series_id, image_id = (int(v) for v in rng.integers(10000, 999999, 2))
    stamp = re.sub(r"\D", "", when) + "000"
    name = _folder(description)
    folder = out / "ADNI" / subject / name / f"{when}.0" / f"I{image_id}"
    orientation, thickness, slices = SAGITTAL, 1.2, _head(rng, scanner.matrix, atrophy)
    if not t1:
        orientation, thickness = AXIAL, 5.0
        slices = 0.7 - 0.6 * slices[3:9]  # T2-like contrast: CSF bright (geometry not modelled)
    write_series(
        scanner,
        Series(
            patient_id=subject,
            study_uid=uid("adni", subject, when[:10]),
            series_uid=uid("adni", subject, description, when),
            description=description,
            series_number=2 if orientation is SAGITTAL else 5,
            orientation=orientation,
            slice_thickness=thickness,
            field_of_view=256.0,
            study_date=when[:10].replace("-", ""),
        ),
        render(scanner, np.ascontiguousarray(slices), rng),
        folder,
        lambda number: (
            f"ADNI_{subject}_MR_{name}_br_raw_{stamp}_{number}_S{series_id}_I{image_id}.dcm"
        ),
    )


def _visits(rng: np.random.Generator, group: str, year: int, missed_m06: bool) -> list[dict]:
    """ADNIMERGE rows of one participant: baseline, month 6 and month 12 (None: missing)."""
    age = round(float(rng.uniform(60, 88)), 1)
    rows = []
    for viscode, month in (("bl", 0), ("m06", 6), ("m12", 12)):
        converted = group == "CNtoMCI" and month == 12
        dx = "MCI" if converted else VISIT_DX.get(group, "CN")
        mmse = {"Dementia": 22, "MCI": 27, "CN": 29}[dx] + int(rng.integers(-2, 2))
        assessed = not (missed_m06 and month == 6)
        rows.append(
            {
                "VISCODE": viscode,
                "EXAMDATE": f"{year + month // 12}-{1 + month % 12:02d}-15",
                "DX_bl": "CN" if group == "CNtoMCI" else group,
                "AGE": age,
                "MMSE": min(mmse, 30) if assessed else None,
                "CDRSB": {"Dementia": 4.5, "MCI": 1.5}.get(dx, 0.0) if assessed else None,
                "DX": dx if assessed else None,
            }
        )
    return rows


def _r_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as R's write.csv(row.names = FALSE) does: text quoted, numbers bare,
    a missing value (None) as NA."""

    def cell(value: object) -> str:
        if value is None:
            return "NA"
        if isinstance(value, str):
            return '"' + value.replace('"', '""') + '"'
        return str(value)

    lines = [",".join(f'"{c}"' for c in COLUMNS)]
    lines += [",".join(cell(row.get(c)) for c in COLUMNS) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def generate(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the twin into ``out_dir`` (see the module docstring); TWIN.txt is written last."""
    out = Path(out_dir)
    rows: list[dict] = []
    rid = 0
    for name, vendor in VENDORS.items():
        for i, group in enumerate(vendor.groups):
            rid += 1
            rng = seeded_rng(seed, "adni", rid)
            site = vendor.sites[i % len(vendor.sites)]
            subject = f"{site:03d}_S_{rid:04d}"
            adni2 = i % 3 == 2
            year = 2011 if adni2 else 2006
            protocol = "ADNI2" if adni2 else "ADNI1"
            scanner = vendor.scanners[int(rng.integers(len(vendor.scanners)))]
            t1 = vendor.t1[min(int(adni2), len(vendor.t1) - 1)]
            atrophy = {"AD": 1.0, "LMCI": 0.6, "EMCI": 0.3}.get(group, 0.0)
            atrophy += float(rng.uniform(-0.15, 0.15))
            clock = f"{year}-01-15_{8 + i % 8:02d}_{10 + i:02d}_30"
            _write_scan(out, seed, subject, scanner, t1, clock, atrophy)
            _write_scan(out, seed, subject, scanner, vendor.other, clock, atrophy, t1=False)
            if name == "siemens" and i in (0, 1):
                _write_scan(out, seed, subject, scanner, "MPRAGE Repeat", clock, atrophy)
            if name == "ge" and i == 5:
                _write_scan(out, seed, subject, scanner, t1, f"{year + 1}-01-20_09_00_00", atrophy)
            participant = {
                "RID": rid,
                "COLPROT": protocol,
                "ORIGPROT": protocol,
                "PTID": subject,
                "SITE": site,
                "PTGENDER": "Female" if rng.random() < 0.5 else "Male",
                "PTEDUCAT": int(rng.integers(12, 20)),
                "APOE4": int(rng.integers(0, 3) if group == "AD" else rng.random() < 0.3),
            }
            visits = _visits(rng, group, year, missed_m06=i % 2 == 1)
            rows += [{**participant, **visit} for visit in visits]
    # A participant of the table without images in this download.
    rid += 1
    for visit in _visits(seeded_rng(seed, "adni", rid), "AD", 2006, missed_m06=True):
        rows.append(
            {
                "RID": rid,
                "COLPROT": "ADNI1",
                "ORIGPROT": "ADNI1",
                "PTID": f"002_S_{rid:04d}",
                "SITE": 2,
                "PTGENDER": "Male",
                "PTEDUCAT": 16,
                "APOE4": 1,
                **visit,
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    _r_csv(out / LABEL_FILE, rows)
    counts = ", ".join(f"{len(v.groups)} {k}" for k, v in VENDORS.items())
    write_twin_marker(out, "ADNI", f"{rid - 1} participants with images ({counts}), seed {seed}.")
    return out
