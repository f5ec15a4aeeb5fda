"""A Hugging Face model directory as the Hub serves it (config.json, safetensors weights or their shards,
tokenizer.json) read as lucidlm's GPT and tokenizer: `hf:DIR` and `--init-from hf:DIR`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError

from lucidlm.errors import CheckpointError, ConfigError
from lucidlm.inputs import COUNT, read_json
from lucidlm.interop.hf_layout import config_from_hf, from_hf_state
from lucidlm.memory import return_freed_memory
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer, load_tokenizer
from lucidlm.tokenizers.hf import load_hf_directory_tokenizer, read_tokenizer_file

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


class LazyWeights(Mapping):
    """The tensors of a model's safetensors files, each read from disk when it is asked for (and cast to
    `dtype`, where one is asked for), so that converting them never holds the files' tensors and ours at once.

    The file is read with plain reads into each tensor's own memory. `safetensors.safe_open` maps the whole file
    instead, and while the map is open every page read through it stays in the process's memory: with the
    converted tensors beside them, a 500 MB model peaked at 2x its size. The format is a little-endian u64
    header length, a JSON header ({name: {dtype, shape, data_offsets}}), then the bytes."""

    def __init__(self, files: list[Path], dtype: torch.dtype | None):
        self.dtype, self.entries = dtype, {}
        for path in files:
            with open(path, "rb") as f:
                length = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(length))
            header.pop("__metadata__", None)
            for name, entry in header.items():
                self.entries[name] = (path, 8 + length, entry)

    def __getitem__(self, name: str) -> torch.Tensor:
        path, data_start, entry = self.entries[name]
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name} is {entry['dtype']}; lucidlm reads F32, F16 and BF16")
        start, end = entry["data_offsets"]
        return_freed_memory()  # what converting the previous tensor freed
        raw = torch.empty(end - start, dtype=torch.uint8)
        with open(path, "rb") as f:
            f.seek(data_start + start)
            if f.readinto(raw.numpy()) != end - start:
                raise CheckpointError(f"{path} is truncated (tensor {name})")
        tensor = raw.view(SAFETENSORS_DTYPES[entry["dtype"]]).reshape(entry["shape"])
        return tensor if self.dtype is None else tensor.to(self.dtype)

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def weight_files(directory: Path) -> list[Path]:
    """model.safetensors, or the shards its index names; pickled .bin weights are refused, never read."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        try:
            return [directory / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        except (json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{index} is not a safetensors index ({exc})") from None
    if (directory / "model.safetensors").exists():
        return [directory / "model.safetensors"]
    pickled = sorted(p.name for p in directory.glob("*.bin"))
    if pickled:
        raise CheckpointError(
            f"{directory} has only pickled weights ({pickled[0]}); lucidlm never unpickles files, convert them to "
            "safetensors (transformers: model.save_pretrained(dir, safe_serialization=True))"
        )
    raise CheckpointError(f"{directory} has no model.safetensors; give a Hugging Face model directory")


def read_hf_config(directory: str | os.PathLike) -> dict:
    """A Hugging Face directory's config.json."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise CheckpointError(f"{directory} has no config.json; give a Hugging Face model directory")
    return read_json(directory / "config.json", dict, CheckpointError, "give a Hugging Face model directory")


def load_hf(directory: str | os.PathLike, dtype: str | None = None) -> tuple[GPT, GPTConfig]:
    """A GPT-2, Llama or Qwen3 directory (config.json and model.safetensors, or its shards) as our GPT, in the
    weights' own dtype or in `dtype` ("float32", "float16", "bfloat16"). The model is made on PyTorch's meta
    device (no memory) and takes the converted tensors as its own, so the weights are in memory once."""
    directory = Path(directory)
    data = read_hf_config(directory)
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype} is not one of: {', '.join(DTYPES)}")
    config = config_from_hf(data)
    try:
        weights = LazyWeights(weight_files(directory), DTYPES.get(dtype))
        state = from_hf_state(config, weights)
    except (OSError, ValueError, SafetensorError) as exc:  # ValueError: a header that is not JSON
        raise CheckpointError(f"cannot read the weights in {directory} ({exc})") from None
    except KeyError as exc:
        raise CheckpointError(f"the weights in {directory} lack {exc} that its config.json needs") from None
    try:
        model = GPT.from_state(config, state)
    except ValueError as exc:
        raise CheckpointError(f"the weights in {directory} do not fit its config.json ({exc})") from None
    return model.eval(), config


def load_hf_model(directory: str | os.PathLike, dtype: str | None = None) -> tuple[GPT, Tokenizer, GPTConfig]:
    """`load_hf` and `load_hf_tokenizer`, the tokenizer checked against the model once: every id it can give
    must have a row in the embedding (a tokenizer of another model gave an IndexError mid-generation), and an
    empty one gives nothing to run the model on."""
    model, config = load_hf(directory, dtype)
    tokenizer = load_hf_tokenizer(directory)
    if tokenizer.vocab_size == 0:
        raise CheckpointError(f"{directory}/tokenizer.json holds no tokens; give the model's own tokenizer.json")
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{directory}/tokenizer.json has {tokenizer.vocab_size:,} tokens, more than the {config.vocab_size:,} "
            "rows of the model's embedding (config.json vocab_size); the tokenizer is not this model's"
        )
    return model, tokenizer, config


def hf_eos_ids(directory: str | os.PathLike) -> list[int]:
    """The end-of-text ids of a Hub directory: generation_config.json's, else config.json's (an id or a list)."""
    for name in ("generation_config.json", "config.json"):
        path = Path(directory) / name
        if path.exists():
            shape = {"eos_token_id?": (COUNT, [COUNT], None)}
            value = read_json(path, shape, CheckpointError, "give a Hugging Face model directory").get("eos_token_id")
            if value is not None:
                return [value] if isinstance(value, int) else value
    return []


def load_hf_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """The tokenizer of a Hugging Face directory. What lucidlm's own export wrote comes back as lucidlm's own
    tokenizer (its BPE, or the WordLevel forms of its char and word tokenizers); any other tokenizer.json is
    run by Hugging Face `tokenizers` itself (tokenizers/hf.py), with the directory's end-of-text ids."""
    path = Path(directory) / "tokenizer.json"
    data = read_tokenizer_file(path)
    model = data.get("model", {}) if isinstance(data, dict) else {}
    if model.get("type") == "WordLevel":
        vocab = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
        special = [token["content"] for token in sorted(data.get("added_tokens") or [], key=lambda t: t["id"])]
        pattern = (data.get("pre_tokenizer") or {}).get("pattern", {}).get("Regex")
        if pattern == r"[\s\S]":
            return CharTokenizer(vocab, special)
        if pattern == r"\w+|\s+|[^\w\s]":
            return WordTokenizer(vocab, special)
    if BPETokenizer.is_own_format(data):
        return load_tokenizer(path)
    return load_hf_directory_tokenizer(directory, hf_eos_ids(directory))
