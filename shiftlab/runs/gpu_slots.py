"""One GPU per worker process (launcher=local_gpus): a free slot, claimed with flock, pinned
through CUDA_VISIBLE_DEVICES before CUDA starts."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from shiftlab.errors import ShiftlabError

NO_GPU = (
    "launcher=local_gpus found no GPU (CUDA_VISIBLE_DEVICES is empty or nvidia-smi lists none); "
    "set launcher.gpus=N, or use launcher=basic."
)

_claimed: tuple[str, IO] | None = None  # this process's GPU and its slot file, held until exit


def visible_gpus() -> list[str]:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists.

    Asks the driver through nvidia-smi, not CUDA, so the launching process never creates a
    CUDA context (its worker processes pick their GPU before theirs).
    """
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def pin_gpu(gpus: int, slot_dir: str | Path, poll_s: float = 2.0) -> str:
    """Claim a GPU slot for this process and make that GPU its only visible device.

    Slot k stands for the k-th visible GPU. A slot is held by an exclusive ``flock`` on
    ``slot_dir/gpu<k>.lock``, which the operating system releases when the process ends, even
    when it is killed. A worker process that runs several jobs keeps its first GPU (CUDA reads
    CUDA_VISIBLE_DEVICES once). Must run before anything starts CUDA in this process.
    """
    global _claimed
    if _claimed is not None:
        return _claimed[0]
    if gpus < 1:
        raise ShiftlabError(NO_GPU)
    devices = visible_gpus() or [str(i) for i in range(gpus)]
    devices = devices[:gpus]
    slot_dir = Path(slot_dir)
    slot_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for slot, device in enumerate(devices):
            file = open(slot_dir / f"gpu{slot}.lock", "a+")  # noqa: SIM115 (held until exit)
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                continue
            file.seek(0)
            file.truncate()
            file.write(f"{os.getpid()} {socket.gethostname()}\n")
            file.flush()
            os.environ["CUDA_VISIBLE_DEVICES"] = device
            _claimed = (device, file)
            return device
        if not waited:
            print(f"all {len(devices)} GPU slots in {slot_dir} are taken; waiting", flush=True)
            waited = True
        time.sleep(poll_s)
