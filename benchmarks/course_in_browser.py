"""The course in the browser (issues 35 and 49): `tutorial --build`'s live lessons run by the Python in the page,
and every lesson under `lucidlm tutorial`.

Measured on the built site (all lessons), served locally, in headless Chromium:
- the time `--build` takes (every lesson run once; the runtime's preparation is cached);
- the page weight, compressed as a static host sends it (text gzipped; python.wasm.gz and the zips as they
  are), to read a lesson and then on the first Run;
- the time from pressing Run on a fresh page to the first cell's output (the download from localhost, the
  interpreter's compilation and start, NumPy's import and the cell), median of 3;
- each live lesson's cells run in the page (Run all on a started interpreter, its exercises written with the
  lesson's own solutions), against the same cells in CPython on this machine (one process, the lesson run as
  a script with its start-up left out);
- each exercise's Check in the page, on the lesson's solution (the interpreter started);
- every lesson's Run all under `lucidlm tutorial` with its default limits (a kernel per page), from the click
  to the last cell's end, the kernel's start included.

    python benchmarks/course_in_browser.py      (about 5 minutes on 2 cores)
"""

from __future__ import annotations

import gzip
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import CHROMIUM, CHROMIUM_FLAGS, WORK, machine, machine_line, serving, write_results

from lucidlm.exercises import exercises_of
from lucidlm.exercises.capstone import CAPSTONE_LESSON
from lucidlm.serve import BackgroundServer
from lucidlm.tutorial.kernel import KernelLimits
from lucidlm.tutorial.lessons import find_lesson, lesson_files, lesson_number, lesson_title, solved_cells, solved_edits
from lucidlm.tutorial.runtime import DOWNLOADED
from lucidlm.tutorial.server import create_tutorial_app
from lucidlm.tutorial.site import build_tutorial_site

ROUNDS = 3
# A lesson run as a script in CPython, timed from its first line to its last (start-up and NumPy's import left
# out, as in the page, where the interpreter has started and imported NumPy before).
TIMED = "import numpy, runpy, sys, time; t = time.perf_counter(); runpy.run_path(sys.argv[1], run_name='__main__'); " \
        "print('seconds', time.perf_counter() - t)"  # fmt: skip


def sent_bytes(path: Path) -> int:
    """What a static host sends for `path`: text gzipped, files that are compressed already as they are."""
    data = path.read_bytes()
    return len(data) if path.suffix in (".gz", ".zip", ".png") else len(gzip.compress(data, compresslevel=6))


def cpython_seconds(number: int, scratch: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", TIMED, str(find_lesson(number))], capture_output=True, text=True, check=True, cwd=scratch
    )
    return float(done.stdout.rsplit("seconds", 1)[1])


def main() -> None:
    from playwright.sync_api import sync_playwright

    lessons = [lesson_number(path) for path in lesson_files()]
    started = time.perf_counter()
    site = build_tutorial_site(WORK / "course-site", None, force=(WORK / "course-site").exists(), progress=False)
    build_s = time.perf_counter() - started
    reading = [site / "lessons" / "01.html", site / "style.css", site / "course.js", site / "editor" / "codemirror.js"]
    first_run = [site / "runtime" / name for name in DOWNLOADED]
    first_run += [site / "runtime" / name for name in ("python.js", "python-worker.js", "mpl-data.json")]
    first_run += sorted(path for path in (site / "runtime" / "mpl-data").rglob("*") if path.is_file())
    first_run += sorted((site / "runtime" / "shim").glob("*.js"))
    weight = {"reading": sum(map(sent_bytes, reading)), "first_run": sum(map(sent_bytes, first_run))}
    first_output, browser_seconds, check_seconds = [], {}, {}
    with serving(site) as origin, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        for _ in range(ROUNDS):
            context = browser.new_context()  # an empty HTTP cache: the whole download each time
            page = context.new_page()
            page.goto(f"{origin}/lessons/01.html")
            page.wait_for_selector("body[data-course=ready]", state="attached")
            started = time.perf_counter()
            page.click(".code-cell button.run")
            page.wait_for_function("document.querySelector('.code-cell .live').textContent.length > 0", timeout=120_000)
            first_output.append(time.perf_counter() - started)
            context.close()
        page = browser.new_page()
        for number in lessons:
            page.goto(f"{origin}/lessons/{number:02d}.html")
            page.wait_for_selector("body[data-course=ready]", state="attached")
            page.evaluate("window.course.python.run('import numpy')")  # the interpreter started, NumPy loaded
            write_the_exercises(page, find_lesson(number))
            for exercise in exercises_of(number):
                report = page.evaluate(f"window.course.check({exercise.key!r})")
                assert report["passed"], report
                check_seconds[exercise.key] = report["seconds"]
            page.evaluate("window.course.runAll()")
            states = page.evaluate("[...document.querySelectorAll('.code-cell')].map((c) => c.dataset.state)")
            assert set(states) == {"ok"}, (number, states)
            cells = page.evaluate("[...document.querySelectorAll('.code-cell')].map((c) => +c.dataset.seconds)")
            browser_seconds[number] = sum(cells)
        version = browser.version
        tutorial_seconds = run_all_under_the_tutorial(browser, lessons)
        browser.close()
    scratch = WORK / "course-cpython"
    scratch.mkdir(parents=True, exist_ok=True)
    cpython = {number: cpython_seconds(number, scratch) for number in lessons}
    results = {
        "machine": machine(),
        "chromium": version,
        "bytes_sent": weight,
        "build_s": round(build_s, 1),
        "first_output_s": [round(s, 2) for s in first_output],
        "check_s": {key: round(seconds, 3) for key, seconds in check_seconds.items()},
        "lessons": {
            n: {
                "browser_s": round(browser_seconds[n], 3),
                "cpython_s": round(cpython[n], 3),
                "tutorial_s": round(tutorial_seconds[n], 2),
            }
            for n in lessons
        },
    }
    rows = [
        f"| {n}. {lesson_title(find_lesson(n))} | {browser_seconds[n]:.2f} s | {cpython[n]:.2f} s | "
        f"{browser_seconds[n] / cpython[n]:.1f}x | {tutorial_seconds[n]:.1f} s |"
        for n in lessons
    ]
    total_browser, total_cpython = sum(browser_seconds.values()), sum(cpython.values())
    table = "\n".join(
        [
            "## The course in the browser (`benchmarks/course_in_browser.py`)",
            "",
            f"The {len(lessons)} lessons of `lucidlm tutorial --build`, every one live, served locally, in "
            f"headless Chromium {version}; CPython {sys.version.split()[0]} on the same machine for comparison; "
            "and every lesson's Run all under `lucidlm tutorial` (default limits, a kernel per page, its start "
            "included). " + machine_line(),
            "",
            "| | |",
            "|---|---:|",
            f"| to read a lesson (page, style, course.js, the editor), compressed | {weight['reading'] / 1e6:.2f} MB |",
            f"| added by the first Run (the interpreter, its library, lucidlm, the worker) | "
            f"{weight['first_run'] / 1e6:.1f} MB |",
            f"| from Run on a fresh page to the first cell's output (median of {ROUNDS}) | "
            f"{statistics.median(first_output):.1f} s |",
            f"| an exercise's Check in the page, the slowest of {len(check_seconds)} (on the lesson's solution) | "
            f"{max(check_seconds.values()):.2f} s ({max(check_seconds, key=check_seconds.get)}) |",
            f"| `lucidlm tutorial --build` of all {len(lessons)} lessons (`make site`; the runtime's preparation "
            f"cached) | {build_s:.0f} s |",
            "",
            "| lesson | Run all in the page | CPython | ratio | Run all under `lucidlm tutorial` |",
            "|---|---:|---:|---:|---:|",
            *rows,
            f"| all | {total_browser:.1f} s | {total_cpython:.1f} s | {total_browser / total_cpython:.1f}x | "
            f"{sum(tutorial_seconds.values()):.0f} s |",
        ]
    )
    write_results("course_in_browser", results, table)


def write_the_exercises(page, path: Path) -> None:
    """The lesson's own solutions in its exercise cells, as a learner who solved them has them; for the capstone,
    in every lesson's, as the browser keeps them."""
    for index, text in solved_cells(path).items():
        page.evaluate("([i, text]) => window.course.cells[i].setSource(text)", [index, text])
    if lesson_number(path) == CAPSTONE_LESSON:
        page.evaluate(
            "(edits) => Object.entries(edits).forEach(([k, v]) => localStorage.setItem(k, v))", solved_edits()
        )


def run_all_under_the_tutorial(browser, numbers: list[int]) -> dict[int, float]:
    """Each lesson's Run all in `lucidlm tutorial` with its default limits: the seconds from the click to the
    end; every cell must end ok."""
    token, seconds = "benchmark-token", {}
    with BackgroundServer(create_tutorial_app(token, KernelLimits())) as url:
        page = browser.new_page()
        page.goto(f"{url}/?token={token}")
        for number in numbers:
            page.goto(f"{url}/lessons/{number:02d}.html")
            page.wait_for_selector("body[data-course=ready]", state="attached")
            write_the_exercises(page, find_lesson(number))
            started = time.perf_counter()
            page.click(".course-bar .run-all")
            page.wait_for_function("document.body.dataset.running === 'false'", timeout=600_000)
            seconds[number] = time.perf_counter() - started
            states = page.evaluate("[...document.querySelectorAll('.code-cell')].map((c) => c.dataset.state)")
            assert set(states) == {"ok"}, (number, states, page.locator(".python-status").inner_text())
        page.close()
    return seconds


if __name__ == "__main__":
    main()
