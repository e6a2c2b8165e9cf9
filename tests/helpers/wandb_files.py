"""Reading W&B's offline run files."""

from __future__ import annotations

import time
from pathlib import Path


def wandb_log(path: Path, expected: bytes, timeout: float = 60.0) -> bytes:
    """The bytes of an offline W&B run file once they hold ``expected``. W&B's service process
    writes the file; right after ``wandb.finish()`` returns, its last records can still be on
    their way (seen as an empty file on a loaded machine), so the reader waits for them."""
    deadline = time.monotonic() + timeout
    while True:
        data = path.read_bytes()
        if expected in data or time.monotonic() > deadline:
            return data
        time.sleep(0.2)
