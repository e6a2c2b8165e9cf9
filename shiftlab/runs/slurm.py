"""What the SLURM cluster says: a job's state (``squeue``) and the sizes of a partition's nodes
(``sinfo``), against which a grid's task sizes are checked before anything is submitted.

Without the check, a task that asks for more than any node has is either refused by ``sbatch``
(``Invalid generic resource (gres) specification`` on a cluster without GPUs) or accepted and
left pending for good (reason ``PartitionConfig``) while the launching process waits.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shiftlab.errors import ShiftlabError

# squeue states of a job that will still run: waiting (again), starting, running, or ending now.
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "STOPPED"}
ACTIVE = {"CONFIGURING", "RUNNING", "COMPLETING", "SIGNALING", "RESIZING", "STAGE_OUT"}
# Why a task pends when waiting will not help: its request does not fit, or it is not allowed.
STUCK_REASONS = (
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "ReqNodeNotAvail",
    "InvalidAccount",
    "InvalidQOS",
    "BadConstraints",
    "QOSMax",
    "AssocMax",
)
LAUNCHER = "hydra.launcher"


def _command(*args: str, timeout: float = 30) -> str | None:
    """stdout of a SLURM command, or None when there is no SLURM here or it did not answer."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def answers() -> bool:
    """Whether SLURM answers here (its commands are on PATH and slurmctld replies)."""
    return _command("sinfo", "-h", "-o", "%P") is not None


def job_state(job: str) -> str | None:
    """SLURM's state of ``job`` (an id such as ``1234`` or the array task ``1234_5``), e.g.
    PENDING or RUNNING; None when SLURM does not list it (ended, unknown, or no SLURM here)."""
    found = _command("squeue", "-h", "-j", job, "-o", "%T")
    return found.split()[0] if found and found.split() else None


def pending_reasons(array: str) -> dict[str, str]:
    """Each pending task of a job array and why it waits (squeue's reason)."""
    found = _command("squeue", "-h", "-j", array, "-t", "PENDING", "-o", "%i %r") or ""
    return dict(line.split(maxsplit=1) for line in found.splitlines() if len(line.split()) == 2)


# --- the partition's nodes against the task sizes --------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_mb: int
    gpus: int


def gpu_count(gres: str) -> int:
    """GPUs in a node's GRES as ``sinfo -o %G`` prints it: ``(null)``, ``gpu:2(S:0-1)``,
    ``gpu:p100:2(S:0-1),gpu:v100:2(S:0-1)``, a count with a multiplier (``gpu:2K``), sockets
    listed with a comma (``(S:2,5)``). Samples as in SPMIC-UoN/fsl_sub_plugin_slurm,
    fsl_sub_plugin_slurm/tests/test_fsl_sub_plugin_slurm.py."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        fields = item.strip().split(":")
        count = re.fullmatch(r"(\d+)([KMG]?)", fields[-1])
        if fields[0] == "gpu" and len(fields) > 1 and count:
            total += int(count[1]) * 1024 ** "_KMG".index(count[2] or "_")
    return total


def partition_nodes(partition: str | None) -> tuple[str, list[Node]]:
    """The partition (``None``: the cluster's default) and its nodes, as sinfo reports them."""
    listing = _command("sinfo", "-h", "-N", "-o", "%P|%N|%c|%m|%G")
    if listing is None:
        raise ShiftlabError(
            "launcher=slurm: sinfo did not answer, so this machine cannot submit to SLURM (its "
            "commands are missing from PATH, or slurmctld is down). Launch from the cluster's "
            "login node, or see what would be submitted with python -m shiftlab.grid sbatch."
        )
    nodes: dict[str, list[Node]] = {}
    default = None
    for line in listing.splitlines():
        name, node, cpus, memory, gres = line.split("|")
        if name.endswith("*"):
            name = default = name[:-1]
        memory_mb = int(re.sub(r"\D.*", "", memory) or 0)
        nodes.setdefault(name, []).append(Node(node, int(cpus), memory_mb, gpu_count(gres)))
    chosen = partition if partition is not None else default
    if chosen is None:
        raise ShiftlabError(
            f"launcher=slurm: this cluster has no default partition; set "
            f"{LAUNCHER}.partition to one of: {', '.join(sorted(nodes))}"
        )
    if chosen not in nodes:
        raise ShiftlabError(
            f"launcher=slurm: {LAUNCHER}.partition={chosen} is not a partition of this cluster "
            f"(sinfo lists: {', '.join(sorted(nodes)) or 'none'})"
        )
    return chosen, nodes[chosen]


def check_sizes(launcher: Mapping[str, Any], nodes: list[Node], partition: str) -> None:
    """Refuse task sizes that no node of ``partition`` can hold, naming the setting to change.

    ``launcher`` is hydra.launcher (hydra-submitit-launcher's keys): CPUs are cpus_per_task x
    tasks_per_node, memory mem_gb, GPUs gpus_per_node (or a gres of ``gpu:N``) per node.
    """
    tasks = int(launcher.get("tasks_per_node") or 1)
    cpus = int(launcher.get("cpus_per_task") or 1) * tasks
    memory_gb = launcher.get("mem_gb")
    gpus = int(launcher.get("gpus_per_node") or 0)
    gres = launcher.get("gres")
    if gres and not gpus:
        gpus = gpu_count(str(gres))
    most_cpus = max(node.cpus for node in nodes)
    most_memory_gb = max(node.memory_mb for node in nodes) // 1024
    most_gpus = max(node.gpus for node in nodes)
    problems = []
    if cpus > most_cpus:
        asked = f"{cpus // tasks} x {tasks} tasks = {cpus}" if tasks > 1 else str(cpus)
        problems.append(
            f"{LAUNCHER}.cpus_per_task={asked} CPUs, but its nodes have at most {most_cpus}: "
            f"set {LAUNCHER}.cpus_per_task={max(most_cpus // tasks, 1)} or less"
        )
    if memory_gb is not None and int(memory_gb) > most_memory_gb:
        problems.append(
            f"{LAUNCHER}.mem_gb={memory_gb}, but its nodes have at most {most_memory_gb} GB: "
            f"set {LAUNCHER}.mem_gb={most_memory_gb} or less"
        )
    if gpus > most_gpus:
        setting = f"{LAUNCHER}.gres={gres}" if gres else f"{LAUNCHER}.gpus_per_node={gpus}"
        if most_gpus == 0:
            problems.append(
                f"{setting}, but it has no GPUs: set {LAUNCHER}.gpus_per_node=null to train on "
                f"the CPU, or choose a partition with GPUs ({LAUNCHER}.partition=...)"
            )
        else:
            problems.append(
                f"{setting}, but its nodes have at most {most_gpus} GPUs: "
                f"set {LAUNCHER}.gpus_per_node={most_gpus} or less"
            )
    sizes = ", ".join(f"{n.cpus} CPUs/{n.memory_mb // 1024} GB/{n.gpus} GPUs" for n in nodes)
    if not problems and not any(
        node.cpus >= cpus
        and (memory_gb is None or node.memory_mb >= int(memory_gb) * 1024)
        and node.gpus >= gpus
        for node in nodes
    ):
        problems.append(
            f"no node has {cpus} CPUs, {memory_gb} GB and {gpus} GPUs at once (its nodes: "
            f"{sizes}): lower {LAUNCHER}.cpus_per_task, .mem_gb or .gpus_per_node"
        )
    if problems:
        raise ShiftlabError(
            f"launcher=slurm: these tasks would never start in partition {partition!r} "
            "(node sizes from sinfo):\n  " + "\n  ".join(problems)
        )


def check_launcher(launcher: Mapping[str, Any]) -> None:
    """The grid's task sizes against what sinfo reports for its partition."""
    partition, nodes = partition_nodes(launcher.get("partition"))
    check_sizes(launcher, nodes, partition)
