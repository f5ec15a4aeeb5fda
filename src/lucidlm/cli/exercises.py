"""`lucidlm exercises`: the course's exercises in the terminal, rustlings-style."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lucidlm.errors import ConfigError

NAME = "exercises"
HELP = "write the course's functions yourself and check them: start a workspace, check, hint, solution"
GUIDE = "docs/guides/course.md"
EXAMPLES = """examples:
  lucidlm exercises start my-course         (the lessons with exercises, their solutions cut out, to edit)
  cd my-course && lucidlm exercises check   (every exercise, and a progress table; exit 0 when all pass)
  lucidlm exercises check 6 --watch         (lesson 6's, again each time you save the file)
  lucidlm exercises hint 6.softmax          (a nudge; ask again for the idea)
  lucidlm exercises solution 6.softmax      (the lesson's solution, once you have tried)"""
POLL_SECONDS = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "start", "check", "hint", "solution"])
    parser.add_argument(
        "target", nargs="?", help="start: the new folder; check: a lesson number; hint, solution: LESSON.FUNCTION"
    )
    parser.add_argument("--dir", default=".", help="the workspace (default: the current directory)")
    parser.add_argument("--watch", action="store_true", help="check again each time a lesson file is saved")


def run(args: argparse.Namespace) -> None:
    from lucidlm.exercises import EXERCISES, find_exercise, without_markers
    from lucidlm.exercises import workspace as ws
    from lucidlm.exercises.capstone import CAPSTONE_LESSON
    from lucidlm.exercises.source import definition
    from lucidlm.tutorial.lessons import find_lesson

    directory = Path(args.dir)
    if args.action == "list":
        for exercise in EXERCISES:
            print(f"{exercise.key:24} lesson {exercise.lesson:2}: {find_lesson(exercise.lesson).name}")
        return
    if args.action == "start":
        if not args.target:
            raise ConfigError("name the new folder: `lucidlm exercises start my-course`")
        lessons = {number: find_lesson(number) for number in {e.lesson for e in EXERCISES} | {CAPSTONE_LESSON}}
        files = ws.start(args.target, lessons)
        print(f"wrote {len(files)} lessons with {len(EXERCISES)} exercises to {args.target}/; edit them, then run")
        print(f"  cd {args.target} && lucidlm exercises check")
        print(f"and once they pass, your own GPT: python {find_lesson(CAPSTONE_LESSON).name}")
        return
    if args.action in ("hint", "solution"):
        if not args.target:
            raise ConfigError(f"say which exercise, e.g. `lucidlm exercises {args.action} 6.softmax`")
        try:
            exercise = find_exercise(args.target)
        except LookupError as error:
            raise ConfigError(str(error)) from None
        if args.action == "hint":
            print(ws.next_hint(directory, exercise.key))
            return
        if not ws.attempted(directory, exercise.key):
            raise ConfigError(
                f"write {exercise.name} and check it first (`lucidlm exercises check {exercise.lesson}`); "
                f"`lucidlm exercises hint {exercise.key}` helps"
            )
        lesson = without_markers(find_lesson(exercise.lesson).read_text(encoding="utf-8"))
        print(definition(lesson, exercise.name))
        return
    lesson = parse_lesson(args.target)
    if not args.watch:
        if not report_checks(directory, lesson):
            raise SystemExit(1)
        return
    watch(directory, lesson)


def parse_lesson(target: str | None) -> int | None:
    if target is None:
        return None
    if not target.isdigit():
        raise ConfigError(f"check takes a lesson number (e.g. `lucidlm exercises check 6`), not {target!r}")
    return int(target)


def report_checks(directory: Path, lesson: int | None) -> bool:
    """Check, print each failure and the progress table; True when every exercise checked passed."""
    from lucidlm.exercises import workspace as ws

    reports = ws.check_workspace(directory, lesson)
    for report in reports:
        if report.written and not report.passed:
            print(report.text())
    passed = sum(report.passed for report in reports)
    print(f"\n{'exercise':24} {'lesson':>6}  state")
    for report in reports:
        state = "passed" if report.passed else "failing" if report.written else "to write"
        print(f"{report.exercise.key:24} {report.exercise.lesson:6}  {'✓' if report.passed else ' '} {state}")
    print(f"\n{passed} of {len(reports)} exercises pass")
    return passed == len(reports)


def watch(directory: Path, lesson: int | None) -> None:
    """Check now and after each save, until Ctrl-C."""
    files = sorted(directory.glob("[0-9][0-9]_*.py"))

    def stamps() -> list[float]:
        return [path.stat().st_mtime_ns for path in files if path.exists()]

    seen = None
    print(f"watching {len(files)} lesson files in {directory}; Ctrl-C ends")
    try:
        while True:
            now = stamps()
            if now != seen:
                seen = now
                report_checks(directory, lesson)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        print()
