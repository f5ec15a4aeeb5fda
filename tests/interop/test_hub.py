"""Hub models as they are (issue 19): directories written by `transformers.save_pretrained` itself, with
tokenizers in each family's Hub format built here with `tokenizers` (nothing is downloaded), run by lucidlm
through `hf:DIR` and held to `transformers`: logits, greedy text, token ids, chat templates."""

import json
import shutil
import subprocess
import sys

import httpx
import pytest
import tokenizers
import torch
import transformers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from lucidlm.chat import chat_prompt, render_template
from lucidlm.chat.template import chat_template
from lucidlm.decode import SamplingConfig
from lucidlm.errors import LucidError
from lucidlm.generate import generate_ids, generate_text
from lucidlm.lens import direct_logit_attribution, logit_lens
from lucidlm.load import load_model
from lucidlm.serve import BackgroundServer, Engine, ServerSettings, create_app
from lucidlm.tokenizers import HFTokenizer, load_tokenizer

from ..conftest import SAMPLE_TEXT, run_lucidlm

transformers.logging.set_verbosity_error()

TEXT = SAMPLE_TEXT + "Numbers 12345 and 7, café — naïve 🙂 emoji; tabs\tand   spaces.\n" * 20
ADVERSARIAL = [
    "First Citizen:\nBefore we proceed",
    "café — naïve 🙂 émoji 👍🏽",
    "   leading and trailing spaces   ",
    "\n\n\t\n  \n",
    "numbers 1234567 3.14159 and 2,000",
    "it's they'll WE'D",
    "special <|endoftext|> text <|im_end|> inside",
]
LLAMA3_SPLIT = (  # Llama 3's pre-tokenizer split
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_CHAT = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "You answer in verse."},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "A citizen, sir."},
    {"role": "user", "content": "Speak, speak."},
]


def hub_tokenizer(family: str) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of the family's shape, learned from TEXT: GPT-2's (and SmolLM2's)
    pre-tokenizer, Llama 3's split with a BOS post-processor and header tokens, Qwen's ChatML tokens."""
    specials = {
        "gpt2": ["<|endoftext|>"],
        "smollm2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "qwen3": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    }[family]
    tokenizer = tokenizers.Tokenizer(models.BPE())
    if family in ("gpt2", "smollm2"):
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        split = pre_tokenizers.Split(tokenizers.Regex(LLAMA3_SPLIT), behavior="isolated")
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([TEXT], trainer)
    settings = {"eos_token": specials[0]}
    if family == "llama3":
        bos = tokenizer.token_to_id("<|begin_of_text|>")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
        )
        settings = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_CHAT}
    elif family in ("qwen3", "smollm2"):
        settings = {"eos_token": "<|im_end|>", "chat_template": CHATML}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, **settings)


def hub_model(family: str, vocab_size: int, eos_id: int):
    torch.manual_seed(0)
    common = dict(vocab_size=vocab_size, eos_token_id=eos_id, bos_token_id=eos_id)
    if family == "gpt2":
        config = transformers.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=4, **common)
        return transformers.GPT2LMHeadModel(config)
    llama = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        **common,
    )
    if family == "llama3":  # Llama 3's RoPE scaling, untied, head_dim other than hidden / heads
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0}
        rope |= {"high_freq_factor": 4.0, "original_max_position_embeddings": 16}
        config = transformers.LlamaConfig(head_dim=16, rope_parameters=rope, tie_word_embeddings=False, **llama)
        return transformers.LlamaForCausalLM(config)
    if family == "smollm2":  # a tied Llama
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(tie_word_embeddings=True, **llama))
    config = transformers.Qwen3Config(head_dim=16, tie_word_embeddings=True, **llama)
    return transformers.Qwen3ForCausalLM(config)


def perturbed(model):
    """Non-trivial norm gains, so that a wrong mapping cannot hide behind ones."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


FAMILIES = ["gpt2", "llama3", "qwen3", "smollm2"]


@pytest.fixture(scope="module", params=FAMILIES)
def hub_dir(request, tmp_path_factory):
    family = request.param
    directory = tmp_path_factory.mktemp(family)
    tokenizer = hub_tokenizer(family)
    model = perturbed(hub_model(family, len(tokenizer), tokenizer.eos_token_id))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return family, directory


def test_logits_and_greedy_text_equal_transformers(hub_dir):
    _, directory = hub_dir
    ours, tokenizer, _ = load_model(f"hf:{directory}")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    ids = tokenizer.prompt_ids("First Citizen:\nBefore we proceed")
    with torch.no_grad():
        torch.testing.assert_close(ours(torch.tensor([ids]))[0], theirs(torch.tensor([ids])).logits, rtol=0, atol=1e-4)
        expected = theirs.generate(
            torch.tensor([ids]), max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0
        )[0, len(ids) :]
    assert list(generate_ids(ours, ids, 12, SamplingConfig(temperature=0))) == expected.tolist()


def test_every_hook_point_holds_what_transformer_lens_caches_there(hub_dir):
    """TransformerLens (its TransformerBridge on the same Hub directory, in compatibility mode with no weight
    processing: nothing folded or centred) caches the same activations as run_with_cache at every name of ours,
    and gives the same logits when the same head is zero-ablated through the same hook."""
    from transformer_lens.model_bridge import TransformerBridge

    _, directory = hub_dir
    ours, tokenizer, _ = load_model(f"hf:{directory}")
    bridge = TransformerBridge.boot_transformers(str(directory), device="cpu")
    bridge.enable_compatibility_mode(no_processing=True)
    ids = torch.tensor([tokenizer.prompt_ids("First Citizen:\nBefore we proceed")])
    with torch.no_grad():
        _, theirs = bridge.run_with_cache(ids)
        shared = [name for name in ours.hook_names() if name in theirs]
        _, cache = ours.run_with_cache(ids, shared)
    assert shared == ours.hook_names()  # every point of ours is one of theirs
    for name in shared:
        torch.testing.assert_close(cache[name], theirs[name], rtol=0, atol=1e-4, msg=name)

    def zero_head_1(z: torch.Tensor, *_) -> torch.Tensor:
        z = z.clone()
        z[:, :, 1] = 0
        return z

    with torch.no_grad():
        ablated = ours.run_with_hooks(ids, {"blocks.1.attn.hook_z": zero_head_1})
        expected = bridge.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", lambda z, hook: zero_head_1(z))])
    torch.testing.assert_close(ablated, expected, rtol=0, atol=1e-4)
    assert not torch.allclose(ablated, ours(ids)[0], atol=1e-3)


def test_the_lens_reads_a_hub_model_and_its_attributions_add_up(hub_dir):
    """Each family's layout (GPT-2's LayerNorm and biases; Llama's and Qwen3's RMSNorm, grouped-query heads and
    head sizes other than hidden / heads) through the hook points; and `lucidlm lens` on `hf:DIR`."""
    _, directory = hub_dir
    model, tokenizer, _ = load_model(f"hf:{directory}")
    ids = tokenizer.prompt_ids("First Citizen:\nBefore we proceed")
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0][0]
    lens = logit_lens(model, ids)
    assert lens["prediction"] == logits.argmax(-1).tolist() and lens["prediction_rank"][-1] == [0] * len(ids)
    parts = direct_logit_attribution(model, ids, position=len(ids) - 1, token=5, other=9)
    added = parts["embeddings"] + sum(map(sum, parts["heads"])) + sum(parts["mlps"]) + parts["biases"]
    assert added == pytest.approx(float(logits[-1, 5] - logits[-1, 9]), abs=1e-4)
    result = run_lucidlm("lens", "heads", "--checkpoint", f"hf:{directory}", "--length", "8", "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["induction"]) == 2


def test_token_ids_equal_autotokenizer(hub_dir):
    _, directory = hub_dir
    ours = load_tokenizer(directory / "tokenizer.json")
    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    assert isinstance(ours, HFTokenizer)
    for text in ADVERSARIAL:  # text is read as text: a special token's text in it too (split_special_tokens)
        assert ours.prompt_ids(text) == theirs(text, split_special_tokens=True)["input_ids"], text
        split = theirs(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert ours.encode(text) == split, text
        assert ours.decode(ours.encode(text)) == theirs.decode(split)
    assert ours.eos_ids == [theirs.eos_token_id]


def test_the_chat_template_renders_as_transformers_does(hub_dir):
    family, directory = hub_dir
    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    ours = load_tokenizer(directory / "tokenizer.json")
    if family == "gpt2":  # no template: the plain "User:" lines
        ids, stops = chat_prompt(ours, CONVERSATION)
        assert ours.decode(ids).endswith("User: Speak, speak.\nAssistant:") and stops == ["\nUser:"]
        return
    expected = theirs.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    special = {key: ours.token_text(key) for key in ("bos_token", "eos_token")}
    assert render_template(chat_template(ours), CONVERSATION, **special) == expected
    ids, stops = chat_prompt(ours, CONVERSATION)
    assert ids == theirs.apply_chat_template(CONVERSATION, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert stops == []


def test_sharded_bf16_weights_load_in_their_dtype_or_as_asked(tmp_path):
    tokenizer = hub_tokenizer("qwen3")
    model = perturbed(hub_model("qwen3", len(tokenizer), tokenizer.eos_token_id)).to(torch.bfloat16)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors.index.json").exists() and len(list(tmp_path.glob("*.safetensors"))) > 2
    stored, _, _ = load_model(f"hf:{tmp_path}")
    assert stored.lm_head.weight.dtype == torch.bfloat16
    ours, tokenizer, _ = load_model(f"hf:{tmp_path}", dtype="float32")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer.prompt_ids("Speak, speak.")])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], theirs(ids).logits, rtol=0, atol=1e-4)
        assert stored(ids)[0].argmax(-1).tolist() == theirs(ids).logits.argmax(-1).tolist()


def test_the_command_line_generates_evaluates_and_fine_tunes_a_hub_model(hub_dir, tmp_path, text_file):
    """The issue's own failing command: `train --init-from hf:DIR` with a directory transformers wrote."""
    family, directory = hub_dir
    if family != "gpt2":
        pytest.skip("one family through the command line is enough")
    hf = f"hf:{directory}"
    generated = run_lucidlm(
        "generate", "--checkpoint", hf, "--prompt", "First", "--temperature", 0, "--max-new-tokens", 8
    )
    assert generated.returncode == 0 and generated.stdout.startswith("First"), generated.stderr
    evaluated = run_lucidlm("eval", "--checkpoint", hf, "--data", text_file, "--json")
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["tokens"] > 100, evaluated.stderr
    run = tmp_path / "ft"
    trained = run_lucidlm(
        "train", "--init-from", hf, "--data", text_file, "--out", run, "--max-steps", 3, "--no-progress",
        "--device", "cpu", "--set", "batch_size=2", "--set", "eval_interval=3", "--set", "eval_batches=1",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert isinstance(load_tokenizer(run / "tokenizer.json"), HFTokenizer)
    assert json.loads((run / "tokenizer_config.json").read_text())["eos_token_ids"] == [0]
    again = run_lucidlm("generate", "--checkpoint", run, "--prompt", "First", "--max-new-tokens", 5, "--seed", 1)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("model_type", "model_type 'mistral' is not one lucidlm reads"),
        ("rope_scaling", "rope scaling 'yarn' is not supported"),
        ("pickled weights", "only pickled weights"),
        ("tokenizer.json", "Hugging Face tokenizers cannot read this tokenizer.json"),
        ("another model's tokenizer", "tokenizer.json has 401 tokens, more than the 400 rows of the model's embedding"),
        ("an empty tokenizer", "tokenizer.json holds no tokens"),
    ],
)
def test_what_lucidlm_cannot_run_is_one_line_exit_2(hub_dir, tmp_path, damage, message):
    family, directory = hub_dir
    if family != "llama3":
        pytest.skip("one family is enough")
    bad = tmp_path / "bad"
    shutil.copytree(directory, bad)
    config = json.loads((bad / "config.json").read_text())
    if damage == "model_type":
        config["model_type"] = "mistral"
    elif damage == "rope_scaling":
        config["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    elif damage == "pickled weights":
        (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    elif damage.endswith("tokenizer"):  # issue 37: an IndexError mid-generation, or a float tensor for a prompt
        tokenizer = json.loads((bad / "tokenizer.json").read_text())
        if damage == "an empty tokenizer":
            tokenizer["model"]["vocab"], tokenizer["model"]["merges"], tokenizer["added_tokens"] = {}, [], []
        else:
            added = {"content": "<|extra|>", "single_word": False, "lstrip": False, "rstrip": False}
            tokenizer["added_tokens"].append({"id": 400, **added, "normalized": False, "special": True})
        (bad / "tokenizer.json").write_text(json.dumps(tokenizer))
    else:
        (bad / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 3}}')
    (bad / "config.json").write_text(json.dumps(config))
    result = run_lucidlm("generate", "--checkpoint", f"hf:{bad}", "--max-new-tokens", 2)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_tokenizer_that_tokenizers_cannot_read_is_a_lucid_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "Unigram", "vocab": "x"}}')
    with pytest.raises(LucidError, match="cannot read this tokenizer.json"):
        load_tokenizer(tmp_path / "tokenizer.json")


def test_generation_and_the_server_stop_at_the_models_end_of_text(hub_dir):
    family, directory = hub_dir
    if family != "gpt2":
        pytest.skip("one family is enough")
    model, tokenizer, _ = load_model(f"hf:{directory}")
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: greedy decoding picks id 0, which is <|endoftext|>
    assert tokenizer.eos_ids == [0]
    assert list(generate_text(model, tokenizer, "First", 10, SamplingConfig(temperature=0))) == []
    app = create_app(model, tokenizer, ServerSettings(model_id="m"), Engine(model, tokenizer))
    with BackgroundServer(app) as url:
        body = {"model": "m", "prompt": "First", "max_tokens": 10, "temperature": 0}
        choice = httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["text"] == ""


def test_the_server_chats_through_the_models_template(hub_dir):
    family, directory = hub_dir
    if family != "qwen3":
        pytest.skip("one family is enough")
    model, tokenizer, _ = load_model(f"hf:{directory}")
    expected = transformers.AutoTokenizer.from_pretrained(directory).apply_chat_template(
        CONVERSATION, tokenize=True, add_generation_prompt=True
    )["input_ids"]
    app = create_app(model, tokenizer, ServerSettings(model_id="m"), Engine(model, tokenizer))
    with BackgroundServer(app) as url:
        body = {"model": "m", "messages": CONVERSATION, "max_tokens": 5, "temperature": 0}
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
    assert reply["usage"]["prompt_tokens"] == len(expected)
    greedy = list(generate_ids(model, expected, 5, SamplingConfig(temperature=0)))
    ends = set(tokenizer.eos_ids)
    kept = greedy[: next((i for i, t in enumerate(greedy) if t in ends), len(greedy))]
    assert reply["choices"][0]["message"]["content"] == tokenizer.decode(kept)


MEASURE_LOAD = """
import json, sys
from pathlib import Path
from lucidlm.decode import SamplingConfig
from lucidlm.generate import generate_ids
from lucidlm.model.onednn import decode_with_onednn
from lucidlm.load import load_model

def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1]) * 1024

Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here, after the imports
before = status("VmRSS")
model, tokenizer, _ = load_model("hf:" + sys.argv[1])
decode_with_onednn(model)  # as `lucidlm generate` and `serve` do
tokens = list(generate_ids(model, tokenizer.prompt_ids("First Citizen:"), 5, SamplingConfig(temperature=0)))
print(json.dumps({"before": before, "peak": status("VmHWM"), "tokens": len(tokens)}))
"""


def test_a_gpt2_124m_shaped_model_loads_with_its_weights_in_memory_once(tmp_path):
    """GPT-2 small's shape (random weights, float32, about 500 MB): loading, switching to oneDNN and generating
    raise the process's peak memory above what Python and PyTorch held before by at most 1.5x the weights file
    (a second full copy would make it 2x); it fine-tunes too."""
    tokenizer = hub_tokenizer("gpt2")
    config = transformers.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    weights = (tmp_path / "gpt2" / "model.safetensors").stat().st_size
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT * 6)  # both splits longer than GPT-2's context of 1,024 tokens
    result = subprocess.run(
        [sys.executable, "-c", MEASURE_LOAD, str(tmp_path / "gpt2")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    grown = measured["peak"] - measured["before"]
    assert measured["tokens"] == 5 and grown <= 1.5 * weights, (grown / weights, measured)
    trained = run_lucidlm(
        "train", "--init-from", f"hf:{tmp_path / 'gpt2'}", "--data", text_file, "--out", tmp_path / "ft",
        "--max-steps", 2, "--no-progress", "--device", "cpu", "--preset", "gpt2-small",
        "--set", "batch_size=1", "--set", "grad_accum=1", "--set", "eval_interval=2", "--set", "eval_batches=1",
        timeout=600,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr


def test_a_hub_model_fine_tunes_on_chat_data_through_its_own_template(hub_dir, tmp_path):
    """Chat data for a Hub model is written by the model's template, and only a model without one (GPT-2)
    gets lucidlm's turn tokens; the fine-tuned run chats through the same template."""
    family, directory = hub_dir
    conversations = [
        {"messages": [CONVERSATION[1], {"role": "assistant", "content": f"A citizen {n}."}]} for n in range(12)
    ]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in conversations))
    prepared = run_lucidlm("data", "prepare", "--chat", tmp_path / "chat.jsonl", "--tokenizer-from",
                           f"hf:{directory}", "--out", tmp_path / "data")  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr
    base = load_tokenizer(directory / "tokenizer.json")
    data_tokenizer = load_tokenizer(tmp_path / "data" / "tokenizer.json")
    added = data_tokenizer.vocab_size - base.vocab_size
    assert added == (4 if family == "gpt2" else 0)
    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    if family != "gpt2":  # the model's own template writes the conversation, and the mask marks the reply
        from lucidlm.chat.data import encode_conversation

        messages = conversations[0]["messages"]
        ids, mask, _ = encode_conversation(data_tokenizer, messages)
        assert ids == theirs.apply_chat_template(messages, tokenize=True)["input_ids"]
        prompt = theirs.apply_chat_template(messages[:1], tokenize=True, add_generation_prompt=True)["input_ids"]
        assert ids[: len(prompt)] == prompt and mask == [0] * len(prompt) + [1] * (len(ids) - len(prompt))
    tuned = run_lucidlm("train", "--init-from", f"hf:{directory}", "--data", tmp_path / "data", "--out",
                        tmp_path / "sft", "--max-steps", "2", "--device", "cpu", "--no-progress")  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr
    model, tokenizer, _ = load_model(tmp_path / "sft", "latest")
    assert model.config.vocab_size >= base.vocab_size + added
    assert chat_template(tokenizer) is not None and tokenizer.to_dict() == data_tokenizer.to_dict()
    chatted = run_lucidlm(
        "chat", "--checkpoint", tmp_path / "sft", "--temperature", "0", "--max-new-tokens", "4", input="Speak, speak.\n"
    )
    assert chatted.returncode == 0 and "note:" not in chatted.stderr, chatted.stderr
