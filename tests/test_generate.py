import pytest
import torch

from lucidlm.decode import SamplingConfig, StopStreamer, filter_logits, sample_next
from lucidlm.errors import ConfigError, TokenizerError
from lucidlm.generate import compile_decoding, generate_ids, generate_text
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import BPETokenizer, CharTokenizer
from lucidlm.tokenizers.base import encode_prompt


def tiny_model(**overrides) -> GPT:
    torch.manual_seed(0)
    settings = dict(vocab_size=11, block_size=10, n_layer=2, n_head=2, n_embd=16)
    settings.update(overrides)
    return GPT(GPTConfig(**settings)).eval()


def generate_by_full_recomputation(model: GPT, prompt: list[int], steps: int) -> tuple[list[int], list]:
    """The reference: every step runs the whole (cropped) context again, nanoGPT style, and takes the argmax."""
    tokens, all_logits = list(prompt), []
    with torch.no_grad():
        for _ in range(steps):
            logits, _ = model(torch.tensor([tokens[-model.config.block_size :]]))
            all_logits.append(logits[0, -1])
            tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt) :], all_logits


@pytest.mark.parametrize("switches", [{}, dict(positions="rope", n_kv_head=1)], ids=str)
def test_cached_greedy_generation_equals_full_recomputation(switches):
    model = tiny_model(**switches)
    prompt = [1, 5, 2]
    expected, expected_logits = generate_by_full_recomputation(model, prompt, steps=7)  # stays inside the window
    assert list(generate_ids(model, prompt, 7, SamplingConfig(temperature=0))) == expected
    seen = []
    original = model.forward

    def spy(*args, **kwargs):
        logits, loss = original(*args, **kwargs)
        seen.append(logits[0, -1])
        return logits, loss

    model.forward = spy
    list(generate_ids(model, prompt, 7, SamplingConfig(temperature=0)))
    for ours, reference in zip(seen, expected_logits, strict=False):
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def test_generation_runs_past_the_context_window():
    model = tiny_model()
    tokens = list(generate_ids(model, [3] * 25, 40, SamplingConfig(temperature=0)))
    assert len(tokens) == 40 and all(0 <= t < 11 for t in tokens)


def test_compiled_decoding_gives_the_eager_tokens_past_the_window_and_compiles_once():
    """One compile (tens of seconds on 2 cores) covers every position: greedy and seeded sampling over 3
    windows (so the cache is refilled twice) give exactly the tokens of eager decoding with the growing cache."""
    model = tiny_model(positions="rope", n_kv_head=1, norm="rmsnorm", mlp="swiglu", block_size=16)
    torch._dynamo.utils.counters.clear()
    compiled = compile_decoding(model)
    prompt, sampled = [1, 5, 2], SamplingConfig(temperature=0.9, top_k=6)
    for config in (SamplingConfig(temperature=0), sampled):
        eager = list(generate_ids(model, prompt, 45, config, torch.Generator().manual_seed(3)))
        fast = list(generate_ids(model, prompt, 45, config, torch.Generator().manual_seed(3), compiled=compiled))
        assert fast == eager
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # no recompilation per position


def test_compiled_decoding_without_a_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("lucidlm.device.shutil.which", lambda name: None)
    with pytest.raises(ConfigError, match=r"needs a C\+\+ compiler"):
        compile_decoding(tiny_model())


def test_top_k_and_top_p_keep_exactly_the_expected_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda config: torch.isfinite(filter_logits(logits, config))[0].tolist()  # noqa: E731
    assert kept(SamplingConfig(top_k=2)) == [True, True, False, False, False]
    assert kept(SamplingConfig(top_p=0.5)) == [True, False, False, False, False]
    assert kept(SamplingConfig(top_p=0.7)) == [True, True, False, False, False]  # 0.5 < 0.7 needs the second
    assert kept(SamplingConfig(top_p=0.71)) == [True, True, True, False, False]
    assert kept(SamplingConfig(top_k=4, top_p=0.9)) == [True, True, True, True, False]
    scaled = filter_logits(logits, SamplingConfig(temperature=0.5)).softmax(-1)
    torch.testing.assert_close(scaled, (logits * 2).softmax(-1))


def test_sampling_follows_the_distribution_and_the_seed():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(20_000, 1)
    draws = sample_next(logits, SamplingConfig(), torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=3) / 20_000
    torch.testing.assert_close(frequencies, torch.tensor([0.7, 0.2, 0.1]), atol=0.015, rtol=0)
    again = sample_next(logits, SamplingConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    assert sample_next(logits[:1], SamplingConfig(temperature=0), None).tolist() == [0]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(temperature=-1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=0), "top-k"),
        (dict(top_p=1.5), "top-p"),
    ],
)
def test_bad_sampling_settings(settings, message):
    with pytest.raises(ConfigError, match=message):
        SamplingConfig(**settings)


class Letters(CharTokenizer):
    def __init__(self):
        super().__init__("\nabcdefghij")


def test_stop_strings_end_the_text_and_are_not_shown():
    streamer = StopStreamer(Letters(), stop=["cde"])
    pieces = []
    for token in Letters().encode("abcdcdefg"):
        pieces.append(streamer.push(token))
        if streamer.stopped:
            break
    assert pieces == ["a", "b", "", "", "cd", "", ""]
    assert "".join(pieces) == "abcd" and streamer.stopped and streamer.finish() == ""
    plain = StopStreamer(Letters(), stop=["ij"])
    text = "".join(plain.push(t) for t in Letters().encode("abci")) + plain.finish()
    assert text == "abci" and not plain.stopped


def test_a_character_split_across_tokens_waits_until_it_is_whole():
    tokenizer = BPETokenizer.train(["plain ascii text"], vocab_size=260)
    ids = tokenizer.encode("a\U0001f600b")  # the emoji is four byte tokens
    assert len(ids) == 6
    streamer = StopStreamer(tokenizer, stop=["b"])
    assert [streamer.push(i) for i in ids] == ["a", "", "", "", "\U0001f600", ""]
    assert streamer.stopped
    cut = StopStreamer(tokenizer)
    assert [cut.push(i) for i in ids[:3]] == ["a", "", ""]
    assert cut.finish() == "\ufffd"  # the bytes that never became a character are shown as U+FFFD


def test_prompt_errors_and_empty_prompt():
    tokenizer = Letters()
    with pytest.raises(TokenizerError, match="2 symbol.*'X' 'Y'"):
        encode_prompt(tokenizer, "abXcY")
    assert encode_prompt(tokenizer, "") == tokenizer.encode("\n")


def test_generate_text_is_seeded_and_streams(tmp_path):
    model, tokenizer = tiny_model(), Letters()

    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return list(generate_text(model, tokenizer, "ab", 30, SamplingConfig(top_k=5), generator=generator))

    first = run(1)
    assert len(first) > 1 and sum(len(p) for p in first) == 30
    assert first == run(1) and first != run(2)


@pytest.mark.parametrize("config", [SamplingConfig(1e-39), SamplingConfig(1e-45), SamplingConfig(1.0, top_p=1e-46)])
def test_a_tiny_temperature_or_top_p_is_greedy_not_the_last_token(config):
    """Issue 18: logits / 1e-39 overflowed float32 into inf - inf = nan, and top_p below float32's smallest
    number dropped every token; either way the last vocabulary token came out."""
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5], [0.0, -1.0, 4.0, 4.5]])
    tokens = sample_next(logits, config, torch.Generator().manual_seed(0))
    assert tokens.tolist() == [1, 3]
