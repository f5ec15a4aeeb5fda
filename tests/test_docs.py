"""The docs say what the code does today: the counts they quote are the code's, the README stays a front door
and links every guide, and each command's --help names a guide that exists."""

import re
from pathlib import Path

from lucidlm.cli.parser import COMMANDS, command_module
from lucidlm.tutorial.lessons import lesson_files

ROOT = Path(__file__).resolve().parents[1]
GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))


def test_the_counts_the_docs_quote_are_the_codes():
    """ "28 lessons" (or "28 runnable lessons") and "28 of 28 [lessons] run" in the page (every lesson is live),
    wherever the README and the roadmap say them."""
    lessons = len(lesson_files())
    for page in (ROOT / "README.md", ROOT / "docs" / "roadmap.md"):
        text = page.read_text(encoding="utf-8")
        totals = {int(n) for n in re.findall(r"(\d+) (?:runnable )?lessons\b(?! that)", text)}
        shown = {(int(a), int(b)) for a, b in re.findall(r"(\d+) of (\d+)\s+(?:lessons\s+)?run", text)}
        assert totals == {lessons}, (page.name, totals)
        assert shown <= {(lessons, lessons)}, (page.name, shown)


def test_the_readme_is_a_front_door_that_links_every_guide():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    assert GUIDES and all(f"docs/guides/{guide.name}" in readme for guide in GUIDES)
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        assert (ROOT / target).exists(), target


def test_every_commands_help_names_a_guide_that_exists():
    for name in COMMANDS:
        assert (ROOT / command_module(name).GUIDE).exists(), name
