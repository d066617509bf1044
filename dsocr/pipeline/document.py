"""The document model: Document -> Pages -> Blocks, as plain dataclasses, and their versioned JSON form.

Must not import torch, the model or anything that renders; these objects are what the pipeline returns and
what `<name>.json` holds (schema: `document.schema.json` next to this file, described in docs/document-json.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from dsocr.output.grounding import Block as GroundingBlock

SCHEMA_VERSION = "1.0"
Box = tuple[int, int, int, int]

# Page statuses. Anything but OK still keeps the page's place, output and reason.
OK, TRUNCATED, REPETITION, FAILED = "ok", "truncated", "repetition", "failed"
STATUSES = (OK, TRUNCATED, REPETITION, FAILED)


@dataclass(slots=True, kw_only=True)
class Block:
    """One layout block of a page, in reading order."""

    index: int  # reading order within the page
    label: str  # title, sub_title, text, table, image, image_caption, equation, ... ("text" when untagged)
    content: str  # Markdown, or HTML for tables, or LaTeX for equations (see `format`)
    format: str  # "markdown" | "html" | "latex"
    boxes: list[Box]  # page pixels (x1, y1, x2, y2); several when the model gave several for one block
    bbox: Box | None  # union of `boxes`, page pixels; None when the model gave no coordinates
    bbox_norm: tuple[float, float, float, float] | None  # bbox / page size, 0..1
    bbox_pt: tuple[float, float, float, float] | None  # bbox in PDF points of the displayed page (PDFs only)
    figures: list[str] = field(default_factory=list)  # figure crops of this block, relative to the .md file

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "label": self.label, "format": self.format, "content": self.content,
            "bbox": _list(self.bbox), "bbox_norm": _list(self.bbox_norm), "bbox_pt": _list(self.bbox_pt),
            "boxes": [list(b) for b in self.boxes], "figures": list(self.figures),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Block:
        return cls(index=d["index"], label=d["label"], content=d["content"], format=d["format"],
                   boxes=[tuple(b) for b in d["boxes"]], bbox=_tuple(d["bbox"]), bbox_norm=_tuple(d["bbox_norm"]),
                   bbox_pt=_tuple(d["bbox_pt"]), figures=list(d.get("figures", [])))


@dataclass(slots=True, kw_only=True)
class Attempt:
    """One try at a page: the first is "original", retries name their strategy."""

    strategy: str  # "original", "fewer-crops", "split-halves"
    status: str
    reason: str
    generated_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "status": self.status, "reason": self.reason,
                "generated_tokens": self.generated_tokens}


@dataclass(slots=True, kw_only=True)
class Page:
    """One page of a document (0-based `index` in the source; `number` = index + 1)."""

    index: int
    width: int = 0  # pixels of the rendered page the boxes refer to
    height: int = 0
    dpi: float = 0.0  # rendering resolution (PDFs; images: their stored DPI or 144)
    width_pt: float | None = None  # PDF page size in points as displayed (/Rotate applied); None for images
    height_pt: float | None = None
    status: str = OK
    reason: str = ""  # why the status is not "ok"
    blocks: list[Block] = field(default_factory=list)
    markdown: str = ""  # the page's Markdown, figure links relative to the .md file
    raw: str = ""  # raw model output of the winning attempt (grounding tags kept)
    prompt_tokens: int = 0
    image_tokens: int = 0
    generated_tokens: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    recovered_by: str | None = None  # the retry strategy that produced this output, None = first try
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "number": self.number, "width": self.width, "height": self.height,
            "dpi": self.dpi, "width_pt": self.width_pt, "height_pt": self.height_pt, "status": self.status,
            "reason": self.reason, "blocks": [b.to_dict() for b in self.blocks], "markdown": self.markdown,
            "raw": self.raw, "prompt_tokens": self.prompt_tokens, "image_tokens": self.image_tokens,
            "generated_tokens": self.generated_tokens, "attempts": [a.to_dict() for a in self.attempts],
            "recovered_by": self.recovered_by, "timings": {k: round(v, 6) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Page:
        return cls(
            index=d["index"], width=d["width"], height=d["height"], dpi=d["dpi"], width_pt=d["width_pt"],
            height_pt=d["height_pt"], status=d["status"], reason=d["reason"],
            blocks=[Block.from_dict(b) for b in d["blocks"]], markdown=d["markdown"], raw=d["raw"],
            prompt_tokens=d["prompt_tokens"], image_tokens=d["image_tokens"],
            generated_tokens=d["generated_tokens"], attempts=[Attempt(**a) for a in d["attempts"]],
            recovered_by=d["recovered_by"], timings=dict(d["timings"]), warnings=list(d["warnings"]),
        )


@dataclass(slots=True, kw_only=True)
class Document:
    """A converted document. `pages` holds the selected pages in page order; `error` is set (and `pages`
    may be empty) when the document as a whole could not be read."""

    source: str  # the input path as given
    name: str  # output name: OUT/<name>/<name>.md
    kind: str  # "pdf" | "image"
    sha256: str = ""  # of the input file's bytes
    settings_hash: str = ""  # of everything that changes the output (model, prompt, DPI, pages, ...)
    num_pages: int = 0  # pages in the source, selected or not
    pages: list[Page] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    model: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and all(p.ok for p in self.pages)

    @property
    def failed_pages(self) -> list[Page]:
        return [p for p in self.pages if p.status == FAILED]

    def status_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for page in self.pages:
            counts[page.status] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION, "source": self.source, "name": self.name, "kind": self.kind,
            "sha256": self.sha256, "settings_hash": self.settings_hash, "model": self.model,
            "num_pages": self.num_pages, "error": self.error, "status_counts": self.status_counts(),
            "settings": self.settings, "pages": [p.to_dict() for p in self.pages],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Document:
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"document JSON schema {d.get('schema_version')!r} is not {SCHEMA_VERSION!r}")
        return cls(source=d["source"], name=d["name"], kind=d["kind"], sha256=d["sha256"],
                   settings_hash=d["settings_hash"], model=d["model"], num_pages=d["num_pages"],
                   error=d["error"], settings=d["settings"], pages=[Page.from_dict(p) for p in d["pages"]])


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of `Document.to_dict()`."""
    return json.loads(resources.files("dsocr.pipeline").joinpath("document.schema.json").read_text("utf-8"))


def content_format(label: str, content: str) -> str:
    """How a block's content is written: tables come as HTML, equations as LaTeX, the rest as Markdown."""
    stripped = content.lstrip()
    if stripped.startswith("<table") or (label == "table" and stripped.startswith("<")):
        return "html"
    if label in ("equation", "formula", "isolate_formula") or stripped.startswith(("\\[", "$$")):
        return "latex"
    return "markdown"


def make_blocks(parsed: Sequence[GroundingBlock], size: tuple[int, int],
                to_points: PointMapper | None = None) -> list[Block]:
    """Document blocks from parsed grounding blocks of a page image of `size` (width, height)."""
    width, height = size
    blocks = []
    for b in parsed:
        boxes = [tuple(box) for box in b.boxes]
        bbox = union(boxes)
        blocks.append(Block(
            index=b.index, label=b.label, content=b.content, format=content_format(b.label, b.content),
            boxes=boxes, bbox=bbox,
            bbox_norm=None if bbox is None else (round(bbox[0] / width, 5), round(bbox[1] / height, 5),
                                                 round(bbox[2] / width, 5), round(bbox[3] / height, 5)),
            bbox_pt=None if bbox is None or to_points is None else to_points(bbox),
        ))
    return blocks


class PointMapper:
    """Page pixels -> PDF points of the displayed (rotated) page, origin top-left like the pixels."""

    def __init__(self, width_px: int, height_px: int, width_pt: float, height_pt: float) -> None:
        self.sx, self.sy = width_pt / width_px, height_pt / height_px

    def __call__(self, box: Box) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = box
        return (round(x1 * self.sx, 2), round(y1 * self.sy, 2), round(x2 * self.sx, 2), round(y2 * self.sy, 2))


def union(boxes: Sequence[Box]) -> Box | None:
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _list(value: tuple | None) -> list | None:
    return None if value is None else list(value)


def _tuple(value: list | None) -> tuple | None:
    return None if value is None else tuple(value)
