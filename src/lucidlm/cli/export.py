"""`lucidlm export`: write a trained model for Hugging Face transformers, llama.cpp (GGUF) or the browser (web)."""

from __future__ import annotations

import argparse
import shlex

from lucidlm.cli.common import (
    add_checkpoint_choice,
)
from lucidlm.errors import ConfigError
from lucidlm.outputs import FORCE, FORCE_HELP

NAME = "export"
HELP = "write a trained model for Hugging Face transformers, llama.cpp (GGUF) or the browser (web)"
GUIDE = "docs/guides/hub-and-exports.md"
EXAMPLES = """examples:
  lucidlm export --checkpoint runs/a --format hf --out exported/a
  then in Python: transformers.pipeline("text-generation", model="exported/a")("ROMEO:")
  lucidlm export --checkpoint runs/a --format gguf --out a.gguf --quantize q8_0
  then: llama-cli -m a.gguf -p "ROMEO:"   (or Ollama: a Modelfile with FROM ./a.gguf)
  lucidlm export --checkpoint runs/a --format web --out site/model
  then: python -m http.server -d site/model   (or any static host), and open http://localhost:8000"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR|hf:DIR")
    parser.add_argument(
        "--format",
        choices=["hf", "gguf", "web"],
        default="hf",
        help="hf: a transformers directory, GPT-2, Llama or Qwen3 layout (default); gguf: one file for llama.cpp; "
        "web: a static page that runs the model and its forward pass step by step in the browser",
    )
    parser.add_argument("--out", required=True, metavar="PATH", help="hf: a new or empty directory; gguf: a file")
    parser.add_argument(
        "--quantize", choices=["f32", "f16", "q8_0"], help="gguf only: how the matrices are stored (default f32)"
    )
    parser.add_argument(FORCE, action="store_true", help=FORCE_HELP)
    add_checkpoint_choice(parser)


def run(args: argparse.Namespace) -> None:
    from lucidlm.interop.hf_export import export_hf
    from lucidlm.interop.hf_layout import ARCHITECTURES, family
    from lucidlm.load import load_model

    if args.quantize and args.format != "gguf":
        raise ConfigError("--quantize is for --format gguf; a Hugging Face export is stored in float32")
    model, tokenizer, _ = load_model(args.checkpoint, args.which, dtype=args.dtype)
    if args.format == "web":
        from lucidlm.interop.web import export_web

        out = export_web(model, tokenizer, args.out, force=args.force)
        print(
            f"wrote {out}: serve the folder from any web host, e.g. python -m http.server -d {shlex.quote(str(out))}, "
            "and open http://localhost:8000"
        )
        return
    if args.format == "gguf":
        from lucidlm.interop.gguf import export_gguf, ollama_modelfile

        out = export_gguf(model, tokenizer, args.out, args.quantize or "f32", force=args.force)
        print(
            f"wrote {out} ({family(model.config)}, {args.quantize or 'f32'}): run it with llama.cpp "
            f"(llama-cli -m {shlex.quote(str(out))}) or, in Ollama, with a Modelfile of:\n{ollama_modelfile(out)}"
        )
        return
    out = export_hf(model, tokenizer, args.out, force=args.force)
    layout = ARCHITECTURES[family(model.config)]
    print(
        f"wrote {out} ({layout}): load it with transformers.AutoModelForCausalLM.from_pretrained('{out}') "
        f"and AutoTokenizer.from_pretrained('{out}')"
    )
