"""The course in the browser (issue 35): `tutorial --build`'s live lessons run by the Python in the page.

Measured on a site of the live lessons, served locally, in headless Chromium:
- the page weight, compressed as a static host sends it (text gzipped; python.wasm.gz and the zips as they
  are), to read a lesson and then on the first Run;
- the time from pressing Run on a fresh page to the first cell's output (the download from localhost, the
  interpreter's compilation and start, NumPy's import and the cell), median of 3;
- each live lesson's cells run in the page (Run all on a started interpreter), against the same cells in
  CPython on this machine (one process, the lesson run as a script with its start-up left out).

    python benchmarks/course_in_browser.py      (about 2 minutes on 2 cores)
"""

from __future__ import annotations

import gzip
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import CHROMIUM, CHROMIUM_FLAGS, WORK, machine, machine_line, serving, write_results

from lucidlm.tutorial.lessons import LIVE_LESSONS, find_lesson, lesson_title
from lucidlm.tutorial.runtime import DOWNLOADED
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

    lessons = sorted(LIVE_LESSONS)
    site = build_tutorial_site(WORK / "course-site", lessons, force=(WORK / "course-site").exists(), progress=False)
    reading = [site / "lessons" / "01.html", site / "style.css", site / "course.js", site / "editor" / "codemirror.js"]
    first_run = [site / "runtime" / name for name in DOWNLOADED]
    first_run += [site / "runtime" / name for name in ("python.js", "python-worker.js")]
    first_run += sorted((site / "runtime" / "shim").glob("*.js"))
    weight = {"reading": sum(map(sent_bytes, reading)), "first_run": sum(map(sent_bytes, first_run))}
    first_output, browser_seconds = [], {}
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
            page.evaluate("window.course.runAll()")
            states = page.evaluate("[...document.querySelectorAll('.code-cell')].map((c) => c.dataset.state)")
            assert set(states) == {"ok"}, (number, states)
            cells = page.evaluate("[...document.querySelectorAll('.code-cell')].map((c) => +c.dataset.seconds)")
            browser_seconds[number] = sum(cells)
        version = browser.version
        browser.close()
    scratch = WORK / "course-cpython"
    scratch.mkdir(parents=True, exist_ok=True)
    cpython = {number: cpython_seconds(number, scratch) for number in lessons}
    results = {
        "machine": machine(),
        "chromium": version,
        "bytes_sent": weight,
        "first_output_s": [round(s, 2) for s in first_output],
        "lessons": {n: {"browser_s": round(browser_seconds[n], 3), "cpython_s": round(cpython[n], 3)} for n in lessons},
    }
    rows = [
        f"| {n}. {lesson_title(find_lesson(n))} | {browser_seconds[n]:.2f} s | {cpython[n]:.2f} s | "
        f"{browser_seconds[n] / cpython[n]:.1f}x |"
        for n in lessons
    ]
    total_browser, total_cpython = sum(browser_seconds.values()), sum(cpython.values())
    table = "\n".join(
        [
            "## The course in the browser (`benchmarks/course_in_browser.py`)",
            "",
            f"The {len(lessons)} live lessons of `lucidlm tutorial --build`, served locally, in headless Chromium "
            f"{version}; CPython {sys.version.split()[0]} on the same machine for comparison. " + machine_line(),
            "",
            "| | |",
            "|---|---:|",
            f"| to read a lesson (page, style, course.js, the editor), compressed | {weight['reading'] / 1e6:.2f} MB |",
            f"| added by the first Run (the interpreter, its library, lucidlm, the worker) | "
            f"{weight['first_run'] / 1e6:.1f} MB |",
            f"| from Run on a fresh page to the first cell's output (median of {ROUNDS}) | "
            f"{statistics.median(first_output):.1f} s |",
            "",
            "| lesson | in the page | CPython | ratio |",
            "|---|---:|---:|---:|",
            *rows,
            f"| all {len(lessons)} | {total_browser:.1f} s | {total_cpython:.1f} s | "
            f"{total_browser / total_cpython:.1f}x |",
        ]
    )
    write_results("course_in_browser", results, table)


if __name__ == "__main__":
    main()
