"""The OpenAI-compatible API, through the official `openai` client against a live server."""

import asyncio
import json

import httpx
import openai
import pytest
import torch

from lucidlm.decode import SamplingConfig
from lucidlm.generate import generate_ids


@pytest.fixture
def client(server):
    url, _ = server
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def solo(model, tokenizer, prompt, max_tokens, temperature=0.0, seed=None) -> str:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    ids = generate_ids(model, tokenizer.encode(prompt), max_tokens, SamplingConfig(temperature), generator)
    return tokenizer.decode(list(ids))


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").owned_by == "lucidlm"


def test_completion_is_the_models_greedy_text(client, model, tokenizer):
    result = client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=0)
    assert result.object == "text_completion"
    assert result.choices[0].text == solo(model, tokenizer, "Hello", 12)
    assert result.choices[0].finish_reason == "length"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (5, 12, 17)


def test_prompt_list_and_n_give_every_choice_with_seeds(client, model, tokenizer):
    result = client.completions.create(model="tiny", prompt=["Hello", "abc"], max_tokens=8, n=2, seed=7, temperature=1)
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    for choice in result.choices:
        prompt, j = ["Hello", "abc"][choice.index // 2], choice.index % 2
        assert choice.text == solo(model, tokenizer, prompt, 8, temperature=1.0, seed=7 + j)
    assert result.choices[0].text != result.choices[1].text


def test_stop_string_ends_the_text(client, model, tokenizer):
    full = solo(model, tokenizer, "Hello", 20)
    stop = full[6:8]
    result = client.completions.create(model="tiny", prompt="Hello", max_tokens=20, temperature=0, stop=[stop])
    assert result.choices[0].text == full[: full.index(stop)]
    assert result.choices[0].finish_reason == "stop"


def test_completion_logprobs_match_the_model(client, model, tokenizer):
    result = client.completions.create(model="tiny", prompt="Hello", max_tokens=3, temperature=0, logprobs=3)
    logprobs = result.choices[0].logprobs
    with torch.no_grad():
        expected = model(torch.tensor([tokenizer.encode("Hello")]))[0][0, -1].log_softmax(-1)
    top = torch.topk(expected, 3)
    assert logprobs.tokens[0] == tokenizer.decode([int(top.indices[0])])
    assert logprobs.token_logprobs[0] == pytest.approx(float(top.values[0]), abs=1e-5)
    assert list(logprobs.top_logprobs[0].values()) == pytest.approx(top.values.tolist(), abs=1e-5)
    assert logprobs.text_offset == [0, 1, 2]


def test_streaming_completion_pieces_join_to_the_text(client, model, tokenizer):
    stream = client.completions.create(model="tiny", prompt="Hello", max_tokens=10, temperature=0, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == solo(model, tokenizer, "Hello", 10)
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"


def test_chat_uses_the_documented_template(client, model, tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    result = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    expected = solo(model, tokenizer, "System: Be brief.\nUser: Hi\nAssistant:", 10)
    expected = expected.split("\nUser:")[0]
    assert result.object == "chat.completion"
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].message.content == expected
    assert result.usage.prompt_tokens == len("System: Be brief.\nUser: Hi\nAssistant:")


def test_chat_streams_with_logprobs_and_usage(client):
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=6,
        temperature=0,
        stream=True,
        logprobs=True,
        top_logprobs=2,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c for c in chunks if c.choices]
    assert len(pieces) == 6 and pieces[-1].choices[0].finish_reason == "length"
    assert all(len(c.choices[0].logprobs.content[0].top_logprobs) == 2 for c in pieces)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


@pytest.mark.parametrize(
    ("request_fields", "error", "fragment"),
    [
        (dict(model="gpt-4"), openai.NotFoundError, "the model `gpt-4` does not exist"),
        (dict(temperature=3), openai.BadRequestError, "temperature must lie in [0, 2]"),
        (dict(max_tokens=0), openai.BadRequestError, "max_tokens must lie in 1..200"),
        (dict(max_tokens=10_000), openai.BadRequestError, "max_tokens must lie in 1..200"),
        (dict(top_p=0), openai.BadRequestError, "top_p must lie in (0, 1]"),
        (dict(n=100), openai.BadRequestError, "n must lie in 1..16"),
        (dict(prompt="price: €"), openai.BadRequestError, "vocabulary lacks: '€'"),
        (dict(frequency_penalty=1.0), openai.BadRequestError, "frequency_penalty is not supported"),
        (dict(logprobs=9), openai.BadRequestError, "logprobs must lie in 0..5"),
        (dict(prompt=12), openai.UnprocessableEntityError, "prompt"),
    ],
)
def test_bad_requests_raise_the_clients_typed_errors(client, request_fields, error, fragment):
    fields = {**dict(model="tiny", prompt="Hello", max_tokens=5), **request_fields}
    with pytest.raises(error) as raised:
        client.completions.create(**fields)
    assert fragment in raised.value.body["message"]
    assert raised.value.body["type"]


def test_raw_http_errors_use_openais_error_object(server):
    url, _ = server
    bad_json = httpx.post(f"{url}/v1/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
    too_big = httpx.post(f"{url}/v1/completions", content=b"x" * 200_000)
    assert too_big.status_code == 413 and "100000 bytes" in too_big.json()["error"]["message"]
    missing = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny"})
    assert missing.status_code == 422 and missing.json()["error"]["param"] == "messages"
    assert httpx.get(f"{url}/v1/nothing").status_code == 404
    assert httpx.get(f"{url}/static/../api.py").status_code == 404
    assert httpx.get(f"{url}/static/%2e%2e/api.py").status_code == 404


def test_a_full_queue_answers_429(model, tokenizer):
    from lucidlm.serve import BackgroundServer, Engine, ServerSettings, create_app

    engine = Engine(model, tokenizer, max_batch=1, max_waiting=0)
    app = create_app(model, tokenizer, ServerSettings(model_id="tiny"), engine)
    with BackgroundServer(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.RateLimitError, match="the server is busy"):
            client.completions.create(model="tiny", prompt="Hello", max_tokens=5, n=2)


def test_sixteen_concurrent_streams_equal_their_solo_runs(server, model, tokenizer):
    """16 clients at once, each with its own seed: every text equals the one decoded alone, and the engine
    decoded them in shared steps (far fewer steps than 16 requests one after another)."""
    url, engine = server
    prompts = [f"Client {chr(65 + i)}: hello" for i in range(16)]

    async def one(client: openai.AsyncOpenAI, i: int) -> str:
        stream = await client.completions.create(
            model="tiny", prompt=prompts[i], max_tokens=24, temperature=1.0, seed=100 + i, stream=True
        )
        return "".join([chunk.choices[0].text async for chunk in stream])

    async def all_clients() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        return await asyncio.gather(*(one(client, i) for i in range(16)))

    steps_before = engine.steps
    texts = asyncio.run(all_clients())
    for i, text in enumerate(texts):
        assert text == solo(model, tokenizer, prompts[i], 24, temperature=1.0, seed=100 + i)
    assert engine.steps - steps_before < 16 * 24 / 2


def test_a_client_that_disconnects_frees_its_row(server):
    url, engine = server
    with httpx.stream(
        "POST", f"{url}/v1/completions", json=dict(model="tiny", prompt="Hello", max_tokens=200, stream=True)
    ) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["object"] == "text_completion"
    for _ in range(500):  # the engine notices at its next step
        if engine.load() == (0, 0):
            break
        asyncio.run(asyncio.sleep(0.01))
    assert engine.load() == (0, 0)
