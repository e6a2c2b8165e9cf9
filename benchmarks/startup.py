"""The fixed cost of one run against its training time: shiftlab's command-line entry point in a
child process, timed from outside and read from its run record.

    python benchmarks/startup.py                 # synthetic MRI, MRNet2D, 1 epoch, 3 repeats
    python benchmarks/startup.py --model smallcnn --epochs 2 --repeats 5
    python benchmarks/startup.py --quick         # a plumbing check, seconds

The dataset is generated and its cache built first, so every timed run finds a warm cache, as
every run of a grid but the first does. Each repeat starts a fresh run (its own output folder) of
the study's settings (``experiment=paper_grid`` as a single run: batch 50, no progress bar) with a
tiny epoch count. The child is ``python -m shiftlab.train <overrides>`` with a few lines around it
(``CHILD``) that note the time when the interpreter is up, when ``shiftlab.train`` is imported, and
when ``train()`` starts and returns; ``time.perf_counter`` is the system's monotonic clock, so
this process reads the child's notes on its own clock. With the run record (``metrics.json``:
``timings_s``, ``first_step_s``) the wall time splits into:

    interpreter     from the start of the child to its first line
    imports         ``import shiftlab.train`` (torch, Lightning, Hydra, ...)
    compose         Hydra's main: composing the config, the run directory, up to train()
    setup           train() up to trainer.fit: manifest check, DataModule, model, logger, trainer
    fit start-up    trainer.fit up to the first training step
    training        the epochs (each with its validation and checkpoints): what scales with epochs
    evaluation      validation and test of the selected checkpoint: scales with the test set
    record          predictions, metrics.json, done
    exit            from train()'s return to the child's exit

The fixed cost is everything but training. The best (smallest) repeat of each part is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUDY_EPOCHS = 60
PARTS = (
    "interpreter",
    "imports",
    "compose",
    "setup",
    "fit start-up",
    "training",
    "evaluation",
    "record",
    "exit",
)

# ``python -m shiftlab.train`` (``shiftlab.train.cli``, last) with notes of the time, written to
# argv[1] when train() returns.
CHILD = """
import json, sys, time
up = time.perf_counter()
import shiftlab.train as entry
notes = {"up": up, "imported": time.perf_counter()}
out, sys.argv = sys.argv[1], ["shiftlab.train", *sys.argv[2:]]
run_train = entry.train
def train(*args, **kwargs):
    notes["train"] = time.perf_counter()
    try:
        return run_train(*args, **kwargs)
    finally:
        notes["trained"] = time.perf_counter()
        with open(out, "w") as f:
            json.dump(notes, f)
entry.train = train
entry.cli()
"""


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="offline")
    # Hydra finds conf/ next to the entry point's file, as under ``python -m shiftlab.train``
    # (imported, the entry point's module would name a package to search instead).
    env["HYDRA_MAIN_MODULE"] = "__main__"
    return env


def overrides(args: argparse.Namespace, data_dir: Path, output_dir: Path) -> list[str]:
    return [
        "experiment=paper_grid",
        "hydra.mode=RUN",  # one run, not the preset's grid
        "dataset=synthetic_mri",
        f"model={args.model}",
        f"dataset.synthetic.patients_per_vendor={args.patients}",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={output_dir}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.accelerator=cpu",
    ]


def warm_cache(args: argparse.Namespace, data_dir: Path, output_dir: Path) -> None:
    """Generate and ingest the set and build its cache, in this process (not timed)."""
    from hydra import compose, initialize_config_dir

    from shiftlab.config import CONF_DIR, register_resolvers
    from shiftlab.data.prepare import ensure_manifest
    from shiftlab.errors import instantiate

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides(args, data_dir, output_dir))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        ensure_manifest(cfg)
        instantiate(cfg.data).setup("fit")


def one_run(args: argparse.Namespace, data_dir: Path, output_dir: Path) -> dict[str, float]:
    """Seconds of each part of one run (PARTS), its wall time and its test set size."""
    notes_path = output_dir / "notes.json"
    output_dir.mkdir(parents=True)
    command = [sys.executable, "-c", CHILD, str(notes_path)]
    command += overrides(args, data_dir, output_dir)
    launched = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=child_env(args.threads), capture_output=True)
    exited = time.perf_counter()
    if done.returncode != 0:
        raise RuntimeError(f"the run failed:\n{done.stdout.decode()}\n{done.stderr.decode()}")
    notes = json.loads(notes_path.read_text())
    (metrics,) = output_dir.glob("runs/**/metrics.json")
    record = json.loads(metrics.read_text())
    timings = record["timings_s"]
    fit_start_up = record["first_step_s"] - timings["setup"]
    return {
        "interpreter": notes["up"] - launched,
        "imports": notes["imported"] - notes["up"],
        "compose": notes["train"] - notes["imported"],
        "setup": timings["setup"],
        "fit start-up": fit_start_up,
        "training": timings["fit"] - fit_start_up,
        "evaluation": timings["test"],
        "record": notes["trained"] - notes["train"] - timings["total"],
        "exit": exited - notes["trained"],
        "wall": exited - launched,
        "test samples": sum(counts["test"] for counts in record["samples"].values()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=200, help="patients per vendor")
    parser.add_argument("--model", default="mrnet2d", help="conf/model/<name>")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the children")
    parser.add_argument("--data-dir", type=Path, help="reuse generated data (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="small set, SmallCNN, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.model, args.epochs, args.repeats = 60, "smallcnn", 1, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        warm_cache(args, data_dir, Path(tmp) / "warm")
        for repeat in range(args.repeats):
            runs.append(one_run(args, data_dir, Path(tmp) / f"run{repeat}"))
    best = min(runs, key=lambda run: run["wall"] - run["training"])  # the least disturbed
    fixed = best["wall"] - best["training"]
    per_epoch = best["training"] / args.epochs
    print(
        f"synthetic_mri, {args.model}, {args.patients} patients per vendor, {args.epochs} "
        f"epoch(s), {args.threads} thread(s); the repeat of least fixed cost of {args.repeats}:"
    )
    for name in PARTS:
        spread = ", ".join(f"{run[name]:.2f}" for run in runs)
        print(f"  {name:13} {best[name]:6.2f} s   (repeats: {spread})")
    print(f"  {'wall':13} {best['wall']:6.2f} s")
    print(f"evaluation: {int(best['test samples'])} test samples and the validation sets")
    to_first_step = sum(best[name] for name in PARTS[: PARTS.index("training")])
    print(f"time to first step: {to_first_step:.2f} s")
    print(f"fixed cost per run: {fixed:.2f} s (target < 5 s)")
    print(f"fixed cost without evaluation: {fixed - best['evaluation']:.2f} s")
    study = STUDY_EPOCHS * per_epoch
    print(
        f"ratio fixed / training at {STUDY_EPOCHS} epochs of this set: {fixed / study:.3f} "
        f"({fixed:.1f} s against {study:.0f} s)"
    )


if __name__ == "__main__":
    main()
