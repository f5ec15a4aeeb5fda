"""Exercises inside the lessons: the solution sits between nbgrader's markers, and the learner gets a stub.

    def softmax(z: np.ndarray) -> np.ndarray:
        \"\"\"The contract: shapes, dtypes, what to return.\"\"\"
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

As shipped, a lesson runs whole (`python lessons/06_softmax.py`, the site's build, the tests). The learner's copy
(the page's editor, `lucidlm exercises start`) has each marked block replaced by a `raise NotImplementedError`
that names the exercise, so the lesson's later cells, which call the function, run on what the learner wrote.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

LESSONS_DIR = Path(__file__).resolve().parents[3] / "lessons"  # in the source checkout, beside src/
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SOLUTION = re.compile(rf"^([ \t]*){re.escape(BEGIN)}[ \t]*\n(.*?)^[ \t]*{re.escape(END)}[ \t]*\n", re.M | re.S)


def stub_message(name: str) -> str:
    return f"{name}: not written yet (write it where the stub is, then check it)"


def stubbed(source: str) -> str:
    """The learner's copy of a lesson (or of one cell): each solution block replaced by a stub."""

    def stub(match: re.Match) -> str:
        function = enclosing_function(source[: match.start()])
        return f'{match.group(1)}raise NotImplementedError("{stub_message(function)}")\n'

    return SOLUTION.sub(stub, source)


def without_markers(source: str) -> str:
    """The solution as a reader sees it: the code, without the marker lines."""
    return SOLUTION.sub(lambda match: match.group(2), source)


def enclosing_function(before: str) -> str:
    """The name of the last `def` opened before a solution block."""
    names = re.findall(r"^[ \t]*def (\w+)\(", before, re.M)
    if not names:
        raise ValueError(f"a {BEGIN} block must sit inside a function")
    return names[-1]


def solved_functions(source: str) -> list[str]:
    """The functions of a lesson that hold a solution block, in order: the lesson's exercises."""
    return [enclosing_function(source[: match.start()]) for match in SOLUTION.finditer(source)]


def function_code(source: str, name: str, context: list[str] = ()) -> ast.Module:
    """What a check runs, as a module whose lines are those of `source` (an error names the learner's line):
    the function definitions of `context` (the page's other cells, those that parse) and of `source` up to
    function `name`, after the module-level imports whose names they use. So the function may call the
    lesson's helpers, while the lesson's training, printing and plotting imports do not run. Raises
    LookupError when `name` is not defined in `source`, SyntaxError when `source` does not parse."""
    tree = ast.parse(source)
    nodes = [(text, node) for text in context if (parsed := parsed_or_none(text)) for node in parsed.body]
    nodes += [(source, node) for node in tree.body[: last_definition(tree, name) + 1]]
    functions = [(text, node) for text, node in nodes if isinstance(node, ast.FunctionDef)]
    used = {n.id for _, function in functions for n in ast.walk(function) if isinstance(n, ast.Name)}
    imports = [
        (text, node)
        for text, node in nodes
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any((alias.asname or alias.name.split(".")[0]) in used for alias in node.names)
    ]
    return ast.Module(body=[node for _, node in [*imports, *functions]], type_ignores=[])


def parsed_or_none(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def last_definition(tree: ast.Module, name: str) -> int:
    """The index in the module's body of its top-level `def name(...)` (the last, if defined twice)."""
    found = [i for i, node in enumerate(tree.body) if isinstance(node, ast.FunctionDef) and node.name == name]
    if not found:
        raise LookupError(f"there is no `def {name}(...)` at the top level of the code")
    return found[-1]


def definition(source: str, name: str) -> str:
    """The text of the top-level `def name(...)` of `source` (its last, if defined twice)."""
    tree = ast.parse(source)
    return ast.get_source_segment(source, tree.body[last_definition(tree, name)])
