"""Check the synthetic datasets against the study: the calibration grid, then its table.

    python -m shiftlab.calibrate                  # 5 seeds, both directions, all three sets
    python -m shiftlab.calibrate --seeds 3 --modalities MR,CT
    python -m shiftlab.calibrate launcher=local_gpus      # any grid override

A shorthand for the two commands it runs, which is all it does:

    python -m shiftlab.train experiment=calibration [overrides]    # the grid, resumable
    python -m shiftlab.report experiment=calibration [overrides]   # the report of its runs

``experiment=calibration`` (conf/experiment/calibration.yaml) trains each synthetic set at its
preset severity and at severity 0, both directions, seeds 0-4, under
``<output_dir>/calibration``; the report's calibration view (``shiftlab.report.calibration``)
puts the mean ΔAUC per modality beside the study's. The options below stand for overrides of
that grid. The report goes to ``<output_dir>/reports/calibration``; its tables are printed, the
calibration table among them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence

# The options' spelling of the sets (the modality codes of their DICOM files) and their
# calibration/set options (conf/calibration/set/).
SETS = {"MR": "synthetic_mri", "DX": "synthetic_xray", "CT": "synthetic_ct"}


def grid_overrides(argv: Sequence[str] | None = None) -> list[str]:
    """The overrides of experiment=calibration that the command line stands for."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 (the preset: 5)")
    parser.add_argument(
        "--modalities", help=f"comma-separated, from {','.join(SETS)} (the preset: all)"
    )
    parser.add_argument(
        "--skip-null", action="store_true", help="only the preset severity (for tuning)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. paths.output_dir=/scratch/shiftlab"
    )
    args = parser.parse_args(argv)
    overrides = ["experiment=calibration"]
    if args.seeds is not None:
        overrides.append(f"seed=range(0,{args.seeds})")
    if args.modalities is not None:
        codes = args.modalities.split(",")
        unknown = sorted(set(codes) - set(SETS))
        if unknown:
            parser.error(f"unknown modalities {unknown}; choose from {list(SETS)}")
        overrides.append("calibration/set=" + ",".join(SETS[code] for code in codes))
    if args.skip_null:
        overrides.append("calibration/severity=preset")
    return [*overrides, *args.overrides]


def main(argv: Sequence[str] | None = None) -> None:
    overrides = grid_overrides(argv)
    for module in ("shiftlab.train", "shiftlab.report"):
        print(f"python -m {module} {' '.join(overrides)}", flush=True)
        status = subprocess.call([sys.executable, "-m", module, *overrides])
        if status != 0:
            sys.exit(status)


if __name__ == "__main__":
    main()
