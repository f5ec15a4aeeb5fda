"""One notebook cell run in a namespace, failing the way a learner can act on: the traceback starts at the
cell's own code, and a failed `assert` shows the values it compared, as pytest's assertion rewriting does.

The same code runs a cell in the page's Python (static/python-worker.js) and in `lucidlm tutorial`'s kernel
(kernel.py), so the two say the same. It needs nothing but the standard library.

Each `assert` is rewritten before the cell compiles: its operands are wrapped in a call that records their
values as Python computes them, once each and in Python's order (a chained comparison that stops early
records nothing past the stop). When the assert fails, the recorded values are shown beside their source.
"""

from __future__ import annotations

import ast
import linecache
import sys
import traceback
from typing import Any

SEEN = "__lucidlm_seen__"  # the recorder's name in the cell's namespace
SHOWN_CHARS = 300  # of a value's repr; the middle of a longer one is cut


class CellFailed(Exception):
    """A cell raised, and its error was printed: the caller need only know that it failed."""


class Recorder:
    """The values of the operands of the assert that ran last, by their position in its test; and the source
    of every rewritten assert's operands, by (cell, line), since a function a cell defined may assert later,
    called from another cell."""

    def __init__(self) -> None:
        self.values: dict[int, Any] = {}
        self.where = ("", 0)  # (filename, line) of the assert that ran last
        self.operands: dict[tuple[str, int], list[str]] = {}

    def start(self, filename: str, line: int) -> bool:
        self.values, self.where = {}, (filename, line)
        return True

    def __call__(self, position: int, value: Any) -> Any:
        self.values[position] = value
        return value


class AssertRewriter(ast.NodeTransformer):
    """`assert TEST, MSG` -> `assert SEEN.start(CELL, LINE) and TEST', MSG`, where TEST' wraps each operand
    that is not a constant in `SEEN(k, operand)`; `operands[(cell, line)]` keeps their source."""

    def __init__(self, source: str, filename: str, operands: dict[tuple[str, int], list[str]]):
        self.source, self.filename, self.operands = source, filename, operands

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        shown: list[str] = []

        def record(expression: ast.expr) -> ast.expr:
            if isinstance(expression, ast.Constant):
                return expression
            shown.append(ast.get_source_segment(self.source, expression) or ast.unparse(expression))
            call = ast.Call(ast.Name(SEEN, ast.Load()), [ast.Constant(len(shown) - 1), expression], keywords=[])
            return ast.copy_location(call, expression)

        test = node.test
        if isinstance(test, ast.Compare):
            test = ast.Compare(record(test.left), test.ops, [record(c) for c in test.comparators])
        elif isinstance(test, ast.Call):
            test = ast.Call(test.func, [record(a) for a in test.args], test.keywords)
        elif isinstance(test, ast.BoolOp):
            test = ast.BoolOp(test.op, [record(v) for v in test.values])
        elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            test = ast.UnaryOp(test.op, record(test.operand))
        else:
            test = record(test)
        self.operands[(self.filename, node.lineno)] = shown
        where = [ast.Constant(self.filename), ast.Constant(node.lineno)]
        start = ast.Call(ast.Attribute(ast.Name(SEEN, ast.Load()), "start", ast.Load()), where, [])
        checked = ast.copy_location(ast.BoolOp(ast.And(), [start, test]), node.test)
        rewritten = ast.Assert(ast.fix_missing_locations(checked), node.msg)
        return ast.fix_missing_locations(ast.copy_location(rewritten, node))


def shown_value(value: Any) -> str:
    text = repr(value)
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None and shape != ():  # an array: its shape first, then its values
        text = f"array of shape {tuple(shape)}, {dtype}: {text}"
    text = " ".join(text.split()) if "\n" in text else text
    if len(text) > SHOWN_CHARS:
        half = SHOWN_CHARS // 2
        text = f"{text[:half]} ... {text[-half:]}"
    return text


def explanation(recorder: Recorder, operands: list[str]) -> str:
    """The lines that follow a failed assert's message: each operand's source and the value it had."""
    lines = []
    for position, source in enumerate(operands):
        if position in recorder.values and source != shown_value(recorder.values[position]):
            lines.append(f"  where {source} = {shown_value(recorder.values[position])}")
    return "\n".join(lines)


def run_cell(source: str, namespace: dict, filename: str) -> None:
    """Run `source` in `namespace` as the code of `filename` (e.g. "<cell 3>"). On an error, print its
    traceback, from the cell's own code down, to stderr (with a failed assert's values) and raise
    CellFailed."""
    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)  # the traceback quotes the cell's lines
    recorder = namespace.setdefault(SEEN, Recorder())
    try:
        tree = AssertRewriter(source, filename, recorder.operands).visit(ast.parse(source, filename))
        code = compile(tree, filename, "exec")
    except SyntaxError as error:
        sys.stderr.write("".join(traceback.format_exception_only(type(error), error)))
        raise CellFailed from None
    try:
        exec(code, namespace)
    except BaseException as error:  # KeyboardInterrupt too: the cell ends, the interpreter goes on
        frames = traceback.extract_tb(error.__traceback__)
        own = next((i for i, frame in enumerate(frames) if frame.filename == filename), 0)
        printed = traceback.TracebackException.from_exception(error)
        printed.stack = traceback.StackSummary.from_list(frames[own:])
        # without the caret lines, which point into the rewritten asserts and differ between Pythons
        lines = "".join(printed.format()).splitlines(keepends=True)
        text = "".join(line for line in lines if line.strip(" ^~\n"))
        last = (frames[-1].filename, frames[-1].lineno) if frames else None
        if isinstance(error, AssertionError) and last == recorder.where and last in recorder.operands:
            text += explanation(recorder, recorder.operands[last]) + "\n" if recorder.values else ""
        sys.stderr.write(text)
        sys.stderr.flush()
        raise CellFailed from None
    finally:
        sys.stdout.flush()
