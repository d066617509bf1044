"""Blocks -> clean Markdown: grounding tags removed, figures linked, the reference's LaTeX fixes applied.

Must not import torch or write files; figure crops are the pipeline's job, this only names the links.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from dsocr.output.grounding import GRID_MAX, Block, parse_grounding

FIGURE_LABEL = "image"
_LATEX_FIXES = ((r"\coloneqq", ":="), (r"\eqqcolon", "=:"))


def default_figure_link(n: int) -> str:
    return f"![](images/{n}.jpg)"


def blocks_to_markdown(blocks: Sequence[Block],
                       figure_link: Callable[[int], str | None] | None = default_figure_link) -> str:
    """One link per figure box, numbered in reading order (the same numbers the figure crops get);
    `figure_link=None` drops figures from the text."""
    parts: list[str] = []
    figure = 0
    for block in blocks:
        if block.label == FIGURE_LABEL:
            for _ in block.boxes or ((),):
                link = figure_link(figure) if figure_link else None
                figure += 1
                if link:
                    parts.append(link)
        if block.content:
            parts.append(block.content)
    text = "\n\n".join(parts)
    for old, new in _LATEX_FIXES:
        text = text.replace(old, new)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def to_markdown(text: str, figure_link: Callable[[int], str | None] | None = default_figure_link) -> str:
    """Raw model output -> Markdown (image size is irrelevant to the text)."""
    return blocks_to_markdown(parse_grounding(text, (GRID_MAX, GRID_MAX)).blocks, figure_link)

