"""Domains: named sets of vendors, resolved against the vendors a manifest holds.

A plain vendor name (``ge``) is a domain of one vendor. A dataset config may define groups:
``{other: {exclude: [siemens]}}`` (every vendor but siemens) or
``{big2: {include: [ge, siemens]}}``.

A domain is usable when each of its train, val and test splits holds both classes (AUROC needs
both; so does selecting a checkpoint on validation). Ingest prints the usable domains and pairs;
a run whose source or target is not usable stops before training with the same lists
(``explained``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from shiftlab.errors import ShiftlabError
from shiftlab.manifest import SPLITS, load_manifest


@dataclass(frozen=True)
class Domains:
    """Which vendors each evaluated domain holds; ``source`` and ``target`` come first."""

    source: str
    target: str
    vendors: dict[str, frozenset[str]]

    @property
    def names(self) -> list[str]:
        return list(self.vendors)


def group_vendors(name: str, group: Mapping, present: set[str]) -> frozenset[str]:
    if set(group) - {"include", "exclude"} or len(group) != 1:
        raise ShiftlabError(
            f"domain group {name!r} must have exactly one of 'include' or 'exclude', "
            f"got {dict(group)}"
        )
    listed = set(group.get("include", group.get("exclude", [])))
    return frozenset(listed & present if "include" in group else present - listed)


def _available(manifest: pd.DataFrame, groups: Mapping) -> str:
    counts = manifest["vendor"].value_counts().sort_index()
    vendors = ", ".join(f"{v} ({n} samples)" for v, n in counts.items())
    named = f"; groups: {', '.join(groups)}" if groups else ""
    return f"vendors in the manifest: {vendors}{named}"


def resolve_domains(
    manifest: pd.DataFrame, source: str, target: str, groups: Mapping | None = None
) -> Domains:
    """Source, target and every other single vendor of the manifest, as vendor sets.

    Raises a ShiftlabError naming the available domains when a domain is unknown or empty,
    when source == target, or when the two share a vendor.
    """
    groups = dict(groups or {})
    present = set(manifest["vendor"])
    if source == target:
        raise ShiftlabError(
            f"source and target are both {source!r}: a shift needs two different domains "
            f"({_available(manifest, groups)})."
        )

    def vendors_of(name: str, role: str) -> frozenset[str]:
        if name in groups:
            vendors = group_vendors(name, groups[name], present)
        elif name in present:
            vendors = frozenset({name})
        else:
            raise ShiftlabError(
                f"{role}={name!r} is not a domain of this dataset ({_available(manifest, groups)})."
            )
        if not vendors:
            raise ShiftlabError(
                f"{role}={name!r} holds no samples ({_available(manifest, groups)})."
            )
        return vendors

    domains = {"source": vendors_of(source, "source"), "target": vendors_of(target, "target")}
    shared = domains["source"] & domains["target"]
    if shared:
        raise ShiftlabError(
            f"source={source!r} and target={target!r} share vendors {sorted(shared)}; "
            "a sample must belong to one side only."
        )
    vendors = {source: domains["source"], target: domains["target"]}
    for vendor in sorted(present - domains["source"] - domains["target"]):
        vendors[vendor] = frozenset({vendor})
    return Domains(source=source, target=target, vendors=vendors)


def domain_rows(manifest: pd.DataFrame, vendors: Sequence[str] | frozenset[str]) -> pd.Series:
    """Boolean mask of the manifest rows that belong to a domain."""
    return manifest["vendor"].isin(list(vendors))


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
