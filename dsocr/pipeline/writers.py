"""Writers: Markdown, JSON, HTML, figure crops and box overlays of converted documents.

Must not run the model. Every file goes to a temporary name in its directory and is renamed into place,
so a crash never leaves a half-written file; output is deterministic (fixed colours, sorted keys where
order is free).
"""

from __future__ import annotations

import html
import io
import os
import re
import tempfile
import zlib
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import nh3
from markdown_it import MarkdownIt
from PIL import Image, ImageDraw, ImageFont

from dsocr.output.markdown import tidy_markdown
from dsocr.pipeline.document import OK, Block, Document, Page

FORMATS = ("md", "json", "html", "pdf")
DEFAULT_PAGE_SEPARATOR = "\n\n<--- Page Split --->\n\n"  # the reference's separator for PDFs
MATH_STYLES = ("brackets", "dollars")
FIGURE_QUALITY = 92
OVERLAY_QUALITY = 80

# Fixed colours per label, so two runs draw the same picture; other labels get one by CRC32 of their name.
LABEL_COLOURS = {
    "title": (214, 39, 40), "sub_title": (255, 127, 14), "text": (31, 119, 180), "table": (44, 160, 44),
    "image": (148, 103, 189), "image_caption": (140, 86, 75), "table_caption": (23, 190, 207),
    "equation": (227, 119, 194), "footnote": (127, 127, 127), "header": (188, 189, 34), "footer": (188, 189, 34),
}
_PALETTE = tuple(LABEL_COLOURS.values())

_INLINE_MATH = re.compile(r"\\\((.+?)\\\)", re.DOTALL)
_DISPLAY_MATH = re.compile(r"\\\[(.+?)\\\]", re.DOTALL)
_TABLE_TAGS = {"table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption", "colgroup", "col", "br",
               "b", "i", "sub", "sup"}
_TABLE_ATTRS = {"td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}, "col": {"span"},
                "colgroup": {"span"}}


# --- files ----------------------------------------------------------------------------------------


def atomic_write(path: Path, data: bytes | str | Callable[[Path], object]) -> None:
    """Write `data` (bytes, text, or a function that writes the file it is given) to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode("utf-8"))
            elif isinstance(data, (bytes, bytearray)):
                f.write(data)
        if callable(data):
            data(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def image_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def figure_path(page: Page, n: int) -> str:
    """Where figure n (0-based, reading order) of a page is saved, relative to the document's folder."""
    return f"images/page-{page.number:04d}-{n + 1}.jpg"


def overlay_path(page: Page) -> str:
    return f"pages/page-{page.number:04d}.jpg"


# --- per-page images ------------------------------------------------------------------------------


def save_figures(page: Page, image: Image.Image, doc_dir: Path) -> None:
    """Crop each figure box of the page from its image (paths already in `block.figures`)."""
    for block in page.blocks:
        for box, rel in zip(block.boxes, block.figures):
            x1, y1, x2, y2 = box
            if x2 <= x1 or y2 <= y1:
                continue
            atomic_write(doc_dir / rel, image_bytes(image.crop(box), FIGURE_QUALITY))


def label_colour(label: str) -> tuple[int, int, int]:
    return LABEL_COLOURS.get(label) or _PALETTE[zlib.crc32(label.encode("utf-8")) % len(_PALETTE)]


def draw_overlay(page: Page, image: Image.Image) -> Image.Image:
    """The page with each block's boxes outlined and labelled "index label" (no fill: filling whole
    blocks costs more than the rest of the page's writing)."""
    canvas = image.convert("RGB") if image.mode != "RGB" else image.copy()
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = max(2, round(max(canvas.size) / 600))
    for block in page.blocks:
        colour = label_colour(block.label)
        for box in block.boxes:
            draw.rectangle(box, outline=colour, width=width)
            caption = f"{block.index} {block.label}"
            x, y = box[0], max(0, box[1] - 12)
            draw.rectangle(draw.textbbox((x, y), caption, font=font), fill=colour)
            draw.text((x, y), caption, fill=(255, 255, 255), font=font)
    return canvas


def save_overlay(page: Page, image: Image.Image, doc_dir: Path) -> None:
    atomic_write(doc_dir / overlay_path(page), image_bytes(draw_overlay(page, image), OVERLAY_QUALITY))


# --- Markdown -------------------------------------------------------------------------------------


def page_markdown(page: Page) -> str:
    """A page's Markdown; a page that is not "ok" starts with a visible status line."""
    parts = []
    if page.status != OK:
        parts.append(f"> **dsocr: page {page.number} {page.status}**: {page.reason}")
    if page.markdown:
        parts.append(page.markdown)
    return "\n\n".join(parts)


def document_markdown(doc: Document, *, page_separator: str = DEFAULT_PAGE_SEPARATOR,
                      math: str = "brackets") -> str:
    """All pages in page order; `page_separator` may contain `{page}` (the number of the page it precedes)."""
    out = []
    for i, page in enumerate(doc.pages):
        if i:
            out.append(page_separator.replace("{page}", str(page.number)))
        out.append(page_markdown(page))
    text = "".join(out)
    if math == "dollars":
        text = to_dollar_math(text)
    return text.strip() + "\n"


def to_dollar_math(text: str) -> str:
    """`\\(..\\)` -> `$..$` and `\\[..\\]` -> `$$..$$`."""
    text = _DISPLAY_MATH.sub(lambda m: f"$${m.group(1)}$$", text)
    return _INLINE_MATH.sub(lambda m: f"${m.group(1).strip()}$", text)


def page_markdown_from_blocks(blocks: list[Block]) -> str:
    """Blocks -> Markdown: content in reading order, each figure linked where its block stands."""
    parts = []
    for block in blocks:
        parts.extend(f"![]({rel})" for rel in block.figures)
        if block.content:
            parts.append(block.content)
    return tidy_markdown("\n\n".join(parts))


# --- plain text (the searchable PDF's text layer) -------------------------------------------------

_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|`)")
_MATH_DELIMITERS = re.compile(r"\\[()\[\]]|\$\$?")
# the official model's centred captions: a whole block in one <center> ... </center>
_CENTER = re.compile(r"\s*<center>((?:(?!</?center>).)*)</center>\s*", re.DOTALL)
_CENTER_TAGS = re.compile(r"</?center>")


def plain_text(block: Block) -> str:
    """What a block says, without markup: table cells separated by spaces and rows by line breaks,
    Markdown syntax and math delimiters removed (the LaTeX itself is kept)."""
    if block.format == "html":
        return _html_text(block.content)
    text = _MATH_DELIMITERS.sub("", _CENTER_TAGS.sub("", block.content))
    if block.format == "markdown":
        text = _MD_EMPHASIS.sub("", _MD_HEADING.sub("", _MD_LINK.sub(r"\1", _MD_IMAGE.sub("", text))))
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


class _TextOfHtml(HTMLParser):
    BREAKS = frozenset({"tr", "br", "p", "div", "li", "caption"})
    CELLS = frozenset({"td", "th"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.CELLS:
            self.parts.append(" ")
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_text(markup: str) -> str:
    parser = _TextOfHtml()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


# --- HTML -----------------------------------------------------------------------------------------

_STYLE = """body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;line-height:1.5}
section.page{border-top:1px solid #ccc;padding-top:1rem;margin-top:2rem}
.page-number{color:#888;font-size:.8rem}
.status{background:#fff3cd;border-left:4px solid #e0a800;padding:.5rem 1rem}
table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2rem .4rem}
figure img{max-width:100%}.math.display{display:block;text-align:center;margin:1rem 0}
.center{text-align:center}"""


def document_html(doc: Document) -> str:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    sections = []
    for page in doc.pages:
        body = [f'<p class="page-number">Page {page.number}</p>']
        if page.status != OK:
            body.append(f'<p class="status"><strong>dsocr: page {page.number} {page.status}</strong>: '
                        f"{html.escape(page.reason)}</p>")
        body.extend(_block_html(block, md) for block in page.blocks)
        sections.append(f'<section class="page" id="page-{page.number}">\n' + "\n".join(body) + "\n</section>")
    title = html.escape(doc.name)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{title}</title>\n<style>\n{_STYLE}\n</style>\n</head>\n<body>\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")


def _block_html(block: Block, md: MarkdownIt) -> str:
    attrs = f'class="block {html.escape(block.label)}" data-index="{block.index}"'
    figures = "".join(f'<figure><img src="{html.escape(rel)}" alt=""></figure>' for rel in block.figures)
    if block.format == "html":
        content = nh3.clean(block.content, tags=_TABLE_TAGS, attributes=_TABLE_ATTRS)
    elif block.format == "latex":
        content = f'<span class="math display">{html.escape(block.content)}</span>'
    elif centred := _CENTER.fullmatch(block.content):  # Markdown's renderer would escape the tags
        content = f'<div class="center">{_markdown_html(centred.group(1), md)}</div>'
    else:
        content = _markdown_html(block.content, md)
    return f"<div {attrs}>{figures}{content}</div>"


def _markdown_html(text: str, md: MarkdownIt) -> str:
    """Markdown -> HTML with math kept verbatim: math is swapped for placeholders around the renderer
    (which would otherwise eat the backslashes of `\\(` and `\\[`)."""
    spans: list[str] = []

    def keep(kind: str) -> Callable[[re.Match[str]], str]:
        def sub(m: re.Match[str]) -> str:
            spans.append(f'<span class="math {kind}">{html.escape(m.group(0))}</span>')
            return f"\ue000{len(spans) - 1}\ue001"
        return sub

    text = _DISPLAY_MATH.sub(keep("display"), text)
    text = _INLINE_MATH.sub(keep("inline"), text)
    rendered = md.render(text)
    return re.sub("\ue000([0-9]+)\ue001", lambda m: spans[int(m.group(1))], rendered)
