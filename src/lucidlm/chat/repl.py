"""`lucidlm chat`: talk to a model in the terminal, one streamed reply at a time.

Each line you type is a user turn; the reply streams as it is sampled and ends at the model's end of turn. The
whole conversation goes back to the model every turn, through its chat template, with the oldest exchanges
dropped (whole turns, never half of one) once it would not leave room for a reply in the model's context.
Commands: /system TEXT (a system prompt; /system alone removes it), /reset (forget the conversation), /exit.
Ctrl-C stops a reply and keeps the chat; Ctrl-D (end of input) ends it; a turn the model cannot read is an
error on stderr, and the chat goes on. Piped input works the same, one user turn a line, so a chat can be
scripted. With `--tools calculator` the model is offered the calculator: when a reply calls it, the chat runs
it (chat/tools.py), shows the result and lets the model go on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lucidlm.chat.template import chat_prompt
from lucidlm.chat.tools import built_in_tools, reply_with_tools
from lucidlm.decode import SamplingConfig
from lucidlm.errors import LucidError, Terminated
from lucidlm.generate import generate_text
from lucidlm.model import GPT
from lucidlm.tokenizers import Tokenizer

HELP = "commands: /system TEXT (set the system prompt; /system alone clears it), /reset, /exit"


@dataclass
class ChatSession:
    model: GPT
    tokenizer: Tokenizer
    sampling: SamplingConfig
    max_new_tokens: int = 256
    generator: torch.Generator | None = None
    system: str | None = None
    tools: list[str] = field(default_factory=list)  # built-in tools the model is offered (chat/tools.py)
    turns: list[dict] = field(default_factory=list)  # user, assistant and tool messages, in order

    def __post_init__(self) -> None:
        self.definitions, self.functions = built_in_tools(self.tools)

    def messages(self) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.turns

    def prompt(self) -> tuple[list[int], list[str]]:
        """The prompt ids (and stop strings) for the next reply: the oldest exchanges are dropped, a user turn
        and what answered it at a time, until a reply has room in the context (a quarter of it, at most
        max_new_tokens)."""
        room = min(self.max_new_tokens, self.model.config.block_size // 4)
        while True:
            ids, stop = chat_prompt(self.tokenizer, self.messages(), self.definitions)
            next_user = next((i for i, turn in enumerate(self.turns) if i and turn["role"] == "user"), None)
            if len(ids) + room <= self.model.config.block_size or next_user is None:
                return ids, stop
            del self.turns[:next_user]

    def generate(self, write: Callable[[str], None]) -> str:
        """One reply to the conversation so far, streamed through `write` (Ctrl-C keeps what came)."""
        ids, stop = self.prompt()
        pieces: list[str] = []
        try:
            for piece in generate_text(
                self.model, self.tokenizer, ids, self.max_new_tokens, self.sampling, stop, self.generator
            ):
                pieces.append(piece)
                write(piece)
        except Terminated:  # SIGTERM ends the chat; only Ctrl-C stops just the reply
            raise
        except KeyboardInterrupt:
            write(" [stopped]")
        return "".join(pieces).strip()

    def reply(self, text: str, write: Callable[[str], None]) -> str:
        """Add the user's turn, stream the reply through `write` (running the tools it calls), and keep it."""
        self.turns.append({"role": "user", "content": text})
        try:
            self.prompt()
        except LucidError:  # a turn the model cannot read (characters outside its vocabulary) is not kept
            self.turns.pop()
            raise

        def add(turn: dict) -> None:
            self.turns.append(turn)
            if turn["role"] == "tool":
                write(f"\n[{turn['content']}]\n")

        answer, added = reply_with_tools(lambda _: self.generate(write), self.messages(), self.functions, on_turn=add)
        self.turns.append(added[-1])
        return answer

    def command(self, line: str) -> str | None:
        """Carry out a /command; returns what to print, or None for /exit."""
        name, _, argument = line.partition(" ")
        if name in ("/exit", "/quit"):
            return None
        if name == "/reset":
            self.turns.clear()
            return "(the conversation is forgotten)"
        if name == "/system":
            self.system = argument.strip() or None
            return f"(system prompt: {self.system})" if self.system else "(no system prompt)"
        return f"unknown command {name}; {HELP}"


def read_line(stdin, interactive: bool) -> str:
    """The next line with its newline, or "" at the end of input; a terminal gets line editing (readline)."""
    if interactive and stdin is sys.stdin:
        try:
            return input("> ") + "\n"
        except EOFError:
            return ""
    return stdin.readline()


def run_chat(session: ChatSession, stdin=None, stdout=None) -> None:
    """The read-reply loop, until /exit or the end of input."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    interactive = stdin.isatty()

    def write(text: str) -> None:
        stdout.write(text)
        stdout.flush()

    if interactive:
        write(f"chatting with the model; {HELP}; Ctrl-C stops a reply, Ctrl-D ends\n")
    while True:
        try:
            line = read_line(stdin, interactive)
        except Terminated:
            raise
        except KeyboardInterrupt:  # at the prompt: a fresh line, the chat goes on
            write("\n")
            continue
        if not line:  # Ctrl-D, or the end of piped input
            if interactive:
                write("\n")
            return
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            said = session.command(line.strip())
            if said is None:
                return
            write(said + "\n")
            continue
        try:
            session.reply(line, write)
        except LucidError as exc:  # one bad turn is said and skipped; the chat goes on
            print(f"error: {exc}", file=sys.stderr, flush=True)
            continue
        write("\n")
