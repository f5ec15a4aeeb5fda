"""The lessons' and the FAQ's markdown (lucidlm/tutorial/markdown.py): markdown-it-py, with every formula as MathML."""

from pathlib import Path

import pytest

from lucidlm.tutorial.lessons import lesson_files, lesson_sources
from lucidlm.tutorial.markdown import FormulaError, formula_to_mathml, formulas, markdown_to_html

FAQ = Path(__file__).parents[2] / "docs" / "FAQ.md"


def every_document() -> list[tuple[str, str]]:
    lessons = [
        (path.name, "\n\n".join(text for kind, text in lesson_sources(path) if kind == "markdown"))
        for path in lesson_files()
    ]
    return [*lessons, ("docs/FAQ.md", FAQ.read_text(encoding="utf-8"))]


@pytest.mark.parametrize(("name", "text"), every_document(), ids=lambda value: value if len(value) < 40 else "")
def test_every_formula_of_the_lessons_and_the_faq_renders(name, text):
    for latex, display in formulas(text):
        assert formula_to_mathml(latex, display).startswith("<math")  # or FormulaError, naming the formula


def test_the_lessons_have_the_formulas_they_had():
    """The count of formulas, so that a change of parser that drops some (a `$` it stops seeing) is noticed."""
    assert (
        sum(len(formulas(text)) for _, text in every_document()) == 334
    )  # 262, lessons 24 to 27 (the loss mask, LoRA, DPO, policy gradients), their NumPy versions' 15, lesson 23's 2


def test_markdown_html_and_maths():
    html = markdown_to_html(
        "# Title\n\nA **bold** `x @ W` and $e^{z}$ <b>.\n\n- one\n- two\n  more\n\n## Next\n"
        "Costs 5$ or 6$, and\n$$\\frac{a}{b}$$\n\n$$\\sum_{i=1}^{n} a_i$$",
        heading_shift=1,
    )
    inline = '<math xmlns="http://www.w3.org/1998/Math/MathML" display="inline">'
    block = '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">'
    assert html == (
        "<h2>Title</h2>\n"
        f'<p>A <strong>bold</strong> <code>x @ W</code> and <span class="math inline">{inline}<mrow><msup><mi>e</mi>'
        "<mrow><mi>z</mi></mrow></msup></mrow></math></span> &lt;b&gt;.</p>\n"
        "<ul>\n<li>one</li>\n<li>two\nmore</li>\n</ul>\n<h3>Next</h3>\n"
        f'<p>Costs 5$ or 6$, and\n<span class="math display">{block}<mrow><mfrac><mrow><mi>a</mi></mrow><mrow>'
        "<mi>b</mi></mrow></mfrac></mrow></math></span></p>\n"
        f'<div class="math block">\n{block}<mrow><munderover><mo>&#x02211;</mo><mrow><mi>i</mi><mo>&#x0003D;</mo>'
        "<mn>1</mn></mrow><mrow><mi>n</mi></mrow></munderover><msub><mi>a</mi><mi>i</mi></msub></mrow></math>\n"
        "</div>\n"
    )


def test_a_formula_that_cannot_be_read_is_named_and_the_page_still_renders():
    with pytest.raises(FormulaError, match=r"cannot render the formula 'a\^' \(MissingSuperScript"):
        formula_to_mathml("a^")
    with pytest.raises(FormulaError, match=r"no such command as \\sigmoid"):
        formula_to_mathml("\\sigmoid(x)")
    assert markdown_to_html("see $\\sigmoid(x) < 1$ here") == (
        '<p>see <span class="math inline"><code class="math-error">\\sigmoid(x) &lt; 1</code></span> here</p>\n'
    )
