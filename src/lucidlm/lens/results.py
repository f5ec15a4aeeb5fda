"""What the analyses return: one dataclass each, which knows how to print itself for a terminal (`table`) and
which heatmaps show it (`panels`, drawn by `draw`). A result reads like the JSON it is served as
(`result["heads"]` is `result.heads`), so the API, the page and the command line share one shape.

Shapes: L layers, H heads, T positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

Grid = list[list[float]]


def one_token(tokenizer, text: str | None, flag: str) -> int | None:
    """The id of a text that is exactly one token (None for None); anything else is a ValueError naming `flag`."""
    if text is None:
        return None
    ids = tokenizer.encode(text)
    if len(ids) != 1:
        raise ValueError(f"{flag} {text!r} is {len(ids)} tokens; give a text that is one token (e.g. ' the')")
    return ids[0]


def shown(tokenizer, token: int) -> str:
    return repr(tokenizer.decode([token]))[1:-1][:8]


def grid(title: str, rows: list[str], columns: list[str], values: Grid, width: int = 8) -> str:
    lines = [title, " " * 10 + "".join(f"{c:>{width}}" for c in columns)]
    lines += [f"{row:<10}" + "".join(f"{v:>{width}.3f}" for v in line) for row, line in zip(rows, values, strict=True)]
    return "\n".join(lines)


def layer_names(values: Grid) -> list[str]:
    return [f"layer {layer}" for layer in range(len(values))]


def head_names(values: Grid) -> list[str]:
    return [f"head {head}" for head in range(len(values[0]))]


class LensResult(Mapping):
    """The base of every result: JSON as it is, a table for a terminal, and the heatmaps of `panels`."""

    positions_axis: ClassVar[str] = ""  # the panel title word that puts the prompt's tokens on the x axis
    layer_label: ClassVar[str] = "layer"

    def __getitem__(self, name: str) -> Any:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def table(self, tokenizer, ids: list[int] | None) -> str:
        raise NotImplementedError

    def panels(self) -> list[tuple[str, Grid]]:
        """(title, values) for each heatmap; none: the result has no picture."""
        return []

    def draw(self, tokenizer, ids: list[int] | None, path: str | Path) -> None:
        """The heatmaps as one PNG written to `path` (whatever its name ends in)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = self.panels()
        figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), dpi=100, squeeze=False)
        for axis, (title, values) in zip(axes[0], panels, strict=True):
            image = axis.imshow(values, cmap="viridis", aspect="auto")
            axis.set_title(title, fontsize=9)
            axis.set_ylabel(self.layer_label)
            if self.positions_axis and self.positions_axis in title and ids is not None:
                axis.set_xticks(range(len(ids)), [shown(tokenizer, t) for t in ids], rotation=90, fontsize=7)
            else:
                axis.set_xlabel("head")
            figure.colorbar(image, ax=axis)
        figure.tight_layout()
        figure.savefig(path, format="png")
        plt.close(figure)


@dataclass
class LogitLens(LensResult):
    """For each of the L + 1 readings (after the embeddings, after each layer) and each position."""

    layers: list[str]  # (L + 1,) "embeddings", "layer 0", ...
    top_tokens: list[list[list[int]]]  # (L + 1, T, top)
    top_probabilities: list[list[list[float]]]  # (L + 1, T, top)
    prediction: list[int]  # (T,) the model's own next token
    prediction_probability: Grid  # (L + 1, T) each reading's probability of it
    prediction_rank: list[list[int]]  # (L + 1, T) 0 where it leads
    kl_to_output: list[float]  # (L + 1,) nats, averaged over positions

    positions_axis: ClassVar[str] = "position"
    layer_label: ClassVar[str] = "layer (0: the embeddings)"

    def table(self, tokenizer, ids: list[int] | None) -> str:
        last = slice(-12, None)  # the last 12 positions fit a terminal
        header = " " * 11 + "".join(f"{shown(tokenizer, t):>13}" for t in ids[last])
        lines = ["each layer's most likely next token and its probability, at each of the last positions", header]
        for name, tokens, probabilities in zip(self.layers, self.top_tokens, self.top_probabilities, strict=True):
            cells = [
                f"{shown(tokenizer, t[0]):>8} {p[0]:.2f}"
                for t, p in zip(tokens[last], probabilities[last], strict=True)
            ]
            lines.append(f"{name:<11}" + "".join(f"{cell:>13}" for cell in cells))
        kl = ", ".join(f"{value:.3f}" for value in self.kl_to_output)
        return "\n".join([*lines, f"KL from the output, layer by layer (nats): {kl}"])

    def panels(self) -> list[tuple[str, Grid]]:
        return [("probability of the final prediction, by layer and position", self.prediction_probability)]


@dataclass
class HeadScores(LensResult):
    """Each head's mean attention (L, H) on random tokens repeated once, to the previous token, to the same
    token's first copy, and to the token after that copy (induction)."""

    previous_token: Grid
    duplicate_token: Grid
    induction: Grid
    length: int  # random tokens before their repetition
    batch: int  # sequences averaged over

    def table(self, tokenizer, ids: list[int] | None) -> str:
        layers, heads = layer_names(self.induction), head_names(self.induction)
        ranked = sorted(
            ((score, layer, head) for layer, row in enumerate(self.induction) for head, score in enumerate(row)),
            reverse=True,
        )
        best = ", ".join(f"{layer}.{head} ({score:.2f})" for score, layer, head in ranked[:3])
        return "\n\n".join(
            [
                grid("induction scores", layers, heads, self.induction, 9),
                grid("previous-token scores", layers, heads, self.previous_token, 9),
                f"the strongest induction heads (layer.head): {best}",
            ]
        )

    def panels(self) -> list[tuple[str, Grid]]:
        return [
            (f"{name.replace('_', '-')} score", getattr(self, name))
            for name in ("previous_token", "duplicate_token", "induction")
        ]


@dataclass
class Ablation(LensResult):
    """The loss over a text, and the loss each head (L, H) and each MLP (L,) adds when its output is removed."""

    kind: str  # zero, or mean: the output replaced by its mean over the text
    loss: float
    heads: Grid
    mlps: list[float]

    def table(self, tokenizer, ids: list[int] | None) -> str:
        mlps = ", ".join(f"{value:+.3f}" for value in self.mlps)
        return "\n".join(
            [
                f"loss {self.loss:.4f}; the loss each {self.kind}-ablated part adds:",
                grid("heads", layer_names(self.heads), head_names(self.heads), self.heads, 9),
                f"MLPs, layer by layer: {mlps}",
            ]
        )

    def panels(self) -> list[tuple[str, Grid]]:
        return [(f"loss added by {self.kind}-ablating each head", self.heads)]


@dataclass
class Attribution(LensResult):
    """Each component's direct contribution to one token's logit (minus another's) at one position; the parts
    add up to `total`."""

    token: int
    other: int | None
    position: int
    embeddings: float
    heads: Grid  # (L, H)
    mlps: list[float]  # (L,)
    biases: float
    total: float

    def table(self, tokenizer, ids: list[int] | None) -> str:
        parts = [("embeddings", self.embeddings), ("biases", self.biases)]
        parts += [
            (f"head {layer}.{head}", value) for layer, row in enumerate(self.heads) for head, value in enumerate(row)
        ]
        parts += [(f"mlp {layer}", value) for layer, value in enumerate(self.mlps)]
        parts.sort(key=lambda part: -abs(part[1]))
        lines = [f"the logit{' difference' if self.other is not None else ''}: {self.total:.4f}, made of:"]
        return "\n".join(lines + [f"  {name:<14}{value:+.4f}" for name, value in parts[:12]])


@dataclass
class Patching(LensResult):
    """The fraction of the clean run's logit difference each patch brings back into the corrupted run (1: the
    clean difference, 0: the corrupted one)."""

    clean_difference: float
    corrupted_difference: float
    residual: Grid  # (L, T) the residual stream before each layer, at each position
    heads: Grid  # (L, H) each head's output at every position

    positions_axis: ClassVar[str] = "position"

    def table(self, tokenizer, ids: list[int] | None) -> str:
        positions = [shown(tokenizer, t) for t in ids]
        return "\n\n".join(
            [
                f"logit difference: clean {self.clean_difference:.3f}, corrupted {self.corrupted_difference:.3f}",
                grid("the fraction restored by patching the residual stream before each layer, at each position",
                     layer_names(self.residual), positions, self.residual),
                grid("the fraction restored by patching each head's output", layer_names(self.heads),
                     head_names(self.heads), self.heads, 9),
            ]
        )  # fmt: skip

    def panels(self) -> list[tuple[str, Grid]]:
        return [
            ("fraction restored: residual before each layer, per position", self.residual),
            ("fraction restored: each head's output", self.heads),
        ]
