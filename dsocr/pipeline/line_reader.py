"""Pages read by a model that reads lines (`reading: "lines"`): the page's text lines cut into line views, and
the views' answers assembled back into the page's answer, in the official grounding format or as plain text.

Must not load a model, tokenize or generate: `dsocr.api.OCR` runs the views. The layout comes from
`dsocr.pipeline.layout`, the views' geometry (normalize, split, pack) from `dsocr.processing.lines`.

A page becomes (straightened first if it is turned, as scans are: `deskew`): its regions in reading order,
their text in streams (`page_streams`: a paragraph's lines, or a table cell's, are one stream, read as one run
of text), each stream's lines joined end to end and cut at word gaps into segments that fit a row, the segments
packed one per row into views. Each view's answer is its rows' texts, one per line; a stream's text is its
segments' texts joined by a space.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from PIL import Image

from dsocr.errors import ConfigError
from dsocr.generation.params import SamplingParams
from dsocr.output.grounding import grounded_block, to_grid
from dsocr.pipeline import deskew
from dsocr.pipeline.document import union
from dsocr.processing import lines
from dsocr.processing.prompts import resolve_prompt

if TYPE_CHECKING:  # the layout analysis is imported when a page is analyzed, not with dsocr.api
    from dsocr.pipeline.layout import Box, Line, Region

GROUNDING, PLAIN = "grounding", "plain"  # the two answers a lines model can give
TOKENS_PER_ROW = 40  # generation limit of a view: a row of print is well under 40 tokens
TOKENS_SLACK = 8
FINISH_ORDER = ("stop", "length", "repetition")  # best to worst: a page is as unfinished as its worst view
_CAPTION = re.compile(r"(Figure|Table)\s+\d")
_BOLD_CAPTION = re.compile(r"(Figure|Table)\s+\d+[.:]")  # set like a heading: "Figure 1: ..." in bold
_CAPTION_LABELS = {"Figure": "image_caption", "Table": "table_caption"}
_HEADINGS = {"title": "#", "sub_title": "##"}  # Markdown before a heading's text
PIECE = 3  # characters (spaces aside) of a block inside an equation's box that is a piece of the formula
CENTRED = 0.04  # a caption this far (in its figure's or table's widths) from their middle is centred on them
ASCENT, DESCENT = 1.35, 0.45  # a line's type above and below its baseline, in heights of its capitals
_BULLET = re.compile(r"(?:^|\s)[\u2022\u25aa\u25e6\u2023]\s")  # •, ▪, ◦, ‣: a list item starts
_DASH_ITEM = re.compile(r"[-\u2013*] ")  # a list written with dashes ("- one"), as plain-text lists often are
_NEXT_DASH_ITEM = re.compile(r" [-\u2013*] (?=[A-Z0-9\"'(])")  # " - Two": the next item starts
_SECTION_NUMBER = re.compile(r"\d{1,2}(?:\.\d{1,2})+\.?\s|\d{1,2}\.\s")  # "4. ", "2.3 ", not "2024 "
_EQUATION = re.compile(r"\\\[ .* \\\]", re.DOTALL)  # \[ latex \]
_EQUATION_END = "\\]"
_EQUATION_NUMBER = re.compile(r"(?:#{1,2} )?\((\d{1,3}[a-z]?)\)")  # "(12)", "(3a)"; as a heading too: "## (12)"
_MARKUP = re.compile(r"<\|/?(?:ref|det)\|>")  # grounding tags in a row's text would forge blocks


@dataclass(frozen=True, slots=True)
class Segment:
    stream: int  # its stream's index in `page_streams` order
    view: int
    row: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LinePage:
    """A page cut into line views, with what maps each view's rows back to the page's lines and regions."""

    regions: tuple[Region, ...]  # reading order
    views: tuple[Image.Image, ...]  # size x size RGB
    segments: tuple[Segment, ...]  # reading order: segment i is row i % rows of view i // rows
    num_streams: int
    image_size: tuple[int, int]  # (width, height) of the page
    paper: tuple[int, int, int] = lines.WHITE  # the views' background: the page's paper
    # The regions' boxes at their ink, as the layout found them (`regions` are boxed as typeset: `typeset_box`):
    # a block read as an equation is boxed at its ink, as the official model boxes one. Empty: as `regions`.
    ink_boxes: tuple[Box, ...] = ()

    def rows(self, view: int) -> int:
        """How many rows of `view` hold a segment (the last view may be partly blank)."""
        return sum(1 for s in self.segments if s.view == view)


def answer_format(prompt: str | None, *, locate_text: str | None = None) -> str:
    """GROUNDING for the markdown prompt, PLAIN for free and ocr; a lines model answers nothing else."""
    text = resolve_prompt(prompt, locate_text=locate_text)
    if text == resolve_prompt("markdown"):
        return GROUNDING
    if text in (resolve_prompt("free"), resolve_prompt("ocr")):
        return PLAIN
    raise ConfigError(f"prompt {prompt!r}: this model reads the text lines of documents only; use the "
                      "'markdown' prompt (Markdown with layout boxes) or 'free' (plain text)")


def view_sampling(sampling: SamplingParams, size: int) -> SamplingParams:
    """The caller's sampling with a token limit no larger than a full view's rows can need. One limit for all
    views (not one per view's rows), so that the reference loop can run them as one batch."""
    limit = TOKENS_PER_ROW * lines.rows_per_view(size) + TOKENS_SLACK
    return replace(sampling, max_new_tokens=min(sampling.max_new_tokens, limit))


# --- page -> views -------------------------------------------------------------------------------------


def line_views(image: Image.Image, size: int) -> LinePage:
    """Straighten the page if it is turned (a scan), analyze its layout and pack its text lines into views of
    `size` pixels. The regions' boxes are on the page as given."""
    from dsocr.pipeline.layout import analyze

    angle = deskew.skew_angle(image)
    straight = deskew.straighten(image, angle, lines.paper_colour(image)) if angle else image
    found = analyze(straight)
    page = pack_page(straight, [typeset_box(straight, r) for r in found], size)
    page = replace(page, ink_boxes=tuple(r.box for r in found))
    if not angle:
        return page
    def on_page(box: Box) -> Box:
        return deskew.box_on_page(box, angle, image.size, straight.size)
    return replace(page, regions=tuple(replace(r, box=on_page(r.box)) for r in page.regions),
                   ink_boxes=tuple(map(on_page, page.ink_boxes)), image_size=image.size)


def typeset_box(image: Image.Image, region: Region) -> Region:
    """A text region with the box its type fills, as typeset blocks are boxed (the synthetic pages' targets
    too): from its first line's ascent to its last line's descent, not the ink's tight box (a line without
    descenders would be boxed short, a small one by half). See `_type_extent`."""
    if region.label in ("table", "image") or not region.lines:
        return region
    first, last = (_type_extent(image, line.box) for line in (region.lines[0], region.lines[-1]))
    x1, y1, x2, y2 = region.box
    return replace(region, box=(x1, min(y1, round(first[0])), x2, max(y2, round(last[1]))))


def _type_extent(image: Image.Image, box: Box) -> tuple[float, float]:
    """(top, bottom) of a line's type on the page. Its baseline is `lines.line_scaling`'s; the ink above it (the
    height of capitals and ascenders, which nearly every line has) sets the size: the type reaches ASCENT of
    that above the baseline and DESCENT below (between common faces' em boxes: DejaVu 1.27 and 0.33, STIX 1.56
    and 0.68)."""
    scaling = lines.line_scaling(image.crop(box))
    baseline = box[1] + (lines.BASELINE - scaling.top) / scaling.scale
    body = max(baseline - box[1], 1.0)
    return max(0.0, baseline - ASCENT * body), min(float(image.height), baseline + DESCENT * body)


def pack_page(image: Image.Image, regions: Sequence[Region], size: int) -> LinePage:
    """The text of `regions`, cut from `image` stream by stream, packed into views of `size` pixels."""
    streams = page_streams(regions)
    paper = lines.paper_colour(image)
    segments: list[Image.Image] = []
    owners: list[int] = []
    for i, stream in enumerate(streams):
        parts = cut_stream(image, stream, size, paper)
        segments += parts
        owners += [i] * len(parts)
    views, placements = lines.pack(segments, size, paper)
    return LinePage(regions=tuple(regions), views=tuple(views),
                    segments=tuple(Segment(o, p.view, p.row) for o, p in zip(owners, placements)),
                    num_streams=len(streams), image_size=image.size, paper=paper)


def region_streams(region: Region) -> list[tuple[Line, ...]]:
    """The streams read for a region: a table's non-empty cells, row by row (a table found without cells: each
    line); none for an image; else all its lines as one."""
    if region.label == "image":
        return []
    if region.cells:
        return [cell for row in region.cells for cell in row if cell]
    if region.label == "table":
        return [(line,) for line in region.lines]
    return [region.lines] if region.lines else []


def page_streams(regions: Sequence[Region]) -> list[tuple[Line, ...]]:
    return [stream for region in regions for stream in region_streams(region)]


def cut_stream(image: Image.Image, stream: Sequence[Line], size: int,
               paper: tuple[int, int, int] = lines.WHITE) -> list[Image.Image]:
    """A stream's segments: its lines' crops scaled to the rows' ink height, joined end to end, split at word
    gaps. Always at least one, so that every stream has a text (a crop too faint for `split_line`'s ink level is
    kept whole)."""
    strip = lines.join_lines([_normalized(image, line.box, paper) for line in stream], paper)
    return lines.split_line(strip, lines.segment_width(size)) or [strip]


def _normalized(image: Image.Image, box: Box, paper: tuple[int, int, int]) -> Image.Image:
    width, height = image.size
    x1, y1 = min(max(box[0], 0), width - 1), min(max(box[1], 0), height - 1)
    x2, y2 = max(min(box[2], width), x1 + 1), max(min(box[3], height), y1 + 1)  # at least one pixel
    return lines.normalize_line(lines.on_paper(image.crop((x1, y1, x2, y2)), paper))


# --- view answers -> page answer -----------------------------------------------------------------------


def split_rows(text: str, rows: int) -> tuple[list[str], int]:
    """A view's answer as its `rows` rows' texts, and how many answer lines were missing (those rows are
    empty). Extra lines are appended to the last row: text is never dropped."""
    answer = [_MARKUP.sub("", part).strip() for part in text.rstrip().split("\n")]
    if len(answer) > rows:
        answer[rows - 1:] = [" ".join(part for part in answer[rows - 1:] if part)]
    missing = rows - len(answer)
    return answer + [""] * missing, max(missing, 0)


def misread(text: str, rows: int) -> bool:
    """A view's answer with more or fewer lines than the view has rows: the model lost its place in the rows (a
    run of one-word rows, a table's cells, is where it does), so which line belongs to which row is unknown."""
    return len(text.rstrip().split("\n")) != rows


def rows_view(view: Image.Image, rows: Sequence[int], paper: tuple[int, int, int]) -> Image.Image:
    """A view holding `rows` of `view`, moved up to its first rows in order, the rest blank."""
    new = Image.new("RGB", view.size, paper)
    for i, row in enumerate(rows):
        new.paste(view.crop((0, row * lines.ROW, view.width, (row + 1) * lines.ROW)), (0, i * lines.ROW))
    return new


ViewReader = Callable[[Sequence[tuple[int, Image.Image]]], list[str]]  # (view index, image) -> answers


def reread(views: Sequence[Image.Image], rows: Sequence[int], texts: Sequence[str], read: ViewReader,
           paper: Sequence[tuple[int, int, int]]) -> list[str]:
    """The views' answers with each misread view (`misread`) read again as two views of half its rows each
    (on 32 held-out synthetic pages every misread view's halves are read right; where a half is misread too,
    its answer is taken as `split_rows` takes a view's). `read` gets (index of the view re-read, image) pairs,
    as one batch."""
    texts = list(texts)
    misread_views = [v for v, text in enumerate(texts) if rows[v] > 1 and misread(text, rows[v])]
    jobs = [(v, half) for v in misread_views for half in _halves(rows[v])]
    if not jobs:
        return texts
    answers = read([(v, rows_view(views[v], half, paper[v])) for v, half in jobs])
    for v in misread_views:
        texts[v] = "\n".join(row for (w, half), text in zip(jobs, answers) if w == v
                             for row in split_rows(text, len(half))[0])
    return texts


def _halves(rows: int) -> list[list[int]]:
    return [list(range((rows + 1) // 2)), list(range((rows + 1) // 2, rows))]


def stream_texts(page: LinePage, view_texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """Each stream's text (its segments' texts joined by a space), and a warning about views short of rows."""
    rows = [split_rows(text, page.rows(v)) for v, text in enumerate(view_texts)]
    parts: list[list[str]] = [[] for _ in range(page.num_streams)]
    for segment in page.segments:
        text = rows[segment.view][0][segment.row]
        if text:
            parts[segment.stream].append(text)
    short = [v + 1 for v, (_, missing) in enumerate(rows) if missing]
    warnings = []
    if short:
        warnings.append(f"{len(short)} of {len(rows)} line views answered fewer lines than they have rows "
                        f"(views {', '.join(map(str, short))}); their last rows are left empty")
    return [" ".join(p) for p in parts], warnings


def read_page(page: LinePage, view_texts: Sequence[str], answer: str) -> tuple[str, list[str]]:
    """The page's answer from its views' answers (in view order), and warnings."""
    texts, warnings = stream_texts(page, view_texts)
    if answer == GROUNDING:
        return grounding_text(page.regions, texts, page.image_size, page.ink_boxes), warnings
    return plain_text(page.regions, texts), warnings


def worst_finish(reasons: Sequence[str]) -> tuple[str, str | None]:
    """The page's finish reason ("stop" only when every view stopped) and a warning when some did not."""
    unfinished = [r for r in reasons if r != "stop"]
    if not unfinished:
        return "stop", None
    worst = max(unfinished, key=lambda r: FINISH_ORDER.index(r) if r in FINISH_ORDER else len(FINISH_ORDER))
    return worst, (f"output unfinished: {len(unfinished)} of {len(reasons)} line views ended without "
                   f"end-of-sentence ({', '.join(sorted(set(unfinished)))})")


# --- assembly ------------------------------------------------------------------------------------------


def grounding_text(regions: Sequence[Region], texts: Sequence[str], size: tuple[int, int],
                   ink_boxes: Sequence[Box] = ()) -> str:
    """The official grounding answer: one block per region in reading order, blank lines between blocks; an
    equation boxed at its ink (`ink_boxes`, the regions' in order, where given), not as type."""
    read = iter(texts)
    blocks = [(region, *region_content(region, read)) for region in regions]
    if ink_boxes:
        blocks = [(replace(region, box=ink) if label == "equation" else region, label, content)
                  for (region, label, content), ink in zip(blocks, ink_boxes, strict=True)]
    blocks = _join_numbers(_absorb_pieces(blocks))
    placed = [region for region, _, _ in blocks]
    answer = []
    for i, (region, label, content) in enumerate(blocks):
        if label in _CAPTION_LABELS.values() and _centred(placed, i):
            content = f"<center>{content}</center>"  # as the official model writes a centred caption
        answer.append(grounded_block(label, to_grid(region.box, size), content))
    return "\n\n".join(answer)


def _absorb_pieces(blocks: list[tuple[Region, str, str]]) -> list[tuple[Region, str, str]]:
    """(region, label, content) blocks with the pieces of an equation the layout cut off it (a fraction's bar read
    "- -", a lone denominator "w", a radical's bar taken for a figure) joined to it: a figure without text or a
    block of at most PIECE characters lying in the equation's box. Their text is dropped: a formula's piece
    is no text of its own."""
    equations = [i for i, (_, label, _) in enumerate(blocks) if label == "equation"]
    owner: dict[int, int] = {}  # piece -> its equation
    for j, (region, label, content) in enumerate(blocks):
        short = label == "image" or (label in ("text", "title", "sub_title")
                                     and len(content.lstrip("#").replace(" ", "")) <= PIECE)
        if short and (inside := [i for i in equations if _within(region.box, blocks[i][0].box)]):
            owner[j] = inside[0]
    return _fold(blocks, owner)


def _join_numbers(blocks: list[tuple[Region, str, str]]) -> list[tuple[Region, str, str]]:
    """(region, label, content) blocks with each equation's number, "(N)" at the right of it on its line (the layout
    finds it as a region of its own: a column's width apart), joined to it as the official model writes one,
    `\\[ latex \\quad (N) \\]`, boxed around both."""
    numbers = {j: match.group(1) for j, (_, label, content) in enumerate(blocks)  # block -> "12"
               if label not in ("equation", "table", "image") and (match := _EQUATION_NUMBER.fullmatch(content))}
    owner: dict[int, int] = {}  # number block -> its equation
    for i, (region, label, _) in enumerate(blocks):
        if label == "equation" and (beside := [j for j in numbers
                                               if j not in owner and _numbers(region.box, blocks[j][0].box)]):
            owner[min(beside, key=lambda j: blocks[j][0].box[0])] = i  # the nearest
    tags = {i: numbers[j] for j, i in owner.items()}
    numbered = [(region, label, f"{content.removesuffix(_EQUATION_END).rstrip()} \\quad ({tags[i]}) \\]")
                if i in tags else (region, label, content) for i, (region, label, content) in enumerate(blocks)]
    return _fold(numbered, owner)


def _fold(blocks: list[tuple[Region, str, str]], owner: dict[int, int]) -> list[tuple[Region, str, str]]:
    """`blocks` without those `owner` maps to another block (block -> its owner), each one's box joined to its
    owner's."""
    folded = []
    for i, (region, label, content) in enumerate(blocks):
        if i in owner:
            continue
        box = union([region.box, *(blocks[j][0].box for j, o in owner.items() if o == i)])
        folded.append((replace(region, box=box), label, content))
    return folded


def _within(piece: Box, equation: Box) -> bool:
    """`piece`'s middle inside `equation`'s box and its height within the equation's."""
    x, y = (piece[0] + piece[2]) / 2, (piece[1] + piece[3]) / 2
    return (equation[0] <= x <= equation[2] and equation[1] <= y <= equation[3]
            and piece[3] - piece[1] <= equation[3] - equation[1])


def _numbers(equation: Box, number: Box) -> bool:
    """A box at the right of an equation's, its middle within the equation's height: the equation's number."""
    middle = (number[1] + number[3]) / 2
    return number[0] >= (equation[0] + equation[2]) / 2 and equation[1] <= middle <= equation[3]


def _centred(regions: Sequence[Region], i: int) -> bool:
    """Caption `regions[i]` centred on the figure or table next to it in reading order (within CENTRED of its
    width)."""
    caption = regions[i]
    middle = (caption.box[0] + caption.box[2]) / 2
    return any(n.label in ("image", "table")
               and abs(middle - (n.box[0] + n.box[2]) / 2) <= CENTRED * (n.box[2] - n.box[0])
               for n in (*regions[max(0, i - 1):i], *regions[i + 1:i + 2]))


def plain_text(regions: Sequence[Region], texts: Sequence[str]) -> str:
    """The regions' texts without tags, blank lines between regions; a table is one line per row; an equation's
    number joined to it as in the grounding answer."""
    read = iter(texts)
    blocks = []
    for region in regions:
        if region.label == "table":
            text = "\n".join(" ".join(c for c in row if c) for row in table_rows(region, read))
        else:
            text = _text(region, read)
        blocks.append((region, "equation" if _EQUATION.fullmatch(text) else region.label, text))
    return "\n\n".join(text for _, _, text in _join_numbers(_absorb_pieces(blocks)) if text.strip())


def region_content(region: Region, read: Iterator[str]) -> tuple[str, str]:
    """(label, content) of a region's block; consumes the texts of its streams from `read`."""
    if region.label == "table":
        rows = table_rows(region, read)
        cells = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
        return "table", f"<table>{cells}</table>"
    text = _text(region, read)
    if _EQUATION.fullmatch(text):  # the model reads a display formula as LaTeX, as the official one does
        return "equation", text
    caption = {"text": _CAPTION, "sub_title": _BOLD_CAPTION}.get(region.label)
    if caption and (match := caption.match(text)):
        return _CAPTION_LABELS[match.group(1)], text
    label = region.label
    if label == "title" and _SECTION_NUMBER.match(text):  # "4. Results": a section, not the document's title
        label = "sub_title"
    if label in _HEADINGS:
        return label, f"{_HEADINGS[label]} {text}" if text else ""
    return label, text  # text, header, footer; image: no lines, empty


def table_rows(region: Region, read: Iterator[str]) -> list[list[str]]:
    """A table's cell texts, row by row (an empty cell: ""); a table found without cells has one cell per
    line."""
    if not region.cells:
        return [[next(read)] for _ in region.lines]
    return [[next(read) if cell else "" for cell in row] for row in region.cells]


def _text(region: Region, read: Iterator[str]) -> str:
    # A paragraph's lines are one stream, joined end to end with a word space: "exam-" + "ple" reads
    # "exam- ple". Simple and lossless; telling a broken word from a real hyphen needs a dictionary.
    text = " ".join(t for t in (next(read) for _ in region_streams(region)) if t)
    if region.label != "text":
        return text
    if _BULLET.match(text):
        return _bulleted(text)
    if _DASH_ITEM.match(text):
        return _dashed(text)
    return _numbered(text) if text.startswith("1. ") else text


def _bulleted(text: str) -> str:
    """A bulleted list, read as one run of text ("• one • two"), as Markdown items one a line ("- one\n- two")."""
    return _items(_BULLET.split(text))


def _dashed(text: str) -> str:
    """A list written with dashes, read as one run of text ("- one. - Two."), one item a line; a dash within an
    item ("a - b") stays: a new item starts with a capital, a digit or a quote."""
    return _items(_NEXT_DASH_ITEM.split(text[2:]))


def _items(pieces: list[str]) -> str:
    return "\n".join(f"- {item.strip()}" for item in pieces if item.strip())


def _numbered(text: str) -> str:
    """A numbered list read as one run of text ("1. one 2. two") as one item a line, cut where the next number
    in turn ("2. ", then "3. ", ...) follows a space."""
    items, rest, number = [], text, 2
    while (cut := rest.find(f" {number}. ")) > 0:
        items.append(rest[:cut])
        rest, number = rest[cut + 1:], number + 1
    return "\n".join([*items, rest])
