"""Every lesson runs and reaches its last assertion; the README's list and the FAQ's links match the files."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lucidlm.tutorial.lessons import LESSONS_DIR, lesson_files, lesson_number, lesson_title

ROOT = Path(__file__).resolve().parents[2]
LESSONS = lesson_files()


def test_there_are_28_lessons_numbered_in_order():
    assert [lesson_number(p) for p in LESSONS] == list(range(1, 29))


# Every lesson runs in the browser, where there is no PyTorch: here each runs with PyTorch blocked, so that importing
# it, even indirectly, fails the test.
WITHOUT_TORCH = "import runpy, sys; sys.modules['torch'] = None; runpy.run_path(sys.argv[1], run_name='__main__')"


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_and_checks_its_claims(tmp_path, path):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"lesson {lesson_number(path)} ok:" in result.stdout.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_lessons_are_percent_format_notebooks():
    for path in LESSONS:
        text = path.read_text()
        assert text.startswith("# %% [markdown]\n# # Lesson"), path.name
        assert "\n# %%\n" in text, path.name  # at least one code cell


def test_readme_lists_every_lesson():
    readme = (ROOT / "README.md").read_text()
    listed = re.findall(r"^(\d+)\. \[(.+?)\]\(lessons/(\d\d_\w+\.py)\)", readme, flags=re.MULTILINE)
    expected = [(str(lesson_number(p)), lesson_title(p), p.name) for p in LESSONS]
    assert listed == expected


def test_faq_links_resolve_and_there_are_at_least_30_questions():
    faq = (ROOT / "docs" / "FAQ.md").read_text()
    assert len(re.findall(r"^### ", faq, flags=re.MULTILINE)) >= 30
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", faq)
    assert links
    for link in links:
        if not link.startswith("http"):
            assert (ROOT / "docs" / link).resolve().exists(), link


def test_cli_lists_and_runs_a_lesson(tmp_path):
    listed = subprocess.run([sys.executable, "-m", "lucidlm", "lessons", "list"], capture_output=True, text=True)
    assert listed.returncode == 0 and " 6. softmax and temperature  (06_softmax.py)" in listed.stdout
    ran = subprocess.run(
        [sys.executable, "-m", "lucidlm", "lessons", "run", "6"], capture_output=True, text=True, cwd=tmp_path
    )
    assert ran.returncode == 0 and "lesson 6 ok" in ran.stdout
    missing = subprocess.run([sys.executable, "-m", "lucidlm", "lessons", "run", "99"], capture_output=True, text=True)
    assert missing.returncode == 2 and "there is no lesson 99; the lessons are 1 to 28" in missing.stderr
    assert LESSONS_DIR == ROOT / "lessons"
