"""Issue 18, part 2: no request ends `lucidlm serve` for the others, and no web page drives it.

Each test here failed before its fix: a huge seed ended the engine's process (every later request 503), an
exception while decoding one request ended the engine, deep JSON and lone surrogates were 500s, echo and
response_format were silently ignored, a client that hung up kept its rows decoding, any Host and Origin
were answered."""

import json
import socket
import threading
import time

import httpx
import pytest

from lucidlm.decode import SamplingConfig
from lucidlm.serve import BackgroundServer, Engine, EngineProcess, Request, ServerSettings, create_app

BASE = {"model": "tiny", "prompt": "Hello", "max_tokens": 4}


def post(url: str, body, path: str = "/v1/completions", headers: dict | None = None) -> httpx.Response:
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    headers = {"content-type": "application/json", **(headers or {})}
    return httpx.post(f"{url}{path}", content=content, headers=headers, timeout=60)


@pytest.mark.parametrize("seed", [2**64 - 1, -(2**63), 2**63])
def test_any_64_bit_seed_is_served_and_the_engine_lives_on(process_server, seed):
    url, engine = process_server
    response = post(url, {**BASE, "seed": seed, "n": 2, "temperature": 1})
    assert response.status_code == 200, response.text
    assert engine.stopped is None
    assert post(url, BASE).status_code == 200


def test_a_seed_beyond_64_bits_is_a_400_naming_it(process_server):
    url, _ = process_server
    response = post(url, {**BASE, "seed": 2**64})
    assert response.status_code == 400 and response.json()["error"]["param"] == "seed"


def test_a_request_whose_decoding_raises_fails_alone_in_the_engine_process(model, tokenizer):
    """One request's sampling settings break inside the engine's process (top_k=-5 slipped past the checks):
    it ends with an error event, the 4 requests decoding beside it finish, and the next one is served."""
    engine = EngineProcess(model, tokenizer, max_batch=8, max_waiting=8)
    engine.start()
    try:
        done, events = threading.Semaphore(0), {}

        def submit(name: str, sampling: SamplingConfig) -> None:
            events[name] = []

            def record(event, name=name):
                events[name].append(event)
                if event.finish_reason is not None:
                    done.release()

            engine.submit(Request(tokenizer.encode("Hello"), 30, sampling, record, seed=1))

        broken = SamplingConfig(1.0)
        broken.top_k = -5  # past __post_init__'s check: torch.topk raises inside the engine
        for i in range(4):
            submit(f"ok{i}", SamplingConfig(1.0))
        submit("broken", broken)
        for _ in range(5):
            assert done.acquire(timeout=60)
        assert events["broken"][-1].finish_reason == "error"
        assert "decoding failed" in events["broken"][-1].error and not events["broken"][-1].engine_ended
        for i in range(4):
            assert events[f"ok{i}"][-1].finish_reason == "length"
            assert len([e for e in events[f"ok{i}"] if e.token is not None]) == 30
        submit("after", SamplingConfig(0.0))
        assert done.acquire(timeout=60)
        assert events["after"][-1].finish_reason == "length" and engine.stopped is None
    finally:
        engine.stop()


class FaultyEngine(Engine):
    """An engine whose report of any token of a prompt starting with "!" raises, as a bug would."""

    def _event(self, request):
        if self.tokenizer.decode(request.prompt[:1]) == "!":
            raise RuntimeError("injected fault")
        return super()._event(request)


def test_over_http_a_failing_request_is_a_500_while_4_streams_finish(model, tokenizer):
    engine = FaultyEngine(model, tokenizer, max_batch=8, max_waiting=8)
    app = create_app(model, tokenizer, ServerSettings(model_id="tiny", max_tokens=200), engine)
    with BackgroundServer(app) as url:
        results: dict[int, str] = {}

        def stream(i: int) -> None:
            with httpx.stream(
                "POST", f"{url}/v1/completions", json={**BASE, "max_tokens": 40, "stream": True}, timeout=60
            ) as response:
                results[i] = "".join(response.iter_lines())

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        failed = post(url, {**BASE, "prompt": "!boom"})
        for thread in threads:
            thread.join(timeout=60)
        assert failed.status_code == 500, failed.text
        assert (
            failed.json()["error"]["type"] == "server_error" and "injected fault" in failed.json()["error"]["message"]
        )
        for i in range(4):
            assert results[i].endswith("data: [DONE]") and '"finish_reason": "length"' in results[i]
        assert post(url, BASE).status_code == 200
        assert engine.load() == (0, 0)


@pytest.mark.parametrize(
    ("name", "body", "param"),
    [
        ("JSON nested 1,000 deep", '{"model": "tiny", "prompt": ' + "[" * 1000 + "]" * 1000 + "}", None),
        ("a lone surrogate in model", '{"model": "\\ud800", "prompt": "Hello"}', None),
        ("echo: true", {**BASE, "echo": True}, "echo"),
        ("best_of: 2", {**BASE, "best_of": 2}, "best_of"),
        ("response_format json", {**BASE, "response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_requests_the_server_cannot_honour_are_400s_that_say_so(server, name, body, param):
    url, _ = server
    response = post(url, body)
    assert response.status_code == 400, (name, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["param"] == param
    assert post(url, BASE).status_code == 200


def chat(url: str, messages: list, **fields) -> httpx.Response:
    return post(url, {"model": "tiny", "messages": messages, "max_tokens": 3, **fields}, "/v1/chat/completions")


def test_chat_accepts_what_openai_clients_send(server):
    """Text parts, null content (an assistant turn that called a tool) and the tool role are as OpenAI's API
    has them; they were 422s."""
    url, _ = server
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    assert chat(url, [{"role": "user", "content": parts}]).status_code == 200
    history = [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "ok", "tool_call_id": "x"},
    ]
    assert chat(url, history).status_code == 200


@pytest.mark.parametrize(
    ("messages", "fields", "says"),
    [
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], {}, "image_url"),
        ([{"role": "user", "content": "Hi"}], {"functions": [{"name": "f"}]}, "functions"),
        ([{"role": "user", "content": "Hi"}], {"tool_choice": "required"}, "forcing a call is not supported"),
        (
            [{"role": "user", "content": "Hi"}],
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            "this model has no chat template, so it cannot call tools",
        ),
        (
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None, "tool_calls": []}],
            {},
            '"tool_calls" must be a non-empty list',
        ),
    ],
)
def test_chat_refuses_by_name_what_a_text_model_cannot_do(server, messages, fields, says):
    url, _ = server
    response = chat(url, messages, **fields)
    assert response.status_code == 400 and says in response.json()["error"]["message"]


def test_a_non_streaming_client_that_hangs_up_frees_its_rows(server):
    """Five clients ask for 200 tokens each and hang up: their rows are freed at once, not decoded for nobody."""
    url, engine = server
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({**BASE, "max_tokens": 200, "n": 2}).encode()
    request = (
        f"POST /v1/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    sockets = [socket.create_connection((host, int(port))) for _ in range(5)]
    for sock in sockets:
        sock.sendall(request)
    deadline = time.monotonic() + 10
    while engine.load() == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.005)
    steps = engine.steps
    for sock in sockets:
        sock.close()
    deadline = time.monotonic() + 10
    while engine.load() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.load() == (0, 0)
    assert engine.steps - steps < 150  # 200 tokens each would have taken 200 steps


def test_other_hosts_and_other_origins_are_refused(server):
    url, _ = server
    port = url.rsplit(":", 1)[1]
    rebinding = post(url, BASE, headers={"host": f"attacker.example:{port}"})
    assert rebinding.status_code == 403 and "attacker.example" in rebinding.json()["error"]["message"]
    cross_site = httpx.post(
        f"{url}/v1/completions", content=json.dumps(BASE), headers={"origin": "http://evil.example"}, timeout=30
    )
    assert cross_site.status_code == 403 and "--allow-origin" in cross_site.json()["error"]["message"]
    same_origin = post(url, BASE, headers={"origin": url})
    assert same_origin.status_code == 200
    assert post(url.replace("127.0.0.1", "localhost"), BASE).status_code == 200


def test_allow_origin_lets_a_named_page_call_the_api(model, tokenizer):
    settings = ServerSettings(model_id="tiny", allowed_origins=("http://localhost:3000",))
    app = create_app(model, tokenizer, settings, Engine(model, tokenizer))
    with BackgroundServer(app) as url:
        origin = {"origin": "http://localhost:3000"}
        preflight = httpx.options(
            f"{url}/v1/completions",
            headers={
                **origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        response = post(url, BASE, headers=origin)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert post(url, BASE, headers={"origin": "http://localhost:4000"}).status_code == 403
