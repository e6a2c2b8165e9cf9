"""Synthetic generation speed: each set's generator against the one before issue 20 and against
the floor (the same files written by pydicom alone), in patients per second, and whether the old
and the new generator write byte-identical trees.

    python benchmarks/synth_speed.py                   # the three sets, 100 patients per vendor
    python benchmarks/synth_speed.py --sets ct --patients 300 --repeats 2
    python benchmarks/synth_speed.py --quick           # a plumbing check: 8 patients per vendor

Per set, with its preset's settings (``shiftlab/conf/dataset/synthetic_<set>.yaml``), four ways
of writing the same number of patients, each in a fresh child process and timed there from just
before the call to its return (imports excluded):

    old          ``generate`` of shiftlab/synth at ``--old-rev`` (main before issue 20's
                 generator work), unpacked from git into a temporary folder
    new 1 proc   today's ``generate(..., workers=1)``: one process
    new          today's ``generate``, as a run calls it: one process per usable CPU
    floor        the same files, pydicom alone: for each vendor one header read from the new
                 tree, then per file a new SOP instance UID, instance number and the pixel
                 bytes set on it and ``save_as`` into a patient's folder. No rendering, no
                 temporary names: the least a generator that builds its files with pydicom pays

The four alternate, their order reversed every other repeat, so a shared machine's load hits
them alike; the best (fastest) repeat of each is kept. The sha256 of every file of the old and
the new trees (``labels.csv`` included), from every repeat, must be equal; the benchmark prints
whether they are. Ratios: new / old (the speed-up), new / floor and old / floor.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SETS = ("mri", "ct", "xray")
# main before issue 20 reworked the synthetic generators (the last commit they were as before).
OLD_REV = "47f2ba2"
OLD_FILES = ("shiftlab/__init__.py", "shiftlab/files.py", "shiftlab/synth")
WAYS = ("old", "new 1 proc", "new", "floor")

# Each child prints the seconds its work took: wall, and CPU of all its processes.
CLOCKS = """
import resource, time
def cpu():
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )
"""

GENERATE = (
    CLOCKS
    + """
import importlib, json, sys
modality, out, patients, settings = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
generator = importlib.import_module(f"shiftlab.synth.{modality}")
started, started_cpu = time.perf_counter(), cpu()
generator.generate(out, patients_per_vendor=patients, **json.loads(settings))
print(time.perf_counter() - started, cpu() - started_cpu, generator.__file__)
"""
)

FLOOR = (
    CLOCKS
    + """
import pathlib, sys
import pydicom
from pydicom.uid import generate_uid
reference, out, patients = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
vendors = []
for first in sorted(reference.glob("dicom/*_0000")):  # each vendor's first patient
    files = sorted(first.rglob("*.dcm"))
    vendors.append((first.name[:-5], pydicom.dcmread(files[0]), len(files)))
started, started_cpu = time.perf_counter(), cpu()
for vendor, ds, slices in vendors:
    pixels = ds.PixelData
    for index in range(patients):
        folder = out / f"{vendor}_{index:04d}"
        folder.mkdir(parents=True)
        for k in range(slices):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = k + 1
            ds.PixelData = pixels
            ds.save_as(folder / f"1-{k + 1:02d}.dcm", enforce_file_format=True)
print(time.perf_counter() - started, cpu() - started_cpu, pydicom.__file__)
"""
)


def preset_settings(modality: str) -> dict[str, float]:
    """The preset's generator settings (severity, contrast, seed), without its size."""
    path = REPO / "shiftlab" / "conf" / "dataset" / f"synthetic_{modality}.yaml"
    synthetic = yaml.safe_load(path.read_text())["synthetic"]
    return {key: synthetic[key] for key in ("severity", "lesion_contrast", "seed")}


def unpack_old(rev: str, folder: Path) -> Path | None:
    """shiftlab/synth (and what it imports) at ``rev`` in ``folder``; None without git or rev."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, *OLD_FILES],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"old generator: unavailable at {rev} ({error}); measuring the new one only")
        return None
    folder.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def child(code: str, args: list[str], pythonpath: Path, cwd: Path) -> tuple[float, float]:
    """The wall and CPU seconds the child reports. It runs in ``cwd`` (which must not hold a
    ``shiftlab`` package: ``python -c`` puts its working directory first on the path) with
    ``pythonpath`` next, and says which file it ran, to make sure which generator was timed."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed:\n{done.stdout}\n{done.stderr}")
    wall, cpu, ran = done.stdout.split()[-3:]
    if "shiftlab" in Path(ran).parts and not Path(ran).is_relative_to(pythonpath):
        raise RuntimeError(f"the child ran {ran}, not the generator under {pythonpath}")
    return float(wall), float(cpu)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def measure(modality: str, args: argparse.Namespace, old: Path | None, tmp: Path) -> dict:
    """Each way's best wall and CPU seconds, and whether the generators' trees were identical."""
    settings = preset_settings(modality)
    total = 2 * args.patients
    patients = str(args.patients)
    reference = tmp / f"{modality}-reference"  # the floor's headers and sizes
    child(GENERATE, [modality, str(reference), patients, json.dumps(settings)], REPO, tmp)
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    digests: list[dict[str, str]] = []
    ways = [way for way in WAYS if old is not None or way != "old"]
    for repeat in range(args.repeats):
        for way in ways if repeat % 2 == 0 else ways[::-1]:
            out = tmp / f"{modality}-{repeat}-{way.replace(' ', '-')}"
            if way == "floor":
                seconds = child(FLOOR, [str(reference), str(out), patients], REPO, tmp)
            else:
                way_settings = settings | ({"workers": 1} if way == "new 1 proc" else {})
                code = [modality, str(out), patients, json.dumps(way_settings)]
                seconds = child(GENERATE, code, old if way == "old" else REPO, tmp)
                digests.append(tree_digest(out))
            shutil.rmtree(out)
            wall[way] = min(wall.get(way, math.inf), seconds[0])
            cpu[way] = min(cpu.get(way, math.inf), seconds[1])
            print(
                f"repeat {repeat + 1}: synthetic_{modality:5} {way:10} {seconds[0]:7.2f} s "
                f"{total / seconds[0]:7.1f} patients/s, CPU {1000 * seconds[1] / total:6.2f} "
                "ms/patient",
                flush=True,
            )
    shutil.rmtree(reference)
    return {
        "rate": {way: total / seconds for way, seconds in wall.items()},
        "cpu": {way: 1000 * seconds / total for way, seconds in cpu.items()},
        "same": all(digest == digests[0] for digest in digests),
        "files": len(digests[0]),
        "compared": [way for way in ways if way != "floor"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated: mri,ct,xray")
    parser.add_argument("--patients", type=int, default=100, help="patients per vendor")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-rev", default=OLD_REV, help="git revision of the old generator")
    parser.add_argument("--quick", action="store_true", help="8 patients per vendor, 1 repeat")
    args = parser.parse_args(argv)
    args.sets = [name.strip() for name in args.sets.split(",")]
    unknown = set(args.sets) - set(SETS)
    if unknown:
        parser.error(f"unknown sets {sorted(unknown)}; choose from {', '.join(SETS)}")
    if args.quick:
        args.patients, args.repeats = 8, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cpus} usable CPUs, load average {load:.1f} at the start")
    results = {}
    with tempfile.TemporaryDirectory(prefix="synth_speed_") as tmp:
        old = unpack_old(args.old_rev, Path(tmp) / "old")
        for modality in args.sets:
            results[modality] = measure(modality, args, old, Path(tmp))
    print(f"\n{2 * args.patients} patients per set, best of {args.repeats} repeat(s)")
    for title, key, digits in (
        ("patients per second (wall)", "rate", 1),
        ("CPU ms per patient (every process)", "cpu", 2),
    ):
        print(f"{title}:\n  {'set':15} " + " ".join(f"{way:>10}" for way in WAYS))
        for modality, result in results.items():
            values = result[key]
            cells = [
                f"{values[way]:10.{digits}f}" if way in values else f"{'-':>10}" for way in WAYS
            ]
            print(f"  synthetic_{modality:5} " + " ".join(cells))
    for modality, result in results.items():
        rate, cpu = result["rate"], result["cpu"]
        parts = []
        if "old" in rate:
            parts.append(
                f"new/old {rate['new'] / rate['old']:.2f}x "
                f"(1 process {rate['new 1 proc'] / rate['old']:.2f}x, "
                f"CPU per patient {cpu['old'] / cpu['new 1 proc']:.2f}x less)"
            )
        parts.append(f"new/floor {rate['new'] / rate['floor']:.2f}x")
        if "old" in rate:
            parts.append(f"old/floor {rate['old'] / rate['floor']:.2f}x")
        print(f"ratio synthetic_{modality}: " + ", ".join(parts))
    for modality, result in results.items():
        verdict = "identical" if result["same"] else "DIFFERENT"
        print(
            f"trees synthetic_{modality}: {', '.join(result['compared'])} {verdict} "
            f"(sha256 of {result['files']} files, every repeat)"
        )


if __name__ == "__main__":
    main()
