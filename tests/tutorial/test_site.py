"""`lucidlm tutorial --build`: the lessons as static pages, with maths, code, output and figures."""

import json
import re
from pathlib import Path

import pytest

from lucidlm.train import train
from lucidlm.tutorial.site import build_tutorial_site, run_lesson_cells

from ..conftest import ARTIFACTS, run_lucidlm, tiny_config
from ..web.conftest import serving

RAW_LATEX = re.compile(r"\\(frac|sum|lVert|sqrt|mathbb|cdot)|\$")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Lesson 1 (maths, printed output) and lesson 17 (a figure)."""
    return build_tutorial_site(tmp_path_factory.mktemp("built") / "site", [1, 17], progress=False)


def test_the_site_holds_the_lessons_the_faq_and_an_index(site):
    assert sorted(p.name for p in site.iterdir()) == [
        "course.js", "editor", "faq.html", "index.html", "lessons", "lucidlm-site.json", "runtime", "style.css",
    ]  # fmt: skip
    assert sorted(p.name for p in (site / "lessons").iterdir()) == ["01.html", "17-lesson17_loss.png", "17.html"]
    assert json.loads((site / "lucidlm-site.json").read_text())["failed"] == []
    index = (site / "index.html").read_text()
    assert '<a href="lessons/01.html">the dot product</a>' in index and 'href="faq.html"' in index
    assert "<math" in (site / "faq.html").read_text()


def test_a_lesson_page_shows_each_cell_with_its_output_and_its_figure(site):
    page = (site / "lessons" / "01.html").read_text()
    assert page.count("<math") == 4 and 'display="block"' in page
    code = page.index("<code>import numpy as np")
    output = page.index('<pre class="result">pairs:    [(1.0, 4.0), (2.0, -5.0), (3.0, 6.0)]\nproducts: [4.0, -10.0')
    assert code < output < page.index("Similarity of word vectors")  # the output sits under its own cell
    assert "&#34;cat&#34;" in page  # code is escaped, not run by the browser
    loss = (site / "lessons" / "17.html").read_text()
    assert loss.count('<img src="17-lesson17_loss.png"') == 1
    assert (site / "lessons" / "17-lesson17_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failing_cell_shows_its_error_and_the_cells_after_it_stay_empty(tmp_path):
    lesson = tmp_path / "99_broken.py"
    lesson.write_text(
        "# %% [markdown]\n# # Lesson 99: broken\n\n# %%\nprint('first')\n"
        "import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.savefig('a.png')\n\n"
        "# %%\nprint('second')\nraise ValueError('the claim does not hold')\n\n# %%\nprint('never')\n"
    )
    images = tmp_path / "images"
    images.mkdir()
    cells, status = run_lesson_cells(lesson, images, "99", seconds=60)
    assert status == "it failed"
    assert [(c.stdout, c.images) for c in cells] == [("first", ["99-a.png"]), ("second", []), ("", [])]
    assert cells[1].stderr.endswith("ValueError: the claim does not hold") and 'File "lesson"' in cells[1].stderr
    assert cells[0].stderr == cells[2].stderr == ""


def test_the_command_refuses_a_folder_it_did_not_write_and_an_unknown_lesson(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    refused = run_lucidlm("tutorial", "--build", tmp_path / "mine", "--force")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "is not empty and is not a tutorial site lucidlm wrote; choose a new or empty --build" in refused.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    unknown = run_lucidlm("tutorial", "--build", tmp_path / "site", "--lessons", "2", "99")
    assert unknown.returncode == 2 and "there is no lesson 99; the lessons are 1 to 28" in unknown.stderr
    assert not (tmp_path / "site").exists()


def test_the_pages_render_their_maths_offline_in_chromium(site, browser):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    requested, errors = [], []
    page.route("**/*", lambda route: (requested.append(route.request.url), route.continue_()))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto((site / "index.html").as_uri())
    page.click("text=the dot product")
    page.wait_for_selector("text=Similarity of word vectors")
    assert not RAW_LATEX.search(page.locator("article").inner_text())
    assert page.evaluate("document.querySelector('math[display=block]').getBoundingClientRect().height") > 20
    assert "python -m http.server" in page.locator(".python-status").inner_text()  # to run it, serve it
    assert all(url.startswith("file://") for url in requested), requested
    page.goto((site / "lessons" / "17.html").as_uri())
    assert page.evaluate("document.querySelector('img').naturalWidth") > 100
    page.goto((site / "faq.html").as_uri())
    assert page.locator("math").count() > 40 and not RAW_LATEX.search(page.locator("article").inner_text())
    assert errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto((site / "lessons" / "01.html").as_uri())
    page.screenshot(path=str(ARTIFACTS / "tutorial-site.png"), full_page=False)
    page.close()


def test_the_site_built_with_a_checkpoint_holds_its_models_page(tmp_path, data_dir, browser):
    """`tutorial --build --checkpoint RUN`: the run's page as model/, linked from the index; `export --format
    web` writes the same page on its own."""
    vocab_size = json.loads((data_dir / "meta.json").read_text())["vocab_size"]
    train(data_dir, tmp_path / "run", tiny_config(vocab_size, max_steps=2), progress=False)
    built = run_lucidlm("tutorial", "--build", tmp_path / "site", "--lessons", "4", "--checkpoint", tmp_path / "run")
    assert built.returncode == 0, built.stderr
    site = tmp_path / "site"
    assert '<a href="model/index.html">' in (site / "index.html").read_text()
    assert sorted(p.name for p in (site / "model").iterdir()) == [
        "explain.js", "gpt.js", "index.html", "lensview.js", "model.json", "style.css", "tokenizer.js", "weights.bin",
    ]  # fmt: skip
    exported = run_lucidlm("export", "--checkpoint", tmp_path / "run", "--format", "web", "--out", tmp_path / "web")
    assert exported.returncode == 0 and "python -m http.server -d" in exported.stdout, exported.stderr
    assert (tmp_path / "web" / "weights.bin").read_bytes() == (site / "model" / "weights.bin").read_bytes()
    assert json.loads((site / "model" / "model.json").read_text())["lessons"] == "../lessons/"
    assert json.loads((tmp_path / "web" / "model.json").read_text())["lessons"] is None
    # the exported page decodes greedily what `lucidlm generate --temperature 0` prints
    generated = run_lucidlm(
        "generate", "--checkpoint", tmp_path / "run", "--prompt", "First", "--temperature", "0",
        "--max-new-tokens", "60", "--no-stream",
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    with serving(site) as origin:
        page = browser.new_page()
        page.goto(f"{origin}/model/index.html")
        page.wait_for_selector("body[data-ready=true]")
        text = page.evaluate("window.lucidlm.generate('First', {maxNewTokens: 60, temperature: 0}).text")
        assert "First" + text == generated.stdout.removesuffix("\n")
        assert page.locator("a[href='../lessons/04.html']").count() == 0  # no text on screen yet
        page.fill("#prompt", "First")
        page.click("#generate")
        page.click("a[href='../lessons/04.html']")  # the explainer links to the lessons of the site
        page.wait_for_selector("text=Lesson 4: tokens and embeddings")
        page.close()
