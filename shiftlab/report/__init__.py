"""The report: a grid's run records turned into the study's tables and figures, with statistics.

    python -m shiftlab.report outputs/runs                   # every run record below a folder
    python -m shiftlab.report experiment=paper_grid          # the runs of a grid preset

It reads only run records (``config.yaml``, ``metrics.json``, ``predictions.csv``, ``done``), and
the preprocessing cache for the shift characterisation; it never retrains and never asks W&B.
``records`` finds and checks the records and groups them by settings, ``stats`` holds AUROC, the
patient bootstrap and the tests across seeds, ``summary`` one row per group, ``tables`` and
``figures`` the outputs, ``characterise`` the measured shift, ``build`` puts them together, and
``wandb_panels`` builds W&B views that mirror the report.
"""

from shiftlab.report.build import Options, Report, build
from shiftlab.report.build import load as load_report
from shiftlab.report.records import read_folder

__all__ = ["Options", "Report", "build", "load_report", "read_folder"]
