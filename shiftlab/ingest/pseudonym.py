"""Keyed pseudonyms for PatientID and UIDs.

Manifests, run records and W&B must never hold raw identifiers. A plain hash of a PatientID can
be reversed by hashing candidate IDs, so the hash is keyed (HMAC) with a secret that stays on the
machine that ran ingest.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from shiftlab.errors import ShiftlabError

KEY_BYTES = 32


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """Return the secret stored at `path`, creating it (mode 0600, parent folders too) if absent.

    Creation writes a temporary file and hard-links it into place, so two processes starting at
    once agree on one key and neither ever reads a half-written file.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(KEY_BYTES) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temp, path)
        except FileExistsError:
            pass  # another process created it first; use theirs
        finally:
            temp.unlink(missing_ok=True)
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ShiftlabError(
            f"pseudonym key {path} is not a hex secret of at least 16 bytes. "
            "Restore it from a backup; deleting it creates a new key, and every pseudonym "
            "(and so every manifest hash) changes."
        )
    return key


def pseudonym(key: bytes, value: str, prefix: str) -> str:
    """`prefix` + the first 16 hex digits of HMAC-SHA256(key, value): stable, not reversible."""
    digest = hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{prefix}{digest[:16]}"
