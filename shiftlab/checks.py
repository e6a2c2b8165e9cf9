"""Which domains of a manifest can be trained and tested on, and what to say when a run's cannot.

A domain is usable when each of its train, val and test splits holds both classes (AUROC needs
both; so does selecting a checkpoint on validation). Ingest prints the usable domains and pairs;
a run whose source or target is not usable stops before training with the same lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from shiftlab.data.domains import domain_rows, group_vendors
from shiftlab.errors import ShiftlabError
from shiftlab.manifest import SPLITS, load_manifest


def _vendor_sets(df: pd.DataFrame, groups: Mapping | None) -> dict[str, frozenset[str]]:
    candidates = {v: frozenset({v}) for v in sorted(set(df["vendor"]))}
    present = set(candidates)
    for name, group in (groups or {}).items():
        candidates[name] = group_vendors(name, group, present)
    return candidates


def usable_domains(df: pd.DataFrame, groups: Mapping | None = None) -> list[str]:
    """Vendors and vendor groups with both classes in each of train, val and test."""
    usable = []
    for name, vendors in _vendor_sets(df, groups).items():
        rows = df[domain_rows(df, vendors)]
        if all(rows.loc[rows["split"] == s, "label"].nunique() == 2 for s in SPLITS):
            usable.append(name)
    return usable


def usable_pairs(df: pd.DataFrame, groups: Mapping | None = None) -> list[str]:
    """``source->target`` for every two usable domains that share no vendor."""
    domains = usable_domains(df, groups)
    sets = _vendor_sets(df, groups)
    return [f"{a}->{b}" for a in domains for b in domains if a != b and not sets[a] & sets[b]]


def patients_by_split(df: pd.DataFrame, vendors: frozenset[str]) -> str:
    """E.g. ``train 3 (2 negative, 1 positive), val 1 (1 negative, 0 positive), ...``: patients
    of one domain per split and class (a patient counts as positive when any sample is)."""
    rows = df[domain_rows(df, vendors)]
    parts = []
    for split in SPLITS:
        labels = rows[rows["split"] == split].groupby("patient_id")["label"].max()
        positive = int(labels.sum())
        parts.append(
            f"{split} {len(labels)} ({len(labels) - positive} negative, {positive} positive)"
        )
    return ", ".join(parts)


def domain_hint(df: pd.DataFrame, groups: Mapping | None, names: list[str]) -> str:
    """What to choose instead, for a run whose domains cannot be used: the patients per split of
    the named domains that are not usable, the usable domains and pairs, and what changes the
    splits."""
    sets = _vendor_sets(df, groups)
    domains, pairs = usable_domains(df, groups), usable_pairs(df, groups)
    short = [n for n in dict.fromkeys(names) if sets.get(n) and n not in domains]
    lines = [f"patients of {name!r}: {patients_by_split(df, sets[name])}" for name in short]
    lines.append(
        f"usable domains (both classes in train, val and test): {', '.join(domains) or 'none'}; "
        f"usable pairs: {', '.join(pairs) or 'none'} (source=<a> target=<b>)"
    )
    if short:
        lines.append(
            "too few patients for the split fractions: change dataset.split_fractions (or "
            "split_seed) and re-ingest, or choose a usable pair"
        )
    return "\n".join(lines)


def explained(error: ShiftlabError, cfg: DictConfig) -> ShiftlabError:
    """``error`` (refusing a run's data or domains) with the choices that would work appended."""
    try:
        df, _ = load_manifest(cfg.dataset.manifest_dir, cfg.dataset.name)
        groups: Any = cfg.dataset.domains.get("groups") or {}
        if isinstance(groups, DictConfig):
            groups = OmegaConf.to_container(groups, resolve=True)
        hint = domain_hint(df, groups, [str(cfg.source), str(cfg.target)])
    except Exception:  # no manifest to read: the error says so already
        return error
    return ShiftlabError(f"{error}\n{hint}")
