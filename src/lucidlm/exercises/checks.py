"""How an exercise is checked: the learner's function runs on cases, each compared with a reference value, and a
failure says which case, what was expected, what came back and where they first differ.

The same code runs in the page (the course's Check button, in the Python of the page) and in the terminal
(`lucidlm exercises check`): NumPy and the standard library only.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lucidlm.exercises.source import function_code


@dataclass
class Case:
    """One call of the learner's function and the value it must return. `why` names the mistake the case is
    there to catch, shown when it fails."""

    name: str
    args: tuple
    expected: Any
    why: str = ""
    rtol: float = 1e-6
    atol: float = 1e-8


@dataclass
class Exercise:
    """A function the learner writes in lesson `lesson`: its cases (made from a seeded generator, so a check is
    the same each time), and two hints, a nudge and then the idea."""

    lesson: int
    name: str
    cases: Callable[[np.random.Generator], list[Case]]
    hints: tuple[str, str]

    @property
    def key(self) -> str:
        return f"{self.lesson}.{self.name}"


@dataclass
class Result:
    case: str
    passed: bool
    message: str = ""


@dataclass
class Report:
    exercise: Exercise
    results: list[Result] = field(default_factory=list)
    function: Callable | None = None  # the function checked, where the code defined one

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(result.passed for result in self.results)

    @property
    def written(self) -> bool:
        return not any(result.message.startswith(NOT_WRITTEN) for result in self.results)

    def text(self) -> str:
        lines = [f"{self.exercise.key}: {'passed' if self.passed else 'not yet'}"]
        for result in self.results:
            mark = "ok  " if result.passed else "FAIL"
            lines.append(f"  {mark} {result.case}" + (f"\n       {result.message}" if result.message else ""))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "exercise": self.exercise.key,
            "passed": self.passed,
            "written": self.written,
            "cases": [{"case": r.case, "passed": r.passed, "message": r.message} for r in self.results],
        }


NOT_WRITTEN = "not written yet"


def difference(expected: Any, got: Any, rtol: float, atol: float) -> str | None:
    """None when `got` equals `expected` (numbers within the tolerances), else what differs, in words."""
    if isinstance(expected, tuple | list) and not isinstance(expected, np.ndarray):
        if not isinstance(got, tuple | list) or len(got) != len(expected):
            return f"expected {len(expected)} values (a {type(expected).__name__}), got {short(got)}"
        for index, (want, have) in enumerate(zip(expected, got, strict=True)):
            problem = difference(want, have, rtol, atol)
            if problem:
                return f"value {index} of {len(expected)}: {problem}"
        return None
    if expected is None:
        return None if got is None else f"expected None, got {short(got)}"
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"expected a dict of {sorted(expected)}, got {short(got)}"
        for key, want in expected.items():
            problem = difference(want, got[key], rtol, atol)
            if problem:
                return f"{key!r}: {problem}"
        return None
    if isinstance(expected, str | int | bool) and not isinstance(expected, np.ndarray | float):
        return None if got == expected else f"expected {expected!r}, got {short(got)}"
    want, have = np.asarray(expected, dtype=float), np.asarray(got)
    if have.dtype.kind not in "biuf":
        return f"expected numbers, got {short(got)}"
    if want.shape != have.shape:
        return f"expected shape {want.shape}, got shape {have.shape}"
    have = have.astype(float)
    close = np.isclose(have, want, rtol=rtol, atol=atol)
    if close.all():
        return None
    where = tuple(int(i) for i in np.argwhere(~close)[0])
    at = f" at index {list(where)}" if where else ""
    worst = np.nanmax(np.abs(have - want)) if np.isfinite(have).all() else float("nan")
    tail = f" (largest difference {worst:.3g})" if np.isfinite(worst) and want.size > 1 else ""
    return f"first difference{at}: expected {want[where]:.6g}, got {have[where]:.6g}{tail}"


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def run_case(function: Callable, case: Case) -> Result:
    try:
        with np.errstate(all="ignore"):  # an overflow shows as inf or nan in the comparison, said in words
            got = function(*copy.deepcopy(case.args))
    except NotImplementedError:
        return Result(case.name, False, f"{NOT_WRITTEN}: replace the `raise NotImplementedError` with your code")
    except Exception as error:  # the learner's code may raise anything; say what and where, and go on
        frame = traceback.extract_tb(error.__traceback__)[-1]
        return Result(case.name, False, f"raised {type(error).__name__}: {error} (line {frame.lineno})")
    problem = difference(case.expected, got, case.rtol, case.atol)
    if problem is None:
        return Result(case.name, True)
    return Result(case.name, False, problem + (f"; {case.why}" if case.why else ""))


def check(exercise: Exercise, function: Callable) -> Report:
    """Every case, in order; a stub (NotImplementedError on the first case) is one line, not one per case."""
    first, *others = exercise.cases(np.random.default_rng(0))
    result = run_case(function, first)
    if result.message.startswith(NOT_WRITTEN):
        return Report(exercise, [Result("the function", False, result.message)], function)
    return Report(exercise, [result, *(run_case(function, case) for case in others)], function)


def check_source(exercise: Exercise, source: str, context: list[str] = ()) -> Report:
    """Check the function of that name in `source` (a lesson file or a cell): its imports and definitions run
    in a fresh namespace, and nothing else of the source. `context` (the page's other cells) adds the imports
    and functions of those that parse, as the cells above a notebook's cell would."""
    try:
        code = function_code(source, exercise.name, context)
        namespace: dict = {"__name__": f"exercise_{exercise.lesson}"}
        exec(compile(code, f"<{exercise.name}>", "exec"), namespace)
    except SyntaxError as error:
        return Report(exercise, [Result("the code", False, f"does not parse: line {error.lineno}: {error.msg}")])
    except LookupError as error:  # no such function: not written, as far as the check can tell
        return Report(exercise, [Result("the code", False, f"{NOT_WRITTEN}: {error}")])
    except Exception as error:  # an import that fails, a default argument that raises
        return Report(exercise, [Result("the code", False, f"raised {type(error).__name__}: {error}")])
    return check(exercise, namespace[exercise.name])
