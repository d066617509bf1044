"""Parse model output (`<|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|>` + text) into blocks.

Must not import torch or evaluate model output as code: coordinates go through a strict grammar, and anything
malformed or cut off is kept as text with a warning instead of being dropped.

Grammar of a `<|det|>` body (whitespace allowed around every token): a list of boxes `[[a, b, c, d], ...]`
or one bare box `[a, b, c, d]`; each value an optionally signed integer of at most 9 digits. Anything else
(floats, 3 or 5 values, trailing commas, an empty list) is malformed and the whole body is rejected.
Accepted boxes are normalised: values clamped to 0..999 and corners ordered so x1 <= x2, y1 <= y2, with
a warning whenever that changed something.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dsocr.errors import InputError

EOS_TEXT = "<｜end▁of▁sentence｜>"  # fullwidth bars (U+FF5C) and U+2581, as the tokenizer decodes it
REF_OPEN, REF_CLOSE, DET_OPEN, DET_CLOSE = "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>"
GRID_MAX = 999  # boxes are emitted on a 0..999 grid relative to the original image
FIGURE_LABEL = "image"  # the label whose boxes are cropped and linked as figures
TEXT_LABEL = "text"  # label of untagged text

Box = tuple[int, int, int, int]

_TAG = re.compile(r"<\|/?(?:ref|det)\|>")
_INT = r"\s*(-?[0-9]{1,9})\s*"
_BOX = re.compile(r"\[" + ",".join([_INT] * 4) + r"\]")  # one box, values captured
_BOX_SHAPE = r"\[" + ",".join([r"\s*-?[0-9]{1,9}\s*"] * 4) + r"\]"  # the same, nothing captured
_BOXES = re.compile(rf"\s*(?:\[\s*{_BOX_SHAPE}(?:\s*,\s*{_BOX_SHAPE})*\s*\]|{_BOX_SHAPE})\s*")
_COORDINATE_DEBRIS = re.compile(r"[\s0-9,\[\]-]*")  # what a box list cut off by the token limit looks like


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    index: int  # reading order
    label: str  # "title", "text", "image", "table", ...; "text" for untagged text
    boxes: tuple[Box, ...]  # pixels of the original image
    grid_boxes: tuple[Box, ...]  # as emitted on the 0..999 grid, after clamping and corner ordering
    content: str  # the text after the tag span, stripped

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "boxes": [list(b) for b in self.boxes],
                "grid_boxes": [list(b) for b in self.grid_boxes], "content": self.content}


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedOutput:
    blocks: tuple[Block, ...]
    markdown: str  # blocks_to_markdown(blocks) with the default figure links
    warnings: tuple[str, ...]  # e.g. "block 3: malformed <|det|> coordinates '[[1, 2]]'; kept without boxes"

    def to_dict(self) -> dict[str, Any]:
        return {"blocks": [b.to_dict() for b in self.blocks], "markdown": self.markdown,
                "warnings": list(self.warnings)}


def strip_eos(text: str) -> str:
    """Drop a trailing end-of-sentence string (and the whitespace around it), as HF `infer()` does."""
    text = text.rstrip()
    while text.endswith(EOS_TEXT):
        text = text[: -len(EOS_TEXT)].rstrip()
    return text


def parse_boxes(body: str) -> tuple[Box, ...] | None:
    """The boxes of a `<|det|>` body exactly as written, or None when it does not follow the grammar."""
    if not _BOXES.fullmatch(body):
        return None
    return tuple(_box(m) for m in _BOX.finditer(body))


def normalize_box(box: Box) -> Box:
    """Clamp to the 0..999 grid and order the corners."""
    x1, y1, x2, y2 = (min(max(v, 0), GRID_MAX) for v in box)
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def to_pixels(box: Box, width: int, height: int) -> Box:
    """Grid box -> pixels of the original image, truncating like the reference: int(v / 999 * size)."""
    x1, y1, x2, y2 = box
    return (int(x1 / GRID_MAX * width), int(y1 / GRID_MAX * height),
            int(x2 / GRID_MAX * width), int(y2 / GRID_MAX * height))


def to_grid(box: Box, size: tuple[int, int]) -> Box:
    """Pixels -> the 0..999 grid, rounded to nearest, so that `to_pixels` (the reference's int(v / 999 * size))
    gives back p or p - 1 (pages under 1998 px): how training targets and a lines model's answers write boxes."""
    width, height = size
    x1, y1, x2, y2 = (min(max(int(v * GRID_MAX / s + 0.5), 0), GRID_MAX)
                      for v, s in zip(box, (width, height, width, height)))
    return x1, y1, x2, y2


def grounded_block(label: str, grid_box: Box, content: str) -> str:
    """`<|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2]]<|/det|>` + newline + content, as the model writes it."""
    x1, y1, x2, y2 = grid_box
    return f"<|ref|>{label}<|/ref|><|det|>[[{x1}, {y1}, {x2}, {y2}]]<|/det|>\n{content}"


def figure_boxes(blocks: tuple[Block, ...] | list[Block]) -> tuple[Box, ...]:
    """Pixel boxes of all figures in reading order: figure n is cropped from box n and linked as n."""
    return tuple(box for b in blocks if b.label == FIGURE_LABEL for box in b.boxes)


def parse_grounding(text: str, image_size: tuple[int, int]) -> ParsedOutput:
    """Split raw model output into blocks in reading order; untagged text becomes "text" blocks, no boxes."""
    width, height = image_size
    if width <= 0 or height <= 0:
        raise InputError(f"image_size must be positive (width, height), got {image_size}")
    parser = _Parser(strip_eos(text), width, height)
    blocks, warnings = parser.run()
    # markdown.py renders blocks and imports this module, so it is imported here, not at the top.
    from dsocr.output.markdown import blocks_to_markdown

    return ParsedOutput(blocks=blocks, markdown=blocks_to_markdown(blocks), warnings=warnings)


def _box(match: re.Match[str]) -> Box:
    x1, y1, x2, y2 = (int(v) for v in match.groups())
    return x1, y1, x2, y2


class _Parser:
    """One pass over the text. A block opens at `<|ref|>` (or at a `<|det|>` with no ref before it) and
    collects all text up to the next block; text before the first tag is an untagged block."""

    def __init__(self, text: str, width: int, height: int) -> None:
        self.text, self.width, self.height = text, width, height
        self.blocks: list[Block] = []
        self.warnings: list[str] = []
        self._open(TEXT_LABEL, tagged=False)

    def run(self) -> tuple[tuple[Block, ...], tuple[str, ...]]:
        pos = 0
        while (tag := _TAG.search(self.text, pos)) is not None:
            self.content.append(self.text[pos:tag.start()])
            if tag.group() == REF_OPEN:
                pos = self._ref(tag.end())
            elif tag.group() == DET_OPEN:
                pos = self._det(tag.end())
            else:  # a closing tag with nothing open: markup, not content
                self._warn(f"stray {tag.group()} at character {tag.start()} removed")
                pos = tag.end()
        self.content.append(self.text[pos:])
        self._close()
        return tuple(self.blocks), tuple(self.warnings)

    def _open(self, label: str, *, tagged: bool) -> None:
        self.label, self.tagged, self.has_det = label, tagged, False
        self.grid: tuple[Box, ...] = ()
        self.content: list[str] = []

    def _close(self) -> None:
        content = "".join(self.content).strip()
        if not self.tagged and not content and not self.grid:
            return  # whitespace between blocks
        boxes = tuple(to_pixels(b, self.width, self.height) for b in self.grid)
        self.blocks.append(Block(index=len(self.blocks), label=self.label, boxes=boxes, grid_boxes=self.grid,
                                 content=content))

    def _warn(self, message: str) -> None:
        self.warnings.append(f"block {len(self.blocks)}: {message}")

    def _next_tag(self, pos: int) -> re.Match[str] | None:
        return _TAG.search(self.text, pos)

    def _ref(self, pos: int) -> int:
        """After `<|ref|>`: read the label up to `<|/ref|>`; return where content starts."""
        self._close()
        end = self._next_tag(pos)
        if end is None or end.group() != REF_CLOSE or "\n" in self.text[pos:end.start()]:
            # Cut off inside the label, or a "label" over a line break (a lost tag): keep the text as text.
            self._open(TEXT_LABEL, tagged=False)
            self._warn(f"unclosed {REF_OPEN} (output cut off?); kept as text")
            return pos
        label = self.text[pos:end.start()].strip()
        self._open(label or TEXT_LABEL, tagged=True)
        if not label:
            self._warn(f"empty {REF_OPEN} label; labelled {TEXT_LABEL!r}")
        return end.end()

    def _det(self, pos: int) -> int:
        """After `<|det|>`: read the boxes of the open ref (or of a new untagged block); return where content
        starts."""
        if not (self.tagged and not self.has_det and not "".join(self.content).strip()):
            self._close()
            self._open(TEXT_LABEL, tagged=True)
            self._warn(f"{DET_OPEN} without a {REF_OPEN} label; labelled {TEXT_LABEL!r}")
        self.has_det = True
        end = self._next_tag(pos)
        if end is not None and end.group() == DET_CLOSE:
            body = self.text[pos:end.start()]
            boxes = parse_boxes(body)
            if boxes is None:
                self._warn(f"malformed {DET_OPEN} coordinates {_quote(body)}; kept without boxes")
            else:
                self._set_boxes(boxes)
            return end.end()
        return self._unclosed_det(pos, len(self.text) if end is None else end.start())

    def _unclosed_det(self, pos: int, stop: int) -> int:
        """`<|det|>` without `<|/det|>` before the next tag or the end: take a complete box list if one leads
        the body and keep the rest as content; drop a half-written box list (it is markup, not text)."""
        body = self.text[pos:stop]
        lead = _BOXES.match(body)
        if lead is not None:
            self._set_boxes(tuple(_box(m) for m in _BOX.finditer(lead.group())))
            self._warn(f"unclosed {DET_OPEN}; boxes read up to {_quote(lead.group())}")
            return pos + lead.end()
        if _COORDINATE_DEBRIS.fullmatch(body):
            self._warn(f"output cut off inside {DET_OPEN} coordinates {_quote(body)}; kept without boxes")
            return stop
        self._warn(f"unclosed {DET_OPEN}; its text kept as content")
        return pos

    def _set_boxes(self, boxes: tuple[Box, ...]) -> None:
        grid = tuple(normalize_box(b) for b in boxes)
        if grid != boxes:
            self._warn(f"coordinates {list(map(list, boxes))} clamped to 0..{GRID_MAX} and ordered")
        self.grid = grid


def _quote(raw: str, limit: int = 60) -> str:
    return repr(raw if len(raw) <= limit else raw[:limit] + "...")
