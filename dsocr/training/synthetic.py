"""Synthetic document pages for training an OCR model of the DeepSeek-OCR 2 architecture.

A page is rendered with Pillow from real prose (`dsocr.training.corpus`, the Python manual; some paragraphs
with their words shuffled, `p_scramble`) and comes with two
targets: what the official model prints for `<|grounding|>Convert the document to markdown.` (layout blocks
with boxes, spec 9.1) and for `Free OCR.` (the text alone). Every page is a pure function of (seed, config):
one `random.Random(seed)` is threaded through every decision, so worker processes can generate in parallel
and the same seed gives byte-identical images and targets (same Pillow/FreeType/matplotlib versions and
Python minor version, which fixes the corpus).

Labels, from the spec's observed list (9.1) and the page-furniture labels `pipeline/writers.py` knows:
    title          page title, target `# Title`
    sub_title      section heading, target `## Heading`
    text           paragraph (one block per paragraph piece; a paragraph split over two columns gives two
                   blocks) and lists (target `- item` / `1. item` lines: the spec has no list label)
    table          ruled grid, target `<table><tr><td>..</td></tr></table>` (no <th>: the tokenizer has
                   special tokens for <tr>, <td> only)
    table_caption  "Table N: ...", above its table
    equation       matplotlib mathtext, target `\\[ latex \\]`, numbered ones `\\[ latex \\quad (N) \\]`
    image          a chart or shapes drawn with Pillow, empty content
    image_caption  "Figure N: ...", below its figure
    header, footer running title and page number (not in the spec's list; see writers.py)
Captions are centred in their column and, with `center_captions`, wrapped in `<center>...</center>`, as the
spec says official outputs often are.

Boxes are page pixels (x1, y1, x2, y2), x2/y2 exclusive, after augmentation; on the 0..999 grid a pixel
coordinate p becomes round(p * 999 / size), the inverse of the reference's int(v / 999 * size).

Needs matplotlib (fonts and mathtext): `pip install 'dsocr[train]'`. Nothing is rendered at import.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from random import Random

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from dsocr.errors import ConfigError
from dsocr.output.grounding import grounded_block, to_grid
from dsocr.training import corpus

WHITE = (255, 255, 255)
Box = tuple[int, int, int, int]

# regular, bold, italic file names under matplotlib's fonts/ttf
FONT_FAMILIES: dict[str, tuple[str, str, str]] = {
    "sans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf"),
    "serif": ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf"),
    "mono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf"),
    "stix": ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf"),
}
MATH_FONTSETS = ("dejavusans", "dejavuserif", "cm", "stix", "stixsans")


def _check_range(name: str, value: tuple[float, float], lo: float, hi: float) -> None:
    if len(value) != 2 or not lo <= value[0] <= value[1] <= hi:
        raise ConfigError(f"{name} must be (low, high) with {lo} <= low <= high <= {hi}, got {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SyntheticConfig:
    """What pages look like. Ranges are inclusive (lo, hi); probabilities are per page unless said
    otherwise."""

    width: tuple[int, int] = (800, 1000)  # page width in px
    aspects: tuple[float, ...] = (1.4142, 1.2941)  # height / width: A4, US Letter
    p_landscape: float = 0.1  # width / aspect instead of width * aspect
    columns: tuple[float, float] = (0.6, 0.4)  # weights of one and two columns
    font_sizes: tuple[int, int] = (14, 28)  # body text size in px; headings are larger, furniture smaller
    line_spacing: tuple[float, float] = (1.15, 1.6)  # line height / font size
    margins: tuple[float, float] = (0.05, 0.11)  # page margins as a fraction of the width
    fill: tuple[float, float] = (0.75, 1.0)  # how far down the columns the content may go
    fonts: tuple[str, ...] = tuple(FONT_FAMILIES)  # families from FONT_FAMILIES, one per page
    p_title: float = 0.7  # a `# title` above the columns
    p_sub_title: float = 0.15  # a `## heading` before a paragraph (per paragraph)
    p_table: float = 0.12  # each of these: chance of the element after a paragraph (per paragraph)
    p_formula: float = 0.15
    p_figure: float = 0.1
    p_list: float = 0.1
    p_header_footer: float = 0.5  # running title at the top and page number at the bottom
    # Paragraphs with their words in a random order (per paragraph): the corpus is small enough for a decoder to
    # learn by heart, and a model that can recite it has no need to read; shuffled words must be read.
    p_scramble: float = 0.5
    center_captions: bool = True  # wrap caption targets in <center>...</center>
    augment: float = 0.5  # chance of scan-like augmentation (rotation, contrast, blur, noise, JPEG)
    max_rotation: float = 1.5  # degrees, when augmenting

    def __post_init__(self) -> None:
        _check_range("width", self.width, 200, 10_000)
        _check_range("font_sizes", self.font_sizes, 6, 200)
        _check_range("line_spacing", self.line_spacing, 1.0, 4.0)
        _check_range("margins", self.margins, 0.0, 0.3)
        _check_range("fill", self.fill, 0.1, 1.0)
        for name in ("p_landscape", "p_title", "p_sub_title", "p_table", "p_formula", "p_figure", "p_list",
                     "p_header_footer", "p_scramble", "augment"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a probability in 0..1, got {getattr(self, name)}")
        if not self.aspects or min(self.aspects) < 0.2:
            raise ConfigError(f"aspects must be positive height/width ratios, got {self.aspects}")
        if len(self.columns) != 2 or min(self.columns) < 0 or sum(self.columns) <= 0:
            raise ConfigError(f"columns must be two non-negative weights (one, two), got {self.columns}")
        if not self.fonts or set(self.fonts) - set(FONT_FAMILIES):
            raise ConfigError(f"fonts must be a non-empty subset of {list(FONT_FAMILIES)}, got {self.fonts}")
        if not 0.0 <= self.max_rotation <= 10.0:
            raise ConfigError(f"max_rotation must be 0..10 degrees, got {self.max_rotation}")


# Small pages of a few large lines, seen whole in one view: where a model trained from scratch first learns to
# read (`TrainConfig.snippets` mixes them with full pages) before pages of small print in crops. Every
# paragraph shuffled: here nothing can be recited, only read.
SNIPPETS = SyntheticConfig(width=(320, 512), aspects=(0.5, 0.75, 1.0), p_landscape=0.0, columns=(1.0, 0.0),
                           font_sizes=(16, 30), p_title=0.3, p_table=0.05, p_formula=0.05, p_figure=0.0,
                           p_list=0.1, p_header_footer=0.0, p_scramble=1.0)


def snippet_config(fonts: tuple[int, int] | None = None) -> SyntheticConfig:
    """SNIPPETS, with body text of `fonts` px (lo, hi) if given: larger print puts fewer characters in each of the
    vision tower's cells (64 view pixels), the easiest reading there is."""
    return SNIPPETS if fonts is None else replace(SNIPPETS, font_sizes=fonts)


@dataclass(frozen=True, slots=True)
class SyntheticBlock:
    label: str  # see the module doc
    box: Box  # page pixels x1, y1, x2, y2 after augmentation
    content: str  # the block's target: markdown text, HTML table, \[ LaTeX \], "" for images


Glyph = tuple[str, float, float]  # a drawn character and its centre in page pixels


@dataclass(frozen=True, slots=True)
class SyntheticPage:
    image: Image.Image  # RGB
    blocks: tuple[SyntheticBlock, ...]  # reading order
    seed: int
    # Every character drawn as text (not the formulas' mathtext), where it landed after augmentation: the
    # training-only signal that teaches a vision tower from scratch what each of its cells shows (glyphs.py).
    glyphs: tuple[Glyph, ...] = ()

    def grounding_target(self) -> str:
        """The answer to the "markdown" prompt (`<|grounding|>Convert the document to markdown.`, see
        processing/prompts.py): one ref per block, blocks separated by a blank line, no EOS."""
        size = self.image.size
        return "\n\n".join(grounded_block(b.label, to_grid(b.box, size), b.content) for b in self.blocks)

    def plain_target(self) -> str:
        """The answer to the "free" prompt (`Free OCR.`): every block's text in reading order, no tags."""
        return "\n\n".join(text for b in self.blocks if (text := plain_text(b)))


_HEADING = re.compile(r"^#+ ")
_CENTER = re.compile(r"^<center>(.*)</center>$", re.DOTALL)
_ROW = re.compile(r"<tr>(.*?)</tr>")
_CELL = re.compile(r"<td>(.*?)</td>")


def plain_text(block: SyntheticBlock) -> str:
    """A block's content without markup that is not printed: heading hashes, <center>, table tags (a table
    becomes one line per row, cells separated by spaces). List markers and LaTeX stay."""
    if block.label == "table":
        return "\n".join(" ".join(_CELL.findall(row)) for row in _ROW.findall(block.content))
    text = _HEADING.sub("", block.content)
    return m.group(1) if (m := _CENTER.match(text)) else text


def generate_page(seed: int, config: SyntheticConfig = SyntheticConfig()) -> SyntheticPage:
    """Render one page. Pure function of (seed, config)."""
    rng = Random(seed)
    canvas = _Canvas(rng, config)
    _lay_out(canvas)
    image, blocks, glyphs = canvas.image, canvas.blocks, canvas.glyphs
    if rng.random() < config.augment:
        image, blocks, glyphs = _augment(image, blocks, glyphs, rng, config)
    return SyntheticPage(image=image, blocks=tuple(blocks), seed=seed, glyphs=tuple(glyphs))


# --- page state and text ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _font_dir() -> Path:
    try:
        import matplotlib
    except ImportError as e:
        message = "synthetic pages need matplotlib (fonts, mathtext): pip install 'dsocr[train]'"
        raise ImportError(message) from e
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@lru_cache(maxsize=512)
def load_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    """A font file shipped with matplotlib (DejaVuSans.ttf, STIXGeneral.ttf, ...) at `size` px."""
    return ImageFont.truetype(str(_font_dir() / name), size)


@dataclass(slots=True)
class _Canvas:
    """One page being drawn: its image, the page-wide style, the blocks so far and the running numbers."""

    rng: Random
    config: SyntheticConfig
    image: Image.Image = field(init=False)
    draw: ImageDraw.ImageDraw = field(init=False)
    family: tuple[str, str, str] = field(init=False)
    size: int = field(init=False)  # body font size
    spacing: float = field(init=False)  # line height / font size
    pitch: int = field(init=False)  # body line height in px
    gap: int = field(init=False)  # vertical space between blocks
    indent: int = field(init=False)  # first-line indent of paragraphs (0 on most pages)
    ink: tuple[int, int, int] = field(init=False)
    blocks: list[SyntheticBlock] = field(default_factory=list)
    glyphs: list[Glyph] = field(default_factory=list)
    numbers: dict[str, int] = field(default_factory=dict)  # next figure / table / equation number

    def __post_init__(self) -> None:
        rng, config = self.rng, self.config
        width = rng.randint(*config.width)
        aspect = rng.choice(config.aspects)
        height = round(width / aspect if rng.random() < config.p_landscape else width * aspect)
        self.image = Image.new("RGB", (width, height), WHITE)
        self.draw = ImageDraw.Draw(self.image)
        self.family = FONT_FAMILIES[rng.choice(config.fonts)]
        self.size = rng.randint(*config.font_sizes)
        self.spacing = rng.uniform(*config.line_spacing)
        self.pitch = round(self.size * self.spacing)
        self.gap = round(self.pitch * rng.uniform(0.4, 1.1))
        self.indent = 2 * self.size if rng.random() < 0.3 else 0
        grey = rng.randint(0, 60)
        self.ink = (grey, grey, grey + rng.randint(0, 20))
        self.numbers = {"figure": rng.randint(1, 9), "table": rng.randint(1, 9),
                        "equation": rng.randint(1, 20)}

    def font(self, style: int, scale: float = 1.0) -> ImageFont.FreeTypeFont:
        """style: 0 regular, 1 bold, 2 italic."""
        return load_font(self.family[style], max(8, round(self.size * scale)))

    def next_number(self, kind: str) -> int:
        self.numbers[kind] += 1
        return self.numbers[kind] - 1

    def text(self, xy: tuple[float, float], text: str, font: ImageFont.FreeTypeFont) -> None:
        """Draw `text` with its top-left at `xy` and record each character's centre (kerning ignored: a few
        px off at most, against cells of ~100 page px)."""
        self.draw.text(xy, text, font=font, fill=self.ink)
        x, y = xy
        middle = y + font.getmetrics()[0] - 0.3 * font.size  # half an x-height above the baseline
        for ch in text:
            advance = _advance(font, ch)
            if not ch.isspace():
                self.glyphs.append((ch, x + advance / 2, middle))
            x += advance


@lru_cache(maxsize=16384)
def _advance(font: ImageFont.FreeTypeFont, ch: str) -> float:
    return font.getlength(ch)


@dataclass(frozen=True, slots=True)
class _Line:
    text: str
    glued: bool = False  # continues the previous line's word (an over-long word broken by characters)
    indent: int = 0


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int, first_indent: int = 0) -> list[_Line]:
    """Greedy word wrap; a word wider than the column is broken by characters over glued lines."""
    space = font.getlength(" ")
    lines: list[_Line] = []
    words: list[str] = []
    used, glued, indent = 0.0, False, first_indent

    def flush() -> None:
        nonlocal words, used, glued, indent
        if not words:
            return
        lines.append(_Line(" ".join(words), glued, indent))
        words, used, glued, indent = [], 0.0, False, 0

    for word in text.split():
        w = font.getlength(word)
        if words and used + space + w <= width - indent:
            words.append(word)
            used += space + w
            continue
        flush()
        for i, piece in enumerate(_break_word(word, font, width - indent) if w > width - indent else [word]):
            if i:
                flush()
                glued = True
            words, used = [piece], font.getlength(piece)
    flush()
    return lines


def _break_word(word: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    pieces, start = [], 0
    for end in range(1, len(word) + 1):
        if font.getlength(word[start:end]) > width and end - 1 > start:
            pieces.append(word[start:end - 1])
            start = end - 1
    return pieces + [word[start:]]


def _join(lines: list[_Line]) -> str:
    """The text of wrapped lines: spaces between lines except where a word was broken."""
    return "".join(("" if i == 0 or line.glued else " ") + line.text for i, line in enumerate(lines))


# --- pieces: what the column flow places ------------------------------------------------------------------


@dataclass(slots=True)
class _Text:
    """Wrapped lines forming one block. Only paragraphs are splittable (over a column break)."""

    label: str
    lines: list[_Line]
    font: ImageFont.FreeTypeFont
    pitch: int  # baseline-to-baseline distance
    prefix: str = ""  # markdown before the text, e.g. "## "
    content: str | None = None  # the target when it is not prefix + the joined lines (lists)
    align: str = "left"  # left, center, right
    centered_target: bool = False  # <center>...</center> around the target
    splittable: bool = False

    @property
    def height(self) -> int:
        ascent, descent = self.font.getmetrics()
        return (len(self.lines) - 1) * self.pitch + ascent + descent

    def split(self, room: int) -> tuple[_Text, _Text] | None:
        """The lines that fit in `room` px and the rest, or None when none or all fit."""
        ascent, descent = self.font.getmetrics()
        n = (room - ascent - descent) // self.pitch + 1
        if not self.splittable or n < 1 or n >= len(self.lines):
            return None
        head = _Text(self.label, self.lines[:n], self.font, self.pitch, self.prefix, splittable=True)
        tail = _Text(self.label, self.lines[n:], self.font, self.pitch, self.prefix, splittable=True)
        return head, tail

    def render(self, c: _Canvas, x: int, y: int, width: int) -> None:
        left, right = math.inf, -math.inf
        for i, line in enumerate(self.lines):
            length = self.font.getlength(line.text)
            offset = {"left": line.indent, "center": (width - length) / 2,
                      "right": width - length}[self.align]
            c.text((x + offset, y + i * self.pitch), line.text, self.font)
            left, right = min(left, x + offset), max(right, x + offset + length)
        content = self.content if self.content is not None else self.prefix + _join(self.lines)
        if self.centered_target:
            content = f"<center>{content}</center>"
        box = (math.floor(left), y, math.ceil(right), y + self.height)
        c.blocks.append(SyntheticBlock(self.label, box, content))


@dataclass(slots=True)
class _Graphic:
    """A table, formula or figure: a fixed height and a function that draws it and records its block."""

    height: int
    draw: Callable[[int, int], None]  # (column x, y)

    def render(self, c: _Canvas, x: int, y: int, width: int) -> None:
        self.draw(x, y)


_Piece = _Text | _Graphic
_Unit = list[_Piece]  # pieces kept together in one column (a figure and its caption)


# --- layout -----------------------------------------------------------------------------------------------


def _lay_out(c: _Canvas) -> None:
    """Header, title, the columns filled in reading order, footer."""
    rng, config = c.rng, c.config
    width, height = c.image.size
    margin = round(width * rng.uniform(*config.margins))
    top, bottom = round(margin * rng.uniform(0.8, 1.4)), height - round(margin * rng.uniform(0.8, 1.4))
    left, right = margin, width - margin
    footer: _Text | None = None
    if rng.random() < config.p_header_footer:
        top = _header(c, left, right, top)
        footer = _furniture(c, "footer", _page_number(rng), right - left)
        footer_y = height - round(margin * 0.4) - footer.height
        bottom = min(bottom, footer_y - c.gap)
    if rng.random() < config.p_title:
        title = _heading(c, 1, right - left)
        title.align = rng.choice(("left", "center"))
        title.render(c, left, top, right - left)
        top += title.height + round(1.5 * c.gap)
    columns = _columns(c, left, right)
    end = top + round((bottom - top) * rng.uniform(*config.fill))
    _flow(c, columns, top, bottom, end)
    if footer is not None:  # drawn last: it is last in reading order
        footer.render(c, left, footer_y, right - left)


def _columns(c: _Canvas, left: int, right: int) -> list[tuple[int, int]]:
    """(x, width) of each column; two only when a column still holds about 30 characters a line."""
    gap = round((right - left) * c.rng.uniform(0.03, 0.06))
    half = (right - left - gap) // 2
    if c.rng.choices((1, 2), weights=c.config.columns)[0] == 2 and half >= 15 * c.size:
        return [(left, half), (right - half, half)]
    return [(left, right - left)]


def _flow(c: _Canvas, columns: list[tuple[int, int]], top: int, bottom: int, end: int) -> None:
    """Fill the columns top to bottom, left to right, until the last column passes `end` (the document ends
    there, after a whole unit). A paragraph that does not fit is split over the column break; any other unit
    moves to the next column, or is left out when there is none or the column is empty (a float that did not
    make it onto this page)."""
    col, y, dropped = 0, top, 0
    width = columns[0][1]
    for unit in _units(c, width):
        if col == len(columns) - 1 and y >= end:
            return
        while unit:
            if bottom - y < c.pitch:  # column full
                col, y = col + 1, top
                if col == len(columns):
                    return
            x = columns[col][0]
            height = sum(p.height for p in unit) + c.gap * (len(unit) - 1)
            split = unit[0].split(bottom - y) if len(unit) == 1 and isinstance(unit[0], _Text) else None
            if y + height <= bottom:
                y = _render_unit(c, unit, x, y, width) + c.gap
                unit, dropped = [], 0
            elif split is not None:
                _render_unit(c, [split[0]], x, y, width)
                unit, y = [split[1]], bottom
            elif y == top or col == len(columns) - 1:
                unit, dropped = [], dropped + 1
                if dropped > 20:
                    return
            else:
                y = bottom


def _render_unit(c: _Canvas, unit: _Unit, x: int, y: int, width: int) -> int:
    """Draw the pieces one under the other; return the y below the last."""
    for i, piece in enumerate(unit):
        piece.render(c, x, y, width)
        y += piece.height + (c.gap if i < len(unit) - 1 else 0)
    return y


def _units(c: _Canvas, width: int) -> Iterator[_Unit]:
    """An endless stream: paragraphs of a section from a random place on, now and then a new section with its
    heading, each paragraph possibly followed by a list, formula, table or figure."""
    rng, config = c.rng, c.config
    sections = _prose()
    s = rng.randrange(len(sections))
    p = rng.randrange(len(sections[s].paragraphs))
    extras: tuple[tuple[float, Callable[[_Canvas, int], _Unit | None]], ...] = (
        (config.p_list, _list), (config.p_formula, _formula), (config.p_table, _table),
        (config.p_figure, _figure))
    while True:
        if p >= len(sections[s].paragraphs) or rng.random() < config.p_sub_title:
            s, p = rng.randrange(len(sections)), 0
            yield [_heading(c, 2, width, sections[s].title)]
        text = sections[s].paragraphs[p]
        if rng.random() < config.p_scramble:
            words = text.split()
            rng.shuffle(words)
            text = " ".join(words)
        yield [_paragraph(c, text, width)]
        p += 1
        for probability, build in extras:
            if rng.random() < probability and (unit := build(c, width)) is not None:
                yield unit


_ASCII_ART = re.compile(r"[-=+]{4,}")  # reST tables that slipped into the prose


@lru_cache(maxsize=1)
def _prose() -> tuple[corpus.Section, ...]:
    """The corpus without ASCII-art tables and leading blanks (left where a bullet was removed)."""
    sections = ((s.title, tuple(p.strip() for p in s.paragraphs if not _ASCII_ART.search(p)))
                for s in corpus.sections())
    return tuple(corpus.Section(title, paragraphs) for title, paragraphs in sections if paragraphs)


@lru_cache(maxsize=1)
def _words() -> tuple[str, ...]:
    return corpus.words()  # not cached there, and it takes 20 ms


@lru_cache(maxsize=1)
def _openings() -> tuple[str, ...]:
    """Paragraphs that start with a letter: their first words make list items and captions."""
    return tuple(p for s in _prose() for p in s.paragraphs if p[0].isalpha())


# --- text elements ----------------------------------------------------------------------------------------


def _paragraph(c: _Canvas, text: str, width: int) -> _Text:
    font = c.font(0)
    lines = _wrap(text, font, width, first_indent=c.indent)
    return _Text("text", lines, font, c.pitch, splittable=True)


def _heading(c: _Canvas, level: int, width: int, title: str | None = None) -> _Text:
    """`# title` (level 1, a random section's title) or `## heading` (level 2)."""
    if title is None:
        title = c.rng.choice(_prose()).title
    scale = c.rng.uniform(1.5, 2.1) if level == 1 else c.rng.uniform(1.1, 1.4)
    font = c.font(1, scale)
    return _Text("title" if level == 1 else "sub_title", _wrap(title, font, width), font,
                 round(font.size * 1.2), prefix="#" * level + " ")


def _list(c: _Canvas, width: int) -> _Unit:
    """2-5 short items from the prose, bulleted (`- ` in the target) or numbered (`1. `), hanging indent."""
    rng, font = c.rng, c.font(0)
    ordered = rng.random() < 0.4
    items = [_fragment(rng, 3, 16) for _ in range(rng.randint(2, 5))]
    lines: list[_Line] = []
    for i, item in enumerate(items, 1):
        marker = f"{i}." if ordered else "\u2022"
        indent = round(font.getlength(marker + "  "))
        wrapped = _wrap(item, font, width - indent)
        lines.append(_Line(f"{marker} {wrapped[0].text}"))
        lines += [_Line(line.text, line.glued, indent) for line in wrapped[1:]]
    content = "\n".join(f"{i}. {item}" if ordered else f"- {item}" for i, item in enumerate(items, 1))
    return [_Text("text", lines, font, c.pitch, content=content)]


def _caption(c: _Canvas, label: str, text: str, width: int) -> _Text:
    font = c.font(2 if c.rng.random() < 0.5 else 0, 0.9)
    return _Text(label, _wrap(text, font, width), font, round(font.size * c.spacing), align="center",
                 centered_target=c.config.center_captions)


def _furniture(c: _Canvas, label: str, text: str, width: int) -> _Text:
    font = c.font(c.rng.choice((0, 2)), 0.8)
    align = c.rng.choice(("left", "center", "right"))
    return _Text(label, _wrap(text, font, width)[:1], font, font.size, align=align)  # one line at most


def _header(c: _Canvas, left: int, right: int, top: int) -> int:
    """Draw the running title in the top margin, sometimes over a rule; return where the content starts."""
    header = _furniture(c, "header", c.rng.choice(_prose()).title, right - left)
    y = round(top * 0.45)
    header.render(c, left, y, right - left)
    below = y + header.height + 4
    if c.rng.random() < 0.5:
        c.draw.line((left, below, right, below), fill=c.ink, width=1)
    return max(top, below + c.gap)


def _page_number(rng: Random) -> str:
    n = rng.randint(1, 400)
    return rng.choice((f"{n}", f"Page {n}", f"- {n} -", f"{n} / {n + rng.randint(0, 50)}"))


def _fragment(rng: Random, lo: int, hi: int) -> str:
    """The opening words of a random paragraph, capitalised, without trailing punctuation."""
    paragraph = rng.choice(_openings())
    words = paragraph.split()[: rng.randint(lo, hi)]
    text = " ".join(words).rstrip(".,;:")
    return text[:1].upper() + text[1:]


# --- tables -----------------------------------------------------------------------------------------------


def _table(c: _Canvas, width: int) -> _Unit | None:
    """A ruled grid of words and numbers, with a "Table N: ..." caption above it half the time."""
    rng = c.rng
    scale = rng.uniform(0.8, 1.0)
    font, head_font = c.font(0, scale), c.font(rng.choice((0, 1)), scale)
    kinds = ["word"] + [rng.choice(("int", "decimal", "percent", "word")) for _ in range(rng.randint(1, 4))]
    rows = [[_cell(rng, "word").capitalize() for _ in kinds]]
    rows += [[_cell(rng, kind) for kind in kinds] for _ in range(rng.randint(1, 6))]
    pad_x, pad_y = round(font.size * 0.5), round(font.size * 0.3)
    widths = [max(math.ceil((head_font if r == 0 else font).getlength(row[i])) for r, row in enumerate(rows))
              + 2 * pad_x for i in range(len(kinds))]
    while sum(widths) > width and len(widths) > 2:  # too wide: drop columns from the right
        widths.pop()
        rows = [row[:-1] for row in rows]
    if sum(widths) > width:
        return None
    if rng.random() < 0.4:  # stretched to the column width
        widths = [w + (width - sum(widths)) // len(widths) for w in widths]
    ascent, descent = font.getmetrics()
    row_height = ascent + descent + 2 * pad_y
    full_grid = rng.random() < 0.6  # else horizontal rules only (top, under the header, bottom)
    html = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows)
    html = f"<table>{html}</table>"

    def draw(x: int, y: int) -> None:
        x0 = x + (width - sum(widths)) // 2
        x1, y1 = x0 + sum(widths), y + row_height * len(rows)
        for r in range(len(rows) + 1):
            if full_grid or r in (0, 1, len(rows)):
                c.draw.line((x0, y + r * row_height, x1, y + r * row_height), fill=c.ink, width=1)
        edges = [x0 + sum(widths[:i]) for i in range(len(widths) + 1)]
        for edge in edges if full_grid else ():
            c.draw.line((edge, y, edge, y1), fill=c.ink, width=1)
        for r, row in enumerate(rows):
            for edge, value in zip(edges, row):
                c.text((edge + pad_x, y + r * row_height + pad_y), value, head_font if r == 0 else font)
        c.blocks.append(SyntheticBlock("table", (x0, y, x1 + 1, y1 + 1), html))

    table = _Graphic(row_height * len(rows) + 1, draw)
    if rng.random() < 0.5:
        return [table]
    caption = f"Table {c.next_number('table')}: {_fragment(rng, 3, 10)}"
    return [_caption(c, "table_caption", caption, width), table]


def _cell(rng: Random, kind: str) -> str:
    if kind == "int":
        return str(rng.randint(0, 9999))
    if kind == "decimal":
        return f"{rng.uniform(0, 100):.{rng.randint(1, 3)}f}"
    if kind == "percent":
        return f"{rng.randint(0, 100)}%"
    return rng.choice(_words())  # letters only: nothing to escape in HTML


# --- formulas ---------------------------------------------------------------------------------------------

_LATIN = "abcfgkmnpqrstuvwxyz"
_GREEK = (r"\alpha", r"\beta", r"\gamma", r"\delta", r"\epsilon", r"\theta", r"\lambda", r"\mu", r"\pi",
          r"\rho", r"\sigma", r"\tau", r"\phi", r"\omega")
_SUBSCRIPTS = ("i", "j", "k", "n", "0", "1", "2", "t", "i+1", "n-1", "ij")
_SUPERSCRIPTS = ("2", "3", "n", "k", "-1", "p", "2n")
_RELATIONS = ("=", "=", "=", r"\leq", r"\geq", r"\approx", r"\neq", "<")
_OPERATORS = (" + ", " - ", " ", r" \cdot ")
_FUNCTIONS = (r"\sin", r"\cos", r"\log", r"\exp")


def _formula(c: _Canvas, width: int) -> _Unit | None:
    """A random display formula rendered by mathtext, centred; a third are numbered "(N)" at the right."""
    rng = c.rng
    size = round(c.size * rng.uniform(1.0, 1.3))
    fontset = rng.choice(MATH_FONTSETS)
    number_font = c.font(0)
    numbered = rng.random() < 0.35
    tag = f"({c.numbers['equation']})"
    room = width - (2 * round(number_font.getlength(tag)) + c.size if numbered else 0)
    for _ in range(3):  # a formula wider than the column is replaced by another
        latex = _random_latex(rng)
        mask = _render_math(latex, size, fontset)
        if mask.width <= room:
            break
    else:
        return None
    if numbered:
        c.next_number("equation")
        latex += rf" \quad {tag}"

    def draw(x: int, y: int) -> None:
        mx = x + (width - mask.width) // 2
        c.image.paste(c.ink, (mx, y, mx + mask.width, y + mask.height), mask)
        ink = mask.getbbox() or (0, 0, mask.width, mask.height)
        box = (mx + ink[0], y + ink[1], mx + ink[2], y + ink[3])
        if numbered:
            tag_x, tag_y = x + width - number_font.getlength(tag), y + (mask.height - number_font.size) // 2
            c.text((tag_x, tag_y), tag, number_font)
            tag_box = c.draw.textbbox((tag_x, tag_y), tag, font=number_font)
            box = (box[0], min(box[1], tag_box[1]), math.ceil(tag_box[2]), max(box[3], tag_box[3]))
        c.blocks.append(SyntheticBlock("equation", box, rf"\[ {latex} \]"))

    return [_Graphic(mask.height, draw)]


def _random_latex(rng: Random) -> str:
    """`lhs rel rhs` from a small grammar: atoms with sub/superscripts, fractions, roots, sums, products,
    integrals, functions, squared brackets."""
    lhs = rng.choice((_atom(rng), f"{rng.choice('fgFPL')}({rng.choice('xtnk')})", _expr(rng, 1)))
    return f"{lhs} {rng.choice(_RELATIONS)} {_expr(rng, 0)}"


def _expr(rng: Random, depth: int) -> str:
    terms = [_term(rng, depth) for _ in range(rng.randint(1, 3 if depth == 0 else 2))]
    return "".join(t if i == 0 else rng.choice(_OPERATORS) + t for i, t in enumerate(terms))


def _term(rng: Random, depth: int) -> str:
    r = rng.random() if depth < 2 else 0.0
    deeper = depth + 1
    if r < 0.45:
        return _atom(rng)
    if r < 0.6:
        return rf"\frac{{{_expr(rng, deeper)}}}{{{_expr(rng, deeper)}}}"
    if r < 0.67:
        return rf"\sqrt{{{_expr(rng, deeper)}}}"
    if r < 0.8:
        index, big = rng.choice("ijk"), rng.choice((r"\sum", r"\sum", r"\prod"))
        return rf"{big}_{{{index}=1}}^{{{rng.choice('nNmK')}}} {_symbol(rng)}_{index}"
    if r < 0.88:
        var = rng.choice("xtu")
        upper = rng.choice(("1", r"\infty", "T", r"\pi"))
        return rf"\int_{{0}}^{{{upper}}} {_atom(rng)} \, d{var}"
    if r < 0.95:
        return rf"{rng.choice(_FUNCTIONS)}({_expr(rng, deeper)})"
    return rf"\left( {_expr(rng, deeper)} \right)^{rng.choice('23')}"


def _atom(rng: Random) -> str:
    if rng.random() < 0.2:
        return str(rng.randint(1, 99))
    atom = _symbol(rng)
    if rng.random() < 0.35:
        atom += "_" + _script(rng.choice(_SUBSCRIPTS))
    if rng.random() < 0.3:
        atom += "^" + _script(rng.choice(_SUPERSCRIPTS))
    return atom


def _symbol(rng: Random) -> str:
    return rng.choice(_GREEK) if rng.random() < 0.35 else rng.choice(_LATIN)


def _script(s: str) -> str:
    return s if len(s) == 1 else "{" + s + "}"  # x^2 but x^{-1}, as LaTeX writers (and the model) do


@lru_cache(maxsize=1)
def _math_parser():  # -> matplotlib.mathtext.MathTextParser
    _font_dir()  # the helpful ImportError when matplotlib is missing
    from matplotlib.mathtext import MathTextParser

    return MathTextParser("agg")


def _render_math(latex: str, size: int, fontset: str) -> Image.Image:
    """The formula's coverage as an "L" mask, `size` px high text (dpi 72: one point is one pixel)."""
    from matplotlib.font_manager import FontProperties

    prop = FontProperties(size=size, math_fontfamily=fontset)
    result = _math_parser().parse(f"${latex}$", dpi=72, prop=prop)
    return Image.fromarray(np.asarray(result.image, dtype=np.uint8))  # 2-D uint8: mode "L"


# --- figures ----------------------------------------------------------------------------------------------

_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (127, 127, 127), (23, 190, 207), (60, 60, 60))


def _figure(c: _Canvas, width: int) -> _Unit:
    """A chart or shapes drawn with Pillow, centred, with a "Figure N: ..." caption below."""
    rng = c.rng
    fig_width = round(width * rng.uniform(0.5, 1.0))
    fig_height = round(fig_width * rng.uniform(0.45, 0.8))
    kind = rng.choice((_bars, _lines, _scatter, _shapes, _pie))

    def draw(x: int, y: int) -> None:
        x0 = x + (width - fig_width) // 2
        box = (x0, y, x0 + fig_width, y + fig_height)
        kind(c.draw, rng, box, c.ink)
        c.blocks.append(SyntheticBlock("image", box, ""))

    caption = f"Figure {c.next_number('figure')}: {_fragment(rng, 3, 12)}"
    return [_Graphic(fig_height, draw), _caption(c, "image_caption", caption, width)]


def _axes(draw: ImageDraw.ImageDraw, box: Box, ink: tuple[int, int, int]) -> Box:
    """Draw the left and bottom axes; return the plot area inside them."""
    x1, y1, x2, y2 = box
    draw.line((x1, y1, x1, y2 - 1, x2 - 1, y2 - 1), fill=ink, width=2)
    return x1 + 6, y1 + 4, x2 - 4, y2 - 6


def _bars(draw: ImageDraw.ImageDraw, rng: Random, box: Box, ink: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = _axes(draw, box, ink)
    n = rng.randint(3, 12)
    step = (x2 - x1) / n
    colour = rng.choice(_PALETTE)
    for i in range(n):
        top = y2 - (y2 - y1) * rng.uniform(0.1, 1.0)
        draw.rectangle((x1 + i * step + step * 0.15, top, x1 + (i + 0.85) * step, y2), fill=colour)


def _lines(draw: ImageDraw.ImageDraw, rng: Random, box: Box, ink: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = _axes(draw, box, ink)
    n = rng.randint(5, 20)
    for colour in rng.sample(_PALETTE, rng.randint(1, 3)):
        level = rng.uniform(0.2, 0.8)
        points = []
        for i in range(n):
            level = min(max(level + rng.uniform(-0.15, 0.15), 0.0), 1.0)
            points.append((x1 + (x2 - x1) * i / (n - 1), y2 - (y2 - y1) * level))
        draw.line(points, fill=colour, width=2)


def _scatter(draw: ImageDraw.ImageDraw, rng: Random, box: Box, ink: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = _axes(draw, box, ink)
    colour, r = rng.choice(_PALETTE), rng.randint(2, 5)
    slope = rng.uniform(-0.8, 0.8)
    for _ in range(rng.randint(15, 60)):
        u = rng.random()
        v = min(max(0.5 + slope * (u - 0.5) + rng.gauss(0, 0.12), 0.0), 1.0)
        cx, cy = x1 + r + (x2 - x1 - 2 * r) * u, y2 - r - (y2 - y1 - 2 * r) * v
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)


def _shapes(draw: ImageDraw.ImageDraw, rng: Random, box: Box, ink: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = box
    draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=ink, width=1)
    for _ in range(rng.randint(2, 6)):
        w, h = rng.uniform(0.15, 0.4) * (x2 - x1), rng.uniform(0.15, 0.4) * (y2 - y1)
        sx, sy = rng.uniform(x1 + 4, x2 - 4 - w), rng.uniform(y1 + 4, y2 - 4 - h)
        shape = (sx, sy, sx + w, sy + h)
        colour = rng.choice(_PALETTE)
        if rng.random() < 0.5:
            draw.ellipse(shape, fill=colour if rng.random() < 0.5 else None, outline=colour, width=2)
        else:
            draw.rectangle(shape, fill=colour if rng.random() < 0.5 else None, outline=colour, width=2)


def _pie(draw: ImageDraw.ImageDraw, rng: Random, box: Box, ink: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = box
    r = min(x2 - x1, y2 - y1) // 2 - 2
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    cuts = sorted(rng.uniform(0, 360) for _ in range(rng.randint(2, 6)))
    for start, end, colour in zip(cuts, cuts[1:] + [cuts[0] + 360], _PALETTE):
        draw.pieslice((cx - r, cy - r, cx + r, cy + r), start, end, fill=colour, outline=WHITE)


# --- scan-like augmentation -------------------------------------------------------------------------------


def _augment(image: Image.Image, blocks: list[SyntheticBlock], glyphs: list[Glyph], rng: Random,
             config: SyntheticConfig) -> tuple[Image.Image, list[SyntheticBlock], list[Glyph]]:
    """A slight rotation (boxes and glyphs follow), paper tone and contrast, blur, sensor noise, JPEG."""
    if config.max_rotation > 0 and rng.random() < 0.7:
        angle = rng.uniform(-config.max_rotation, config.max_rotation)
        # bilinear: half the cost of bicubic, and the softening is part of the scan look anyway
        image = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=WHITE)
        turn = _rotation(angle, image.size)
        blocks = [SyntheticBlock(b.label, _rotate_box(b.box, turn, image.size), b.content) for b in blocks]
        glyphs = [(ch, *turn(x, y)) for ch, x, y in glyphs]
    image = _tone(image, rng)
    if rng.random() < 0.5:
        image = _blur(image, centre=rng.uniform(5.0, 14.0))
    if rng.random() < 0.5:
        image = _noise(image, np.random.default_rng(rng.getrandbits(64)), sigma=rng.uniform(2.0, 8.0))
    if rng.random() < 0.6:
        image = _jpeg(image, quality=rng.randint(40, 92))
    return image, blocks, glyphs


def _rotate_box(box: Box, turn: Callable[[float, float], tuple[float, float]], size: tuple[int, int]) -> Box:
    """Where the rotation `turn` (see _rotation) takes the box: the bounding box of its rotated corners,
    clipped to the page."""
    width, height = size
    x1, y1, x2, y2 = box
    xs, ys = zip(*(turn(x, y) for x, y in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))))
    return (max(0, math.floor(min(xs))), max(0, math.floor(min(ys))),
            min(width, math.ceil(max(xs))), min(height, math.ceil(max(ys))))


def _rotation(degrees: float, size: tuple[int, int]) -> Callable[[float, float], tuple[float, float]]:
    """Where `Image.rotate(degrees)` (counter-clockwise about the centre) takes a point; the trigonometry once
    for a page's thousands of glyphs."""
    cx, cy = size[0] / 2, size[1] / 2
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return lambda x, y: (cx + (x - cx) * cos + (y - cy) * sin, cy - (x - cx) * sin + (y - cy) * cos)


def _tone(image: Image.Image, rng: Random) -> Image.Image:
    """Lower contrast about paper white, then a slightly darker, warmer paper: a lookup table per channel."""
    contrast = rng.uniform(0.8, 1.0)
    shift = rng.uniform(-25.0, 3.0)
    warmth = (0.0, rng.uniform(-5.0, 0.0), rng.uniform(-15.0, 0.0))
    table = [min(255, max(0, round((v - 255) * contrast + 255 + shift + w)))
             for w in warmth for v in range(256)]
    return image.point(table)


def _blur(image: Image.Image, centre: float) -> Image.Image:
    """A 3x3 binomial-like blur, lighter as the centre weight grows (4: about a Gaussian of sigma 0.85).
    A third of the cost of `GaussianBlur`, which runs three box-blur passes even for small radii."""
    return image.filter(ImageFilter.Kernel((3, 3), [1, 2, 1, 2, centre, 2, 1, 2, 1]))


def _noise(image: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    """Grey noise of standard deviation `sigma`, the same on the three channels (of an RGB image). Triangular
    (the sum of two uniform bytes) rather than Gaussian: it looks the same on a page and costs half as much."""
    width, height = image.size
    pair = rng.integers(0, 256, size=(2, height, width), dtype=np.uint8)
    noise = pair[0].astype(np.float32) + pair[1] - 255  # -255..255, standard deviation 255 / sqrt(6)
    scaled = noise * (sigma * math.sqrt(6) / 255) + 128  # |noise| < 2.5 sigma: no clipping needed
    grey = Image.fromarray(scaled.astype(np.uint8))
    return ImageChops.add(image, grey if image.mode == "L" else Image.merge("RGB", (grey,) * 3), offset=-128)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert(image.mode)
