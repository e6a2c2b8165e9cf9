"""The files shiftlab is still writing: how they are named, so that none is ever taken for data.

A file written into a data folder (a synthetic or twin DICOM file, a label table, a PNG or NIfTI
image of a twin) is written whole under a temporary name in its own folder, then renamed into
place (``os.replace``, atomic on one file system): a reader sees the old file or the new one,
never half of one. The temporary name is the final name followed by ``.<pid>.tmp``
(``1-01.dcm.4242.tmp``) or, where the writing library picks the format by the extension, the
name with ``.<pid>.tmp`` before that extension (``0042.4242.tmp.png``).

A process killed while writing leaves its temporary file behind. Ingest never lists a file whose
name ends in ``.tmp``, or has ``.tmp`` just before its extension, as data (``is_temporary``), and
the next write of the same file removes the temporaries of that file whose writing process is no
longer alive on this machine (``write_via_temporary``), so a relaunch after a kill cleans up
after itself. (On a file system shared by several machines a process id names a process of one
machine only; the grid generates a dataset once, before any job starts.)

This is the one way shiftlab replaces a file (``write_via_temporary``, ``write_text_atomic``,
``write_bytes_atomic``, and ``write_files_via_temporary`` for many files at once): data folders,
manifests, run records, caches, report tables and figures.
``durable=True`` also flushes the file to disk before the rename, so a record survives a crash
of the machine, not only of the process. (The pseudonym key is the one file created otherwise:
it must never be replaced once it exists, so it is hard-linked into place.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

_TEMPORARY = re.compile(r"\.tmp(\.[A-Za-z0-9]+){0,2}$")
# A temporary name with the id of its writing process: ``<name>.<pid>.tmp[<extension>]``.
_WRITER = re.compile(r"\.(\d+)\.tmp(\.[A-Za-z0-9]+)?$")


def is_temporary(name: str) -> bool:
    """Whether a file name is a temporary file's (a write in progress or a killed writer's)."""
    return bool(_TEMPORARY.search(name))


def temporary_path(path: Path, extension: str = "") -> Path:
    """This process's temporary file for ``path``; ``extension`` (e.g. ``.png``, which must end
    the name) is kept last for writers that choose the format by it."""
    if extension and not path.name.endswith(extension):
        raise ValueError(f"{path.name!r} does not end with {extension!r}")
    stem = path.name[: len(path.name) - len(extension)]
    return path.with_name(f"{stem}.{os.getpid()}.tmp{extension}")


def write_via_temporary(
    path: Path,
    write: Callable[[Path], object],
    extension: str = "",
    *,
    durable: bool = False,
    clean: bool = True,
) -> Path:
    """Write ``path`` whole: ``write(temporary)``, then rename it into place.

    ``durable`` flushes the written file to disk first. With ``clean`` (the default) the
    temporaries of the same file left by processes no longer alive are removed first; a file
    that processes on several machines may write at once (a cache shared on a cluster) passes
    ``clean=False``, as a process id names a process of one machine only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        _remove_stale(path, extension)
    temporary = temporary_path(path, extension)
    try:
        write(temporary)
        if durable:
            with open(temporary, "rb+") as written:
                os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # a write that failed leaves nothing behind
    return path


def write_files_via_temporary(files: Iterable[tuple[Path, bytes]]) -> None:
    """Write each ``(path, data)`` whole, as ``write_bytes_atomic`` does, for many files in a few
    folders: each folder is made, and cleared of the temporaries of writers no longer alive, once
    instead of once per file (a listing per file costs more as the folder fills)."""
    ready: set[Path] = set()
    for path, data in files:
        path = Path(path)
        if path.parent not in ready:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_in(path.parent)
            ready.add(path.parent)
        temporary = temporary_path(path)
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)  # a write that failed leaves nothing behind
            raise


def write_text_atomic(path: Path, text: str, *, durable: bool = True) -> Path:
    """Write ``text`` to ``path`` whole, flushed to disk (run records, report tables)."""
    return write_via_temporary(
        Path(path), lambda temporary: temporary.write_text(text), durable=durable
    )


def write_bytes_atomic(path: Path, data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` whole, creating its folder."""
    return write_via_temporary(
        Path(path), lambda temporary: temporary.write_bytes(data), durable=durable
    )


def remove_temporaries(folder: Path) -> None:
    """Remove every temporary file directly in ``folder``: for a folder only one process writes
    (a run directory under its lock), whatever is there was left by a killed writer."""
    for candidate in Path(folder).iterdir():
        if candidate.is_file() and is_temporary(candidate.name):
            candidate.unlink(missing_ok=True)


def _remove_stale(path: Path, extension: str) -> None:
    stem = path.name[: len(path.name) - len(extension)]
    pattern = re.compile(re.escape(stem) + r"\.(\d+)\.tmp" + re.escape(extension))
    for candidate in path.parent.iterdir():
        found = pattern.fullmatch(candidate.name)
        if found and not _alive(int(found[1])):
            candidate.unlink(missing_ok=True)


def _remove_stale_in(folder: Path) -> None:
    for candidate in folder.iterdir():
        found = _WRITER.search(candidate.name)
        if found and not _alive(int(found[1])):
            candidate.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill would end the process
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
