"""The learner's workspace in the terminal, rustlings-style: the lessons that hold exercises, copied with their
stubs into a folder the learner edits, and a small JSON file of what they tried and which hints they saw.

A workspace is the learner's own work: nothing here replaces or deletes a file of it.
"""

from __future__ import annotations

import json
from pathlib import Path

from lucidlm.errors import ConfigError
from lucidlm.exercises.catalog import EXERCISES, find_exercise
from lucidlm.exercises.checks import Exercise, Report, check_source
from lucidlm.exercises.source import stubbed
from lucidlm.outputs import OutputKind, write_json_atomic, written_directory

STATE = "exercises.json"
WORKSPACE = OutputKind("exercise workspace", frozenset(), STATE, ("exercises",), "DIR")  # never replaced


def start(directory: str | Path, lessons: dict[int, Path]) -> list[Path]:
    """Write a new workspace: the stubbed copy of each lesson file (by number) and the state file, which
    remembers the files' names. Refuses a folder that holds anything."""
    target = Path(directory)
    if (target / STATE).exists():
        raise ConfigError(
            f"{target} is already an exercise workspace; check it with `lucidlm exercises check --dir {target}` "
            "(start never writes over a learner's work)"
        )
    with written_directory(target, WORKSPACE) as folder:
        for path in lessons.values():
            (folder / path.name).write_text(stubbed(path.read_text(encoding="utf-8")), encoding="utf-8")
        files = {str(number): path.name for number, path in sorted(lessons.items())}
        state = {"exercises": [e.key for e in EXERCISES], "files": files, "attempted": [], "hints": {}}
        write_json_atomic(folder / STATE, state)
    return [target / path.name for path in lessons.values()]


def read_state(directory: Path) -> dict:
    try:
        state = json.loads((directory / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(
            f"{directory} is not an exercise workspace (no readable {STATE}); make one with "
            "`lucidlm exercises start DIR`"
        ) from None
    return state


def lesson_file(directory: Path, state: dict, exercise: Exercise) -> Path:
    path = directory / state["files"][str(exercise.lesson)]
    if not path.exists():
        raise ConfigError(f"{path} is missing from the workspace; copy it back from lessons/ or start a new one")
    return path


def selected(lesson: int | None) -> list[Exercise]:
    chosen = [e for e in EXERCISES if lesson is None or e.lesson == lesson]
    if not chosen:
        lessons = sorted({e.lesson for e in EXERCISES})
        raise ConfigError(f"lesson {lesson} has no exercise; these do: {', '.join(map(str, lessons))}")
    return chosen


def check_workspace(directory: Path, lesson: int | None = None) -> list[Report]:
    """Check the exercises of one lesson (or all) in the workspace, and note those the learner attempted."""
    state = read_state(directory)
    reports = [check_source(e, lesson_file(directory, state, e).read_text(encoding="utf-8")) for e in selected(lesson)]
    attempted = set(state["attempted"]) | {report.exercise.key for report in reports if report.written}
    if attempted != set(state["attempted"]):
        write_json_atomic(directory / STATE, state | {"attempted": sorted(attempted)})
    return reports


def next_hint(directory: Path, key: str) -> str:
    """The next hint of an exercise (the nudge, then the idea), remembered in the workspace."""
    exercise, state = find_exercise(key), read_state(directory)
    seen = state["hints"].get(key, 0)
    hint = exercise.hints[min(seen, len(exercise.hints) - 1)]
    write_json_atomic(directory / STATE, state | {"hints": state["hints"] | {key: seen + 1}})
    level = "nudge" if seen == 0 else "the idea"
    return f"{key} ({level}): {hint}"


def attempted(directory: Path, key: str) -> bool:
    return key in read_state(directory)["attempted"]
