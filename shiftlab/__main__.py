"""``python -m shiftlab [--version]``: the version, and the commands shiftlab is used through."""

from __future__ import annotations

import argparse

from shiftlab import __version__

COMMANDS = {
    "shiftlab.train": "train and test one run (Hydra overrides; -m for a multirun)",
    "shiftlab.ingest": "scan a dataset and write its manifest",
    "shiftlab.evaluate": "test a trained run on another dataset or site",
    "shiftlab.synth": "write the synthetic sets as DICOM",
    "shiftlab.grid": "a grid's status, dry run, or SLURM script",
    "shiftlab.report": "tables and figures from run records",
    "shiftlab.calibrate": "synthetic ΔAUC per modality against the study",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="shiftlab",
        description="Measure how much a medical-imaging classifier loses when the scanner changes.",
        epilog="Commands:\n"
        + "\n".join(f"  python -m {name:<20} {what}" for name, what in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"shiftlab {__version__}")
    parser.parse_args(argv)
    parser.print_help()


if __name__ == "__main__":
    main()
