"""Local paths in what leaves the machine: found by what a value is, not by the key that holds it.

A folder name can be a PatientID (TCIA names patient folders by it), so no path of this machine
may reach a shared service (W&B). A value is a path when it is one as a whole: absolute
(``/…``, ``~…``, ``C:\\…``, ``\\\\server\\…``, ``file:…``), explicitly relative (``./…``, ``../…``),
under a location that ``shiftlab.identity`` already masked (``<data_dir>/…``), or relative with a
first component that exists in the working directory (``data/…``). Such a value becomes
``<local path>``. Text that holds a path (a preset's ``download`` instructions interpolate the
data folders; a W&B note) keeps its words: every path value of the same settings that occurs in it
is masked, and so is every absolute or explicitly relative path in it.

What is not caught: a relative path in free text whose folder is not a value of the settings, and
a bare folder or file name without a separator.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

MASK = "<local path>"

_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\|file:)")
_EXPLICITLY_RELATIVE = re.compile(r"^\.{1,2}[\\/]")
_UNDER_MASKED_LOCATION = re.compile(r"^<\w+>[\\/]")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# In text: a quoted path runs to its closing quote (spaces and all); another path starts the text
# or follows a space, '=', ',' or an opening bracket (so not inside a word, a URL, a glob or after
# a masked location) and runs to the next space or quote.
_QUOTED_PATH_IN_TEXT = re.compile(r"""(['"`])(?:(?:~|\.{1,2})?/|[A-Za-z]:\\|\\\\)[^'"`\n]*\1""")
_PATH_IN_TEXT = re.compile(
    r"(?<![^\s'\"`=,(\[{])(?:(?:~|\.{1,2})?/|[A-Za-z]:\\|\\\\)[^\s'\"`,;()\[\]{}<>]+"
)


def is_local_path(value: str) -> bool:
    """Whether ``value`` as a whole is a path of this machine."""
    text = value.strip()
    if not text or "\n" in text or _URL.match(text):
        return False
    if _ABSOLUTE.match(text) or _EXPLICITLY_RELATIVE.match(text):
        return True
    if _UNDER_MASKED_LOCATION.match(text):
        return True
    first = re.split(r"[\\/]", text, maxsplit=1)
    return len(first) == 2 and not re.search(r"\s", text) and Path(first[0]).exists()


def mask_text(text: str, locations: Iterable[str] = ()) -> str:
    """``text`` with each of ``locations`` (longest first) and every absolute or explicitly
    relative path in it replaced by ``<local path>``."""
    for location in sorted(set(locations), key=len, reverse=True):
        text = text.replace(location, MASK)
    text = _QUOTED_PATH_IN_TEXT.sub(lambda quoted: f"{quoted[1]}{MASK}{quoted[1]}", text)
    return _PATH_IN_TEXT.sub(MASK, text)


def mask_local_paths(tree: Any) -> Any:
    """A copy of ``tree`` (dicts, lists, scalars) in which path values are ``<local path>`` and
    text values have their paths masked (``mask_text``, with the tree's own path values)."""
    locations = {value.strip() for value in _strings(tree) if is_local_path(value)}
    return _masked(tree, locations)


def _strings(tree: Any) -> Iterator[str]:
    if isinstance(tree, str):
        yield tree
    elif isinstance(tree, Mapping):
        for value in tree.values():
            yield from _strings(value)
    elif isinstance(tree, Sequence):
        for value in tree:
            yield from _strings(value)


def _masked(tree: Any, locations: set[str]) -> Any:
    if isinstance(tree, str):
        return MASK if tree.strip() in locations else mask_text(tree, locations)
    if isinstance(tree, Mapping):
        return {key: _masked(value, locations) for key, value in tree.items()}
    if isinstance(tree, Sequence) and not isinstance(tree, bytes):
        return [_masked(value, locations) for value in tree]
    return tree
