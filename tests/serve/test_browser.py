"""The pages in a real browser: Playwright driving Debian's chromium (installed by .ci/run when missing).

Screenshots are saved in test-artifacts/ for a person to look at.
"""

import re
import time

from lucidlm.serve import BackgroundServer
from lucidlm.serve.server import bind
from lucidlm.tutorial import sandbox
from lucidlm.tutorial.kernel import KernelLimits
from lucidlm.tutorial.lessons import find_lesson, solved_cells
from lucidlm.tutorial.server import create_tutorial_app

from ..conftest import ARTIFACTS, require_chromium

require_chromium()


def test_the_inspector_streams_tokens_shows_candidates_and_draws_attention(browser, server):
    url, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('model-name').textContent.includes('parameters')")
    page.fill("#prompt", "Hello")
    for slider, value in (("#max-tokens", "20"), ("#temperature", "0")):  # greedy: the chosen token is a candidate
        page.eval_on_selector(slider, f"el => {{ el.value = '{value}'; el.dispatchEvent(new Event('input')); }}")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#output .token').length === 20")
    page.wait_for_function("document.getElementById('heatmap').dataset.drawn === '25'")  # 5 prompt + 20 tokens
    shades = page.eval_on_selector_all("#output .token", "spans => spans.map(s => s.style.background)")
    assert all(shade.startswith("rgb") for shade in shades)
    page.click("#output .token >> nth=0")
    bars = page.locator("#candidates .bar-row")
    assert bars.count() == 5
    assert page.locator("#candidates .bar-row").first.get_attribute("class") == "bar-row chosen"
    assert page.locator("#config").inner_text().count("n_layer") == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "inspector.png"), full_page=True)
    page.close()


def test_the_tutorial_lists_lessons_and_runs_an_edited_cell(browser):
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    app = create_tutorial_app("browser-token", KernelLimits(seconds=30))
    with BackgroundServer(app, port=port) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/?token=browser-token")
        assert page.locator(".lesson-index a").count() == 28
        page.click("text=the dot product")
        page.wait_for_selector("body[data-course=ready]", state="attached")
        page.evaluate(
            "(text) => window.course.cells[0].setSource(window.course.cells[0].source() + text)",
            "\nprint('edited:', 6 * 7)\nimport sys; print('a warning', file=sys.stderr)",
        )
        page.locator(".code-cell .run").first.click()
        page.wait_for_function("document.querySelector('.code-cell').dataset.state === 'ok'", timeout=60_000)
        result = page.locator(".code-cell .live").first
        assert "edited: 42" in result.inner_text()
        assert "a warning" in result.inner_text()  # stderr is shown when the cell succeeded too (issue 18)
        for index, text in solved_cells(find_lesson(1)).items():  # the exercise (cosine), written
            page.evaluate("([i, text]) => window.course.cells[i].setSource(text)", [index, text])
        page.locator(".code-cell .run").nth(1).click()  # runs with the first cell's variables, as edited
        page.wait_for_function("document.querySelectorAll('.code-cell')[1].dataset.state === 'ok'", timeout=60_000)
        assert "cos(cat, dog" in page.locator(".code-cell .live").nth(1).inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "tutorial.png"), full_page=False)
        page.evaluate("window.course.cells[0].setSource('while True:\\n    pass')")
        page.locator(".code-cell .run").first.click()
        time.sleep(1.0)
        assert sandbox.RUNNING_CELLS  # the endless cell runs on this machine
        page.click(".course-bar .stop")
        deadline = time.monotonic() + 3
        while sandbox.RUNNING_CELLS and time.monotonic() < deadline:  # Stop ends the cell's process too
            time.sleep(0.05)
        assert not sandbox.RUNNING_CELLS
        assert page.locator(".code-cell").first.get_attribute("data-state") == "stopped"
        rendered = {}
        for number in range(1, 29):  # every lesson's maths is laid out by the browser, none left as LaTeX
            page.goto(f"{url}/lessons/{number:02d}.html")
            text = "\n".join(page.locator("article .explanation").all_inner_texts())
            assert f"Lesson {number}:" in text
            assert not re.search(r"\\(frac|sum|lVert|sqrt|mathbb|cdot)|\$", text), (number, text[:300])
            rendered[number] = page.locator("article .explanation math").count()
        assert rendered[1] == 4 and sum(rendered.values()) > 150, rendered
        page.goto(f"{url}/lessons/01.html")
        width = page.evaluate("document.querySelector('article math').getBoundingClientRect().width")
        assert width > 0  # MathML that the browser lays out, not an unknown element
        page.close()
