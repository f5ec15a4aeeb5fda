"""The browser's side, below both servers and the exported page: the static files (static/) that `serve`'s
inspector, `tutorial` and `export --format web` share, and the HTTP guard both servers put in front (http.py).

static/ holds the inspector (inspector.html, inspector.js), the model's page (explain.html with explain.js, the
JavaScript GPT gpt.js, tokenizer.js and lensview.js: served under `serve` as /explain/, written as index.html by
the export) and the one style sheet.
"""

from pathlib import Path

STATIC = Path(__file__).parent / "static"
STYLE = STATIC / "style.css"
MODEL_PAGE = STATIC / "explain.html"  # the page `export --format web` writes as index.html
MODEL_SCRIPTS = ("explain.js", "gpt.js", "tokenizer.js", "lensview.js")  # what the model's page loads
