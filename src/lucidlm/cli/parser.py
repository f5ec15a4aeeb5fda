"""The `lucidlm` argument parser, put together from the command modules (each adds its own arguments)."""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from lucidlm import __version__

# Each command's module in lucidlm.cli, in the order `lucidlm --help` lists them; `data` holds `data prepare`.
COMMANDS = {
    "data": "data",
    "train": "train",
    "generate": "generate",
    "chat": "chat",
    "eval": "eval",
    "scale": "scale",
    "lens": "lens",
    "lessons": "lessons",
    "exercises": "exercises",
    "serve": "serve",
    "tutorial": "tutorial",
    "export": "export",
}
REPOSITORY_DOCS = "the guide: {guide} in lucidlm's repository"


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"lucidlm.cli.{COMMANDS[name]}")


def add_command(parent: argparse._SubParsersAction, module: ModuleType) -> argparse.ArgumentParser:
    """A sub-command with its help, examples and guide as the epilog, and the module's own arguments."""
    parser = parent.add_parser(
        module.NAME,
        help=module.HELP,
        description=module.HELP,
        epilog=f"{module.EXAMPLES}\n\n{REPOSITORY_DOCS.format(guide=module.GUIDE)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lucidlm", description="Train, sample and evaluate GPT language models you can read end to end."
    )
    parser.add_argument("--version", action="version", version=f"lucidlm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        if name == "data":
            data = commands.add_parser("data", help="prepare text as token files")
            actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
            add_command(actions, command_module("data"))
        else:
            add_command(commands, command_module(name))
    return parser
