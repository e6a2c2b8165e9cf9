"""How long a user waits for ``grid dry-run`` and ``grid status`` of the largest grid against the
smoke grid: planning that does not grow with the grid.

    python benchmarks/grid_planning.py            # noise (980 runs) vs smoke_paper_grid (12)
    python benchmarks/grid_planning.py --whole    # and noise planned by composing every job
    python benchmarks/grid_planning.py --quick    # smoke_noise (84) vs smoke_paper_grid, once

Each measurement is what the user runs, ``python -m shiftlab.grid <command> experiment=<preset>``,
in a child process with an empty output folder (every run missing), timed from its start to its
exit: interpreter, imports, composing the grid, planning every run, printing them. The time of
its first line on stderr (``planning <grid>: <n> runs``) is noted too: how long the command
stays silent. The two grids and the two commands alternate, repeat after repeat, and the best
repeat of each is kept, so a shared machine's noise hits both sides alike.

``--whole`` also times ``dry-run`` of both grids once with the planning of before (Hydra
composes every job's whole configuration, about 0.1 s per job on an idle 2-core machine): the
ratio of the two grids then, and of before to now.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("dry-run", "status")

# ``python -m shiftlab.grid`` with every job composed whole, as planning was before
# shiftlab/planning.py.
WHOLE = """
import sys
from shiftlab import grid, planning
from shiftlab.identity import settings
from shiftlab.runs.states import job_run_dir

def compose_every_job(loader, master, jobs):
    configs = [loader.load_sweep_config(master, list(job)) for job in jobs]
    return [planning.Planned(job_run_dir(c), settings(c), lambda c=c: c) for c in configs]

planning.plan = compose_every_job
grid.main(sys.argv[1:])
"""


def timed(command: list[str], output_dir: Path) -> tuple[float, float, str]:
    """Seconds to the child's first line on stderr and to its exit, and its last line."""
    env = {**os.environ, "SHIFTLAB_OUTPUT_DIR": str(output_dir), "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        child = subprocess.Popen(
            command, cwd=output_dir, env=env, stdout=out, stderr=subprocess.PIPE, text=True
        )
        assert child.stderr is not None
        child.stderr.readline()
        first = time.perf_counter() - start
        errors = child.stderr.read()
        child.wait()
        wall = time.perf_counter() - start
        out.seek(0)
        lines = out.read().splitlines()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{errors}")
    return first, wall, lines[-1]


def grid_command(command: str, preset: str) -> list[str]:
    return [sys.executable, "-m", "shiftlab.grid", command, f"experiment={preset}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", default="noise", help="the large grid (experiment=)")
    parser.add_argument("--small", default="smoke_paper_grid", help="the small grid")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--whole", action="store_true", help="also the planning of before, once")
    parser.add_argument("--quick", action="store_true", help="smoke_noise, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.large, args.repeats = "smoke_noise", 1
    presets = (args.large, args.small)
    best: dict[tuple[str, str], tuple[float, float]] = {}
    walls: dict[tuple[str, str], list[float]] = {}
    last: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        output_dir = Path(tmp)
        for _ in range(args.repeats):
            for command in COMMANDS:
                for preset in presets:
                    first, wall, last[command, preset] = timed(
                        grid_command(command, preset), output_dir
                    )
                    walls.setdefault((command, preset), []).append(wall)
                    if (command, preset) not in best or wall < best[command, preset][1]:
                        best[command, preset] = first, wall
        before = {}
        for preset in presets if args.whole else ():
            whole = [sys.executable, "-c", WHOLE, "dry-run", f"experiment={preset}"]
            _, before[preset], last_before = timed(whole, output_dir)
            assert last_before == last["dry-run", preset], (last_before, last)
    print(
        f"python -m shiftlab.grid <command> experiment=<grid>, best of {args.repeats}, alternated:"
    )
    for command in COMMANDS:
        for preset in presets:
            first, wall = best[command, preset]
            repeats = ", ".join(f"{w:.2f}" for w in walls[command, preset])
            print(
                f"  {command:8} {preset:17} {wall:6.2f} s, first line after {first:.2f} s"
                f"   (repeats: {repeats})   {last[command, preset]}"
            )
    for command in COMMANDS:
        ratio = best[command, args.large][1] / best[command, args.small][1]
        print(f"ratio {args.large} / {args.small}, {command}: {ratio:.2f}x (target <= 3x)")
    if args.whole:
        large, small = before[args.large], before[args.small]
        print(f"dry-run composing every job (before), once: {args.large} {large:.1f} s, ", end="")
        print(f"{args.small} {small:.1f} s")
        print(f"ratio {args.large} / {args.small} before, dry-run: {large / small:.1f}x")
        now = best["dry-run", args.large][1]
        print(f"ratio before / now, dry-run {args.large}: {large / now:.1f}x")


if __name__ == "__main__":
    main()
