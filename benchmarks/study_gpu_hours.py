"""GPU-hours of the study's full protocol, from measured GPU throughput and each preset's size.

    python benchmarks/study_gpu_hours.py                       # the H200 tables in results/
    python benchmarks/study_gpu_hours.py --gpus 4 --fixed-s 20
    python benchmarks/study_gpu_hours.py --throughput gpu.json  # a newer benchmark run

The protocol is ``paper_grid`` (7 presets x 2 directions x 10 seeds = 140 runs) plus both
ablations, ``injection`` (x 6 fractions = 840 runs) and ``noise`` (x 7 strengths = 980 runs), 60
epochs each. Injection replaces source samples (``shift.mode=replace``) and noise changes no
sample count, so every run of one preset and direction trains on as many samples as its
``paper_grid`` run.

One run = 60 epochs x (training samples / training images/s + validation samples / evaluation
images/s) + a final validation and test + a fixed cost (start-up, checkpoints; plus the compile
time where the fastest setting is compiled). Where the numbers come from:

- images/s: ``benchmarks/gpu_throughput.py``'s JSON (default: the H200 files in
  ``benchmarks/results/``), the best setting measured for each network (the highest images/s of
  any precision, memory format, cuDNN mode or compilation, with the data already on the GPU).
  Two more estimates use the best rate with deterministic cuDNN (bit-for-bit repeatable runs)
  and the best rate measured when fed by the DataLoader (per-item reads then).
  Presets the benchmark did not measure take a measured network's rate scaled by input size
  (``RATES``). Evaluation (no backward pass) is taken as 3x the training rate.
- samples: each preset's public dataset size, vendor shares and samples per patient (``PRESETS``,
  rounded, stated below: the real numbers are in the count table of the first ingest; edit them
  there or pass ``--counts``, a JSON of ``{preset: {"samples": all labelled samples, "source":
  the default source domain's samples, "target": the target's}}``), and its split
  fractions from ``shiftlab/conf/dataset/<preset>.yaml`` (60/20/20 for all seven).

With several GPUs each run has one GPU (the ``local_gpus`` or ``slurm`` launcher); the wall time
is that of the longest-first schedule of the 1,960 runs on them.
"""

from __future__ import annotations

import argparse
import heapq
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
EPOCHS = 60
SEEDS = 10
ABLATIONS = {"paper_grid": 1, "injection": 6, "noise": 7}  # runs per paper_grid run
EVAL_SPEEDUP = 3.0  # a forward pass alone against forward, backward and optimiser step


@dataclass(frozen=True)
class Rate:
    """Where a preset's training images/s come from: a measured case, scaled."""

    case: str  # network@preset as benchmarks/gpu_throughput.py names it
    scale: float  # images/s of this preset per image/s of the case
    why: str


# Scaled where the input differs: MRNet2D folds a series' slices into the batch, so its cost per
# series grows with slices x pixels per slice (mri_brain's first convolution has stride 2 at 128
# px, so its feature maps are as large as mri_breast's at 256 px with stride 4).
RATES = {
    "mri_breast": Rate("mrnet2d@mri_breast", 1.0, "measured: 3 x 256^2"),
    "mri_prostate": Rate("mrnet2d@mri_breast", 3 / 16, "16 slices of 256^2 against 3"),
    "mri_brain": Rate("mrnet2d@mri_breast", 3 / 24, "24 slices, same feature maps, against 3"),
    "ct_lung_nodule": Rate("nodulex@synthetic_ct", 1.0, "measured at the same 5 x 47^2 input"),
    "ct_head": Rate("nodulex3d@ct_head", 1.0, "measured: 32 x 96^2"),
    "xray_chest": Rate("densenet121@xray_chest", 1.0, "measured: 1 x 224^2"),
    "xray_mammo": Rate("densenet121@xray_chest", 1.0, "measured at the same 224^2 input"),
}


@dataclass(frozen=True)
class Preset:
    """A preset's size: labelled samples in all, and the share of the two default domains."""

    samples: int
    source_share: float
    target_share: float
    basis: str


# Rounded assumptions (see the module docstring); shares are of the labelled samples.
PRESETS = {
    "mri_breast": Preset(
        36_880, 0.55, 0.45, "922 patients x ~40 slices (a ~20-slice box + as many negatives)"
    ),
    "mri_prostate": Preset(1_150, 0.90, 0.10, "~1,150 patients x 1 axial T2 series"),
    "mri_brain": Preset(4_800, 0.50, 0.30, "~1,200 stable CN/AD participants x ~4 T1 series"),
    "ct_lung_nodule": Preset(
        800, 0.60, 0.20, "~800 nodules with >= 3 reads rated <= 2 or >= 4 (LIDC, GE-heavy)"
    ),
    "ct_head": Preset(491, 0.55, 0.45, "491 scans x 1 series"),
    "xray_chest": Preset(18_000, 0.30, 0.40, "18,000 images (15,000 train + 3,000 test)"),
    "xray_mammo": Preset(
        14_000, 0.75, 0.20, "20,000 views, ~70 % BI-RADS 1 or >= 4 (Siemens-heavy)"
    ),
}


def split_fractions(preset: str) -> dict[str, float]:
    config = yaml.safe_load((REPO / "shiftlab" / "conf" / "dataset" / f"{preset}.yaml").read_text())
    return {split: float(value) for split, value in config["split_fractions"].items()}


KINDS = {
    "best": "best setting",
    "deterministic": "best deterministic setting",
    "loader": "fed by the loader as measured",
}


def best_rates(paths: list[Path]) -> dict[str, dict[str, dict]]:
    """Per case and kind (``KINDS``): the fastest row with the data on the device, the fastest of
    those with deterministic cuDNN, and the fastest fed by a DataLoader."""
    best: dict[str, dict[str, dict]] = {}
    for path in paths:
        for row in json.loads(path.read_text())["rows"]:
            if row.get("error") or not row.get("images_per_s"):
                continue
            if row["data"] == "device":
                kinds = ["best"] + (["deterministic"] if row["cudnn"] == "deterministic" else [])
            else:
                kinds = ["loader"]
            for kind in kinds:
                held = best.setdefault(row["case"], {}).get(kind)
                if held is None or row["images_per_s"] > held["images_per_s"]:
                    best[row["case"]][kind] = row
    return best


def describe(row: dict) -> str:
    parts = [{"32-true": "fp32", "bf16-mixed": "bf16"}.get(row["precision"], row["precision"])]
    if row["channels_last"]:
        parts.append("NHWC")
    if row["compile"]:
        parts.append("compiled")
    if row["cudnn"] == "benchmark":
        parts.append("autotuned")
    if row["data"] != "device":
        parts.append(row["data"])
    return " ".join(parts)


def run_seconds(train: float, evaluated: float, rate: float, fixed_s: float) -> float:
    """One run: its epochs (training and validation), a final validation and test, fixed cost."""
    epoch = train / rate + evaluated / (EVAL_SPEEDUP * rate)
    return EPOCHS * epoch + 2 * evaluated / (EVAL_SPEEDUP * rate) + fixed_s


def makespan(durations: list[float], gpus: int) -> float:
    """Wall time of the longest-first schedule of runs on ``gpus`` GPUs, one run per GPU."""
    loads = [0.0] * gpus
    for seconds in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + seconds)
    return max(loads)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--throughput",
        type=Path,
        nargs="+",
        default=[RESULTS / "gpu_throughput_h200.json", RESULTS / "gpu_compile_h200.json"],
    )
    parser.add_argument("--gpus", type=int, default=8, help="the several-GPU case")
    parser.add_argument(
        "--fixed-s", type=float, default=10.0, help="start-up and checkpoints per run, seconds"
    )
    parser.add_argument("--counts", type=Path, help="JSON {preset: {samples, source, target}}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rates = best_rates(args.throughput)
    meta = json.loads(args.throughput[0].read_text()).get("meta", {})
    presets = dict(PRESETS)
    if args.counts:
        for name, counts in json.loads(args.counts.read_text()).items():
            total = counts["samples"]
            shares = counts["source"] / total, counts["target"] / total
            presets[name] = Preset(total, *shares, f"from {args.counts.name}")
    print(
        f"images/s measured on {meta.get('gpu', 'a GPU')} ({meta.get('torch', '?')}); "
        f"{EPOCHS} epochs, evaluation at {EVAL_SPEEDUP:g}x the training rate, "
        f"{args.fixed_s:g} s fixed per run"
    )
    print(
        f"{'preset':15} {'measured case':23} {'best setting':22} {'img/s':>6} "
        f"{'train samples':>13} {'minutes per run':>15}"
    )
    print(f"{'':15} {'':23} {'':22} {'':>6} {'fwd / rev':>13} {'fwd / rev':>15}")
    durations: dict[str, list[float]] = {kind: [] for kind in KINDS}
    by_preset: dict[str, float] = {}
    for name, preset in presets.items():
        rate_of = RATES[name]
        measured = rates[rate_of.case]
        fractions = split_fractions(name)
        for kind in durations:
            row = measured.get(kind) or measured["best"]
            rate = row["images_per_s"] * rate_of.scale
            fixed = args.fixed_s + (row.get("compile_s") or 0.0)
            per_direction = []
            for share in (preset.source_share, preset.target_share):
                train = preset.samples * share * fractions["train"]
                evaluated = preset.samples * (preset.source_share + preset.target_share)
                evaluated *= fractions["val"]
                per_direction.append(run_seconds(train, evaluated, rate, fixed))
            for seconds in per_direction:
                durations[kind] += [seconds] * SEEDS * sum(ABLATIONS.values())
            if kind == "best":
                by_preset[name] = sum(per_direction) * SEEDS * sum(ABLATIONS.values())
                trains = [
                    preset.samples * s * fractions["train"]
                    for s in (preset.source_share, preset.target_share)
                ]
                print(
                    f"{name:15} {rate_of.case:23} {describe(row):22} {rate:6.0f} "
                    f"{trains[0]:6.0f} /{trains[1]:6.0f} "
                    f"{per_direction[0] / 60:7.1f} /{per_direction[1] / 60:6.1f}"
                )
    print("samples assumed (source/target share of them):")
    for name, preset in presets.items():
        shares = f"{preset.source_share:.0%}/{preset.target_share:.0%}"
        print(f"  {name:15} {preset.samples:6d} ({shares}): {preset.basis}")
    for name, rate_of in RATES.items():
        if rate_of.scale != 1:
            print(f"  {name:15} images/s x {rate_of.scale:.3f}: {rate_of.why}")
    total = sum(by_preset.values())
    shares = ", ".join(f"{name} {seconds / total:.0%}" for name, seconds in by_preset.items())
    print(f"share of the GPU-hours (best setting): {shares}")
    runs = len(durations["best"])
    for kind, label in KINDS.items():
        seconds = durations[kind]
        per_grid = {
            grid: sum(seconds) * factor / sum(ABLATIONS.values())
            for grid, factor in ABLATIONS.items()
        }
        split = ", ".join(f"{grid} {s / 3600:.0f}" for grid, s in per_grid.items())
        print(
            f"GPU-hours ({label}), {runs} runs: {sum(seconds) / 3600:.0f} ({split}); "
            f"wall time on 1 GPU {sum(seconds) / 86400:.1f} days, on {args.gpus} GPUs "
            f"{makespan(seconds, args.gpus) / 3600:.1f} h"
        )


if __name__ == "__main__":
    main()
