"""The course's exercises: functions the learner writes in the lessons, checked in the page and in the terminal
(`lucidlm exercises`). source.py cuts the solutions out of a lesson, checks.py runs a check, catalog.py holds
the cases and hints of each exercise."""

from lucidlm.exercises.catalog import EXERCISES, exercises_of, find_exercise
from lucidlm.exercises.checks import Case, Exercise, Report, check, check_source
from lucidlm.exercises.source import function_code, solved_functions, stubbed, without_markers

__all__ = [
    "EXERCISES",
    "Case",
    "Exercise",
    "Report",
    "check",
    "check_source",
    "exercises_of",
    "find_exercise",
    "function_code",
    "solved_functions",
    "stubbed",
    "without_markers",
]
