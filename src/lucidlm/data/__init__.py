"""Text sources, token files and batches."""

from lucidlm.data.corpus import corpus_path, resolve_inputs
from lucidlm.data.loader import BatchLoader, open_split, read_meta
from lucidlm.data.prepare import Source, prepare, sources_for

__all__ = [
    "BatchLoader",
    "Source",
    "corpus_path",
    "open_split",
    "prepare",
    "read_meta",
    "resolve_inputs",
    "sources_for",
]
