"""`lucidlm serve`: serve a model: an OpenAI-compatible API and the model inspector."""

from __future__ import annotations

import argparse
import sys

from lucidlm.cli.common import (
    add_checkpoint_choice,
    add_device_argument,
    port_number,
)
from lucidlm.errors import ConfigError

NAME = "serve"
HELP = "serve a model: an OpenAI-compatible API and the model inspector"
GUIDE = "docs/guides/sampling-and-serving.md"
EXAMPLES = """examples:
  lucidlm serve --checkpoint runs/a                 (http://127.0.0.1:8000: the inspector; /v1: the API)
  lucidlm serve --checkpoint runs/a --port 9000 --max-batch 32
  then: openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none").completions.create(model="a", ...)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR|hf:DIR")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    parser.add_argument("--port", type=port_number, default=8000)
    parser.add_argument("--model-name", help="the model id clients ask for (default: the run directory's name)")
    parser.add_argument("--max-batch", type=int, default=16, help="requests decoded together (default 16)")
    parser.add_argument("--max-waiting", type=int, default=64, help="requests queued beyond those (default 64)")
    parser.add_argument("--max-tokens", type=int, default=2048, help="the most tokens a request may ask for")
    add_device_argument(parser)
    parser.add_argument("--threads", type=int, help="PyTorch threads on the CPU (default: all cores but one)")
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="URL",
        help="a web page (e.g. http://localhost:3000) whose scripts may call the API; others are refused",
    )
    add_checkpoint_choice(parser)


def run(args: argparse.Namespace) -> None:
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
