"""tutorial/cells.py: a cell's error is printed from the cell's own code, and a failed assert shows its values."""

import pytest

from lucidlm.tutorial.cells import CellFailed, run_cell


def failure(capsys, *sources: str) -> str:
    """What the last of `sources` printed to stderr as it failed, the ones before it run first."""
    namespace = {"__name__": "__main__"}
    for number, source in enumerate(sources[:-1], start=1):
        run_cell(source, namespace, f"<cell {number}>")
    capsys.readouterr()
    with pytest.raises(CellFailed):
        run_cell(sources[-1], namespace, f"<cell {len(sources)}>")
    return capsys.readouterr().err


def test_a_failed_comparison_shows_each_side(capsys):
    printed = failure(capsys, "a = 1\nassert a == 1\nassert a + 1 == 3, 'a is not 2'")
    assert printed == (
        "Traceback (most recent call last):\n"
        '  File "<cell 1>", line 3, in <module>\n'
        "    assert a + 1 == 3, 'a is not 2'\n"
        "AssertionError: a is not 2\n"
        "  where a + 1 = 2\n"
    )


def test_a_failed_call_shows_its_arguments_and_an_array_its_shape(capsys):
    printed = failure(capsys, "import numpy as np\nx = np.ones(3)\nassert np.allclose(x, 2 * x)")
    assert "  where x = array of shape (3,), float64: array([1., 1., 1.])\n" in printed
    assert "  where 2 * x = array of shape (3,), float64: array([2., 2., 2.])\n" in printed


def test_an_assert_in_a_function_from_an_earlier_cell_shows_its_values(capsys):
    printed = failure(capsys, "def check(v):\n    assert v > 10\n", "check(3)")
    assert printed.splitlines()[1:] == [
        '  File "<cell 2>", line 1, in <module>',
        "    check(3)",
        '  File "<cell 1>", line 2, in check',
        "    assert v > 10",
        "AssertionError",
        "  where v = 3",
    ]


def test_a_chained_comparison_that_stops_early_evaluates_nothing_past_the_stop(capsys):
    printed = failure(capsys, "calls = []\ndef f():\n    calls.append(1)\n    return 5", "assert 3 < 2 < f()")
    assert "where" not in printed  # only constants were compared
    namespace = {}
    run_cell("calls = []\ndef f():\n    calls.append(1)\n    return 0", namespace, "<cell 1>")
    with pytest.raises(CellFailed):
        run_cell("assert 1 < f() < 2", namespace, "<cell 2>")
    assert namespace["calls"] == [1]  # each operand once, as Python evaluates it
    assert "  where f() = 0" in capsys.readouterr().err


def test_other_errors_and_syntax_errors_start_at_the_cell(capsys):
    assert failure(capsys, "1 / 0").endswith("    1 / 0\nZeroDivisionError: division by zero\n")
    assert "run_cell" not in failure(capsys, "1 / 0")  # the runner's own frames are left out
    syntax = failure(capsys, "print('unclosed'")
    assert syntax.startswith('  File "<cell 1>", line 1\n') and "SyntaxError: '(' was never closed" in syntax
