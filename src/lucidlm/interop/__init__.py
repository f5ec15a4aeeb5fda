"""lucidlm's models in other tools' formats, and theirs in lucidlm: Hugging Face directories (hf_layout.py, the
names and layouts both ways; hf_export.py writes one; hf_import.py reads one as the Hub serves it), one GGUF file
for llama.cpp (gguf.py) and the model as a static web page (web.py)."""
