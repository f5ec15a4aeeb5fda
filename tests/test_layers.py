"""The layers of `src/lucidlm`, read from the code's imports (issue 33): every import points down, and no two
modules import each other, directly or around a circle. docs/architecture.md draws the same layers, and
docs/layers.svg draws them with every arrow between units, from the imports: `python tests/test_layers.py`
draws it again.

An import inside a function counts as much as one at the top: hiding an upward arrow in a function is how the
circles this test replaced came about."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lucidlm"
PICTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
SVG = Path(__file__).resolve().parents[1] / "docs" / "layers.svg"

# Lowest first. A unit is a top-level module or package of lucidlm; it may import only units of lower layers.
LAYERS = [
    ["lazy"],
    ["lucidlm", "errors"],  # the package itself only names what it re-exports (imported when first used)
    ["inputs", "memory"],
    ["outputs", "web"],  # web: the browser's files and the HTTP guard both servers share
    ["tokenizers", "model"],
    ["run_config", "data", "scratch", "scaling_law"],
    ["device", "runs", "exercises"],  # exercises: the course's, checked by the page's Python and the terminal
    ["decode", "lens"],  # decode: the one decoding step of generate, chat, eval, GRPO and the server
    ["generate", "explain"],  # the explainer reads each layer's stream as the logit lens does
    ["chat"],
    ["evaluate", "interop"],
    ["load"],
    ["train", "serve"],
    ["tutorial"],  # the course: its site holds the model's page (interop/web.py)
    ["cli"],
    ["__main__"],
]
LAYER = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        found[".".join(parts).removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The lucidlm modules `path` imports, anywhere in it (`from a.b import c` imports a.b.c when that is a
    module, else a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known}


def unit(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_every_import_points_down_a_layer():
    known = modules()
    upward = []
    for module, path in known.items():
        assert unit(module) in LAYER, f"{unit(module)} has no place in LAYERS; put it there and in the picture"
        for target in imports(path, known):
            if unit(target) != unit(module) and LAYER[unit(target)] >= LAYER[unit(module)]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that do not point down a layer:\n" + "\n".join(sorted(upward))


def test_no_modules_import_each_other_around_a_circle():
    """Within a package too: tokenizers/base.py imported bpe.py and hf.py inside functions, while both import
    base.py. (A package's __init__ re-exporting its own modules is not an arrow between them.)"""
    known = modules()
    graph = {
        module: {t for t in imports(path, known) if not module.startswith(t + ".") and t != module}
        for module, path in known.items()
    }
    for module in graph:
        seen, stack = set(), list(graph[module])
        while stack:
            current = stack.pop()
            if current == module:
                raise AssertionError(f"{module} imports itself around a circle")
            if current not in seen:
                seen.add(current)
                stack.extend(t for t in graph.get(current, ()) if not t.startswith(module + "."))


def test_the_picture_in_the_docs_shows_these_layers():
    text = PICTURE.read_text(encoding="utf-8")
    block = text.split("<!-- layers: begin -->", 1)[1].split("<!-- layers: end -->", 1)[0]
    drawn = {int(line.split()[0]): line.split()[1:] for line in block.splitlines() if line.strip()[:1].isdigit()}
    assert [drawn[level] for level in sorted(drawn)] == LAYERS


def unit_arrows() -> list[tuple[str, str]]:
    """(importer, imported) for every pair of units with at least one import between their modules."""
    known = modules()
    pairs = {(unit(module), unit(target)) for module, path in known.items() for target in imports(path, known)}
    return sorted((a, b) for a, b in pairs if a != b)


def layers_svg() -> str:
    """The layers as rows of boxes, lowest at the bottom, and an arrow from each unit to each unit it imports."""
    box_width, box_height, gap_x, row_height, margin = 110, 28, 18, 64, 20
    width = margin * 2 + 90 + max(len(units) for units in LAYERS) * (box_width + gap_x)
    height = margin * 2 + len(LAYERS) * row_height
    place = {}
    for level, units in enumerate(LAYERS):
        y = margin + (len(LAYERS) - 1 - level) * row_height
        for i, name in enumerate(units):
            place[name] = (margin + 90 + i * (box_width + gap_x), y)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8a8f98"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for level in range(len(LAYERS)):
        y = margin + (len(LAYERS) - 1 - level) * row_height + box_height / 2 + 4
        out.append(f'<text x="{margin}" y="{y:.0f}" fill="#555">layer {level}</text>')
    for importer, imported in unit_arrows():
        (x1, y1), (x2, y2) = place[importer], place[imported]
        out.append(
            f'<line x1="{x1 + box_width / 2:.0f}" y1="{y1 + box_height}" x2="{x2 + box_width / 2:.0f}" y2="{y2}" '
            'stroke="#8a8f98" stroke-width="0.8" stroke-opacity="0.6" marker-end="url(#head)"/>'
        )
    for name, (x, y) in place.items():
        out.append(
            f'<rect x="{x}" y="{y}" width="{box_width}" height="{box_height}" rx="5" fill="#eef3fb" stroke="#3b6fb6"/>'
        )
        out.append(f'<text x="{x + box_width / 2:.0f}" y="{y + 18}" text-anchor="middle">{name}</text>')
    return "\n".join([*out, "</svg>", ""])


def test_the_svg_in_the_docs_is_drawn_from_these_imports():
    assert SVG.read_text(encoding="utf-8") == layers_svg(), "draw it again: python tests/test_layers.py"


if __name__ == "__main__":
    SVG.write_text(layers_svg(), encoding="utf-8")
    print(f"wrote {SVG}: {len(LAYERS)} layers, {len(unit_arrows())} arrows")
