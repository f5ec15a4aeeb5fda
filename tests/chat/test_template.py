"""lucidlm's own chat template: the same conversation from lucidlm and from `transformers` on the export
(`apply_chat_template` and `generate`), for each of lucidlm's tokenizers, and a base run fine-tuned on chat
data gets the turn tokens as new rows that start at the mean embedding."""

import pytest
import torch
import transformers

from lucidlm.chat import chat_prompt
from lucidlm.chat.template import CHAT_TOKENS, OWN_CHAT_TEMPLATE, chat_template
from lucidlm.decode import SamplingConfig
from lucidlm.generate import generate_ids
from lucidlm.interop.hf_export import export_hf
from lucidlm.interop.hf_import import load_hf_tokenizer
from lucidlm.load import load_model, with_new_tokens
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer
from lucidlm.tokenizers.base import END_OF_TURN
from tests.chat.conftest import conversation, write_jsonl
from tests.conftest import run_lucidlm, tiny_model_args

TEXT = "the cat sat on the mat. what is 12 plus 30? it is 42. Be brief, be kind!\n" * 8
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "what is 12 plus 30?"},
    {"role": "assistant", "content": "it is 42."},
    {"role": "user", "content": "the cat?"},
]


def tokenizers():
    return {
        "char": CharTokenizer.train([TEXT]),
        "word": WordTokenizer.train([TEXT]),
        "bpe": BPETokenizer.train([TEXT], vocab_size=300),
    }


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_the_template_and_generation_match_transformers(tmp_path, kind):
    tokenizer = tokenizers()[kind].with_special_tokens(CHAT_TOKENS)
    assert chat_template(tokenizer) == OWN_CHAT_TEMPLATE
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=32)).eval()
    export_hf(model, tokenizer, tmp_path / "hf")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for messages, prompt in ((CONVERSATION, True), (CONVERSATION[:3], False), (CONVERSATION[1:], True)):
        rendered = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
        ids = theirs.apply_chat_template(messages, tokenize=True, add_generation_prompt=prompt)["input_ids"]
        assert tokenizer.encode_with_specials(rendered) == ids
        if prompt:
            assert chat_prompt(tokenizer, messages) == (ids, ["<|system|>", "<|user|>", "<|assistant|>"])
    assert rendered.startswith("<|user|>what is 12 plus 30?<|end|><|assistant|>")
    # greedy generation gives the same reply, and both stop at the end of turn
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    end = tokenizer.special_tokens[END_OF_TURN]
    hf_eos = hf_model.generation_config.eos_token_id
    assert end in tokenizer.eos_ids and end in (hf_eos if isinstance(hf_eos, list) else [hf_eos])
    prompt_ids, _ = chat_prompt(tokenizer, CONVERSATION)
    ours = list(generate_ids(model, prompt_ids, 20, SamplingConfig(temperature=0.0)))
    ours = ours[: ours.index(end) + 1] if end in ours else ours
    out = hf_model.generate(torch.tensor([prompt_ids]), max_new_tokens=20, do_sample=False)
    assert out[0, len(prompt_ids) :].tolist() == ours
    assert load_hf_tokenizer(tmp_path / "hf").to_dict() == tokenizer.to_dict()


def test_new_token_rows_start_at_the_mean_of_the_known_rows():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=10, n_layer=1, n_head=2, n_embd=8, tie_embeddings=False))
    config, weights = with_new_tokens(model.config, model.state_for_saving(), known=10, total=14)
    assert config.vocab_size == 14
    for name in ("transformer.wte.weight", "lm_head.weight"):
        old = model.state_for_saving()[name]
        assert torch.equal(weights[name][:10], old)
        torch.testing.assert_close(weights[name][10:], old.mean(0).expand(4, -1))


def test_a_base_run_fine_tuned_on_chat_data_chats(tmp_path, text_file):
    base = tmp_path / "base"
    trained = run_lucidlm("train", "--data", text_file, "--out", base, "--max-steps", "10",
                          *tiny_model_args(), "--no-progress", "--set", "block_size=48")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    write_jsonl(tmp_path / "chat.jsonl", [conversation(f"Speak {c}", "Speak, speak.") for c in "aeioustdnmklphcfrvwy"])
    write_jsonl(tmp_path / "digits.jsonl", [conversation("Speak 0", "Speak.")])
    refused = run_lucidlm(
        "data", "prepare", "--chat", tmp_path / "digits.jsonl", "--tokenizer-from", base, "--out", tmp_path / "data"
    )
    assert refused.returncode == 2 and not (tmp_path / "data").exists()
    assert "digits.jsonl line 1: characters not in the vocabulary: '0'" in refused.stderr
    prepared = run_lucidlm(
        "data", "prepare", "--chat", tmp_path / "chat.jsonl", "--tokenizer-from", base, "--out", tmp_path / "data"
    )
    assert prepared.returncode == 0, prepared.stderr
    assert "20 conversations and 0 texts" in prepared.stdout
    tuned = run_lucidlm("train", "--init-from", base, "--data", tmp_path / "data", "--out",
                        tmp_path / "sft", "--max-steps", "6", "--device", "cpu", "--no-progress")  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr
    base_model, base_tokenizer, _ = load_model(base)
    _, tokenizer, config = load_model(tmp_path / "sft", "latest")
    assert chat_template(tokenizer) == OWN_CHAT_TEMPLATE and tokenizer.extends(base_tokenizer)
    assert config.model.vocab_size == base_model.config.vocab_size + 4
    # the run speaks its template: a reply stops at the end of turn
    chatted = run_lucidlm("chat", "--checkpoint", tmp_path / "sft", "--temperature", "0",
                          "--max-new-tokens", "5", input="Speak a\n/reset\nSpeak 4\nSpeak e\n")  # fmt: skip
    assert chatted.returncode == 0, chatted.stderr
    assert len(chatted.stdout.splitlines()) == 3 and "note:" not in chatted.stderr
    assert chatted.stderr.strip() == "error: characters not in the vocabulary: '4'; remove them"
    # the base model's own data is still scored, its tokenizer being the chat one's without the turns
    scored = run_lucidlm("eval", "--checkpoint", tmp_path / "sft", "--data", base / "data", "--which", "latest")
    assert scored.returncode == 0, scored.stderr
    mismatched = run_lucidlm("train", "--init-from", base, "--data", tmp_path / "data", "--out",
                             tmp_path / "x", "--set", "lora_rank=2", "--max-steps", "1")  # fmt: skip
    assert mismatched.returncode == 0, mismatched.stderr
    assert load_model(tmp_path / "x", "latest")[2].train.lora_embeddings
