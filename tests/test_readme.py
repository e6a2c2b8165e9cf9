"""The README's quick start, run as a newcomer types it.

Every fenced ``bash`` block under the README's "Quick start" heading is read, and each command
line in it is run as written, from the repository's root, in a shell. Data and outputs go to a
temporary folder (``SHIFTLAB_DATA_DIR``, ``SHIFTLAB_OUTPUT_DIR``, which the commands honour) and
W&B stays offline, so the test leaves the checkout's ``data/`` and ``outputs/`` alone. The main
job must print the summary block that the README shows after the commands: the same lines, with
AUROCs within ``TOLERANCE`` of the README's (float sums differ in the last bits with the number
of threads, so the third decimal can move).

``make test`` is the one command not run: run inside the test suite it would run the suite
again, this test included. Instead the test checks that ``make test`` is the Makefile's ``test``
target and that the target runs pytest (``make -n test``, which prints a target's commands
without running them). Training the quick start's run takes about a minute and a half on 2 CPU
cores, so that part is marked slow (``make test-slow``).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

# The checkout's root, wherever this file sits below it.
REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
README = REPO / "README.md"
TEST_COMMAND = "make test"  # the quick start's test command: checked, not run
TOLERANCE = 0.03  # AUROC units; see the module docstring


def quick_start() -> str:
    """The README's text from its "Quick start" heading to the next heading of that level."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^(#+) Quick start\b.*?$", text, flags=re.MULTILINE)
    assert match, "README.md has no heading that starts with 'Quick start'"
    level = match.group(1)
    rest = text[match.end() :]
    end = re.search(rf"^{level} ", rest, flags=re.MULTILINE)
    return rest[: end.start()] if end else rest


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    return re.findall(r"^```([\w-]*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def commands(text: str) -> list[str]:
    """Each command line of the ``bash`` blocks, joined across trailing backslashes."""
    lines: list[str] = []
    for language, body in fenced_blocks(text):
        if language != "bash":
            continue
        pending = ""
        for line in body.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line = pending + line
            pending = ""
            if line.strip() and not line.strip().startswith("#"):
                lines.append(line.strip())
    return lines


def without_comment(command: str) -> str:
    return command.split(" #", 1)[0].strip()


def expected_output(text: str) -> list[str]:
    """The lines of the plain block (no language) that shows what the main job prints."""
    blocks = [body for language, body in fenced_blocks(text) if language == ""]
    assert blocks, "the quick start shows no output block"
    return [line for line in blocks[0].splitlines() if line.strip()]


def line_pattern(line: str) -> str:
    """A regular expression for a printed line: numbers captured, ``<placeholders>`` any word,
    and a path under ``outputs/`` found wherever the outputs folder is."""
    pieces = re.split(r"(<[^>]+>|[+-]?\d+\.\d+)", line.strip())
    pattern = ""
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            pattern += re.escape(piece).replace("outputs/", r"(?:\S*/)?outputs/")
        elif piece.startswith("<"):
            pattern += r"\S+"
        else:
            pattern += r"([+-]?\d+\.\d+)"
    return pattern


def test_quick_start_test_command_is_the_makefiles_test_target() -> None:
    text = quick_start()
    found = [without_comment(command) for command in commands(text)]
    assert found, "the quick start has no bash block with a command"
    assert TEST_COMMAND in found, f"the quick start no longer says {TEST_COMMAND!r}: {found}"
    result = subprocess.run(
        ["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"python -m pytest\b", result.stdout), result.stdout


def test_readme_links_point_at_files_and_headings_that_exist() -> None:
    """The README is not part of the docs site, whose strict build checks the links of docs/."""
    text = README.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        file = REPO / path
        if not file.exists() or (anchor and anchor not in headings(file)):
            broken.append(target)
    assert not broken, f"README.md links to what does not exist: {broken}"


def headings(page: Path) -> set[str]:
    """The anchors of a Markdown page's headings, as the docs site names them (lower case,
    punctuation dropped, spaces as hyphens), outside code blocks."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    found = set()
    for title in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\s-]", "", title).strip().lower()
        found.add(re.sub(r"[-\s]+", "-", slug))
    return found


@pytest.mark.slow
def test_quick_start_commands_run_as_written(tmp_path: Path) -> None:
    text = quick_start()
    to_run = [c for c in commands(text) if without_comment(c) != TEST_COMMAND]
    assert to_run, "the quick start has no command to run besides the tests"
    env = {
        **os.environ,
        "SHIFTLAB_DATA_DIR": str(tmp_path / "data"),
        "SHIFTLAB_OUTPUT_DIR": str(tmp_path / "outputs"),
        "WANDB_MODE": "offline",
    }
    printed = ""
    for command in to_run:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert result.returncode == 0, (
            f"README quick start: {command!r} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
        printed += result.stdout

    for line in expected_output(text):
        match = re.search(line_pattern(line), printed)
        assert match, f"the quick start's output line {line.strip()!r} was not printed:\n{printed}"
        shown = [float(number) for number in re.findall(r"[+-]?\d+\.\d+", line)]
        got = [float(number) for number in match.groups()]
        for want, have in zip(shown, got, strict=True):
            assert abs(have - want) <= TOLERANCE, (
                f"{line.strip()!r}: printed {have}, the README shows {want}"
            )
