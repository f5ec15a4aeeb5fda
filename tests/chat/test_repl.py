"""`lucidlm chat` in a real terminal (a pty): the reply streams, /reset forgets, /system sets the system
prompt, Ctrl-C stops a reply and the chat goes on, Ctrl-D ends it; and piped input, one turn a line."""

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
import torch

from lucidlm.chat.repl import ChatSession
from lucidlm.chat.template import chat_prompt
from lucidlm.decode import SamplingConfig
from lucidlm.generate import generate_ids
from lucidlm.model import GPT, GPTConfig
from lucidlm.outputs import write_json_atomic
from lucidlm.run_config import RunConfig, TrainConfig
from lucidlm.runs import save_checkpoint
from tests.chat.conftest import ALPHABET, one_token_model

BLOCK = 96


def write_run(run_dir, tokenizer, model: GPT) -> None:
    """A run directory as `lucidlm train` leaves it, around `model`."""
    run_dir.mkdir()
    tokenizer.save(run_dir / "tokenizer.json")
    write_json_atomic(run_dir / "config.json", RunConfig(model.config, TrainConfig(device="cpu")).to_dict())
    save_checkpoint(run_dir, 1, model.state_for_saving(), {}, {"val_loss": 1.0}, is_best=True)


@pytest.fixture
def chat_run(tmp_path, chat_tokenizer):
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=chat_tokenizer.vocab_size, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32))
    write_run(tmp_path / "run", chat_tokenizer, model)
    return tmp_path / "run", model.eval()


def reply(model, tokenizer, messages, max_new_tokens=8) -> str:
    """The greedy reply, up to the end of turn or (lucidlm's template) the start of another turn."""
    ids, stops = chat_prompt(tokenizer, messages)
    out = []
    for token in generate_ids(model, ids, max_new_tokens, SamplingConfig(temperature=0.0)):
        if token in tokenizer.eos_ids or tokenizer.decode([token]) in stops:
            break
        out.append(token)
    return tokenizer.decode(out).strip()


class Terminal:
    """`lucidlm chat` on a pseudo-terminal, read as a person would see it."""

    def __init__(self, *args):
        self.fd_parent, fd_child = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lucidlm", "chat", *map(str, args)],
            stdin=fd_child,
            stdout=fd_child,
            stderr=fd_child,
            start_new_session=True,
            # as a person's shell starts it: a test runner that is itself a background job of a script has
            # SIGINT ignored, which its children inherit, and Python then never raises KeyboardInterrupt
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        os.close(fd_child)
        self.seen = ""

    def read_until(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            assert time.monotonic() < deadline, f"no {text!r} in {self.seen!r}"
            if select.select([self.fd_parent], [], [], 0.5)[0]:
                self.seen += os.read(self.fd_parent, 4096).decode(errors="replace")
        return self.seen

    def type(self, text: str) -> None:
        os.write(self.fd_parent, text.encode())

    def close(self) -> int:
        try:
            return self.process.wait(timeout=30)
        finally:
            os.close(self.fd_parent)


def test_a_chat_in_a_terminal(chat_run, chat_tokenizer):
    run, model = chat_run
    terminal = Terminal("--checkpoint", run, "--temperature", "0", "--max-new-tokens", "8")
    terminal.read_until("> ")
    terminal.type("Hi there\n")
    first = reply(model, chat_tokenizer, [{"role": "user", "content": "Hi there"}])
    terminal.read_until(first + "\r\n> ")
    terminal.type("/system Be brief.\n")
    terminal.read_until("(system prompt: Be brief.)")
    terminal.type("/reset\n")
    terminal.read_until("(the conversation is forgotten)")
    terminal.type("Hi there\n")  # after /reset: the system prompt and this turn alone
    expected = reply(
        model, chat_tokenizer, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    )
    terminal.read_until(expected + "\r\n> ")
    terminal.type("\x04")  # Ctrl-D
    assert terminal.close() == 0


def test_ctrl_c_stops_a_reply_and_the_chat_goes_on(tmp_path, chat_tokenizer):
    # a model whose every next token is "a": its replies never reach the end of turn by themselves
    endless = one_token_model(chat_tokenizer, chat_tokenizer.encode("a")[0], BLOCK)
    write_run(tmp_path / "endless", chat_tokenizer, endless)
    terminal = Terminal("--checkpoint", tmp_path / "endless", "--max-new-tokens", "100000", "--temperature", "0")
    terminal.read_until("> ")
    terminal.type("Go\n")
    terminal.read_until("aaaa")  # streamed: the reply shows while it is being written
    os.killpg(terminal.process.pid, signal.SIGINT)
    terminal.read_until("[stopped]\r\n> ")
    assert terminal.process.poll() is None
    terminal.type("/exit\n")
    assert terminal.close() == 0


@pytest.mark.parametrize("where", ["in a reply", "at the prompt"])
def test_sigterm_ends_the_chat_where_ctrl_c_goes_on(tmp_path, chat_tokenizer, where):
    """Issue 37: SIGTERM gets what Ctrl-C gets where Ctrl-C ends a command; in the chat Ctrl-C only stops a
    reply, and a SIGTERM taken as that would leave `kill` unable to end the chat."""
    endless = one_token_model(chat_tokenizer, chat_tokenizer.encode("a")[0], BLOCK)
    write_run(tmp_path / "endless", chat_tokenizer, endless)
    terminal = Terminal("--checkpoint", tmp_path / "endless", "--max-new-tokens", "100000", "--temperature", "0")
    terminal.read_until("> ")
    if where == "in a reply":
        terminal.type("Go\n")
        terminal.read_until("aaaa")
    terminal.process.send_signal(signal.SIGTERM)
    assert terminal.close() == 143


def test_piped_turns_and_history_cropped_at_turn_boundaries(chat_run, chat_tokenizer):
    run, model = chat_run
    lines = ["one", "two", "/nonsense", "three"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lucidlm",
            "chat",
            "--checkpoint",
            str(run),
            "--temperature",
            "0",
            "--max-new-tokens",
            "8",
        ],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[2].startswith("unknown command /nonsense; commands:")
    history = [{"role": "user", "content": "one"}]
    assert out[0] == reply(model, chat_tokenizer, history)
    # a session whose context holds one exchange at most drops the oldest whole turns
    session = ChatSession(model, chat_tokenizer, SamplingConfig(temperature=0.0), max_new_tokens=8)
    session.turns = [
        {"role": "user", "content": "x" * 60},
        {"role": "assistant", "content": "y" * 30},
        {"role": "user", "content": "short"},
    ]
    ids, _ = session.prompt()
    assert session.turns == [{"role": "user", "content": "short"}]
    assert len(ids) + 8 <= BLOCK
    assert ALPHABET  # the tokenizer reads every character used here
