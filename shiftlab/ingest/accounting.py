"""Where every file of an ingest went, counted, and the summary an ingest prints.

Every scanned file ends up in a sample, in skipped.csv (with its reason, counted by kind in
manifest.json), or in a series listed in unused.csv (no label, not chosen); samples kept with a
caveat (vendor unknown, uneven slice spacing) are listed in flagged.csv. An ingest fills an
``IngestSummary`` as it goes and ``print_summary`` prints it, also when an error stops the ingest
partway: what was counted by then helps to see why.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from shiftlab.ingest.headers import SeriesHeader
from shiftlab.ingest.vendors import UNKNOWN, normalise_vendor
from shiftlab.manifest import PATH_SEPARATOR, ManifestInfo, csv_bytes, write_if_changed

SKIPPED_NAME = "skipped.csv"
# Series scanned but not made into samples (no label, not chosen, every sample dropped): one row
# per series with its first file and file count, so that every scanned file is accounted for.
UNUSED_NAME = "unused.csv"
# Series made into samples with a caveat (vendor unknown, uneven slice spacing).
FLAGGED_NAME = "flagged.csv"


def reason_kind(reason: str) -> str:
    """The kind of a skipped.csv reason, without its details (for the counts)."""
    if re.match(r"sample .*: slice_index", reason):
        return "slice_index outside its series"
    kind = re.split(r": | \(", reason, maxsplit=1)[0]
    return re.sub(r"^(duplicate SOPInstanceUID) of .*", r"\1", kind)


def vendor_note(manufacturer: str) -> str | None:
    """The flagged.csv caveat of a sample whose vendor is unknown, or None."""
    if normalise_vendor(manufacturer) != UNKNOWN:
        return None
    if not manufacturer.strip():
        return "vendor unknown: Manufacturer missing or empty"
    return f"vendor unknown: Manufacturer {manufacturer!r} is not in shiftlab/ingest/vendors.py"


@dataclass
class Accounts:
    """Where every scanned file went, and the series kept with a caveat."""

    unused: list[tuple[str, int, str]]  # (first file, number of files, reason)
    flagged: list[tuple[str, str]]  # (first file, caveat)
    files: dict[str, int]


def account_files(
    series: Sequence[SeriesHeader],
    chosen: Sequence[SeriesHeader],
    unlabelled: Sequence[SeriesHeader],
    df: pd.DataFrame,
    n_skipped_files: int,
    key_tag: str,
) -> Accounts:
    """Where every file of the scanned series went: in a sample, or in an unused series (with
    why), and the caveats of the series kept."""
    in_samples = {f for joined in df["paths"] for f in joined.split(PATH_SEPARATOR)}
    chosen_ids, unlabelled_ids = {id(s) for s in chosen}, {id(s) for s in unlabelled}
    unused, flagged = [], []
    n_used = n_unused = 0
    for header in series:
        first = header.files[0]
        if first in in_samples:
            n_used += len(header.files)
            notes = [vendor_note(header.manufacturer), *header.notes]
            flagged.extend((first, note) for note in notes if note)
            continue
        if id(header) not in chosen_ids:
            reason = "not chosen (dataset.ingest: series_filter or series_per_key)"
        elif id(header) in unlabelled_ids:
            reason = f"no label: its {key_tag} is not in the label file"
        else:
            reason = "no sample could be made from it (reasons in skipped.csv)"
        unused.append((first, len(header.files), reason))
        n_unused += len(header.files)
    files = {
        "scanned": n_used + n_unused + n_skipped_files,
        "in_samples": n_used,
        "skipped": n_skipped_files,
        "in_unused_series": n_unused,
    }
    return Accounts(sorted(unused), sorted(flagged), files)


def count_skipped_kinds(skipped: Sequence[tuple[str, str]]) -> dict[str, int]:
    """skipped.csv's reasons counted by kind (``reason_kind``), sorted by kind."""
    return dict(sorted(Counter(reason_kind(reason) for _, reason in skipped).items()))


def write_skipped(path: Path, skipped: Sequence[tuple[str, str]]) -> None:
    """Write skipped.csv: each file left out and why (rewritten only when its bytes change)."""
    write_if_changed(path, csv_bytes(pd.DataFrame(skipped, columns=["path", "reason"])))


def write_unused(path: Path, unused: Sequence[tuple[str, int, str]]) -> None:
    """Write unused.csv: each series scanned but not made into samples, its size and why."""
    write_if_changed(path, csv_bytes(pd.DataFrame(unused, columns=["path", "n_files", "reason"])))


def write_flagged(path: Path, flagged: Sequence[tuple[str, str]]) -> None:
    """Write flagged.csv: each sample kept with a caveat (its first file, the caveat)."""
    write_if_changed(path, csv_bytes(pd.DataFrame(flagged, columns=["path", "note"])))


def choice_by_description(
    series: Sequence[SeriesHeader], chosen: Sequence[SeriesHeader]
) -> dict[str, dict[str, int]]:
    """Per SeriesDescription, how many series dataset.ingest chose and how many it dropped."""
    chosen_ids = {id(s) for s in chosen}
    counts: dict[str, dict[str, int]] = {}
    for header in series:
        row = counts.setdefault(header.raw("SeriesDescription"), {"chosen": 0, "dropped": 0})
        row["chosen" if id(header) in chosen_ids else "dropped"] += 1
    return dict(sorted(counts.items()))


@dataclass
class ScanCounts:
    """A folder scan: the files read and the series (or images) they form, and what
    ``dataset.ingest`` did not choose."""

    dicom_root: Path
    n_files: int
    # "series", or "images" where each image is a sample of its own (group_by SOPInstanceUID).
    unit: str
    n_series: int
    n_not_chosen: int = 0
    # Per SeriesDescription, the series chosen and dropped (``choice_by_description``).
    by_description: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class ScanAccounts:
    """Where a folder scan's files went, and why label keys matched no series."""

    manifest_dir: Path
    n_skipped_files: int
    n_dropped_samples: int
    skipped_by_kind: dict[str, int]
    # What ``account_files`` counts: scanned, in_samples, skipped, in_unused_series.
    files: dict[str, int]
    n_vendor_unknown: int
    n_flagged: int
    n_unlabelled: int
    unmatched: dict[str, int]
    n_label_keys: int
    key_tag: str


@dataclass
class TableAccounts:
    """Where a sample table's rows and files went (``shiftlab.ingest.user_table``)."""

    source: str
    n_rows: int
    n_rows_skipped: int
    manifest_dir: Path
    skipped_by_kind: dict[str, int]
    # scanned, in_samples, skipped
    files: dict[str, int]
    n_vendor_unknown: int
    n_flagged: int
    # Where the samples' manufacturers came from, counted (sorted by source).
    vendor_sources: dict[str, int]


@dataclass
class UsableDomains:
    """A written manifest's samples per vendor and split, and the domains a study can use."""

    count_table: str
    domains: list[str]
    # Vendors present that a split lacks a class of.
    unusable: list[str]
    pairs: list[str]


@dataclass
class IngestSummary:
    """What an ingest counted and wrote, as ``print_summary`` prints it. A section is None where
    the ingest took the other path (a folder scan or a sample table) or stopped before it."""

    scan: ScanCounts | None = None
    scan_accounts: ScanAccounts | None = None
    table: TableAccounts | None = None
    domains: UsableDomains | None = None
    manifest: ManifestInfo | None = None


def print_summary(summary: IngestSummary) -> None:
    """Print an ingest's summary, section by section, as far as the ingest got."""
    if summary.scan:
        _print_scan(summary.scan)
        if summary.scan_accounts:
            _print_scan_accounts(summary.scan_accounts, summary.scan.unit)
    if summary.table:
        _print_table(summary.table)
    if summary.domains:
        _print_domains(summary.domains)
    if summary.manifest:
        info = summary.manifest
        print(f"manifest:           {info.csv_path} ({info.n_samples} samples)")
        print(f"sha256:             {info.sha256}")
        print(f"changed:            {'yes' if info.changed else 'no (same bytes as on disk)'}")


def _print_scan(scan: ScanCounts) -> None:
    unit = scan.unit
    print(f"files scanned:      {scan.n_files} under {scan.dicom_root}")
    print(f"{unit + ' found:':<20}{scan.n_series}")
    if scan.n_not_chosen:
        print(f"{unit + ' not chosen:':<20}{scan.n_not_chosen} (dataset.ingest)")
    _print_choice_by_description(scan.by_description)


def _print_scan_accounts(accounts: ScanAccounts, unit: str) -> None:
    skipped_path = accounts.manifest_dir / SKIPPED_NAME
    flagged_path = accounts.manifest_dir / FLAGGED_NAME
    files = accounts.files
    print(f"skipped files:      {accounts.n_skipped_files} (reasons in {skipped_path})")
    if accounts.n_dropped_samples:
        print(f"samples dropped:    {accounts.n_dropped_samples} (reasons in {skipped_path})")
    _print_skipped_kinds(accounts.skipped_by_kind)
    print(
        f"files accounted:    {files['scanned']} = {files['in_samples']} in samples + "
        f"{accounts.n_skipped_files} skipped + {files['in_unused_series']} in unused series "
        f"({accounts.manifest_dir / UNUSED_NAME})"
    )
    if accounts.n_vendor_unknown:
        print(f"vendor unknown:     {accounts.n_vendor_unknown} samples (see {flagged_path})")
    if accounts.n_flagged:
        print(f"caveats:            {accounts.n_flagged} on kept series (in {flagged_path})")
    print(f"{'unlabelled ' + unit + ':':<20}{accounts.n_unlabelled} (dropped)")
    _print_unmatched(accounts.unmatched, accounts.n_label_keys, accounts.key_tag, unit)


def _print_table(table: TableAccounts) -> None:
    skipped_path = table.manifest_dir / SKIPPED_NAME
    flagged_path = table.manifest_dir / FLAGGED_NAME
    files = table.files
    print(f"rows in table:      {table.n_rows} ({table.source})")
    print(f"rows skipped:       {table.n_rows_skipped} (reasons in {skipped_path})")
    _print_skipped_kinds(table.skipped_by_kind)
    print(
        f"files accounted:    {files['scanned']} = {files['in_samples']} in samples + "
        f"{files['skipped']} skipped (every file of a skipped row or folder, in {skipped_path})"
    )
    if table.n_vendor_unknown:
        print(f"vendor unknown:     {table.n_vendor_unknown} samples (see {flagged_path})")
    if table.n_flagged:
        print(f"caveats:            {table.n_flagged} on kept samples (in {flagged_path})")
    sources = ", ".join(f"{k} {n}" for k, n in table.vendor_sources.items())
    print(f"vendor taken from:  {sources}")


def _print_skipped_kinds(kinds: Mapping[str, int]) -> None:
    """skipped.csv's reasons counted by kind, most common first."""
    for kind, n in sorted(kinds.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {n:>8}  {kind}")


_DESCRIPTIONS_SHOWN = 40


def _print_choice_by_description(counts: Mapping[str, Mapping[str, int]]) -> None:
    """The table of choice_by_description, most chosen first, so the choice can be checked."""
    if not counts:
        return
    print("series by SeriesDescription (dataset.ingest):")
    print(f"  {'chosen':>8}  {'dropped':>8}  SeriesDescription")
    rows = sorted(counts.items(), key=lambda item: (-item[1]["chosen"], -item[1]["dropped"]))
    for description, row in rows[:_DESCRIPTIONS_SHOWN]:
        shown = description or "(empty)"
        print(f"  {row['chosen']:>8}  {row['dropped']:>8}  {shown}")
    if len(rows) > _DESCRIPTIONS_SHOWN:
        hidden = len(rows) - _DESCRIPTIONS_SHOWN
        print(f"  ... {hidden} more (series_by_description in manifest.json)")


def _print_unmatched(unmatched: Mapping[str, int], n_keys: int, key_tag: str, unit: str) -> None:
    print(f"labels unmatched:   {sum(unmatched.values())} of {n_keys}")
    why = {
        "series_not_chosen": f"match only {unit} not chosen by dataset.ingest",
        "only_skipped_files": "match only skipped files (reasons in skipped.csv)",
        "no_scanned_file": f"name no scanned file (by {key_tag})",
    }
    for name, n in unmatched.items():
        if n:
            print(f"  {n:>8}  {why[name]}")


def _print_domains(usable: UsableDomains) -> None:
    print()
    print(usable.count_table)
    print()
    print(
        f"usable domains:     {', '.join(usable.domains) or 'none'} "
        "(both classes in train, val, test)"
    )
    if usable.unusable:
        print(f"not usable:         {', '.join(usable.unusable)} (a split lacks a class)")
    print(f"usable pairs:       {', '.join(usable.pairs) or 'none'} (source=<a> target=<b>)")
