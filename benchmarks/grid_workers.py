"""Wall time of the smoke grid with one worker against two parallel workers.

    python benchmarks/grid_workers.py                 # smoke_paper_grid: 12 runs, 2 repeats
    python benchmarks/grid_workers.py --epochs 20      # longer runs: where two workers pay off
    python benchmarks/grid_workers.py --quick         # 1 run of 1 epoch: a plumbing check

Each configuration launches the whole grid as a user would, ``python -m shiftlab.train
experiment=smoke_paper_grid`` into a fresh output folder, and is timed from start to exit:

    1 worker, N threads    Hydra's basic launcher: the runs one after another in one process,
                           torch using every core (N = the usable cores)
    2 workers, 1 thread    hydra-joblib-launcher with two worker processes
                           (``hydra/launcher=joblib hydra.launcher.n_jobs=2``), one thread each
                           (OMP_NUM_THREADS=1), so the two never ask for more than the 2 cores
    1 worker, 1 thread     the basic launcher on one thread, for reference

The datasets are generated and their caches built before anything is timed, so every
configuration measures training (and each process's start-up), not data generation. The
configurations alternate, repeat after repeat; the best repeat of each is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shiftlab.data.loading import usable_cores  # noqa: E402

PRESET = "smoke_paper_grid"
SMOKE_DATASETS = ("synthetic_mri", "synthetic_ct", "synthetic_xray")


def configurations(cores: int) -> dict[str, tuple[int, list[str]]]:
    """name: (threads per process, launcher overrides)."""
    return {
        f"1 worker, {cores} threads": (cores, []),
        "2 workers, 1 thread": (1, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]),
        "1 worker, 1 thread": (1, []),
    }


def grid_overrides(args: argparse.Namespace, data_dir: Path, output_dir: Path) -> list[str]:
    overrides = [
        f"experiment={PRESET}",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={output_dir}",
        "trainer.accelerator=cpu",
    ]
    if args.epochs:
        overrides.append(f"trainer.max_epochs={args.epochs}")
    if args.quick:  # one run: one dataset, direction and seed, one epoch
        overrides += [
            "hydra.sweeper.params.dataset=synthetic_mri",
            "hydra.sweeper.params.direction=forward",
            "hydra.sweeper.params.seed=0",
            "trainer.max_epochs=1",
        ]
    return overrides


def prepare(args: argparse.Namespace, data_dir: Path, output_dir: Path) -> None:
    """Generate and ingest every dataset of the grid and build its cache (not timed)."""
    from hydra import compose, initialize_config_dir

    from shiftlab.config import CONF_DIR, register_resolvers
    from shiftlab.data.prepare import ensure_manifest
    from shiftlab.errors import instantiate

    register_resolvers()
    datasets = SMOKE_DATASETS[:1] if args.quick else SMOKE_DATASETS
    for name in datasets:
        overrides = [*grid_overrides(args, data_dir, output_dir), f"dataset={name}"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ensure_manifest(cfg)
            instantiate(cfg.data).setup("fit")


def launch(overrides: list[str], threads: int) -> float:
    """Seconds from the start of the grid's command to its exit."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="offline")
    command = [sys.executable, "-m", "shiftlab.train", *overrides]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def count_runs(output_dir: Path) -> int:
    return sum(1 for _ in output_dir.glob("runs/**/done"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the preset's 2)")
    parser.add_argument("--data-dir", type=Path, help="reuse generated data (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="1 run of 1 epoch, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cores = usable_cores()
    configs = configurations(cores)
    if args.quick:  # the two that the ratio compares, every process on one thread
        configs = {"1 worker, 1 thread": configs["1 worker, 1 thread"]} | {
            name: configs[name] for name in configs if name.startswith("2 workers")
        }
    best = dict.fromkeys(configs, float("inf"))
    runs = 0
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        prepare(args, data_dir, Path(tmp) / "prepare")
        for repeat in range(args.repeats):
            names = list(configs) if repeat % 2 == 0 else list(configs)[::-1]
            for name in names:
                threads, launcher = configs[name]
                output_dir = Path(tmp) / f"outputs-{repeat}-{names.index(name)}"
                overrides = [*grid_overrides(args, data_dir, output_dir), *launcher]
                seconds = launch(overrides, threads)
                runs = count_runs(output_dir)
                best[name] = min(best[name], seconds)
                print(
                    f"repeat {repeat + 1}: {name:22} {seconds:7.1f} s  ({runs} run(s))", flush=True
                )
    epochs = "1 epoch" if args.quick else f"{args.epochs or 2} epochs"
    grid = f"{PRESET} ({'quick, ' if args.quick else ''}{epochs} per run)"
    print(f"{grid}, {runs} run(s), {cores} usable cores; best of {args.repeats} repeat(s):")
    for name, seconds in best.items():
        print(f"  {name:22} {seconds:7.1f} s  ({seconds / runs:.2f} s per run)")
    two = best["2 workers, 1 thread"]
    for threads in sorted({cores, 1}, reverse=True):
        name = f"1 worker, {threads} thread{'s' if threads > 1 else ''}"
        if name in best:
            print(
                f"ratio 1 worker ({threads} thread{'s' if threads > 1 else ''}) / 2 workers "
                f"(1 thread each): {best[name] / two:.2f}x"
            )


if __name__ == "__main__":
    main()
