"""python -m shiftlab.report <runs folder> | <grid overrides> [--out DIR] [options]

    python -m shiftlab.report outputs/runs                       # every record below a folder
    python -m shiftlab.report experiment=paper_grid              # the runs of a grid preset
    python -m shiftlab.report experiment=noise dataset=ct_head   # any grid override narrows it

With a folder, every run directory below it is read. With overrides, the grid is planned as
``python -m shiftlab.grid status`` plans it, so runs never started are counted as missing.
The report goes to ``--out``, by default ``<output_dir>/reports/<experiment>`` for a grid and
``<folder's parent>/reports/<folder name>`` for a folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from shiftlab.errors import ShiftlabError, exit_on_user_error
from shiftlab.report.build import Options, Report, build
from shiftlab.report.records import Run, load_run, read_folder


def runs_of_grid(overrides: Sequence[str]) -> tuple[list[Run], Path, Path, str]:
    """The grid's runs (missing ones included), its runs folder, output folder and name."""
    from shiftlab.grid import grid, grid_name

    master, jobs = grid(overrides)
    runs = []
    for job in jobs:
        run = load_run(job.run_dir, job.state)
        if not run.config:  # never started: say which run it is from its planned settings
            values = job.settings
            run.config = {
                "dataset": {"name": values["dataset"]["name"]},
                "source": values["source"],
                "target": values["target"],
                "seed": values["seed"],
                "shift": {"label": values["shift"]["label"]},
            }
        runs.append(run)
    return runs, Path(master.hydra.sweep.dir), Path(master.paths.output_dir), grid_name(master)


def _parser() -> argparse.ArgumentParser:
    """The command line: a folder or grid overrides, where to write, and the report's options."""
    parser = argparse.ArgumentParser(
        prog="python -m shiftlab.report",
        description="Tables and figures of the study from run records.",
    )
    parser.add_argument(
        "what",
        nargs="+",
        metavar="RUNS_FOLDER | OVERRIDE",
        help="a folder of run records, or grid overrides such as experiment=paper_grid",
    )
    parser.add_argument("--out", type=Path, help="where to write the report")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates (2000)")
    parser.add_argument("--bootstrap-seed", type=int, default=0, help="bootstrap seed (0)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument(
        "--no-characterisation",
        action="store_true",
        help="leave out the vendor separability and intensity histograms (no cache read)",
    )
    parser.add_argument(
        "--max-images", type=int, default=500, help="images per domain for separability (500)"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2) when runs of one scenario differ in settings, manifest or code",
    )
    return parser


def _runs_named(what: Sequence[str], out: Path | None) -> tuple[list[Run], Path, Path, str]:
    """The runs ``what`` names (a folder or a grid), their root, the report's folder and origin."""
    overrides = [w for w in what if "=" in w]
    folders = [w for w in what if "=" not in w]
    if (folders and overrides) or len(folders) > 1:
        raise ShiftlabError(
            "give either one folder of run records or grid overrides (key=value), "
            f"not both: got {' '.join(what)}"
        )
    if folders:
        folder = Path(folders[0]).resolve()
        runs, root = read_folder(folder), folder
        out = out or folder.parent / "reports" / folder.name
        origin = folders[0]
    else:
        runs, root, output_dir, name = runs_of_grid(overrides)
        out = out or output_dir / "reports" / name
        origin = " ".join(overrides)
    return runs, root, out, origin


def _print_report(report: Report, out: Path) -> None:
    """The report's tables, its notes and where it was written, on the console."""
    for table in report.tables.values():  # an ablation grid has no Table 1 or 2 (see notes)
        print()
        print(table.markdown())
    for note in report.notes:
        print(f"note: {note}")
    print(f"report: {out}/report.md ({len(report.files)} files: tables/, figures/)")


def main(argv: Sequence[str] | None = None) -> Report | None:
    args = _parser().parse_args(argv)
    options = Options(
        n_boot=args.n_boot,
        bootstrap_seed=args.bootstrap_seed,
        figures=not args.no_figures,
        characterise=not args.no_characterisation,
        max_images=args.max_images,
        strict=args.strict,
    )
    with exit_on_user_error():
        runs, root, out, origin = _runs_named(args.what, args.out)
        report = build(runs, out, origin, options, root=root)
        _print_report(report, out)
        return report


def console() -> None:
    main(sys.argv[1:])


if __name__ == "__main__":
    console()
