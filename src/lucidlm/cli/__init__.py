"""The `lucidlm` command: parses arguments, calls the library, and turns user mistakes into one-line errors.

Exit status: 0 success, 2 a usage or input error (one line on stderr, no traceback), 1 an unexpected failure.
Each command is a module of this package with NAME, HELP, EXAMPLES, GUIDE, add_arguments(parser) and run(args);
parser.py puts them together. None of them imports PyTorch before its command runs.
"""

from __future__ import annotations

import signal
import sys
import threading

from lucidlm.cli.parser import build_parser, command_module
from lucidlm.errors import LucidError, Terminated, raise_terminated

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, raise_terminated)
    try:
        status = command_module(args.command).run(args)
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
