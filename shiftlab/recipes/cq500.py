"""CQ500 (qure.ai): intracranial haemorrhage vs none, by majority of three radiologists.

Published format: ``reads.csv``, one row per head CT, columns ``name`` ("CQ500-CT-0" ...),
``Category`` (the batch, e.g. "B1", "B2") and, for each reader R1, R2, R3, 0/1 columns
``R<n>:<finding>`` with findings ICH, IPH, IVH, SDH, EDH, SAH, BleedLocation-Left,
BleedLocation-Right, ChronicBleed, Fracture, CalvarialFracture, OtherFracture, MassEffect,
MidlineShift (e.g. ``R1:ICH``, ``R2:ICH``, ``R3:ICH``).

Label rule: 1 when at least ``min_votes`` (default 2) of the ``readers`` marked ``finding``
(default ICH, "any intracranial haemorrhage"), else 0. No case is excluded.

Key: the scans' DICOM PatientID. The reads name a scan "CQ500-CT-<n>" while the download's
folders are named "CQ500CT<n> CQ500CT<n>" (an export named after PatientName and PatientID), so
the key is built from the number in ``name`` with ``key_template`` (default "CQ500CT{number}").
If a copy of CQ500 carries another PatientID, set ``key_template`` (and ``key_tag``, e.g.
PatientName) to what its headers hold; ingest reports keys that match no scan.

Caveats: the reads are per scan (the whole study), not per series: every reconstruction of a
study carries the same label, so a preset must choose one series per patient (dataset.ingest).
The download holds contrast-enhanced, bone-kernel and reformatted series beside the plain head
CT (the 1,267 series folders of the 490 scans are listed in muschellij2/cq500_code,
``R/checking_cq500_ss.csv``); the ct_head preset keeps the plain one (conf/dataset/ct_head.yaml,
docs/presets/ct_head.md). Readers labelled from all reconstructions together; a haemorrhage
visible only on a thin series keeps its label on a thick one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from shiftlab.errors import ShiftlabError
from shiftlab.labels import LabelledSample, LabelTable, read_label_file, text, zero_one

NAME_PATTERN = re.compile(r"^CQ500-CT-(\d+)$")
WHAT = "CQ500 reads file"


def read_labels(
    path: str | os.PathLike[str],
    finding: str = "ICH",
    readers: Sequence[str] = ("R1", "R2", "R3"),
    min_votes: int = 2,
    key_tag: str = "PatientID",
    key_template: str = "CQ500CT{number}",
) -> LabelTable:
    """Read ``reads.csv`` into one sample per scan, keyed by ``key_template`` (see above)."""
    if not 1 <= min_votes <= len(readers):
        raise ShiftlabError(
            f"dataset.labels.min_votes={min_votes} must be between 1 and the number of "
            f"readers ({len(readers)})."
        )
    path = Path(path)
    columns = [f"{reader}:{finding}" for reader in readers]
    table = read_label_file(
        path,
        what=WHAT,
        source="reads.csv from http://headctstudy.qure.ai/dataset (beside the unzipped "
        "CQ500CT<n> folders)",
        columns=["name", *columns],
        rename="dataset.labels.readers / finding",
    )
    votes = pd.concat([zero_one(table, c, what=WHAT, path=path) for c in columns], axis=1)
    samples: dict[str, list[LabelledSample]] = {}
    for i, (name, n_votes) in enumerate(zip(text(table["name"]), votes.sum(axis=1), strict=True)):
        match = NAME_PATTERN.match(name)
        if not match:
            raise ShiftlabError(
                f"{WHAT} {path}, line {i + 2}: name {name!r} is not of the form CQ500-CT-<number>."
            )
        key = key_template.format(number=int(match.group(1)), name=name)
        if key in samples:
            raise ShiftlabError(f"{WHAT} {path}: {name!r} appears twice.")
        label = int(n_votes >= min_votes)
        samples[key] = [LabelledSample(name="", label=label, extra={"votes": int(n_votes)})]
    return LabelTable(key_tag=key_tag, samples=samples)
