"""Each performance benchmark in its quickest mode: it runs and prints its ratio lines.

The timings themselves are not checked (a shared machine is too noisy for that): the scripts
print ratios for people to read against the targets in docs/performance.md.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from collections.abc import Iterator

import pytest
import torch
from helpers.compose import REPO

NUMBER = r"[0-9]+(\.[0-9]+)?"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def _line(out: str, pattern: str) -> str:
    found = [line for line in out.splitlines() if re.search(pattern, line)]
    assert len(found) == 1, f"{pattern!r} in:\n{out}"
    return found[0]


@pytest.fixture
def torch_state() -> Iterator[None]:
    """The step benchmark sets threads, determinism and Lightning's log level for its process."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    level = logging.getLogger("lightning.pytorch").level
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    logging.getLogger("lightning.pytorch").setLevel(level)


@pytest.mark.slow
def test_step_overhead_prints_the_ratio(torch_state, capsys: pytest.CaptureFixture[str]) -> None:
    _script("step_overhead").main(["--quick"])
    out = capsys.readouterr().out
    assert "1 training batches" in _line(out, r"^synthetic_mri \(3x64x64\), smallcnn, batch 50")
    assert re.search(rf"^\s+1\s+{NUMBER}; {NUMBER}\s+{NUMBER}; {NUMBER}", out, re.M), out
    line = _line(out, r"^overhead ratio \(shiftlab / hand-written, per epoch\)")
    assert re.search(rf": {NUMBER} wall, {NUMBER} cpu", line), line


@pytest.mark.slow
def test_startup_prints_the_breakdown_and_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    module = _script("startup")
    module.main(["--quick"])
    out = capsys.readouterr().out
    for part in module.PARTS:
        assert re.search(rf"^  {re.escape(part)}\s+-?{NUMBER} s", out, re.M), (part, out)
    assert re.search(rf"^fixed cost per run: {NUMBER} s", out, re.M), out
    assert re.search(rf"^time to first step: {NUMBER} s", out, re.M), out
    _line(out, rf"^ratio fixed / training at 60 epochs of this set: {NUMBER}")


@pytest.mark.slow
def test_grid_workers_prints_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    _script("grid_workers").main(["--quick"])
    out = capsys.readouterr().out
    assert "(1 run(s))" in _line(out, r"^repeat 1: 2 workers, 1 thread")
    _line(out, rf"^ratio 1 worker \([0-9]+ threads?\) / 2 workers \(1 thread each\): {NUMBER}x")


@pytest.mark.slow
def test_grid_planning_prints_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    _script("grid_planning").main(["--quick"])
    out = capsys.readouterr().out
    for command in ("dry-run", "status"):
        assert "84 missing" in _line(out, rf"^  {command}\s+smoke_noise\s+{NUMBER} s, first line")
        _line(out, rf"^ratio smoke_noise / smoke_paper_grid, {command}: {NUMBER}x")


@pytest.mark.slow
def test_memory_scaling_prints_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    _script("memory_scaling").main(["--quick"])
    out = capsys.readouterr().out
    assert len(re.findall(r"^synthetic_mri\s+[12]x\s", out, re.M)) == 2, out
    _line(out, rf"^ratio 2x / 1x, synthetic_mri: peak RSS {NUMBER}, peak anon {NUMBER}")


def test_study_gpu_hours_prints_both_estimates(capsys: pytest.CaptureFixture[str]) -> None:
    _script("study_gpu_hours").main([])
    out = capsys.readouterr().out
    for label in ("best setting", "fed by the loader as measured"):
        line = _line(out, rf"^GPU-hours \({label}\), 1960 runs: ")
        assert re.search(rf"on 1 GPU {NUMBER} days, on 8 GPUs {NUMBER} h$", line), line
    for preset in ("mri_breast", "ct_head", "xray_mammo"):
        assert re.search(rf"^{preset}\s", out, re.M), preset


@pytest.mark.slow
def test_synth_speed_prints_the_rates_ratios_and_tree_verdicts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _script("synth_speed").main(["--quick", "--sets", "mri"])
    out = capsys.readouterr().out
    rows = re.findall(r"^  synthetic_mri .*$", out, re.M)  # patients/s, then CPU per patient
    assert len(rows) == 2, out
    for row in rows:  # new 1 proc, new and floor, and old where git has it
        assert len(re.findall(rf"\b{NUMBER}\b", row)) >= 3, row
    _line(out, rf"^ratio synthetic_mri: .*new/floor {NUMBER}x")
    # The old generator comes from git history; the trees compared are identical either way.
    assert re.search(r"identical \(sha256 of [0-9]+ files", _line(out, r"^trees synthetic_mri:"))


def test_command_times_reads_the_readme_block_after_the_quick_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _script("command_times").main(["--list"])
    commands = capsys.readouterr().out.splitlines()
    assert commands[0] == "python -m shiftlab.train"  # make train, before "Going further"
    assert "python -m shiftlab.train source=siemens target=ge" in commands
    assert all(command.startswith("python -m shiftlab.") for command in commands)
    assert not any("#" in command for command in commands)  # the comments are not arguments


def test_command_times_rounds_to_the_second_before_splitting_minutes() -> None:
    minutes = _script("command_times").minutes
    assert [minutes(s) for s in (8.4, 59.6, 93.2, 419.6)] == [
        "8 s",
        "1 min 00 s",
        "1 min 33 s",
        "7 min 00 s",
    ]


def test_command_times_prints_each_wall_time_and_a_failure_s_last_line(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    _script("command_times").main(
        ["--work-dir", str(tmp_path), "--command", "python -m shiftlab.train seed=abc"]
    )
    out = capsys.readouterr().out
    _line(out, rf"^\s+{NUMBER} s  exit 2  python -m shiftlab.train seed=abc$")
    assert "seed='abc'" in _line(out, r"^\s+last line: error:")
    _line(out, rf"^\s+{NUMBER} s  in all$")
    assert not (tmp_path / "outputs").exists()  # refused before the run's folder


def test_arithmetic_floor_counts_a_known_network_per_sample() -> None:
    # Forward: the convolution's multiply-adds (62 x 62 outputs x 8 channels x 3x3x3 weights) and
    # the linear layer's (8 -> 1), 2 operations each. Backward: the convolution's weight gradient
    # only (its input needs none), the linear layer's input and weight gradients.
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 1),
    )
    conv, linear = 2 * 62 * 62 * 8 * 27, 2 * 8
    image, label = torch.randn(4, 3, 64, 64), torch.ones(4, 1)
    train, evaluate = _script("arithmetic_floor").flops_per_sample(net, image, label)
    assert evaluate == conv + linear
    assert train == 2 * conv + 3 * linear


@pytest.mark.slow
def test_arithmetic_floor_prints_the_counts_rates_and_floor(
    torch_state, capsys: pytest.CaptureFixture[str]
) -> None:
    _script("arithmetic_floor").main(["--quick"])
    out = capsys.readouterr().out
    assert "x 1 epochs" in _line(out, r"^synthetic_mri \(3x64x64\), smallcnn, batch 32: ")
    _line(out, rf"^counted per sample: {NUMBER} GFLOP training step, {NUMBER} GFLOP evaluation$")
    _line(out, rf"^best of 1: matrix-product peak {NUMBER} GFLOP/s, .* ratio {NUMBER}$")
    _line(out, rf"^the run's arithmetic at the peak: {NUMBER} s \(training {NUMBER} s\)")
