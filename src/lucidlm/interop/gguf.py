"""To llama.cpp, Ollama and LM Studio: one GGUF file, written with llama.cpp's own `gguf` package.

The three layouts of the Hugging Face export (export/hf.py's `family`) are llama.cpp architectures too:
the Llama layout is `llama`, the Llama layout with QK-norm `qwen3`, the GPT-2 layout `gpt2`. The tensors are
the Hugging Face export's (`to_hf_state`), taken through the steps llama.cpp's own converter takes, and named
by gguf's `TensorNameMap` (the converter's table):
- GPT-2 keeps its linear weights as (in, out) Conv1D matrices; llama.cpp wants them (out, in), as we have them.
- llama.cpp's `llama` rotates interleaved pairs (x0, x1), (x2, x3), ... of each head, where we and Hugging
  Face rotate its two halves (x_i with x_{i + D/2}). The same rotation in llama.cpp's order needs the rows of
  the query and key weights reordered within each head (`interleave_rope_rows`). `qwen3` rotates halves, as we
  do, and takes the weights as they are.

The tokenizer becomes llama.cpp's `gpt2` model, byte-level BPE over GPT-2's byte-to-unicode characters:
- BPE: our vocabulary and merges in their order (llama.cpp merges by rank, as we do), the split pattern as the
  pre-tokenizer llama.cpp knows by name, special tokens as control tokens.
- char: every character a token; a character of several UTF-8 bytes is reached by merging its bytes.
- word: refused, with the reason (see `gguf_vocabulary`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

from lucidlm.chat.template import chat_template
from lucidlm.errors import ConfigError
from lucidlm.interop.hf_layout import family, to_hf_state
from lucidlm.model import GPT, GPTConfig
from lucidlm.outputs import GGUF_FILE, written_file
from lucidlm.tokenizers import BPETokenizer, CharTokenizer, Tokenizer
from lucidlm.tokenizers.base import END_OF_TURN
from lucidlm.tokenizers.bpe import bytes_to_unicode

QUANTIZATIONS = ("f32", "f16", "q8_0")
ARCHITECTURES = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen3": gguf.MODEL_ARCH.QWEN3, "gpt2": gguf.MODEL_ARCH.GPT2}
GPT2_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
# our split patterns (tokenizers/bpe.py) -> the pre-tokenizer llama.cpp applies under that name
PRE_TOKENIZERS = {"gpt2": "gpt-2", "gpt4": "llama-bpe"}
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}


@dataclass
class Vocabulary:
    """What llama.cpp's tokenizer needs: tokens (by id), their types, the merges, the pre-tokenizer, eos."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    eos_id: int | None


def interleave_rope_rows(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder each head's rows from halves (0..D/2-1 | D/2..D-1) to pairs (0, D/2, 1, D/2+1, ...): the query
    or key projection that llama.cpp's interleaved RoPE turns exactly as our half-split RoPE turns ours."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def gguf_tensors(config: GPTConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict under llama.cpp's names and layouts, in fp32."""
    kind = family(config)
    names = gguf.get_tensor_name_map(ARCHITECTURES[kind], config.n_layer)
    out = {}
    rope_heads = {"self_attn.q_proj.": config.n_head, "self_attn.k_proj.": config.n_kv_head}
    for hf_name, tensor in to_hf_state(config, state).items():
        tensor = tensor.detach().float().cpu()
        if kind == "gpt2" and any(f".{linear}.weight" in hf_name for linear in GPT2_CONV1D):
            tensor = tensor.t()  # Conv1D (in, out) back to (out, in)
        if kind == "llama":
            for part, heads in rope_heads.items():
                if part in hf_name:
                    tensor = interleave_rope_rows(tensor, heads)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ConfigError(f"{hf_name} has no llama.cpp name in the {kind} architecture")
        out[name] = tensor.contiguous()
    if kind == "gpt2" and config.tie_embeddings:
        out["output.weight"] = out["token_embd.weight"]  # llama.cpp's gpt2 reads the head as its own tensor
    return out


def gguf_vocabulary(tokenizer: Tokenizer, vocab_size: int) -> Vocabulary:
    """Our tokenizer as llama.cpp's byte-level BPE (`gpt2` tokenizer model), padded to the model's vocab_size."""
    as_text = bytes_to_unicode()

    def printable(data: bytes) -> str:
        return "".join(as_text[b] for b in data)

    normal, control = int(gguf.TokenType.NORMAL), int(gguf.TokenType.CONTROL)
    if isinstance(tokenizer, BPETokenizer):
        if tokenizer.pattern not in PRE_TOKENIZERS:
            raise ConfigError(f"llama.cpp has no pre-tokenizer for the split pattern {tokenizer.pattern!r}")
        pieces = tokenizer.token_bytes
        tokens = [printable(piece) for piece in pieces] + [""] * len(tokenizer.special_tokens)
        types = [normal] * len(tokens)
        for text, index in tokenizer.special_tokens.items():
            tokens[index], types[index] = text, control
        merges = [f"{printable(pieces[a])} {printable(pieces[b])}" for a, b in tokenizer.merges]
        vocabulary = Vocabulary(
            tokens, types, merges, PRE_TOKENIZERS[tokenizer.pattern], tokenizer.special_tokens.get("<|endoftext|>")
        )
    elif isinstance(tokenizer, CharTokenizer):
        if "\n" not in tokenizer.chars:
            raise ConfigError("llama.cpp needs a newline token, and this char vocabulary has none")
        tokens, merges, seen = [], [], set()
        for char in tokenizer.chars:
            data = char.encode("utf-8")
            tokens.append(printable(data))
            for end in range(2, len(data) + 1):  # the bytes of a multi-byte character, merged left to right
                merge = f"{printable(data[: end - 1])} {printable(data[end - 1 : end])}"
                if merge not in seen:
                    seen.add(merge)
                    merges.append(merge)
        if not merges:  # llama.cpp refuses a BPE vocabulary without merges; 0xFE 0xFF never occur in UTF-8
            merges.append(printable(bytes([0xFE])) + " " + printable(bytes([0xFF])))
        types = [normal] * len(tokens) + [control] * len(tokenizer.special_tokens)  # a chat model's turn tokens
        vocabulary = Vocabulary(tokens + list(tokenizer.special_tokens), types, merges, PRE_TOKENIZERS["gpt2"], None)
    else:
        why = {
            "word": "its byte-level BPE reaches a word only through merges of smaller pieces, which a word "
            "vocabulary does not have; train with the char or bpe tokenizer",
            "hf": "an imported Hugging Face tokenizer is not mapped to llama.cpp's yet; convert the Hub model "
            "with llama.cpp's own convert_hf_to_gguf.py",
        }[tokenizer.kind]
        raise ConfigError(f"a {tokenizer.kind} vocabulary cannot be llama.cpp's: {why}")
    if len(vocabulary.tokens) > vocab_size:
        raise ConfigError(f"the tokenizer has {len(vocabulary.tokens)} tokens, more than vocab_size={vocab_size}")
    for index in range(len(vocabulary.tokens), vocab_size):  # a padded embedding: rows no text ever reaches
        vocabulary.tokens.append(f"[PAD{index}]")
        vocabulary.types.append(int(gguf.TokenType.UNUSED))
    return vocabulary


def _stored(tensor: torch.Tensor, quantize: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType | None]:
    """The tensor's bytes as the file keeps them: 1-D tensors (norms, biases) stay fp32, as llama.cpp's
    converter keeps them; matrices become fp16, or q8_0 where their rows split into q8_0's blocks of 32."""
    data = tensor.numpy()
    if quantize == "f32" or data.ndim == 1:
        return data.astype(np.float32), None
    if quantize == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return data.astype(np.float16), None


def export_gguf(
    model: GPT, tokenizer: Tokenizer, out_path: str | os.PathLike, quantize: str = "f32", force: bool = False
) -> Path:
    """Write `out_path`, a GGUF file llama.cpp loads and runs with lucidlm's tokens and logits. An existing
    file is replaced only if it is a GGUF file and `force` is given (lucidlm.outputs)."""
    if quantize not in QUANTIZATIONS:
        raise ConfigError(f"--quantize {quantize} is not one of: {', '.join(QUANTIZATIONS)}")
    config = model.config
    kind = family(config)
    if kind == "gpt2" and config.mlp != "gelu":  # refused, like the vocabulary below, before anything is written
        raise ConfigError(f"llama.cpp's gpt2 architecture has GELU only, not mlp={config.mlp}; train with mlp=gelu")
    vocabulary = gguf_vocabulary(tokenizer, config.vocab_size)
    tensors = gguf_tensors(config, model.state_for_saving())
    with written_file(out_path, GGUF_FILE, force) as tmp:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[ARCHITECTURES[kind]])
        writer.add_name(Path(out_path).stem)
        writer.add_file_type(FILE_TYPES[quantize])
        writer.add_context_length(config.block_size)
        writer.add_embedding_length(config.n_embd)
        writer.add_block_count(config.n_layer)
        writer.add_feed_forward_length(config.mlp_hidden)
        writer.add_head_count(config.n_head)
        writer.add_head_count_kv(config.n_kv_head)
        writer.add_vocab_size(config.vocab_size)
        if kind == "gpt2":
            writer.add_layer_norm_eps(config.norm_eps)
        else:
            writer.add_layer_norm_rms_eps(config.norm_eps)
            writer.add_rope_freq_base(config.rope_theta)
            writer.add_rope_dimension_count(config.head_dim)
            writer.add_key_length(config.head_dim)
            writer.add_value_length(config.head_dim)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(vocabulary.pre)
        writer.add_token_list(vocabulary.tokens)
        writer.add_token_types(vocabulary.types)
        writer.add_token_merges(vocabulary.merges)
        writer.add_add_bos_token(False)  # lucidlm's models start from the text itself
        if vocabulary.eos_id is not None:
            writer.add_bos_token_id(vocabulary.eos_id)
            writer.add_eos_token_id(vocabulary.eos_id)
        template = chat_template(tokenizer)
        if template is not None:  # lucidlm's own template: llama.cpp's chat ends a reply at <|end|>
            writer.add_chat_template(template)
            writer.add_eot_token_id(tokenizer.special_tokens[END_OF_TURN])
        for name, tensor in tensors.items():
            data, raw_dtype = _stored(tensor, quantize)
            writer.add_tensor(name, data, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return Path(out_path)


def ollama_modelfile(path: Path) -> str:
    """What to put in an Ollama Modelfile to run the file (`ollama create NAME -f Modelfile`)."""
    return f"FROM ./{path.name}\n"
