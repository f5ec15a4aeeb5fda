"""The capstone, lesson 28, builds its GPT from the learner's functions only: from a workspace, from the page's
edits, or from the lessons as shipped; an exercise that does not pass stops it with a message naming it."""

import shutil
import subprocess
import sys

import pytest

from lucidlm.exercises import capstone
from lucidlm.tutorial.lessons import find_lesson, solved_cells

from ..conftest import run_lucidlm

NEEDED = ["3.linear", "4.embed", "5.relu", "6.softmax", "7.cross_entropy", "8.linear_backward", "9.sinusoidal_table",
          "13.split_heads", "14.layernorm", "16.layernorm_backward", "17.adamw_update", "18.top_p_filter"]  # fmt: skip


def run_capstone(workspace) -> subprocess.CompletedProcess:
    lesson = workspace / find_lesson(capstone.CAPSTONE_LESSON).name
    return subprocess.run([sys.executable, lesson], cwd=workspace, capture_output=True, text=True, timeout=300)


def test_in_a_workspace_it_names_what_is_unsolved_then_trains_on_the_learners_code(tmp_path):
    workspace = tmp_path / "course"
    assert run_lucidlm("exercises", "start", workspace).returncode == 0
    stubs = run_capstone(workspace)
    assert stubs.returncode == 1 and "Traceback" not in stubs.stderr
    assert stubs.stderr.startswith(
        f"lesson 28: this GPT is made of 12 of your functions, from your workspace {workspace}"
    )
    assert "12 of them do not pass their checks yet; not written yet: linear (3), embed (4), relu (5)" in stubs.stderr

    for key in NEEDED:  # the learner solved them all...
        shutil.copy(find_lesson(int(key.split(".")[0])), workspace)
    softmax = workspace / find_lesson(6).name  # ... but one is wrong
    softmax.write_text(softmax.read_text().replace("np.exp(z - z.max(axis=-1, keepdims=True))", "np.exp(z)"))
    wrong = run_capstone(workspace)
    assert wrong.returncode == 1
    assert wrong.stderr.rstrip().endswith(
        "1 of them do not pass their checks yet; failing: softmax (lesson 6: logits of 1e4: first difference at "
        "index [0]: expected 0.731059, got nan; exp(1e4) overflows: subtract the largest logit first)"
    )
    shutil.copy(find_lesson(6), workspace)
    trained = run_capstone(workspace)
    assert trained.returncode == 0, trained.stderr
    assert "12 of your functions passed their checks" in trained.stdout
    assert trained.stdout.rstrip().endswith("lesson 28 ok: a GPT of your own functions trained below 1.5 nats per "
                                            "character and wrote")  # fmt: skip


def test_in_the_page_it_takes_the_edited_cells_and_nothing_else(monkeypatch):
    monkeypatch.setattr(capstone, "PAGE_SOURCES", {})
    with pytest.raises(capstone.NotSolvedYet, match=r"from your edits in this browser, and 1 of them .* softmax \(6\)"):
        capstone.learners_functions(["6.softmax"])
    monkeypatch.setattr(capstone, "PAGE_SOURCES", {"6": list(solved_cells(find_lesson(6)).values())})
    softmax = capstone.learners_functions(["6.softmax"])["softmax"]
    assert softmax([0.0, 0.0]).tolist() == [0.5, 0.5]
