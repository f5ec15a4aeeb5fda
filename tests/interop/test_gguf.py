"""GGUF for llama.cpp: the file read back with gguf's own reader, always; and run by llama.cpp itself where
llama-cpp-python is installed (.ci/run installs it): the same token ids, the same logits, the same greedy text.
Tiny models are built here; nothing is downloaded."""

import importlib.util
import os

import gguf
import numpy as np
import pytest
import torch

from lucidlm.decode import SamplingConfig
from lucidlm.errors import ConfigError
from lucidlm.generate import generate_ids
from lucidlm.interop.gguf import export_gguf, gguf_tensors, interleave_rope_rows
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer

from ..conftest import run_lucidlm, tiny_model_args

HAS_LLAMACPP = importlib.util.find_spec("llama_cpp") is not None
if not HAS_LLAMACPP and os.environ.get("LUCIDLM_REQUIRE_LLAMACPP"):
    raise RuntimeError("llama-cpp-python is missing; .ci/run installs it with pip install -e '.[llamacpp]'")
needs_llamacpp = pytest.mark.skipif(
    not HAS_LLAMACPP, reason="llama-cpp-python is not installed (pip install -e '.[llamacpp]', as .ci/run does)"
)

TEXT = (
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
    "The slings and arrows — of outrageous fortune, café 1234567 🙂\n\n\n  Or to take arms!?\n"
)
ADVERSARIAL = [
    "To be, or not to be",
    "  leading spaces and trailing   ",
    "\n\n\nnewlines\n \n\t",
    "café — 🙂 é",
    "numbers 1234567 and 12 3",
    "it's they'll we'd I'M",
    "!?!?,,..::",
]
LLAMA = dict(positions="rope", norm="rmsnorm", mlp="swiglu")
LAYOUTS = {
    "llama, gqa, untied, char": (dict(LLAMA, n_kv_head=2, tie_embeddings=False), "char"),
    "llama, bias, tied, bpe gpt4": (dict(LLAMA, bias=True, rope_theta=500.0), "gpt4"),
    "qwen3, qk_norm, gqa, bpe gpt2": (dict(LLAMA, qk_norm=True, n_kv_head=2), "gpt2"),
    "gpt2, bias, tied, char": (dict(positions="learned", norm="layernorm", mlp="gelu", bias=True), "char"),
    "gpt2, no bias, untied, bpe gpt4": (
        dict(positions="learned", norm="layernorm", mlp="gelu", tie_embeddings=False),
        "gpt4",
    ),
}


def make_tokenizer(kind: str):
    if kind == "char":
        return CharTokenizer.train([TEXT])
    return BPETokenizer.train(TEXT * 4, 300, pattern=kind, progress=False)


def make_model(vocab_size: int, **switches) -> GPT:
    """Random weights with non-trivial gains and biases, and a head whose logits lie far apart, so that neither
    a wrong mapping nor a near tie in the greedy choice can hide."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64, **switches))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
        model.transformer.wte.weight.mul_(20)  # with RMSNorm/LayerNorm in between: logits of about +-30
        if not model.config.tie_embeddings:
            model.lm_head.weight.mul_(20)
    return model.eval()


def field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


@pytest.fixture(params=list(LAYOUTS), scope="module")
def exported(request, tmp_path_factory):
    switches, tokenizer_kind = LAYOUTS[request.param]
    tokenizer = make_tokenizer(tokenizer_kind)
    model = make_model(tokenizer.vocab_size + 3, **switches)  # + 3: a padded embedding
    path = export_gguf(model, tokenizer, tmp_path_factory.mktemp("gguf") / "model.gguf")
    return model, tokenizer, path


def test_the_file_reads_back_with_its_metadata_and_every_tensor(exported):
    model, tokenizer, path = exported
    config = model.config
    reader = gguf.GGUFReader(path)
    arch = field(reader, "general.architecture")
    assert arch == ("gpt2" if config.positions == "learned" else "qwen3" if config.qk_norm else "llama")
    assert field(reader, f"{arch}.context_length") == 64 and field(reader, f"{arch}.block_count") == 2
    assert field(reader, f"{arch}.embedding_length") == 64 and field(reader, f"{arch}.feed_forward_length") == (
        config.mlp_hidden
    )
    assert (field(reader, f"{arch}.attention.head_count"), field(reader, f"{arch}.attention.head_count_kv")) == (
        4,
        config.n_kv_head,
    )
    if arch == "gpt2":
        assert field(reader, "gpt2.attention.layer_norm_epsilon") == pytest.approx(config.norm_eps)
    else:
        assert field(reader, f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(config.norm_eps)
        assert field(reader, f"{arch}.rope.freq_base") == pytest.approx(config.rope_theta)
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert field(reader, "tokenizer.ggml.model") == "gpt2" and len(tokens) == config.vocab_size
    assert tokens[-3:] == [f"[PAD{config.vocab_size - 3 + i}]" for i in range(3)]
    if isinstance(tokenizer, BPETokenizer):
        assert field(reader, "tokenizer.ggml.pre") == {"gpt2": "gpt-2", "gpt4": "llama-bpe"}[tokenizer.pattern]
        assert len(field(reader, "tokenizer.ggml.merges")) == len(tokenizer.merges)
        eos = tokenizer.special_tokens["<|endoftext|>"]
        assert tokens[eos] == "<|endoftext|>" and field(reader, "tokenizer.ggml.eos_token_id") == eos
        assert field(reader, "tokenizer.ggml.token_type")[eos] == gguf.TokenType.CONTROL
    else:
        assert tokens[tokenizer.encode("é")[0]] == "Ã©" and "ðŁĻ Ĥ" in field(reader, "tokenizer.ggml.merges")
    expected = gguf_tensors(config, model.state_for_saving())
    read = {tensor.name: tensor for tensor in reader.tensors}
    assert set(read) == set(expected)
    for name, tensor in expected.items():
        np.testing.assert_array_equal(read[name].data, tensor.numpy(), err_msg=name)
    # the mapping itself, spot-checked against our own names
    np.testing.assert_array_equal(read["token_embd.weight"].data, model.transformer.wte.weight.detach().numpy())
    if arch != "gpt2":
        q_size, kv_size = 4 * config.head_dim, config.n_kv_head * config.head_dim
        v = model.transformer.h[1].attn.c_attn.weight.detach()[q_size + kv_size :]
        np.testing.assert_array_equal(read["blk.1.attn_v.weight"].data, v.numpy())
        q = model.transformer.h[1].attn.c_attn.weight.detach()[:q_size]
        stored_q = torch.from_numpy(read["blk.1.attn_q.weight"].data.copy())
        assert torch.equal(stored_q, interleave_rope_rows(q, 4) if arch == "llama" else q)


def test_interleaved_rows_turn_under_llamas_rope_as_ours_turn_under_half_split_rope():
    """The permutation's reason, checked as maths: RoPE on halves applied to W x equals RoPE on interleaved
    pairs applied to (PW) x, up to the same reordering of the output."""
    torch.manual_seed(0)
    n_head, head_dim, position = 2, 8, 5
    weight, x = torch.randn(n_head * head_dim, 16), torch.randn(16)
    angles = position * 10000.0 ** (-torch.arange(0, head_dim, 2) / head_dim)  # (D/2,)
    cos, sin = angles.cos(), angles.sin()

    def rotate_halves(v):  # (D,): pairs (i, i + D/2)
        a, b = v[: head_dim // 2], v[head_dim // 2 :]
        return torch.cat([a * cos - b * sin, a * sin + b * cos])

    def rotate_pairs(v):  # (D,): pairs (2i, 2i + 1), as llama.cpp's llama
        a, b = v[0::2], v[1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=1).reshape(-1)

    ours = torch.cat([rotate_halves(h) for h in (weight @ x).split(head_dim)])
    theirs = torch.cat([rotate_pairs(h) for h in (interleave_rope_rows(weight, n_head) @ x).split(head_dim)])
    torch.testing.assert_close(interleave_rope_rows(ours[:, None], n_head)[:, 0], theirs)


@pytest.mark.parametrize("quantize", ["f16", "q8_0"])
def test_f16_and_q8_0_store_the_matrices_and_keep_norms_in_f32(tmp_path, quantize):
    tokenizer = make_tokenizer("char")
    model = make_model(tokenizer.vocab_size, **LLAMA)
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf", quantize)
    expected = gguf_tensors(model.config, model.state_for_saving())
    for tensor in gguf.GGUFReader(path).tensors:
        want = expected[tensor.name].numpy()
        if want.ndim == 1:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(tensor.data, want)
        elif quantize == "f16":
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F16
            np.testing.assert_array_equal(tensor.data, want.astype(np.float16))
        else:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0
            got = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            assert np.abs(got - want).max() <= np.abs(want).max() / 127 + 1e-6


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("word", "cannot be llama.cpp's"),
        ("relu", "gpt2 architecture has GELU only"),
        ("no newline", "needs a newline token"),
    ],
)
def test_what_llama_cpp_cannot_run_as_lucidlm_does_is_refused_with_the_reason(tmp_path, what, message):
    if what == "word":
        tokenizer, switches = WordTokenizer.train([TEXT]), LLAMA
    elif what == "relu":
        tokenizer, switches = make_tokenizer("char"), dict(positions="learned", norm="layernorm", mlp="relu")
    else:
        tokenizer, switches = CharTokenizer.train(["abc def"]), LLAMA
    with pytest.raises(ConfigError, match=message):
        export_gguf(make_model(tokenizer.vocab_size, **switches), tokenizer, tmp_path / "m.gguf")
    assert list(tmp_path.iterdir()) == []


def test_a_file_of_the_users_is_never_replaced_and_an_earlier_gguf_only_with_force(tmp_path):
    tokenizer = make_tokenizer("char")
    model = make_model(tokenizer.vocab_size, **LLAMA)
    mine = tmp_path / "notes.gguf"
    mine.write_text("my notes")
    with pytest.raises(ConfigError, match="is not a GGUF file"):
        export_gguf(model, tokenizer, mine, force=True)
    assert mine.read_text() == "my notes"
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf")
    with pytest.raises(ConfigError, match="pass --force"):
        export_gguf(model, tokenizer, path)
    export_gguf(model, tokenizer, path, "f16", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "notes.gguf"]


# --- llama.cpp itself -------------------------------------------------------------------------------------------


def llama_cpp(path, n_ctx: int = 64):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, n_threads=2, verbose=False)


@needs_llamacpp
def test_llama_cpp_tokenizes_as_lucidlm(exported):
    _, tokenizer, path = exported
    llm = llama_cpp(path)
    for text in ADVERSARIAL:
        if tokenizer.unknown_symbols(text):
            continue
        assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) == tokenizer.encode(text), text


# The largest difference allowed in any logit, for logits of about +-30 (docs/benchmarks.md has the measured ones):
# f32 is held to 1e-3; f16 and q8_0 round the weights, so their logits move by more.
TOLERANCES = {"f32": 1e-3, "f16": 2e-2, "q8_0": 3e-1}


@needs_llamacpp
@pytest.mark.parametrize("quantize", list(TOLERANCES))
def test_llama_cpp_gives_lucidlms_logits(exported, tmp_path, quantize):
    model, tokenizer, path = exported
    if quantize != "f32":
        path = export_gguf(model, tokenizer, tmp_path / f"m-{quantize}.gguf", quantize)
    ids = tokenizer.encode("To be, or not to be, that is the question")
    llm = llama_cpp(path)
    llm.eval(ids)
    theirs = np.array(llm.scores[: len(ids)])
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0][0].numpy()
    assert np.abs(ours).max() > 5  # logits far enough apart for the tolerance to mean something
    assert np.abs(theirs - ours).max() <= TOLERANCES[quantize], np.abs(theirs - ours).max()


@needs_llamacpp
def test_llama_cpp_greedy_text_equals_lucidlm_generate(tmp_path, text_file):
    run = tmp_path / "run"
    trained = run_lucidlm(
        "train", "--data", text_file, "--out", run, "--max-steps", 60, "--no-progress",
        *tiny_model_args(positions="rope", norm="rmsnorm", mlp="swiglu", qk_norm="false", block_size=64),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    exported = run_lucidlm("export", "--checkpoint", run, "--format", "gguf", "--out", tmp_path / "run.gguf")
    assert exported.returncode == 0 and "FROM ./run.gguf" in exported.stdout, exported.stderr
    prompt = "First Citizen:"  # 14 tokens and 50 more fit the context of 64: no window shift on either side
    ours = run_lucidlm(
        "generate", "--checkpoint", run, "--prompt", prompt, "--temperature", 0, "--max-new-tokens", 50, "--no-stream"
    )
    assert ours.returncode == 0, ours.stderr
    from lucidlm.load import load_model

    model, tokenizer, _ = load_model(run)
    llm = llama_cpp(tmp_path / "run.gguf")
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=False)
    llm.eval(ids)
    generated = [int(np.argmax(llm.scores[llm.n_tokens - 1]))]
    while len(generated) < 50:
        llm.eval(generated[-1:])
        generated.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
    assert generated == list(generate_ids(model, tokenizer.encode(prompt), 50, SamplingConfig(temperature=0)))
    assert ours.stdout == prompt + tokenizer.decode(generated) + "\n"


def test_quantize_is_refused_for_a_hugging_face_export(tmp_path, capsys):
    from lucidlm.cli import main

    assert main(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "x"), "--quantize", "f16"]) == 2
    assert "--quantize is for --format gguf" in capsys.readouterr().err


@needs_llamacpp
@pytest.mark.parametrize("kind", ["char", "gpt4"])
def test_a_chat_model_carries_its_template_and_turn_tokens_into_llama_cpp(tmp_path, kind):
    from lucidlm.chat import chat_prompt
    from lucidlm.chat.template import CHAT_TOKENS, chat_template
    from lucidlm.tokenizers.base import END_OF_TURN

    tokenizer = make_tokenizer(kind).with_special_tokens(CHAT_TOKENS)
    model = make_model(tokenizer.vocab_size, **LLAMA)
    path = export_gguf(model, tokenizer, tmp_path / "chat.gguf")
    reader = gguf.GGUFReader(path)
    assert field(reader, "tokenizer.chat_template") == chat_template(tokenizer)
    assert field(reader, "tokenizer.ggml.eot_token_id") == tokenizer.special_tokens[END_OF_TURN]
    messages = [{"role": "system", "content": "To be"}, {"role": "user", "content": "or not to be?"}]
    prompt, _ = chat_prompt(tokenizer, messages)
    text = "<|system|>To be<|end|><|user|>or not to be?<|end|><|assistant|>"
    llm = llama_cpp(path)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == prompt
    llm.eval(prompt)
    with torch.no_grad():
        ours = model(torch.tensor([prompt]))[0][0].numpy()
    assert np.abs(np.array(llm.scores[: len(prompt)]) - ours).max() <= TOLERANCES["f32"]
