"""`lucidlm serve`'s explainer: /api/explain (explain.py's numbers) and the page at /explain/ that draws them."""

import httpx

from lucidlm.explain import explain

from ..conftest import ARTIFACTS


def test_the_api_explains_a_position_as_explain_py_does(server, model, tokenizer):
    url, _ = server
    answer = httpx.post(f"{url}/api/explain", json={"text": "Hello there", "position": 3, "layer": 1, "head": 1})
    assert answer.status_code == 200
    ids = tokenizer.encode("Hello there")
    expected = explain(model, ids, 3, 1, 1)
    view = answer.json()
    assert view["ids"] == ids and view["texts"] == list("Hello there") and view["position"] == 3
    assert view["heatmap"] == expected["heatmap"] and view["logits"] == expected["logits"]
    last = httpx.post(f"{url}/api/explain", json={"ids": ids}).json()
    assert last["position"] == len(ids) - 1
    # a text longer than the window: its last block_size tokens, as the model reads them
    long = httpx.post(f"{url}/api/explain", json={"text": "abcdefghij" * 20, "position": -1})
    assert long.status_code == 200, long.text
    assert long.json()["ids"] == tokenizer.encode("abcdefghij" * 20)[-32:] and long.json()["position"] == 31


def test_bad_explain_requests_are_400s_that_name_the_field(server):
    url, _ = server
    cases = [
        ({}, "text", "give the text or its ids, one of the two"),
        ({"text": "ab", "ids": [1]}, "text", "give the text or its ids"),
        ({"ids": [1, 999]}, "ids", "ids must lie in [0, "),
        ({"text": "abc", "position": 3}, "position", "position 3 is outside the text's 3 tokens"),
        ({"text": "abc", "head": 9}, "layer", "there is no head 9 in layer 0"),
    ]
    for body, param, message in cases:
        answer = httpx.post(f"{url}/api/explain", json=body)
        error = answer.json()["error"]
        assert answer.status_code == 400 and error["param"] == param and message in error["message"], body
    assert httpx.get(f"{url}/explain/weights.bin").status_code == 404
    manifest = httpx.get(f"{url}/explain/model.json").json()
    assert manifest["source"] == "api" and manifest["config"]["n_layer"] == 2


def test_the_explainer_page_draws_the_servers_numbers(server, browser, model, tokenizer):
    url, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/")
    page.click("text=The forward pass, step by step")
    page.wait_for_selector("body[data-ready]")
    assert page.evaluate("document.body.dataset.ready") == "true", page.inner_text("#model-name")
    page.fill("#prompt", "Hello")
    page.locator("#temperature").fill("0")
    page.locator("#max-tokens").fill("5")
    page.click("#generate")
    page.wait_for_selector("#steps .step canvas")
    text = page.locator("#output").inner_text()
    assert text.startswith("Hello") and len(text) == 10
    page.locator("#tokens .token").nth(2).click()
    page.wait_for_selector("#steps h3:has-text('Token 2:')")
    logits = explain(model, tokenizer.encode(text), 2)["logits"]
    best = max(range(len(logits)), key=logits.__getitem__)
    first = page.locator("#steps .step:has(h3:text-is('Logits')) .bar-row").first
    assert first.locator("span").inner_text() == f"{logits[best]:.3f}"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "explainer-served.png"), full_page=False)
    page.close()


def test_a_token_whose_text_is_html_is_shown_as_text_and_runs_nothing(tmp_path, browser):
    """A Hub tokenizer's added token (or a hand-edited one) whose text is HTML reaches the page as text (issue 47)."""
    import torch

    from lucidlm.model import GPT, GPTConfig
    from lucidlm.serve import BackgroundServer, Engine, ServerSettings, create_app
    from lucidlm.tokenizers import load_tokenizer
    from tests.interop.test_hub import hub_tokenizer

    hostile = '<img src=x onerror="window.pwned = 1">'
    hub = hub_tokenizer("gpt2")
    hub.add_tokens([hostile])
    hub.save_pretrained(tmp_path)
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json")
    assert tokenizer.decode(tokenizer.encode(f"Hi {hostile}")[-1:]) == hostile  # one token
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    app = create_app(model, tokenizer, ServerSettings(model_id="m"), Engine(model, tokenizer))
    with BackgroundServer(app) as url:
        page = browser.new_page()
        page.goto(f"{url}/explain/")
        page.wait_for_selector("body[data-ready]")
        page.fill("#prompt", f"Hi {hostile}")
        page.locator("#max-tokens").fill("1")
        page.click("#generate")
        page.wait_for_selector("#steps .step canvas")
        position = len(tokenizer.encode(f"Hi {hostile}")) - 1
        page.locator("#tokens .token").nth(position).click()
        page.wait_for_selector(f"#steps h3:has-text('Token {position}:')")
        title = page.locator("#steps h3").first.inner_text()
        assert (
            title == f'Token {position}: "<img src=x onerror=\\"window.pwned = 1\\">" (id {tokenizer.vocab_size - 1})'
        )
        assert page.evaluate("window.pwned") is None and page.locator("img").count() == 0
        page.close()
