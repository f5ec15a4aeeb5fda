"""The lessons in `lessons/`: numbered percent-format scripts that assert their own claims.

They live in the source checkout (next to `src/`), so that a learner reads and edits them as plain files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from lucidlm.errors import LucidError
from lucidlm.exercises.source import BEGIN as SOLUTION_MARK
from lucidlm.exercises.source import LESSONS_DIR


def lesson_files(directory: Path = LESSONS_DIR) -> list[Path]:
    if not directory.is_dir():
        raise LucidError(
            f"no lessons found at {directory}: the lessons ship with the source checkout; clone the "
            "lucidlm repository and install it with `make setup`"
        )
    return sorted(directory.glob("[0-9][0-9]_*.py"))


def lesson_title(path: Path) -> str:
    """The lesson's first markdown heading without its number: '# Lesson 1: the dot product' -> 'the dot product'."""
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"# # Lesson \d+: (.+)", line)
        if match:
            return match.group(1)
    raise LucidError(f"{path.name} has no '# # Lesson N: title' heading")


def lesson_sources(path: Path) -> list[tuple[str, str]]:
    """The percent-format cells of a lesson, in order: ("markdown", text without the comment marks) or
    ("code", source); empty code cells are left out."""
    cells, kind, lines = [], None, []

    def close() -> None:
        text = "\n".join(lines).strip("\n")
        if kind == "markdown" or (kind == "code" and text):
            cells.append((kind, text))

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# %%"):
            close()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind == "markdown":
            lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        else:
            lines.append(line)
    close()
    return cells


def solved_cells(path: Path) -> dict[int, str]:
    """The code cells (numbered among the code cells, from 0) that hold an exercise's solution, as the lesson
    ships them: what a learner who solved the exercises has in the page's editors."""
    code = [text for kind, text in lesson_sources(path) if kind == "code"]
    return {index: text for index, text in enumerate(code) if SOLUTION_MARK in text}


def solved_edits() -> dict[str, str]:
    """Every lesson's solved exercise cells under the keys course.js keeps a cell's edits by in the browser
    (`lucidlm:lesson:N:cell:I`): a browser in which a learner solved every exercise, for the capstone's page."""
    return {
        f"lucidlm:lesson:{lesson_number(p)}:cell:{i}": text
        for p in lesson_files()
        for i, text in solved_cells(p).items()
    }


def lesson_number(path: Path) -> int:
    return int(path.name[:2])


def find_lesson(number: int) -> Path:
    for path in lesson_files():
        if lesson_number(path) == number:
            return path
    numbers = [lesson_number(p) for p in lesson_files()]
    raise LucidError(
        f"there is no lesson {number}; the lessons are {min(numbers)} to {max(numbers)} (`lucidlm lessons list`)"
    )


def run_lesson(number: int, timeout: float = 120.0) -> int:
    """Run one lesson as a script, its output streamed to this terminal; returns its exit status."""
    path = find_lesson(number)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        return subprocess.run([sys.executable, str(path)], env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        raise LucidError(f"lesson {number} ran longer than {timeout:.0f} s and was stopped") from None
