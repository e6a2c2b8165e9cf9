"""Which labelled series become samples: ``dataset.ingest``'s filter, preference and one series
per label key (``SeriesSelection``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydicom.datadict import tag_for_keyword

from shiftlab.errors import ShiftlabError
from shiftlab.ingest.headers import SeriesHeader

SERIES_PER_KEY = ("all", "most_slices", "fewest_slices")


@dataclass(frozen=True)
class SeriesSelection:
    """Which labelled series become samples (``dataset.ingest`` in a dataset config).

    ``series_filter`` maps DICOM keywords to regular expressions that a series' raw value must
    contain (``re.search``), e.g. ``{SeriesDescription: "(?i)t2"}`` to keep the T2 series of a
    multi-sequence study. ``series_prefer`` maps a keyword to patterns in order of preference:
    of the series that pass the filter and share a label key, only those matching the earliest
    pattern that any of them matches are kept (a series matching none comes last), e.g. the
    reconstruction that says "plain" before one named only by its slice thickness.
    ``series_per_key`` then decides what happens when several series carry the same label key
    (a study with several reconstructions): keep ``all``, or only the one with the
    ``most_slices`` or ``fewest_slices`` (ties: the lowest UID).
    """

    group_by: str = "SeriesInstanceUID"
    series_filter: Mapping[str, str] = field(default_factory=dict)
    series_prefer: Mapping[str, Sequence[str]] = field(default_factory=dict)
    series_per_key: str = "all"

    @classmethod
    def from_config(cls, options: Mapping | None) -> SeriesSelection:
        options = dict(options or {})
        known = {"group_by", "series_filter", "series_prefer", "series_per_key"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ShiftlabError(
                f"dataset.ingest has unknown option(s) {unknown}; use {', '.join(sorted(known))}."
            )
        selection = cls(**options)
        if selection.series_per_key not in SERIES_PER_KEY:
            raise ShiftlabError(
                f"dataset.ingest.series_per_key={selection.series_per_key!r}; "
                f"choose one of {SERIES_PER_KEY}."
            )
        patterns = [("series_filter", k, p) for k, p in selection.series_filter.items()]
        for keyword, ordered in selection.series_prefer.items():
            if isinstance(ordered, str):
                raise ShiftlabError(
                    f"dataset.ingest.series_prefer.{keyword} is one pattern; expected a list of "
                    f"patterns, most preferred first, e.g. [{ordered!r}]."
                )
            patterns += [("series_prefer", keyword, p) for p in ordered]
        for option, keyword, pattern in patterns:
            if tag_for_keyword(keyword) is None:
                raise ShiftlabError(f"dataset.ingest.{option}: {keyword!r} is not a DICOM keyword.")
            try:
                re.compile(pattern)
            except re.error as error:
                raise ShiftlabError(
                    f"dataset.ingest.{option}.{keyword}: bad regular expression "
                    f"{pattern!r} ({error})."
                ) from error
        return selection

    @property
    def active(self) -> bool:
        """Whether some series may not be chosen."""
        return bool(self.series_filter or self.series_prefer) or self.series_per_key != "all"

    @property
    def keywords(self) -> tuple[str, ...]:
        """The attributes the selection reads, and SeriesDescription for its report."""
        extra = ("SeriesDescription",) if self.active else ()
        return tuple(dict.fromkeys((*self.series_filter, *self.series_prefer, *extra)))

    def _rank(self, header: SeriesHeader) -> tuple[int, ...]:
        """Per series_prefer keyword, the index of the first pattern the series matches."""
        return tuple(
            next((i for i, p in enumerate(ordered) if re.search(p, header.raw(k))), len(ordered))
            for k, ordered in self.series_prefer.items()
        )

    def apply(self, series: Sequence[SeriesHeader], key_tag: str) -> list[SeriesHeader]:
        """The series that pass the filter and are preferred for their label key, one per label
        key unless ``series_per_key=all``."""
        kept = [
            s for s in series if all(re.search(p, s.raw(k)) for k, p in self.series_filter.items())
        ]
        if self.series_prefer:
            best_rank: dict[str, tuple[int, ...]] = {}
            for header in kept:
                key = header.raw(key_tag)
                best_rank[key] = min(best_rank.get(key, self._rank(header)), self._rank(header))
            kept = [s for s in kept if self._rank(s) == best_rank[s.raw(key_tag)]]
        if self.series_per_key == "all":
            return kept
        sign = -1 if self.series_per_key == "most_slices" else 1
        best: dict[str, SeriesHeader] = {}
        for header in sorted(kept, key=lambda s: (sign * len(s.files), s.source_uid)):
            best.setdefault(header.raw(key_tag), header)
        return sorted(best.values(), key=lambda s: s.source_uid)
