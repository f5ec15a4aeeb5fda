"""Export to and import from Hugging Face transformers, with tiny models built here (nothing is downloaded)."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

from lucidlm.decode import SamplingConfig
from lucidlm.errors import ConfigError
from lucidlm.generate import generate_ids
from lucidlm.interop.hf_export import export_hf
from lucidlm.interop.hf_import import load_hf, load_hf_tokenizer
from lucidlm.interop.hf_layout import family
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer

from ..conftest import run_lucidlm, tiny_model_args

transformers.logging.set_verbosity_error()
TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"

LAYOUTS = {
    "gpt2 (no bias, tied)": dict(positions="learned", norm="layernorm", mlp="gelu", bias=False),
    "gpt2 (bias, relu2, untied)": dict(
        positions="learned", norm="layernorm", mlp="relu2", bias=True, tie_embeddings=False
    ),
    "llama (gqa, untied)": dict(positions="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, tie_embeddings=False),
    "llama (bias, tied)": dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=True, rope_theta=500.0),
    "qwen3 (qk_norm, gqa, tied)": dict(positions="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True, n_kv_head=2),
}
CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def random_model(vocab_size: int, **switches) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=32, **switches))
    return perturb_vectors(model).eval()


def perturb_vectors(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial gains and biases, so that a wrong mapping cannot hide behind initial ones and zeros."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("switches", LAYOUTS.values(), ids=list(LAYOUTS))
def test_exported_model_gives_our_logits_and_greedy_text_in_transformers(tmp_path, switches):
    tokenizer = CharTokenizer.train([TEXT])
    model = random_model(tokenizer.vocab_size, **switches)
    export_hf(model, tokenizer, tmp_path / "hf")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == CLASSES[family(model.config)]
    ids = torch.tensor([tokenizer.encode("To be, or not to be")])
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, model(ids)[0], rtol=0, atol=1e-4)
        generated = theirs.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[0, ids.shape[1] :]
    assert generated.tolist() == list(generate_ids(model, ids[0].tolist(), 12, SamplingConfig(temperature=0)))


@pytest.mark.parametrize(
    "tokenizer",
    [CharTokenizer.train([TEXT]), WordTokenizer.train([TEXT]), BPETokenizer.train(TEXT * 3, 300, progress=False)],
    ids=["char", "word", "bpe"],
)
def test_exported_tokenizer_works_with_autotokenizer_and_reads_back(tmp_path, tokenizer):
    export_hf(random_model(tokenizer.vocab_size), tokenizer, tmp_path / "hf")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "Whether 'tis nobler in the mind"
    ours = tokenizer.encode(text)
    assert theirs(text)["input_ids"] == ours
    assert theirs.decode(ours) == text
    assert load_hf_tokenizer(tmp_path / "hf").encode(text) == ours


def test_pipeline_runs_on_an_export(tmp_path):
    tokenizer = CharTokenizer.train([TEXT])
    export_hf(random_model(tokenizer.vocab_size), tokenizer, tmp_path / "hf")
    generator = transformers.pipeline("text-generation", model=str(tmp_path / "hf"), device="cpu")
    out = generator("To be", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert out.startswith("To be") and len(out) == len("To be") + 8


@pytest.mark.parametrize(
    ("switches", "message"),
    [
        (dict(positions="sinusoidal"), "neither GPT-2 .* nor Llama .* can hold positions=sinusoidal"),
        (dict(positions="rope", norm="layernorm"), "can hold positions=rope, norm=layernorm"),
        (dict(n_kv_head=2), "GPT-2 layout has no grouped-query attention; set n_kv_head=4"),
        (
            dict(positions="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True, bias=True),
            "Qwen3, the layout with qk_norm, has no MLP biases; set bias=false",
        ),
    ],
)
def test_configurations_neither_family_holds_are_refused(tmp_path, switches, message):
    with pytest.raises(ConfigError, match=message):
        export_hf(random_model(10, **switches), CharTokenizer.train([TEXT]), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def hf_models():
    torch.manual_seed(1)
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=300,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=4,
            activation_function="gelu_new",
            resid_pdrop=0,
            embd_pdrop=0,
            attn_pdrop=0,
            bos_token_id=299,
            eos_token_id=299,
        )
    )
    # Qwen3 is Llama's shape plus q_norm/k_norm; here it is also tied, where this Llama is not.
    llama_shape = dict(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=32,
        rope_theta=1000.0,
        bos_token_id=299,
        eos_token_id=299,
    )
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(**llama_shape))
    qwen3 = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**llama_shape, tie_word_embeddings=True))
    return {"gpt2": gpt2, "llama": llama, "qwen3": qwen3}


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen3"])
def test_import_gives_their_logits_and_the_round_trip_keeps_every_tensor(tmp_path, name):
    theirs = hf_models()[name].eval()
    perturb_vectors(theirs)
    theirs.save_pretrained(tmp_path / "hf")
    ours, _ = load_hf(tmp_path / "hf")
    ids = torch.randint(0, 300, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], theirs(ids).logits, rtol=0, atol=1e-5)
    export_hf(ours, BPETokenizer.train(TEXT, 300, progress=False), tmp_path / "again")
    original = load_file(tmp_path / "hf" / "model.safetensors")
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert set(again) == set(original)
    for key, tensor in original.items():
        assert torch.equal(again[key], tensor), key


def test_cli_export_and_fine_tune_from_the_export(tmp_path, text_file):
    lucidlm, tiny = run_lucidlm, tiny_model_args()
    trained = lucidlm("train", "--data", text_file, "--out", tmp_path / "run", "--max-steps", 60, *tiny)
    assert trained.returncode == 0, trained.stderr
    exported = lucidlm("export", "--checkpoint", tmp_path / "run", "--format", "hf", "--out", tmp_path / "hf")
    # the default preset (shakespeare-char) has QK-norm: Qwen3's layout
    assert exported.returncode == 0 and "Qwen3ForCausalLM" in exported.stdout, exported.stderr
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "qwen3"
    tuned = lucidlm(
        "train",
        "--init-from",
        f"hf:{tmp_path / 'hf'}",
        "--data",
        text_file,
        "--out",
        tmp_path / "tuned",
        "--max-steps",
        5,
        "--set",
        "eval_interval=5",
        "--device",
        "cpu",
    )
    assert tuned.returncode == 0, tuned.stderr
    first = json.loads((tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()[0])
    start = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] < start["loss"] - 0.5  # it starts from the trained weights, not from scratch
    refused = lucidlm(
        "train",
        "--init-from",
        f"hf:{tmp_path / 'hf'}",
        "--data",
        text_file,
        "--out",
        tmp_path / "x",
        "--set",
        "n_layer=3",
    )
    assert refused.returncode == 2 and "comes from --init-from; drop --set n_layer" in refused.stderr
