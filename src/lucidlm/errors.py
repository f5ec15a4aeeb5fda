"""User-facing errors.

Every mistake a user can make (a missing file, a bad flag value, a checkpoint that is not one) raises a
`LucidError` whose message is one line that names the problem and says how to fix it. The command line prints
that line and exits with status 2; anything else is a bug and keeps its traceback (exit status 1).
"""

import signal


class LucidError(Exception):
    """A problem with the user's input, explained in one line."""


class DataError(LucidError):
    """Bad or missing text, token files or corpus."""


class ConfigError(LucidError):
    """An unknown preset, a bad `--set` key or value, an inconsistent model configuration."""


class CheckpointError(LucidError):
    """A run directory that holds no complete checkpoint, or one that does not match the code."""


class TokenizerError(LucidError):
    """Text the tokenizer cannot encode, or a tokenizer file it cannot read."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `kill`, systemd, Docker and CI send) or SIGHUP (the terminal closed), raised where Ctrl-C
    raises KeyboardInterrupt, so that it gets what Ctrl-C gets: a run saves or rolls back, a half-written output
    is removed. Exit status 128 + the signal: 143, 129."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # what stops a command as Ctrl-C does


def interruption(signum: int) -> KeyboardInterrupt:
    """What a stop signal raises: KeyboardInterrupt for Ctrl-C, Terminated for the others."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def raise_terminated(signum, frame) -> None:
    raise Terminated(signum)
