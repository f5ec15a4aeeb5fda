"""`lucidlm tutorial`: the lessons in the browser, with code you can edit and run."""

from __future__ import annotations

import argparse
import functools
import math
import shlex

from lucidlm.cli.common import (
    port_number,
)
from lucidlm.errors import ConfigError
from lucidlm.outputs import FORCE_HELP

NAME = "tutorial"
HELP = "the lessons in the browser, with code you can edit and run"
GUIDE = "docs/guides/course.md"
EXAMPLES = """examples:
  lucidlm tutorial                  (prints a URL with a one-time token; open it in a browser)
  lucidlm tutorial --port 8890 --time-limit 60
  lucidlm tutorial --build site/    (static pages: open site/index.html, or host the folder anywhere)
  lucidlm tutorial --build site/ --checkpoint runs/a   (and your model's forward pass, as site/model/)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=port_number, default=8890)
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds a cell may run (default 30)")
    parser.add_argument("--memory-limit", type=int, default=4096, help="MiB a lesson's kernel may use (default 4096)")
    parser.add_argument(
        "--process-limit", type=int, default=256, help="processes and threads a kernel may run (default 256)"
    )
    parser.add_argument(
        "--kernels", type=int, default=3, help="lessons' kernels kept at once (default 3; each is one Python)"
    )
    parser.add_argument("--no-browser", action="store_true", help="only print the URL")
    parser.add_argument(
        "--build",
        metavar="SITE_DIR",
        help="write the lessons as static pages (maths, code, and the output of running them) instead of serving",
    )
    parser.add_argument(
        "--lessons", type=int, nargs="+", metavar="N", help="with --build: only these lessons (default all)"
    )
    parser.add_argument(
        "--checkpoint",
        metavar="RUN_DIR",
        help="with --build: add this model's page (as export --format web writes it) as the site's model/",
    )
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)


def run(args: argparse.Namespace) -> None:
    from lucidlm.serve.server import bind, run_forever
    from lucidlm.tutorial.kernel import KernelLimits
    from lucidlm.tutorial.sandbox import CellCap, containment
    from lucidlm.tutorial.server import create_tutorial_app, new_token

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
    if args.memory_limit < 256 or args.process_limit < 16 or args.kernels < 1:
        raise ConfigError("--memory-limit must be at least 256 MiB, --process-limit at least 16, --kernels at least 1")
    sock = bind("127.0.0.1", args.port)
    port, token = sock.getsockname()[1], new_token()
    url = f"http://127.0.0.1:{port}/?token={token}"
    print(f"the tutorial is at {url}\n(only this machine can reach it, and only with the token; Ctrl-C stops it)")
    if not args.no_browser:
        import webbrowser

        webbrowser.open(url)
    limits = KernelLimits(args.time_limit, args.memory_limit, args.process_limit, args.kernels)
    print(
        f"each cell: {limits.seconds:g} s; each lesson's kernel: {limits.memory_mib} MiB, {limits.processes} "
        f"processes, {limits.kernels} kernels at once (the process cap: {CellCap.probe()}; containment: "
        f"{containment()})"
    )
    run_forever(create_tutorial_app(token, limits), sock)
