"""Blocks -> clean Markdown: grounding tags removed, figures linked, the reference's LaTeX fixes applied.

Must not import torch or write files; figure crops are the caller's job, this only names the links.

Differences from the reference conversion (spec 9.2), on purpose:
- one link per figure BOX, numbered like the crops (the reference numbers links per image ref but crops
  per box, so the two disagree as soon as a ref has two boxes); a figure whose coordinates were malformed
  has nothing to crop and gets no link;
- `\\coloneqq` -> `:=` and `\\eqqcolon` -> `=:` always (the reference only does it when some non-image
  ref exists) and runs of 3+ newlines always collapse to one blank line;
- tags that cannot be parsed never leak into the text (see grounding.py for how they are recovered).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from dsocr.output.grounding import FIGURE_LABEL, Block, parse_grounding

FigureLink = Callable[[int], str | None]  # figure number -> link target; None or "" leaves the figure out

_LATEX_FIXES = ((r"\coloneqq", ":="), (r"\eqqcolon", "=:"))
_BLANK_RUNS = re.compile(r"\n{3,}")


def default_figure_link(n: int) -> str:
    """Where the reference writes figure crop n: `images/{n}.jpg` next to the Markdown file."""
    return f"images/{n}.jpg"


def blocks_to_markdown(blocks: Sequence[Block], *, figure_link: FigureLink | None = None) -> str:
    """Contents in reading order separated by blank lines, each figure box replaced by `![](link)`."""
    link = figure_link or default_figure_link
    parts: list[str] = []
    figure = 0
    for block in blocks:
        if block.label == FIGURE_LABEL:
            for _ in block.boxes:
                target = link(figure)
                figure += 1  # numbers follow the crops even when a link is left out
                if target:
                    parts.append(f"![]({target})")
        if block.content:
            parts.append(block.content)
    return tidy_markdown("\n\n".join(parts))


def to_markdown(text: str, *, figure_link: FigureLink | None = None) -> str:
    """Raw model output (grounded or free OCR, EOS or not) -> Markdown."""
    blocks = parse_grounding(text, (1, 1)).blocks  # pixel boxes are not needed here
    return blocks_to_markdown(blocks, figure_link=figure_link)


def tidy_markdown(text: str) -> str:
    """The reference's LaTeX replacements, blank-line runs collapsed, outer whitespace stripped."""
    for old, new in _LATEX_FIXES:
        text = text.replace(old, new)
    return _BLANK_RUNS.sub("\n\n", text).strip()

