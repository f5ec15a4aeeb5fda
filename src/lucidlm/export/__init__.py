"""Export to (and import from) other ecosystems: Hugging Face transformers."""

from lucidlm.export.hf import ARCHITECTURES, export_hf, family, load_hf, load_hf_tokenizer

__all__ = ["ARCHITECTURES", "export_hf", "family", "load_hf", "load_hf_tokenizer"]
