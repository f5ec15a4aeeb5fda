"""Markdown to HTML for the lessons and the FAQ, with the maths as MathML.

markdown-it-py parses the markdown (CommonMark, plus tables) and mdit-py-plugins' dollarmath finds `$...$`
and `$$...$$`; latex2mathml turns each formula into MathML, which browsers lay out themselves, so a page needs
no JavaScript and no network to show its maths. Raw HTML in the markdown is shown as text, not run.
"""

from __future__ import annotations

import functools
import html
import re

import latex2mathml.converter
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin


class FormulaError(ValueError):
    """A formula that latex2mathml cannot read."""


def formula_to_mathml(latex: str, display: bool = False) -> str:
    """One LaTeX formula as a <math> element (block-level with `display`)."""
    try:
        mathml = latex2mathml.converter.convert(latex, display="block" if display else "inline")
    except Exception as exc:  # latex2mathml raises its own errors and plain ones (IndexError, KeyError) alike
        raise FormulaError(f"cannot render the formula {latex!r} ({type(exc).__name__})") from None
    unknown = re.search(r"\\[A-Za-z]+", mathml)  # a command latex2mathml does not know is kept as text
    if unknown:
        raise FormulaError(f"cannot render the formula {latex!r} (no such command as {unknown.group()})")
    return mathml


def render_formula(latex: str, options: dict) -> str:
    """dollarmath's renderer: MathML, or the LaTeX itself, marked, where the formula cannot be read (a page
    still shows; the test of every lesson's formulas is what catches it)."""
    try:
        return formula_to_mathml(latex, display=options["display_mode"])
    except FormulaError:
        return f'<code class="math-error">{html.escape(latex)}</code>'


@functools.cache
def parser(heading_shift: int = 0) -> MarkdownIt:
    """The markdown parser; `heading_shift` moves every heading down that many levels (a lesson's `#` title
    sits under the page's own)."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.use(dollarmath_plugin, allow_space=True, allow_digits=False, double_inline=True, renderer=render_formula)

    def shifted_heading(renderer, tokens, index, options, env):
        token = tokens[index]
        token.tag = f"h{min(6, int(token.tag[1]) + heading_shift)}"
        return renderer.renderToken(tokens, index, options, env)

    def display_in_paragraph(renderer, tokens, index, options, env):
        # `$$...$$` inside a paragraph: a displayed formula in a <span>, since a <div> may not sit in a <p>
        return f'<span class="math display">{render_formula(tokens[index].content, {"display_mode": True})}</span>'

    md.add_render_rule("heading_open", shifted_heading)
    md.add_render_rule("heading_close", shifted_heading)
    md.add_render_rule("math_inline_double", display_in_paragraph)
    return md


def markdown_to_html(text: str, heading_shift: int = 0) -> str:
    """`text` as HTML, its formulas as MathML."""
    return parser(heading_shift).render(text)


def inline_html(text: str) -> str:
    """One line of markdown (a title) as HTML without the paragraph around it: `code`, $maths$, emphasis."""
    return markdown_to_html(text).strip().removeprefix("<p>").removesuffix("</p>")


def formulas(text: str) -> list[tuple[str, bool]]:
    """Every formula in `text`, as (LaTeX, display), in the order they appear."""
    found = []
    for token in parser().parse(text):
        for part in token.children or [token]:
            if part.type.startswith("math"):
                found.append((part.content, "block" in part.type))
    return found
