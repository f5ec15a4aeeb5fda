"""`lucidlm export --format hf`: a run as a directory that `transformers` loads (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json with the chat template, generation_config.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save_file

from lucidlm.chat.template import chat_template
from lucidlm.interop.hf_layout import family, hf_config, to_hf_state
from lucidlm.model import GPT
from lucidlm.outputs import HF_EXPORT, written_directory
from lucidlm.tokenizers import BPETokenizer, Tokenizer
from lucidlm.tokenizers.base import added_tokens_json
from lucidlm.tokenizers.hf import HFTokenizer


# --- tokenizers ---------------------------------------------------------------------------------------------
def hf_tokenizer_json(tokenizer: Tokenizer) -> dict:
    """tokenizer.json in the `tokenizers` format. BPE already is; char and word become a WordLevel model whose
    pre-tokenizer splits text the way ours does, with a decoder that joins the pieces unchanged."""
    if isinstance(tokenizer, (BPETokenizer, HFTokenizer)):
        return tokenizer.to_dict()
    if tokenizer.kind == "char":
        pattern, vocab, unknown = r"[\s\S]", tokenizer.chars, None
    else:
        pattern, vocab, unknown = r"\w+|\s+|[^\w\s]", tokenizer.vocab, tokenizer.vocab[0]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens_json(tokenizer.special_tokens),
        "normalizer": None,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {
            "type": "WordLevel",
            "vocab": {token: i for i, token in enumerate(vocab)},
            "unk_token": unknown if unknown else "",
        },
    }


def _eos(tokenizer: Tokenizer) -> tuple[str | None, int | None]:
    if not tokenizer.eos_ids:
        return None, None
    return tokenizer.decode(tokenizer.eos_ids[:1]), tokenizer.eos_ids[0]


# --- directories --------------------------------------------------------------------------------------------
def export_hf(model: GPT, tokenizer: Tokenizer, out_dir: str | os.PathLike, force: bool = False) -> Path:
    """Write a directory that `transformers.AutoModelForCausalLM.from_pretrained` and `AutoTokenizer` load.
    An existing `out_dir` is refused unless it is an earlier export and `force` is given (lucidlm.outputs)."""
    config = model.config
    family(config)  # refuse early, before anything is written
    with written_directory(out_dir, HF_EXPORT, force) as tmp:
        _write_hf_files(model, tokenizer, tmp)
    return Path(out_dir)


def _write_hf_files(model: GPT, tokenizer: Tokenizer, tmp: Path) -> None:
    config = model.config
    eos_text, eos_id = _eos(tokenizer)
    state = {name: t.detach().cpu().float().contiguous() for name, t in model.state_for_saving().items()}
    save_file(to_hf_state(config, state), tmp / "model.safetensors", metadata={"format": "pt"})
    files = {
        # "exported_by" marks the directory as lucidlm's own, which `--force` may replace (lucidlm.outputs)
        "config.json": {**hf_config(config, eos_id), "exported_by": "lucidlm"},
        "tokenizer.json": hf_tokenizer_json(tokenizer),
        "tokenizer_config.json": {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": config.block_size,
            "clean_up_tokenization_spaces": False,
            "eos_token": eos_text,
            "bos_token": eos_text,
            **({"chat_template": template} if (template := chat_template(tokenizer)) else {}),
        },
        "generation_config.json": {
            "bos_token_id": eos_id,
            # every id that ends a text: a chat model's end of turn too, so that `generate` stops after a reply
            "eos_token_id": tokenizer.eos_ids if len(tokenizer.eos_ids) > 1 else eos_id,
            "max_length": config.block_size,
            "do_sample": True,
            "temperature": 0.8,
            "top_k": 50,
        },
    }
    for name, data in files.items():
        (tmp / name).write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
