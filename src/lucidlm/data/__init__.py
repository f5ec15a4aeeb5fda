"""Text sources, token files and batches. The loader's names are imported when first used (lucidlm.lazy): it
needs PyTorch, and the rest, which chat's data preparation uses in the page's Python too, needs only NumPy."""

from lucidlm.data.corpus import corpus_path, resolve_inputs
from lucidlm.data.prepare import Source, prepare, sources_for
from lucidlm.lazy import names_from

__getattr__ = names_from(__name__, {name: "lucidlm.data.loader" for name in ("BatchLoader", "open_split", "read_meta")})
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
