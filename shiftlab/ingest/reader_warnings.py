"""Warnings of the DICOM reader, captured while data is read and shown once, without raw values.

pydicom reports a header value that breaks its VR's rules through ``pydicom.misc.warn_and_log``,
which sends the message twice: to its logger ``pydicom`` and as a Python warning. Each message
quotes the value, e.g. ``Invalid value for VR UI: '1.2.826.0.1.3680043.8.971.00.37881…'`` for a
UID with a zero-led component (PS3.5 9.1 forbids them; real files carry them, see
rvbCMTS/PySkinDose#50 and fo-dicom/fo-dicom#1160), so a scan printed the Study, Series and SOP
Instance UIDs of every such file, twice, into the console and ``ingest.log``.

Inside ``reader_warnings()`` the logger's records are kept instead of printed, the Python warning
that repeats each of them is dropped, and at the end every kind of message is logged once with
its count. A kind is the message with its values replaced by ``<value>`` (quoted values and bare
UIDs); up to three examples name where it came from by pseudonym only: the sample being read
(``attribute_to``, the cache build) or, given the pseudonym key (ingest), the value itself as
``v-<16 hex>``, the keyed hash that ingest uses (for a study's or series' UID the 16 hex digits
are those of its ``study_id`` / ``series_id`` in the manifest).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from shiftlab.ingest.pseudonym import pseudonym

log = logging.getLogger(__name__)

READER_LOGGER = "pydicom"
EXAMPLES = 3
# A value in a message: quoted as Python's repr quotes it (text or bytes), or a bare UID.
_VALUE = re.compile(r"""b?(['"])(?:\\.|(?!\1).)*\1|(?<![\w.])\d+(?:\.\d+){3,}(?![\w.])""")
_source: ContextVar[str | None] = ContextVar("reader_warning_source", default=None)


def attribute_to(source: str | None) -> None:
    """Name, by its pseudonymous id, the sample whose files are read next (None: no sample)."""
    _source.set(source)


@dataclass
class _Kind:
    count: int = 0
    examples: list[str] = field(default_factory=list)


class _Collector(logging.Handler):
    """Counts the reader's messages by kind; remembers the last one (its warning follows)."""

    def __init__(self, key: Callable[[], bytes] | None) -> None:
        super().__init__(logging.WARNING)
        self.kinds: dict[str, _Kind] = {}
        self.last: str | None = None
        self._load_key = key
        self._key: bytes | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self.last = text
        kind = self.kinds.setdefault(_VALUE.sub("<value>", text), _Kind())
        kind.count += 1
        for example in self._examples(text):
            if len(kind.examples) < EXAMPLES and example not in kind.examples:
                kind.examples.append(example)

    def _examples(self, text: str) -> list[str]:
        source = _source.get()
        if source:
            return [source]
        if self._load_key is None:
            return []
        values = [_unquoted(match[0]) for match in _VALUE.finditer(text)]
        if values and self._key is None:
            self._key = self._load_key()
        return [pseudonym(self._key, value, "v-") for value in values if self._key]


def _unquoted(value: str) -> str:
    """The value as the header holds it: a quoted repr without its quotes (a UID as is)."""
    body = value[1:] if value.startswith("b") else value
    return body[1:-1] if body[:1] in "'\"" else body


@contextmanager
def reader_warnings(what: str, key: Callable[[], bytes] | None = None) -> Iterator[None]:
    """Capture the DICOM reader's warnings in the block; at its end (even a failed one) log each
    kind once: ``<count>  <message without values>  (e.g. <pseudonyms>)``. ``what`` names the
    step (``ingest``, ``cache build``); ``key`` loads the pseudonym key for value pseudonyms."""
    reader = logging.getLogger(READER_LOGGER)
    collector = _Collector(key)
    propagate, level = reader.propagate, reader.level
    reader.addHandler(collector)
    reader.propagate = False
    reader.setLevel(logging.WARNING)  # a quieter root logger must not let the warnings through
    token = _source.set(None)
    try:
        with warnings.catch_warnings():
            shown = warnings.showwarning

            def show(message: Warning | str, *args: Any, **kwargs: Any) -> None:
                if str(message) != collector.last:  # not the copy of a logged message
                    shown(message, *args, **kwargs)

            warnings.showwarning = show
            yield
    finally:
        _source.reset(token)
        reader.removeHandler(collector)
        reader.propagate, reader.level = propagate, level
        if collector.kinds:
            log.warning(_summary(what, collector.kinds))


def _summary(what: str, kinds: dict[str, _Kind]) -> str:
    total = sum(kind.count for kind in kinds.values())
    lines = [
        f"{what}: {total} warning(s) from the DICOM reader (pydicom), each kind once, "
        "values replaced by <value> and examples named by pseudonym:"
    ]
    for text, kind in sorted(kinds.items(), key=lambda item: (-item[1].count, item[0])):
        examples = f"  (e.g. {', '.join(kind.examples)})" if kind.examples else ""
        lines.append(f"  {kind.count:>8}  {text}{examples}")
    return "\n".join(lines)
