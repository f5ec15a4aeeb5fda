"""User-facing errors.

Every mistake a user can make (a missing file, a bad flag value, a checkpoint that is not one) raises a
`LucidError` whose message is one line that names the problem and says how to fix it. The command line prints
that line and exits with status 2; anything else is a bug and keeps its traceback (exit status 1).
"""


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
    """SIGTERM (what `kill`, systemd, Docker and CI send), raised where Ctrl-C raises KeyboardInterrupt, so that
    it gets what Ctrl-C gets: a run saves or rolls back, a half-written output is removed. Exit status 143."""


def raise_terminated(signum, frame) -> None:
    raise Terminated
