"""The engine in its own process (what `lucidlm serve` runs): the events of the in-process engine,
cancellation and a full queue, and a clear end when the process dies."""

import threading

import openai
import pytest

from lucidlm.decode import SamplingConfig
from lucidlm.serve import BackgroundServer, Engine, EngineProcess, QueueFull, Request, ServerSettings, create_app


def submit_all(engine, prompts, max_tokens, seeds, stop, done: threading.Semaphore | None = None):
    """Submit one request per prompt; returns each request's list of events as they arrive."""
    events = [[] for _ in prompts]

    def on_event(i):
        def record(event):
            events[i].append(event)
            if event.finish_reason is not None and done is not None:
                done.release()

        return record

    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        engine.submit(Request(prompt, max_tokens, SamplingConfig(1.0, top_k=8), on_event(i), stop, seed, 3))
    return events


@pytest.fixture(scope="module")
def engine_process(model, tokenizer):
    engine = EngineProcess(model, tokenizer, max_batch=4, max_waiting=2)
    engine.start()
    yield engine
    engine.stop()


def test_the_events_equal_those_of_the_engine_in_this_process(engine_process, model, tokenizer):
    """Six seeded requests in four rows (two wait, then join), with a stop string and top logprobs."""
    prompts = [tokenizer.encode(text) for text in ["Hello", "a", "The cat", "x y z", "Q:", "ok"]]
    seeds, stop = list(range(6)), ["e."]
    local = Engine(model, tokenizer, max_batch=4)
    expected = submit_all(local, prompts, 40, seeds, stop)
    local.run_until_idle()
    done = threading.Semaphore(0)
    got = submit_all(engine_process, prompts, 40, seeds, stop, done)
    for _ in prompts:
        assert done.acquire(timeout=60)
    for mine, theirs in zip(got, expected, strict=True):
        assert [(e.token, e.text, e.finish_reason) for e in mine] == [
            (e.token, e.text, e.finish_reason) for e in theirs
        ]
        assert [e.logprob for e in mine] == pytest.approx([e.logprob for e in theirs], abs=1e-5)
        assert [t for e in mine for t, _ in e.top] == [t for e in theirs for t, _ in e.top]
    assert engine_process.load() == (0, 0)


def test_cancelled_requests_free_their_rows_and_a_full_queue_refuses(engine_process, tokenizer):
    prompt = tokenizer.encode("Hello")
    requests = [Request(prompt, 10_000, SamplingConfig(1.0), lambda e: None) for _ in range(6)]
    for request in requests:  # four rows and a waiting line of two
        engine_process.submit(request)
    assert engine_process.load() == (4, 2)
    with pytest.raises(QueueFull, match="4 requests running and 2 waiting"):
        engine_process.submit(Request(prompt, 5, SamplingConfig(1.0), lambda e: None))
    for request in requests:
        engine_process.cancel(request)
    assert engine_process.load() == (0, 0)
    done = threading.Semaphore(0)
    (events,) = submit_all(engine_process, [prompt], 5, [0], [], done)
    assert done.acquire(timeout=60)
    assert len(events) == 5 and events[-1].finish_reason == "length"


def test_a_dead_engine_ends_its_streams_with_an_error_and_refuses_new_requests(model, tokenizer):
    engine = EngineProcess(model, tokenizer, max_batch=2)
    app = create_app(model, tokenizer, ServerSettings(model_id="tiny", max_tokens=10_000), engine)
    with BackgroundServer(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        stream = client.completions.create(model="tiny", prompt="Hello", max_tokens=10_000, stream=True)
        next(iter(stream))
        engine.process.kill()  # as the kernel's out-of-memory killer would
        with pytest.raises(openai.APIError, match=r"process ended \(exit code -9\); restart the server"):
            for _ in stream:
                pass
        with pytest.raises(openai.InternalServerError, match="process ended") as refused:
            client.completions.create(model="tiny", prompt="Hello", max_tokens=5)
        assert refused.value.status_code == 503
