"""Peak memory of a run as its dataset grows: each synthetic modality at 1x and 4x the patients.

    python benchmarks/memory_scaling.py                  # 200 and 800 patients per vendor
    python benchmarks/memory_scaling.py --patients 300 --factor 4 --epochs 2
    python benchmarks/memory_scaling.py --quick          # MRI only, 30 and 60 patients

Each run is ``python -m shiftlab.train`` in a child process (the study's settings as a single
run, SmallCNN so that it is quick, ``trainer.max_epochs`` as given), on a dataset generated and
cached beforehand. The 1x set is large enough for every loader to hold full batches (evaluation
at the study's batch size of 50, splits of 40/30/30 %, at least 170 patients per vendor), so that
the larger set adds batches, not larger ones. Two measures of its memory:

    peak RSS    the kernel's high-water mark of the child's resident memory (``wait4``'s
                ``ru_maxrss``, the same as VmHWM): everything it had in memory at once, the pages
                of the memory-mapped cache it had read included
    peak anon   the highest anonymous resident memory (``RssAnon`` of /proc/<pid>/status, sampled
                every few milliseconds): what the process itself allocated. The cache's pages are
                file pages, shared through the page cache with every other run reading the same
                file and dropped by the kernel under pressure, so they are not in it

and the size of the cache file itself. The ratio of 4x to 1x is printed per modality for both.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("synthetic_mri", "synthetic_ct", "synthetic_xray")
MIB = 1 << 20


# Every loader already holds full batches at 1x, so a larger set only adds batches: training and
# evaluation at the study's batch size, and splits large enough for a full validation batch.
FULL_BATCHES = ["data.eval_batch_size=50", "dataset.split_fractions={train:0.4,val:0.3,test:0.3}"]


def overrides(dataset: str, patients: int, epochs: int, data_dir: Path, output: Path) -> list[str]:
    return [
        "experiment=paper_grid",
        "hydra.mode=RUN",  # one run, not the preset's grid
        f"dataset={dataset}",
        "model=smallcnn",
        f"dataset.synthetic.patients_per_vendor={patients}",
        *FULL_BATCHES,
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={output}",
        f"trainer.max_epochs={epochs}",
        "trainer.accelerator=cpu",
    ]


def prepare(dataset: str, patients: int, data_dir: Path, output: Path) -> tuple[int, int]:
    """Generate, ingest and cache the set (not measured): its sample count and cache bytes."""
    from hydra import compose, initialize_config_dir

    from shiftlab.config import CONF_DIR, register_resolvers
    from shiftlab.data.prepare import ensure_manifest
    from shiftlab.errors import instantiate

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=overrides(dataset, patients, 1, data_dir, output)
        )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        ensure_manifest(cfg)
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
    arrays = datamodule.arrays
    return len(arrays), int(arrays.nbytes)


class AnonPeak(threading.Thread):
    """Samples a process's RssAnon and RssFile until it ends; keeps the highest of each."""

    def __init__(self, pid: int, every_s: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.path, self.every_s = Path(f"/proc/{pid}/status"), every_s
        self.anon = self.file = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                fields = dict(
                    line.split(":", 1) for line in self.path.read_text().splitlines() if ":" in line
                )
            except (FileNotFoundError, ProcessLookupError, ValueError):
                return
            for key, attr in (("RssAnon", "anon"), ("RssFile", "file")):
                if key in fields:
                    kib = int(fields[key].split()[0])
                    setattr(self, attr, max(getattr(self, attr), kib * 1024))
            time.sleep(self.every_s)


def measure(command: list[str], threads: int) -> dict[str, int]:
    """Peak RSS (kernel high-water mark) and sampled peak anonymous and file memory, in bytes."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="offline")
    child = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    sampler = AnonPeak(child.pid)
    sampler.start()
    stderr = child.stderr.read()  # until the child closes it, at its exit
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    sampler.done.set()
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.decode()[-3000:]}")
    # ru_maxrss is in KiB on Linux.
    return {"rss": usage.ru_maxrss * 1024, "anon": sampler.anon, "file": sampler.file}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--patients", type=int, default=200, help="patients per vendor at 1x (at least 170)"
    )
    parser.add_argument("--factor", type=int, default=4, help="the larger size, times --patients")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs")
    parser.add_argument("--data-dir", type=Path, help="reuse generated data (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="synthetic_mri, 30 and 60 patients")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.patients, args.factor = "synthetic_mri", 30, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = {"1x": args.patients, f"{args.factor}x": args.patients * args.factor}
    print(
        f"{'dataset':15} {'size':>4} {'patients':>8} {'samples':>7} {'cache MiB':>9} "
        f"{'peak RSS MiB':>12} {'peak anon MiB':>13} {'peak file MiB':>13}"
    )
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        for dataset in args.datasets.split(","):
            peaks = {}
            for size, patients in sizes.items():
                output = Path(tmp) / f"{dataset}-{size}"
                samples, cache_bytes = prepare(dataset, patients, data_dir, output / "prepare")
                command = [sys.executable, "-m", "shiftlab.train"]
                command += overrides(dataset, patients, args.epochs, data_dir, output / "run")
                peaks[size] = peak = measure(command, args.threads)
                print(
                    f"{dataset:15} {size:>4} {patients:8d} {samples:7d} {cache_bytes / MIB:9.1f} "
                    f"{peak['rss'] / MIB:12.0f} {peak['anon'] / MIB:13.0f} "
                    f"{peak['file'] / MIB:13.0f}",
                    flush=True,
                )
            small, large = peaks["1x"], peaks[f"{args.factor}x"]
            rss, anon = large["rss"] / small["rss"], large["anon"] / small["anon"]
            ratios.append(
                f"ratio {args.factor}x / 1x, {dataset}: peak RSS {rss:.2f}, peak anon {anon:.2f}"
            )
    print("\n".join(ratios))


if __name__ == "__main__":
    main()
