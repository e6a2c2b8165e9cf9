"""How long each command the documentation shows takes, run in order as a new user would, so the
times printed beside them in README.md and docs/running.md are measured, not guessed.

    python benchmarks/command_times.py                      # README's "Going further" block
    python benchmarks/command_times.py --doc docs/running.md
    python benchmarks/command_times.py --list               # the commands found, not run
    python benchmarks/command_times.py --command "python -m shiftlab.train seed=1"

The commands are read from the first ``bash`` block of the document (``--doc``, README.md: the
block under "Going further") that holds ``python -m shiftlab`` lines, after the quick start
(``python -m shiftlab.train``, what ``make train`` runs) unless the block begins with it. They
run one after another in the repository, with an empty data folder and an empty output folder
(``SHIFTLAB_DATA_DIR``, ``SHIFTLAB_OUTPUT_DIR`` in a temporary directory, or ``--work-dir``), so
a command that needs a synthetic set or a twin generates it, and a later command with the same
settings finds the earlier one's run: exactly what a user meets who runs the block top to
bottom. ``python`` is this interpreter; W&B is offline.

Each row is the command's wall time from start to exit and its exit status. A single timing,
not a ratio: the machine's load changes it, so run it on an idle machine and say which.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICK_START = "python -m shiftlab.train"
FENCE = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)


def documented_commands(doc: Path) -> list[str]:
    """The shiftlab command lines of the first bash block that has any, comments removed."""
    for block in FENCE.findall(doc.read_text(encoding="utf-8")):
        lines = [" ".join(shlex.split(line, comments=True)) for line in block.splitlines()]
        commands = [line for line in lines if line.startswith("python -m shiftlab")]
        if commands:
            return commands
    raise SystemExit(f"error: no bash block with `python -m shiftlab` lines in {doc}")


def run(command: str, work_dir: Path, timeout: float) -> tuple[float, int, str]:
    """Wall seconds, exit status and last output line of one command, run in the repository."""
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    env = {
        **os.environ,
        "SHIFTLAB_DATA_DIR": str(work_dir / "data"),
        "SHIFTLAB_OUTPUT_DIR": str(work_dir / "outputs"),
        "WANDB_MODE": "offline",
    }
    start = time.perf_counter()
    try:
        done = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, -1, f"stopped after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    lines = (done.stdout + done.stderr).strip().splitlines()
    return seconds, done.returncode, lines[-1] if lines else ""


def minutes(seconds: float) -> str:
    """``42 s`` or ``7 min 00 s``, rounded to the second first (419.6 s is not ``6 min 60 s``)."""
    whole = round(seconds)
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60:02d} s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--doc", type=Path, default=REPO / "README.md")
    parser.add_argument("--command", action="append", help="run this instead (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--work-dir", type=Path, help="data and outputs here (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per command")
    args = parser.parse_args(argv)

    commands = args.command or documented_commands(args.doc)
    if not args.command and commands[0] != QUICK_START:
        commands.insert(0, QUICK_START)
    if args.list:
        print("\n".join(commands))
        return
    with tempfile.TemporaryDirectory(prefix="shiftlab-times-") as temporary:
        work_dir = args.work_dir or Path(temporary)
        print(f"{len(commands)} commands, in order, data and outputs empty at the start")
        total = 0.0
        for command in commands:
            seconds, status, last = run(command, work_dir, args.timeout)
            total += seconds
            print(f"{minutes(seconds):>12}  exit {status}  {command}", flush=True)
            if status != 0:
                print(f"{'':>12}  last line: {last}", flush=True)
        print(f"{minutes(total):>12}  in all")


if __name__ == "__main__":
    main()
