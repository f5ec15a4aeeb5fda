"""The inspector's lens view: /api/lens and /api/heads (lens.py's numbers) and the tables the page draws."""

import json

import httpx
import pytest
import torch

from lucidlm.lens import ablation, head_scores, logit_lens

from ..conftest import ARTIFACTS


def test_the_api_gives_lens_py_numbers_with_the_tokens_decoded(server, model, tokenizer):
    url, _ = server
    ids = tokenizer.encode("Hello there")
    lens = httpx.post(f"{url}/api/lens", json={"text": "Hello there", "top": 2}).json()
    expected = logit_lens(model, ids, 2)
    assert lens["tokens"] == list("Hello there") and lens["layers"] == ["embeddings", "layer 0", "layer 1"]
    assert lens["top_tokens"] == [
        [[tokenizer.decode([t]) for t in cell] for cell in row] for row in expected["top_tokens"]
    ]
    assert lens["kl_to_output"] == pytest.approx(expected["kl_to_output"], abs=1e-6)
    assert lens["prediction_rank"][-1] == [0] * len(ids)  # the last reading is the output
    heads = httpx.post(f"{url}/api/heads", json={"text": "Hello there"}).json()
    close(heads["induction"], head_scores(model)["induction"])
    close(heads["ablation"]["heads"], ablation(model, ids)["heads"])


def close(ours: list, expected: list) -> None:
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(expected), rtol=0, atol=1e-6)


def test_bad_lens_requests_are_400s_that_name_the_field(server):
    url, _ = server
    cases = [
        ("/api/lens", {"text": ""}, "text", "text must not be empty"),
        ("/api/lens", {"text": "abc", "top": 0}, "top", "top must lie in 1..10, not 0"),
        ("/api/heads", {"text": "a"}, "text", "give a text of at least 2 tokens"),
    ]
    for path, body, param, message in cases:
        answer = httpx.post(url + path, json=body)
        error = answer.json()["error"]
        assert answer.status_code == 400 and error["param"] == param and message in error["message"], body


@pytest.mark.parametrize("path", ["/", "/explain/"], ids=["inspector", "explainer"])
def test_the_pages_draw_the_lens_and_the_heads(server, browser, model, tokenizer, path):
    """The inspector, and the page `export --format web` writes as the server shows it at /explain/, draw the
    lens view from /api/lens and /api/heads (lens.py's numbers) with the same tables (lensview.js)."""
    url, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(url + path)
    page.wait_for_function("document.getElementById('model-name').textContent.includes('parameters')")
    page.fill("#prompt", "Hello there")
    page.click("#refresh-lens")
    page.wait_for_function("document.getElementById('lens').dataset.drawn === '3'")
    page.click("#refresh-heads")
    page.wait_for_function("document.getElementById('ablation').dataset.drawn === '2'")
    expected = logit_lens(model, tokenizer.encode("Hello there"), 3)
    rows = page.locator("#lens tbody tr")
    assert rows.count() == 3
    for layer in range(3):
        cells = rows.nth(layer).locator("td")
        assert cells.count() == len("Hello there") + 1  # a column a token, then the KL
        for position in (0, 5, 10):  # the title lists the top tokens and their probabilities
            top = tokenizer.decode([expected["top_tokens"][layer][position][0]])
            probability = expected["top_probabilities"][layer][position][0]
            title = cells.nth(position).get_attribute("title")
            assert title.splitlines()[0] == f"{json.dumps(top, ensure_ascii=False)} {probability:.3f}"
        assert cells.nth(len("Hello there")).inner_text() == f"{expected['kl_to_output'][layer]:.3f}"
    scores = head_scores(model)["induction"]
    shown = page.locator("#induction tbody tr").nth(1).locator("td").nth(1).inner_text()
    assert shown == f"{scores[1][1]:.3f}"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"lens-view-{path.strip('/') or 'inspector'}.png"), full_page=True)
    page.close()
