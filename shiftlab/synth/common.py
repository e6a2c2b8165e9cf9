"""Pieces every synthetic generator shares: seeding and the label file written last."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def seeded_rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator that depends only on the seed and the keys (stable across processes)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def write_labels_csv(out_dir: Path, rows: Sequence[dict], fieldnames: Sequence[str]) -> Path:
    """Write ``out_dir/labels.csv`` atomically. Written last: its presence marks a complete set."""
    path = Path(out_dir) / "labels.csv"
    tmp = path.with_name(f"labels.csv.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path
