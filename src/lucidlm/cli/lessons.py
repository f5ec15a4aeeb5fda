"""`lucidlm lessons`: list the lessons, or run one."""

from __future__ import annotations

import argparse

from lucidlm.errors import ConfigError

NAME = "lessons"
HELP = "list the lessons, or run one"
GUIDE = "docs/guides/course.md"
EXAMPLES = """examples:
  lucidlm lessons            (the list, as `lucidlm lessons list`)
  lucidlm lessons run 6      (runs lessons/06_softmax.py, which checks every claim it makes)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["list", "run"], default="list")
    parser.add_argument("number", nargs="?", type=int, help="the lesson to run")


def run(args: argparse.Namespace) -> None:
    from lucidlm.tutorial.lessons import find_lesson, lesson_files, lesson_number, lesson_title, run_lesson

    if args.action == "list":
        for path in lesson_files():
            print(f"{lesson_number(path):2}. {lesson_title(path)}  ({path.name})")
        return
    if args.number is None:
        raise ConfigError("say which lesson to run, e.g. `lucidlm lessons run 6`")
    find_lesson(args.number)
    status = run_lesson(args.number)
    if status:
        raise SystemExit(status)
