"""W&B views that mirror the report: ΔAUC per scenario, the injection and the noise curves, and
the mitigations.

    python -m shiftlab.report.wandb_panels                         # print the views it builds
    python -m shiftlab.report.wandb_panels --json views.json       # and write their W&B spec
    WANDB_MODE=online python -m shiftlab.report.wandb_panels --entity my-team --save

Runs logged with ``logger=wandb`` carry what the views need: their group is the scenario
(``<dataset>/<source>-><target>``), their config the settings (``shift.name``,
``shift.fraction``, ``shift.alpha``, ``dataset.modality``), their summary ``test/delta_auroc``,
``test/in_domain_auroc`` and ``test/cross_domain_auroc``. Each view is a saved workspace view
(wandb-workspaces) of the project, filtered to one kind of run and grouped by scenario and
``mitigation.name`` (conf/mitigation/; runs from before mitigations have none and are the group
without a name), so runs of a remedy are never averaged with those of ``none``:

- "shiftlab report: ΔAUC per scenario": runs without an ablation; ΔAUC per scenario and per
  modality (mean ± SD over seeds), in-domain and cross-domain AUROC.
- "shiftlab report: target injection": AUROC and ΔAUC against ``shift.fraction``.
- "shiftlab report: noise": AUROC and ΔAUC against ``shift.alpha``.
- "shiftlab report: mitigations": runs without an ablation; ΔAUC per scenario and method, and
  per method over all scenarios.

W&B shows the spread over seeds only; the patient-bootstrap intervals, the tests across seeds,
and the mitigations' pairing by seed with none and the share of the drop recovered are the
report's (``python -m shiftlab.report``), and the run records stay the reference.
Building the views needs no network; ``--save`` sends them to W&B and needs WANDB_MODE=online
and a logged-in API key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from shiftlab.config import CONF_DIR
from shiftlab.errors import ShiftlabError, exit_on_user_error
from shiftlab.extras import require

LOGGER_CONFIG = CONF_DIR / "logger" / "wandb.yaml"
DELTA = "test/delta_auroc"
IN_DOMAIN = "test/in_domain_auroc"
CROSS_DOMAIN = "test/cross_domain_auroc"
NEEDED_BY = "The W&B views (python -m shiftlab.report.wandb_panels)"
NOTE = (
    "Mirror of `python -m shiftlab.report`: bars and points are means over seeds, whiskers the "
    "SD over seeds. The report's tables add the 95% patient-bootstrap interval of ΔAUC and the "
    "test across seeds; the run records, not W&B, are the reference."
)


def default_project() -> str:
    """The project ``logger=wandb`` logs to (``logger/wandb.yaml`` of the config tree)."""
    return str(yaml.safe_load(LOGGER_CONFIG.read_text())["project"])


def _curves(setting: str, label: str) -> list[Any]:
    wr = require("wandb_workspaces.reports.v2", extra="wandb", needed_by=NEEDED_BY)

    x = wr.Config(f"shift.{setting}")
    return [
        wr.ScatterPlot(
            title=f"Cross-domain (target) AUROC against {label}",
            x=x,
            y=wr.SummaryMetric(CROSS_DOMAIN),
            running_ymean=True,
        ),
        wr.ScatterPlot(
            title=f"In-domain (source) AUROC against {label}",
            x=x,
            y=wr.SummaryMetric(IN_DOMAIN),
            running_ymean=True,
        ),
        wr.ScatterPlot(
            title=f"ΔAUC (target − source) against {label}",
            x=x,
            y=wr.SummaryMetric(DELTA),
            running_ymean=True,
        ),
    ]


def _view(ws: Any, entity: str, project: str, name: str, shift: str, sections: list[Any]) -> Any:
    """One saved view: the runs of one kind of shift (``shift.name``), grouped by scenario and
    mitigation, so that a remedy's runs are never averaged with the runs it is compared with."""
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=sections,
        runset_settings=ws.RunsetSettings(
            filters=[ws.Config("shift.name") == shift],
            # The W&B group of a run is its scenario.
            groupby=[ws.Metric("Group"), ws.Config("mitigation.name")],
        ),
    )


def _scenarios_section(wr: Any, ws: Any) -> Any:
    """ΔAUC and both AUROCs per scenario (the report's Table 1), and what the report adds."""
    return ws.Section(
        name="ΔAUC per scenario",
        is_open=True,
        panels=[
            wr.BarPlot(
                title="ΔAUC per scenario (target − source; mean ± SD over seeds)",
                metrics=[wr.SummaryMetric(DELTA)],
                orientation="h",
                groupby_aggfunc="mean",
                groupby_rangefunc="stddev",
            ),
            wr.BarPlot(
                title="In-domain and cross-domain AUROC per scenario",
                metrics=[wr.SummaryMetric(IN_DOMAIN), wr.SummaryMetric(CROSS_DOMAIN)],
                orientation="h",
                groupby_aggfunc="mean",
                groupby_rangefunc="stddev",
            ),
            wr.ScatterPlot(
                title="Cross-domain against in-domain AUROC",
                x=wr.SummaryMetric(IN_DOMAIN),
                y=wr.SummaryMetric(CROSS_DOMAIN),
            ),
            wr.MarkdownPanel(markdown=NOTE),
        ],
    )


def _modalities_section(wr: Any, ws: Any) -> Any:
    """ΔAUC per modality over all its runs (the report's Table 2)."""
    return ws.Section(
        name="ΔAUC per modality",
        is_open=True,
        panels=[
            wr.BarPlot(
                title="ΔAUC per modality (mean ± SD over runs)",
                metrics=[wr.SummaryMetric(DELTA)],
                groupby=wr.Config("dataset.modality"),
                groupby_aggfunc="mean",
                groupby_rangefunc="stddev",
            )
        ],
    )


MITIGATION_NOTE = (
    "Runs grouped by scenario and mitigation.name: bars are means over seeds, whiskers the SD "
    "over seeds. Whether a method beats none, paired by seed, and the share of the drop it "
    "recovers with its interval are in the report's mitigation tables "
    "(python -m shiftlab.report). adabn is transductive: it read the target's test images "
    "(not their labels) before testing."
)


def _mitigations_section(wr: Any, ws: Any) -> Any:
    """ΔAUC per scenario and method, and per method (the report's mitigation tables)."""
    method = wr.Config("mitigation.name")
    return ws.Section(
        name="Mitigations",
        is_open=True,
        panels=[
            wr.BarPlot(
                title="ΔAUC per scenario and mitigation (target − source; mean ± SD over seeds)",
                metrics=[wr.SummaryMetric(DELTA)],
                orientation="h",
                groupby_aggfunc="mean",
                groupby_rangefunc="stddev",
            ),
            wr.BarPlot(
                title="ΔAUC per mitigation over all scenarios (mean ± SD over runs)",
                metrics=[wr.SummaryMetric(DELTA)],
                groupby=method,
                groupby_aggfunc="mean",
                groupby_rangefunc="stddev",
            ),
            wr.BarPlot(
                title="Cross-domain (target) AUROC per mitigation (mean ± SD over runs)",
                metrics=[wr.SummaryMetric(CROSS_DOMAIN)],
                groupby=method,
                groupby_aggfunc="mean",
                groupby_rangefunc="stddev",
            ),
            wr.MarkdownPanel(markdown=MITIGATION_NOTE),
        ],
    )


def views(entity: str, project: str) -> list[Any]:
    """The four workspace views (wandb_workspaces.workspaces.Workspace), built offline."""
    wr = require("wandb_workspaces.reports.v2", extra="wandb", needed_by=NEEDED_BY)
    ws = require("wandb_workspaces.workspaces", extra="wandb", needed_by=NEEDED_BY)

    per_scenario = [_scenarios_section(wr, ws), _modalities_section(wr, ws)]
    injection = ws.Section(
        name="Target injection", is_open=True, panels=_curves("fraction", "injected fraction")
    )
    noise = ws.Section(name="Noise", is_open=True, panels=_curves("alpha", "noise alpha"))
    mitigations = _mitigations_section(wr, ws)
    return [
        _view(ws, entity, project, "shiftlab report: ΔAUC per scenario", "none", per_scenario),
        _view(ws, entity, project, "shiftlab report: target injection", "injection", [injection]),
        _view(ws, entity, project, "shiftlab report: noise", "noise", [noise]),
        _view(ws, entity, project, "shiftlab report: mitigations", "none", [mitigations]),
    ]


def spec(workspace: Any) -> dict[str, Any]:
    """The view as W&B stores it (what ``save`` sends), built without a network call."""
    return json.loads(workspace._to_model().model_dump_json(by_alias=True, exclude_none=True))


def describe(workspace: Any) -> str:
    settings = workspace.runset_settings
    grouped = " and ".join(["scenario", *(key.name for key in settings.groupby[1:])])
    lines = [f"{workspace.name}  (runs where {settings.filters}, grouped by {grouped})"]
    for section in workspace.sections:
        lines.append(f"  {section.name}")
        lines += [
            f"    - {type(p).__name__}: {getattr(p, 'title', None) or 'note'}"
            for p in section.panels
        ]
    return "\n".join(lines)


def check_online(entity: str | None) -> None:
    """Saving talks to W&B: only when asked for explicitly (WANDB_MODE=online) and for whom."""
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode in ("offline", "disabled", "dryrun"):
        raise ShiftlabError(
            f"W&B is {mode} (WANDB_MODE={mode}): nothing is sent. To save the views, run with "
            "WANDB_MODE=online after `wandb login`, and name your --entity."
        )
    if not entity:
        raise ShiftlabError("--save needs --entity (or WANDB_ENTITY): whose project to use.")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shiftlab.report.wandb_panels",
        description="Build (and with --save, send) W&B views that mirror the report.",
    )
    parser.add_argument(
        "--entity",
        default=os.environ.get("WANDB_ENTITY"),
        help="W&B entity (user or team); default $WANDB_ENTITY",
    )
    parser.add_argument(
        "--project", default=None, help="W&B project; default the one logger=wandb logs to"
    )
    parser.add_argument("--json", type=Path, help="write the views' W&B spec to this file")
    parser.add_argument("--save", action="store_true", help="save the views to W&B (online)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.save:
            check_online(args.entity)
        project = args.project or default_project()
        built = views(args.entity or "<entity>", project)
        for workspace in built:
            print(describe(workspace))
        if args.json:
            args.json.write_text(json.dumps([spec(w) for w in built], indent=2) + "\n")
            print(f"spec: {args.json}")
        if args.save:
            for workspace in built:
                print(f"saved: {workspace.save().url}")


if __name__ == "__main__":
    main(sys.argv[1:])
