"""Domains: named sets of vendors, resolved against the vendors a manifest holds.

A plain vendor name (``ge``) is a domain of one vendor. A dataset config may define groups:
``{other: {exclude: [siemens]}}`` (every vendor but siemens) or
``{big2: {include: [ge, siemens]}}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from shiftlab.errors import ShiftlabError


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
