"""The batched engine: ragged rows in one cache, and the same tokens as decoding one request alone."""

import pytest
import torch

from lucidlm.decode import SamplingConfig
from lucidlm.generate import generate_ids
from lucidlm.model.onednn import OneDNNLinear, decode_with_onednn
from lucidlm.serve import Engine, QueueFull, Request

from .conftest import tiny_model


@pytest.mark.parametrize("positions", ["learned", "rope", "sinusoidal"])
def test_rows_of_different_lengths_decode_as_if_alone(positions):
    """Three sequences at different positions in one SlotKVCache give the logits of full passes."""
    model = tiny_model(positions=positions, n_kv_head=1)
    sequences = [torch.randint(0, 20, (n,), generator=torch.Generator().manual_seed(n)) for n in (5, 11, 8)]
    cache = model.new_cache(3, slots=True)
    with torch.no_grad():
        for row, seq in enumerate(sequences):  # read all but the last token of each, one row at a time
            cache.select(row, row + 1)
            model(seq[None, :-1], cache=cache)
        cache.select(0, 3)
        last = torch.stack([seq[-1:] for seq in sequences])  # (3, 1)
        batched, _ = model(last, cache=cache)
        for row, seq in enumerate(sequences):
            full, _ = model(seq[None])
            torch.testing.assert_close(batched[row, -1], full[0, -1], rtol=0, atol=1e-5)
    assert cache.lengths == [5, 11, 8]


def test_moving_a_row_keeps_its_sequence():
    model = tiny_model()
    cache = model.new_cache(2, slots=True)
    seq = torch.arange(6)[None]
    with torch.no_grad():
        cache.select(1, 2)
        model(seq[:, :-1], cache=cache)
        cache.move(1, 0)
        cache.select(0, 1)
        moved, _ = model(seq[:, -1:], cache=cache)
        full, _ = model(seq)
    torch.testing.assert_close(moved[0, -1], full[0, -1], rtol=0, atol=1e-5)
    assert cache.lengths == [6, 0]


def collect(engine: Engine, prompts, max_tokens, sampling, seeds, stop=None):
    events = {i: [] for i in range(len(prompts))}
    requests = []
    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        request = Request(prompt, max_tokens, sampling, events[i].append, stop or [], seed, top_logprobs=3)
        requests.append(request)
        engine.submit(request)
    engine.run_until_idle()
    return events, requests


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_engine_gives_the_tokens_of_generate_ids(tokenizer, temperature):
    """Alone or among 6 requests in 4 rows (so some wait and join later), with context shifts past 32 tokens."""
    model = tiny_model(positions="rope")
    prompts = [
        tokenizer.encode(p) for p in ["Hello", "a", "The quick brown fox jumps over the lazy dog", "xyz", "To be", "q"]
    ]
    sampling = SamplingConfig(temperature)
    events, _ = collect(Engine(model, tokenizer, max_batch=4), prompts, 50, sampling, seeds=range(6))
    for i, prompt in enumerate(prompts):
        expected = list(generate_ids(model, prompt, 50, sampling, torch.Generator().manual_seed(i)))
        assert [e.token for e in events[i]] == expected
        assert [e.finish_reason for e in events[i]] == [None] * 49 + ["length"]
        assert "".join(e.text for e in events[i]) == tokenizer.decode(expected)


def test_batched_rows_through_onednn_give_the_tokens_of_the_plain_model(tokenizer):
    """`lucidlm serve`'s engine decodes through oneDNN (model/onednn.py) once the matrices are large enough:
    rows of 1 to 4 requests give the greedy tokens of `generate_ids` on the model as trained."""
    model = tiny_model(positions="rope", n_embd=512, n_head=4, n_kv_head=2)
    prompts = [tokenizer.encode(p) for p in ["Hello", "a", "The quick brown fox", "xyz", "To be"]]
    greedy = SamplingConfig(0.0)
    expected = [list(generate_ids(model, prompt, 20, greedy)) for prompt in prompts]
    decode_with_onednn(model)
    assert isinstance(model.transformer.h[0].mlp.c_fc, OneDNNLinear)
    events, _ = collect(Engine(model, tokenizer, max_batch=4), prompts, 20, greedy, seeds=[None] * 5)
    assert [[e.token for e in events[i]] for i in range(5)] == expected


def test_logprobs_are_the_model_distribution(tokenizer):
    model = tiny_model()
    prompt = tokenizer.encode("Hello")
    events, _ = collect(Engine(model, tokenizer), [prompt], 3, SamplingConfig(0.0), seeds=[None])
    first = events[0][0]
    with torch.no_grad():
        expected = model(torch.tensor([prompt]))[0][0, -1].log_softmax(-1)
    assert first.token == int(expected.argmax())
    assert first.logprob == pytest.approx(float(expected.max()), abs=1e-5)
    top = torch.topk(expected, 3)
    assert [t for t, _ in first.top] == top.indices.tolist()
    assert [lp for _, lp in first.top] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_a_stop_string_ends_the_request_and_is_not_returned(tokenizer):
    model = tiny_model()
    prompt = [tokenizer.encode("Hello")]
    events, _ = collect(Engine(model, tokenizer), prompt, 20, SamplingConfig(0.0), seeds=[None])
    text = "".join(e.text for e in events[0])
    stop = text[5:7]
    events, _ = collect(Engine(model, tokenizer), prompt, 20, SamplingConfig(0.0), seeds=[None], stop=[stop])
    assert "".join(e.text for e in events[0]) == text[: text.index(stop)]
    assert events[0][-1].finish_reason == "stop"


def test_cancelled_requests_free_their_rows_and_a_full_queue_refuses(tokenizer):
    model = tiny_model()
    engine = Engine(model, tokenizer, max_batch=2, max_waiting=1)
    seen = []
    requests = [Request([1, 2], 100, SamplingConfig(0.0), seen.append) for _ in range(3)]
    for request in requests:
        engine.submit(request)
    with pytest.raises(QueueFull):
        engine.submit(Request([1], 5, SamplingConfig(0.0), seen.append))
    engine.step()
    assert engine.load() == (2, 1)
    requests[0].cancelled = True
    engine.step()  # the cancelled request leaves, the waiting one takes its row
    assert engine.load() == (2, 0) and requests[0] not in engine.active
    requests[1].cancelled = requests[2].cancelled = True
    engine.step()
    assert engine.load() == (0, 0)
