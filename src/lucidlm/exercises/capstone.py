"""The capstone's supply of the learner's own functions: each exercise it builds on, taken from where the
learner wrote it and checked first, so that the GPT it assembles is made of code that passed.

Where the functions come from:
- in the page, the lessons' cells as the learner edited them (course.js sets PAGE_SOURCES before a run);
- in a workspace of `lucidlm exercises start` (the current directory holds its exercises.json), its files;
- otherwise the lessons as shipped, whose solutions are in place (`python lessons/28_your_gpt.py`, the site's
  build, the tests).
An unsolved exercise is never replaced by the reference: the capstone stops and names it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from lucidlm.exercises.catalog import find_exercise
from lucidlm.exercises.checks import check_source
from lucidlm.exercises.source import LESSONS_DIR

CAPSTONE_LESSON = 28  # lessons/28_your_gpt.py
PAGE_SOURCES: dict[int, list[str]] | None = None  # lesson -> the cells the learner edited, set by the page


class NotSolvedYet(Exception):
    """An exercise the capstone needs does not pass its check: the message says which, and what failed."""


def where_from() -> tuple[str, Callable[[int], str]]:
    """Where the learner's lessons are, in words, and a function from a lesson's number to its source."""
    if PAGE_SOURCES is not None:
        pages = {int(lesson): cells for lesson, cells in PAGE_SOURCES.items()}
        return "your edits in this browser", lambda lesson: "\n\n".join(pages.get(lesson, []))
    state = Path.cwd() / "exercises.json"
    if state.exists():
        files = json.loads(state.read_text(encoding="utf-8"))["files"]
        return f"your workspace {Path.cwd()}", lambda lesson: (Path.cwd() / files[str(lesson)]).read_text()
    return f"the lessons as shipped ({LESSONS_DIR})", lambda lesson: lesson_source(lesson)


def lesson_source(lesson: int) -> str:
    (path,) = LESSONS_DIR.glob(f"{lesson:02d}_*.py")
    return path.read_text(encoding="utf-8")


def learners_functions(keys: list[str]) -> dict[str, Callable]:
    """The learner's function for each exercise key (`LESSON.NAME`), by name, each one checked first. Raises
    NotSolvedYet naming every one that does not pass yet."""
    origin, source_of = where_from()
    functions, not_written, failing = {}, [], []
    for key in keys:
        exercise = find_exercise(key)
        source = source_of(exercise.lesson)
        report = check_source(exercise, source)
        if not report.passed:
            failed = next(result for result in report.results if not result.passed)
            if report.written:
                failing.append(f"{exercise.name} (lesson {exercise.lesson}: {failed.case}: {failed.message})")
            else:
                not_written.append(f"{exercise.name} ({exercise.lesson})")
            continue
        functions[exercise.name] = report.function
    if not_written or failing:
        parts = ([f"not written yet: {', '.join(not_written)}"] if not_written else []) + (
            [f"failing: {'; '.join(failing)}"] if failing else []
        )
        raise NotSolvedYet(
            f"this GPT is made of {len(keys)} of your functions, from {origin}, and "
            f"{len(not_written) + len(failing)} of them do not pass their checks yet; " + "; ".join(parts)
        )
    return functions
