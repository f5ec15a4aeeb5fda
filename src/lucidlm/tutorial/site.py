"""`lucidlm tutorial --build SITE`: the lessons as static pages, with their maths rendered and the output and
figures of running them, so the course reads on any device without Python; and every lesson runs in the page
(each needs only NumPy and lucidlm's pure-Python parts): each code cell editable, run by a Python in the
browser (runtime.py, course.js), with nothing installed.

Each lesson runs once, as the script it is, in a temporary directory. A line with a random marker after each
code cell splits its output by cell and says which PNG files were written by then, so each figure shows below
the cell that drew it. The pages come from Jinja2 templates (templates/), with every output escaped.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import jinja2
from markupsafe import Markup

from lucidlm import __version__
from lucidlm.errors import ConfigError
from lucidlm.exercises import find_exercise, solved_functions, stubbed, without_markers
from lucidlm.exercises.capstone import CAPSTONE_LESSON
from lucidlm.exercises.source import definition
from lucidlm.outputs import TUTORIAL_SITE, written_directory
from lucidlm.tutorial.lessons import lesson_files, lesson_number, lesson_sources, lesson_title
from lucidlm.tutorial.markdown import inline_html, markdown_to_html
from lucidlm.tutorial.runtime import DOWNLOADED, prepared_runtime, write_runtime
from lucidlm.web import STYLE

HERE = Path(__file__).parent
FAQ = Path(__file__).resolve().parents[3] / "docs" / "FAQ.md"
LESSON_SECONDS = 600.0


@dataclass
class CodeCell:
    source: str
    stdout: str = ""
    stderr: str = ""
    images: list[str] = field(default_factory=list)
    kind: str = "code"
    exercises: list[dict] = field(default_factory=list)  # the functions the learner writes in this cell


def instrumented(sources: list[str], marker: str) -> str:
    """The lesson's code cells as one script that prints `marker` and the PNG files present after each cell."""
    report = (
        "import glob as _g, json as _j, os as _o\n"
        f"print({marker!r}, _j.dumps({{p: _o.stat(p).st_mtime_ns for p in _g.glob('*.png')}}), flush=True)\n"
    )
    return "\n".join(f"{source}\n{report}" for source in sources)


def run_lesson_cells(path: Path, images_to: Path, prefix: str, seconds: float) -> tuple[list[CodeCell], str]:
    """Run a lesson's code cells in order; each cell with its output and the figures it wrote (copied to
    `images_to` as `prefix`-NAME.png). Returns the cells and "ok" or what went wrong."""
    cells = [CodeCell(text) for kind, text in lesson_sources(path) if kind == "code"]
    marker = f"<<lucidlm-cell-{secrets.token_hex(8)}>>"
    with tempfile.TemporaryDirectory(prefix="lucidlm-build-") as workdir:
        Path(workdir, "lesson.py").write_text(instrumented([c.source for c in cells], marker), encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
        try:
            done = subprocess.run(
                [sys.executable, "lesson.py"], cwd=workdir, env=env, capture_output=True, text=True, timeout=seconds
            )
            stdout, stderr, status = done.stdout, done.stderr, "ok" if done.returncode == 0 else "it failed"
        except subprocess.TimeoutExpired as exc:
            stdout, stderr = (exc.stdout or b"").decode(errors="replace"), (exc.stderr or b"").decode(errors="replace")
            status = f"it ran longer than {seconds:g} s"
        # "out0 MARK {pngs}\nout1 MARK {pngs}\n...": piece i+1 starts with the report that ends cell i
        pieces, seen = stdout.split(marker + " "), {}
        cells_done, text_before = len(pieces) - 1, pieces[0]
        for index in range(cells_done):
            cells[index].stdout = text_before.rstrip("\n")
            report, _, text_before = pieces[index + 1].partition("\n")
            present = json.loads(report)
            for name in sorted(present):
                if seen.get(name) != present[name]:
                    copied = f"{prefix}-{name}"
                    shutil.copyfile(Path(workdir, name), images_to / copied)
                    cells[index].images.append(copied)
            seen = present
        if cells_done < len(cells):  # the cell that failed or was stopped: what it printed, and why
            cells[cells_done].stdout = text_before.rstrip("\n")
            cells[cells_done].stderr = stderr.replace(str(Path(workdir, "lesson.py")), "lesson").rstrip("\n")
    return cells, status


def title_html(path: Path) -> Markup:
    """A lesson's title with its inline marks (`code`, $maths$) rendered."""
    return Markup(inline_html(lesson_title(path)))


TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)


def lesson_entries(paths: list[Path]) -> list[dict]:
    """What the pages say of each lesson: its number, title, page and exercises."""
    return [
        {
            "number": lesson_number(p),
            "title_html": title_html(p),
            "page": f"{lesson_number(p):02d}.html",
            "path": p,
            "status": "ok",
            "exercises": [f"{lesson_number(p)}.{name}" for name in solved_functions(p.read_text(encoding="utf-8"))],
            "capstone": lesson_number(p) == CAPSTONE_LESSON,
        }
        for p in paths
    ]


def as_exercise(cell: CodeCell, lesson: int) -> CodeCell:
    """A code cell as the learner gets it: each function with a solution block stubbed, and for each the key,
    hints and solution that the page's Check, Hint and Solution buttons show."""
    names = solved_functions(cell.source)
    if not names:
        return cell
    solution = without_markers(cell.source)
    exercises = []
    for name in names:
        exercise = find_exercise(f"{lesson}.{name}")
        exercises.append(
            {"key": exercise.key, "name": name, "hints": exercise.hints, "solution": definition(solution, name)}
        )
    return replace(cell, source=stubbed(cell.source), exercises=exercises)


def as_given() -> dict[int, list[str]]:
    """Every lesson's code cells as the learner gets them, stubs in place: what the capstone's page starts from
    before it lays this browser's edits over them (all the lessons, even where a site builds only some)."""
    return {
        lesson_number(path): [stubbed(text) for kind, text in lesson_sources(path) if kind == "code"]
        for path in lesson_files()
    }


def lesson_page(
    entries: list[dict], index: int, code: list[CodeCell] | None, runner: str, download_mb: float | None
) -> str:
    """A lesson's page: its explanation and code cells, each with its output in `code` (none where nothing ran
    yet: `lucidlm tutorial`), and the course bar that runs them where the page's `runner` says."""
    entry, outputs = entries[index], iter(code or ())
    cells = [
        {"kind": "markdown", "html": Markup(markdown_to_html(text, heading_shift=1))}
        if kind == "markdown"
        else as_exercise(next(outputs, None) or CodeCell(text), entry["number"])
        for kind, text in lesson_sources(entry["path"])
    ]
    return TEMPLATES.get_template("lesson.html").render(
        title=lesson_title(entry["path"]),
        root="../",
        cells=cells,
        status=entry["status"],
        number=entry["number"],
        capstone=as_given() if entry["capstone"] else None,
        runner=runner,
        download_mb=download_mb,
        lessons=entries,
        previous=entries[index - 1] if index else None,
        next=entries[index + 1] if index + 1 < len(entries) else None,
    )


def faq_page() -> str:
    faq = Markup(markdown_to_html(FAQ.read_text(encoding="utf-8"), heading_shift=1))
    return TEMPLATES.get_template("faq.html").render(title="FAQ", root="", html=faq)


def index_page(entries: list[dict], runner: str, model: str | None = None) -> str:
    built = datetime.date.today().isoformat()
    return TEMPLATES.get_template("index.html").render(
        title="the lessons", root="", lessons=entries, built=built, version=__version__, model=model, runner=runner
    )


def build_tutorial_site(
    out: str | os.PathLike,
    numbers: list[int] | None = None,
    force: bool = False,
    write_model: Callable[[Path], object] | None = None,
    seconds: float = LESSON_SECONDS,
    progress: bool = True,
) -> Path:
    """Write the lessons (all, or those `numbers`), the FAQ and an index page into the directory `out`.
    `write_model(directory)` writes a model's page there (`export --format web`), as the site's model/, and
    the index links to it; the model page's explainer links to the lessons in turn."""
    paths = [p for p in lesson_files() if numbers is None or lesson_number(p) in numbers]
    if numbers is not None and len(paths) != len(set(numbers)):
        known = {lesson_number(p) for p in lesson_files()}
        raise ConfigError(f"there is no lesson {min(set(numbers) - known)}; the lessons are 1 to {max(known)}")
    entries = lesson_entries(paths)
    # before the lessons run: a missing runtime is an error now, not minutes later
    prepared = prepared_runtime()
    with written_directory(out, TUTORIAL_SITE, force) as site:
        (site / "lessons").mkdir()
        sizes = write_runtime(site, prepared)
        download_mb = round(sum(sizes[name] for name in DOWNLOADED) / 1e6, 1)
        shutil.copyfile(HERE / "static" / "course.js", site / "course.js")
        shutil.copytree(HERE / "static" / "editor", site / "editor")  # CodeMirror, with its licences
        model_page = None
        if write_model is not None:
            write_model(site / "model")
            model_page = "model/index.html"
        shutil.copyfile(STYLE, site / "style.css")
        for index, entry in enumerate(entries):
            if progress:
                print(f"running lesson {entry['number']}: {lesson_title(entry['path'])}", file=sys.stderr)
            ran, status = run_lesson_cells(entry["path"], site / "lessons", f"{entry['number']:02d}", seconds)
            entry["status"] = status
            page = lesson_page(entries, index, ran, "browser", download_mb)
            (site / "lessons" / entry["page"]).write_text(page, encoding="utf-8")
        (site / "faq.html").write_text(faq_page(), encoding="utf-8")
        (site / "index.html").write_text(index_page(entries, "browser", model_page), encoding="utf-8")
        failed = [e["number"] for e in entries if e["status"] != "ok"]
        manifest = {
            "lessons": [e["number"] for e in entries],
            "failed": failed,
            "built": datetime.date.today().isoformat(),
        }
        (site / "lucidlm-site.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Path(out)
