"""`lucidlm exercises` as a learner meets it: a workspace of stubs, checks with a progress table and an exit
status, hints in two steps, the solution only after an attempt, and a watch mode that checks again on save."""

import json
import subprocess
import sys
import time

from lucidlm.exercises import EXERCISES
from lucidlm.exercises.capstone import CAPSTONE_LESSON
from lucidlm.tutorial.lessons import find_lesson

from ..conftest import run_lucidlm


def test_start_check_hint_and_solution(tmp_path):
    workspace = tmp_path / "course"
    started = run_lucidlm("exercises", "start", workspace)
    assert started.returncode == 0, started.stderr
    lessons = {find_lesson(e.lesson).name for e in EXERCISES} | {find_lesson(CAPSTONE_LESSON).name}
    assert {p.name for p in workspace.iterdir()} == lessons | {"exercises.json"}
    assert "### BEGIN SOLUTION" not in (workspace / "06_softmax.py").read_text()

    checked = run_lucidlm("exercises", "check", "6", cwd=workspace)
    assert checked.returncode == 1
    assert "6.softmax                     6    to write" in checked.stdout
    assert checked.stdout.rstrip().endswith("0 of 1 exercises pass")
    refused = run_lucidlm("exercises", "solution", "6.softmax", cwd=workspace)
    assert refused.returncode == 2 and "write softmax and check it first" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr

    first, second = (run_lucidlm("exercises", "hint", "6.softmax", cwd=workspace).stdout for _ in range(2))
    assert first.startswith("6.softmax (nudge): ") and second.startswith("6.softmax (the idea): ")

    lesson = workspace / "06_softmax.py"
    wrong = "e = np.exp(z / temperature)\n    return e / e.sum(axis=-1, keepdims=True)"
    lesson.write_text(lesson.read_text().replace('raise NotImplementedError("softmax: not written yet', wrong + "  #"))
    failing = run_lucidlm("exercises", "check", "6", cwd=workspace)
    assert failing.returncode == 1
    assert "FAIL logits of 1e4" in failing.stdout and "subtract the largest logit first" in failing.stdout
    assert "6.softmax                     6    failing" in failing.stdout
    assert json.loads((workspace / "exercises.json").read_text())["attempted"] == ["6.softmax"]
    solution = run_lucidlm("exercises", "solution", "6.softmax", cwd=workspace)
    assert solution.returncode == 0 and solution.stdout.startswith("def softmax(")
    assert "z.max(axis=-1, keepdims=True)" in solution.stdout and "BEGIN SOLUTION" not in solution.stdout

    (workspace / "06_softmax.py").write_text(find_lesson(6).read_text())  # the lesson's own solution
    passing = run_lucidlm("exercises", "check", "6", "--dir", workspace)
    assert passing.returncode == 0 and "6.softmax                     6  ✓ passed" in passing.stdout
    everything = run_lucidlm("exercises", "check", "--dir", workspace)
    assert everything.returncode == 1 and f"1 of {len(EXERCISES)} exercises pass" in everything.stdout


def test_start_never_writes_over_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    busy = run_lucidlm("exercises", "start", tmp_path)
    assert busy.returncode == 2 and "is not empty" in busy.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    workspace = tmp_path / "course"
    assert run_lucidlm("exercises", "start", workspace).returncode == 0
    again = run_lucidlm("exercises", "start", workspace)
    assert again.returncode == 2 and "already an exercise workspace" in again.stderr
    outside = run_lucidlm("exercises", "check", cwd=tmp_path)
    assert outside.returncode == 2 and "is not an exercise workspace" in outside.stderr
    unknown = run_lucidlm("exercises", "hint", "6.nope", cwd=workspace)
    assert unknown.returncode == 2 and "there is no exercise 6.nope" in unknown.stderr


def test_watch_checks_again_when_a_file_is_saved(tmp_path):
    workspace = tmp_path / "course"
    assert run_lucidlm("exercises", "start", workspace).returncode == 0
    watcher = subprocess.Popen(
        [sys.executable, "-m", "lucidlm", "exercises", "check", "5", "--watch"],
        cwd=workspace,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = iter(watcher.stdout.readline, "")
        assert "0 of 1 exercises pass" in "".join(next(lines) for _ in range(6))
        time.sleep(0.1)  # a later modification time than the first check saw
        (workspace / "05_layers_and_relu.py").write_text(find_lesson(5).read_text())
        seen = ""
        while "1 of 1 exercises pass" not in seen:
            seen += next(lines)
        assert "5.relu                        5  ✓ passed" in seen
    finally:
        watcher.kill()
        watcher.wait()
