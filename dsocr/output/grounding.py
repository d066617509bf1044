"""Parse DeepSeek-OCR grounding output (`<|ref|>label<|/ref|><|det|>[[x1,y1,x2,y2],...]<|/det|>` + content)
into blocks with boxes in pixels of the original image.

Must not import torch or evaluate model output as code: coordinates go through a strict grammar, and anything
malformed is kept as text with a warning instead of being dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

EOS_TEXT = "<｜end▁of▁sentence｜>"
REF_OPEN, REF_CLOSE, DET_OPEN, DET_CLOSE = "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>"
GRID_MAX = 999  # boxes are emitted on a 0..999 grid relative to the original image

_INT = r"\s*(\d{1,6})\s*"
_BOX = re.compile(r"\[" + ",".join([_INT] * 4) + r"\]")
_BOX_LIST = re.compile(r"\s*\[\s*(\[[^\[\]]*\]\s*(?:,\s*\[[^\[\]]*\]\s*)*)\]\s*")

Box = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    index: int  # reading order
    label: str  # "title", "text", "image", "table", ...; "text" for untagged text
    boxes: tuple[Box, ...]  # pixels of the original image
    grid_boxes: tuple[Box, ...]  # as emitted, on the 0..999 grid
    content: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "boxes": [list(b) for b in self.boxes],
                "grid_boxes": [list(b) for b in self.grid_boxes], "content": self.content}


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedOutput:
    blocks: tuple[Block, ...]
    warnings: tuple[str, ...]


def strip_eos(text: str) -> str:
    return text[: -len(EOS_TEXT)] if text.endswith(EOS_TEXT) else text


def parse_boxes(text: str) -> tuple[Box, ...] | None:
    """`[[x1, y1, x2, y2], ...]` (or a single `[x1, y1, x2, y2]`) -> grid boxes, clamped to 0..999 and ordered so
    that x1 <= x2 and y1 <= y2. None when the text is not exactly such a list."""
    match = _BOX_LIST.fullmatch(text)
    items = re.findall(r"\[[^\[\]]*\]", match.group(1)) if match else [text.strip()]
    boxes = []
    for item in items:
        box = _BOX.fullmatch(item)
        if not box:
            return None
        x1, y1, x2, y2 = (min(int(v), GRID_MAX) for v in box.groups())
        boxes.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    return tuple(boxes)


def to_pixels(box: Box, width: int, height: int) -> Box:
    """Grid box -> pixels, truncating like the reference: int(v / 999 * size)."""
    x1, y1, x2, y2 = box
    return (int(x1 / GRID_MAX * width), int(y1 / GRID_MAX * height),
            int(x2 / GRID_MAX * width), int(y2 / GRID_MAX * height))


def parse_grounding(text: str, image_size: tuple[int, int]) -> ParsedOutput:
    """Split raw model output into blocks in reading order. Untagged text becomes "text" blocks without boxes."""
    width, height = image_size
    text = strip_eos(text)
    blocks: list[Block] = []
    warnings: list[str] = []

    def add(label: str, grid: tuple[Box, ...], content: str) -> None:
        content = content.strip()
        if not content and not grid and label == "text":
            return
        blocks.append(Block(index=len(blocks), label=label, grid_boxes=grid, content=content,
                            boxes=tuple(to_pixels(b, width, height) for b in grid)))

    pos = 0
    while pos < len(text):
        start = text.find(REF_OPEN, pos)
        if start < 0:
            add("text", (), text[pos:])
            break
        add("text", (), text[pos:start])
        label_end = text.find(REF_CLOSE, start)
        if label_end < 0:
            warnings.append(f"block {len(blocks)}: unclosed {REF_OPEN} tag; kept as text")
            add("text", (), text[start + len(REF_OPEN):])
            break
        label = text[start + len(REF_OPEN):label_end].strip() or "text"
        pos = label_end + len(REF_CLOSE)
        grid: tuple[Box, ...] = ()
        if text.startswith(DET_OPEN, pos):
            det_end = text.find(DET_CLOSE, pos)
            if det_end < 0:
                warnings.append(f"block {len(blocks)}: unclosed {DET_OPEN} tag (output cut off?)")
                pos = len(text)
            else:
                raw = text[pos + len(DET_OPEN):det_end]
                parsed = parse_boxes(raw)
                if parsed is None:
                    warnings.append(f"block {len(blocks)}: malformed {DET_OPEN} coordinates {raw[:60]!r}; "
                                    "kept without boxes")
                grid = parsed or ()
                pos = det_end + len(DET_CLOSE)
        nxt = text.find(REF_OPEN, pos)
        end = len(text) if nxt < 0 else nxt
        blocks.append(Block(index=len(blocks), label=label, grid_boxes=grid, content=text[pos:end].strip(),
                            boxes=tuple(to_pixels(b, width, height) for b in grid)))
        pos = end
    return ParsedOutput(blocks=tuple(blocks), warnings=tuple(warnings))
