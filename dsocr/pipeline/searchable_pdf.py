"""Searchable PDF: the original pages (or images as full pages) with an invisible text layer from OCR boxes.

Each `PdfPageInput` is one output page: a page imported unchanged from a source PDF (content, fonts, /Rotate
and boxes kept) or an image drawn over a new page of `pixels * 72 / dpi` points. Every block's text is split
into lines that share the box height equally; each line is set in text render mode 3 (invisible) and
stretched to the box width, in the orientation the page is *displayed* in, so viewers can search, select and
copy it. Boxes are pixels of the page as pdfium renders it (/Rotate honoured, crop box); `FPDF_DeviceToPage`
maps them to PDF user space, which covers /Rotate and a crop box that does not start at the origin.

Fonts. Lines that Helvetica (WinAnsiEncoding) can encode use Helvetica, so character boxes follow real glyph
widths. pdfium silently encodes any other character as byte 0xFF, which extracts as "ÿ"; lines with such
characters (Greek, Cyrillic, CJK, NBSP, soft hyphen, ...) use instead a tiny embedded TrueType font (every
glyph the same 1 em box, never drawn) whose ToUnicode CMap maps each 16-bit code to the same code point, so
every BMP character stays searchable. Characters outside the BMP (emoji, CJK extension B, ...) cannot be
encoded that way and become U+FFFD; control characters are dropped; text is NFC-normalised first.

Memory: pages are consumed one at a time and each image is released once drawn, but pdfium keeps the whole
output document until it is saved: imported pages as their (compressed) source streams, images as their
Flate-compressed (lossless) streams, so about the size of the output file.

Must not render pages, run OCR or know about the document model. Holds `PDFIUM_LOCK` (re-entrant) because
pdfium is not thread-safe.
"""

from __future__ import annotations

import ctypes
import io
import math
import os
import struct
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from dsocr.pipeline.sources import PDFIUM_LOCK

FONT_FILL = 0.8  # font size as a share of the line height; the glyphs' ascent..descent span is centred in it
MAX_OPEN_SOURCES = 4  # source PDFs kept open at once (pages usually come in order from one document)
REPLACEMENT = "\ufffd"

Affine = tuple[float, float, float, float, float, float]  # PDF order a b c d e f: x' = ax+cy+e, y' = bx+dy+f


@dataclass(frozen=True, slots=True)
class TextBlock:
    text: str  # may contain several lines ("\n"); empty -> skipped
    box: tuple[float, float, float, float]  # x1, y1, x2, y2: pixels of the rendered page, origin top-left


@dataclass(frozen=True, slots=True, kw_only=True)
class PdfPageInput:
    blocks: Sequence[TextBlock]
    pixel_size: tuple[int, int]  # (width, height) of the rendered page image the boxes refer to
    source_pdf: str | os.PathLike | None = None  # the page comes from this PDF ...
    password: str | None = None
    page_index: int | None = None  # ... 0-based page index in it
    image: Callable[[], Image.Image] | None = None  # ... or the page is this image (called lazily, once)
    dpi: float = 144.0  # image pages: page size in points = pixels * 72 / dpi

    def __post_init__(self) -> None:
        if (self.source_pdf is None) == (self.image is None):
            raise ValueError("PdfPageInput: exactly one of source_pdf and image must be set")
        if self.source_pdf is not None and (self.page_index is None or self.page_index < 0):
            raise ValueError(f"PdfPageInput: source_pdf needs a page_index >= 0, got {self.page_index}")
        if len(self.pixel_size) != 2 or not all(int(v) == v and v > 0 for v in self.pixel_size):
            raise ValueError(f"PdfPageInput: pixel_size must be two positive integers, got {self.pixel_size}")
        if not (math.isfinite(self.dpi) and self.dpi > 0):
            raise ValueError(f"PdfPageInput: dpi must be positive, got {self.dpi}")


def write_searchable_pdf(path: str | os.PathLike, pages: Iterable[PdfPageInput]) -> int:
    """Write the PDF to `path` (the caller writes to a temp name and renames); returns the page count.
    Pages are consumed one at a time (an iterator of 2,000 pages must not hold all images in memory)."""
    with PDFIUM_LOCK:
        out = pdfium.PdfDocument.new()
        fonts, sources = _Fonts(out), _Sources()
        try:
            for page in pages:
                _add_page(out, page, fonts, sources)
            if len(out) == 0:
                raise ValueError("write_searchable_pdf: no pages")  # pdfium would write a PDF nothing opens
            out.save(os.fspath(path))
            return len(out)
        finally:
            fonts.close()  # before the document, which owns what the font handles point to
            sources.close()
            out.close()


# --- pages ---

def _add_page(out: pdfium.PdfDocument, item: PdfPageInput, fonts: _Fonts, sources: _Sources) -> None:
    if item.source_pdf is not None:
        page = _import_page(out, sources.get(item.source_pdf, item.password), item.page_index)
    else:
        page = _image_page(out, item)
    try:
        to_page = _device_to_page(page, item.pixel_size)
        for block in item.blocks:
            _add_block(page, block, item.pixel_size, to_page, fonts)
        if not pdfium_c.FPDFPage_GenerateContent(page):
            raise pdfium.PdfiumError("cannot generate the page content")
    finally:
        page.close()


def _import_page(out: pdfium.PdfDocument, source: pdfium.PdfDocument, index: int) -> pdfium.PdfPage:
    if not 0 <= index < len(source):
        raise ValueError(f"page_index {index} out of range: the source PDF has {len(source)} pages")
    out.import_pages(source, [index])  # copies the page's objects: the source may be closed before saving
    return out[len(out) - 1]


def _image_page(out: pdfium.PdfDocument, item: PdfPageInput) -> pdfium.PdfPage:
    width_pt, height_pt = (v * 72 / item.dpi for v in item.pixel_size)
    page_pdf = pdfium.PdfDocument(_image_pdf(item.image(), width_pt, height_pt))  # the image is dropped here
    try:
        out.import_pages(page_pdf, [0])
    finally:
        page_pdf.close()
    return out[len(out) - 1]


def _image_pdf(image: Image.Image, width_pt: float, height_pt: float) -> bytes:
    """A one-page PDF of the image, saved. Why the detour: pdfium keeps a bitmap given to an image object
    uncompressed until the document is saved (about 5.5 MiB a page at 144 dpi, 11 GiB for 2,000 pages),
    whereas an imported page brings its image stream as saved, Flate-compressed, so lossless and small."""
    doc = pdfium.PdfDocument.new()
    try:
        page = doc.new_page(width_pt, height_pt)
        bitmap = pdfium.PdfBitmap.from_pil(image.convert("RGB"))
        try:
            obj = pdfium.PdfImage.new(doc)
            obj.set_bitmap(bitmap)
            obj.set_matrix(pdfium.PdfMatrix(width_pt, 0, 0, height_pt, 0, 0))  # the unit square -> the page
            page.insert_obj(obj)
            page.gen_content()
        finally:
            bitmap.close()
            page.close()
        data = io.BytesIO()
        doc.save(data)
        return data.getvalue()
    finally:
        doc.close()


class _Sources:
    """Source PDFs opened once per (path, password); beyond a few, the least recently used is closed."""

    def __init__(self) -> None:
        self._open: OrderedDict[tuple[str, str | None], pdfium.PdfDocument] = OrderedDict()

    def get(self, path: str | os.PathLike, password: str | None) -> pdfium.PdfDocument:
        key = (os.fspath(path), password)
        if key in self._open:
            self._open.move_to_end(key)
        else:
            self._open[key] = pdfium.PdfDocument(key[0], password=password)
            while len(self._open) > MAX_OPEN_SOURCES:
                self._open.popitem(last=False)[1].close()
        return self._open[key]

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()


# --- geometry ---

def _device_to_page(page: pdfium.PdfPage, pixel_size: tuple[int, int]) -> Affine:
    """The affine map from rendered pixels to user space, fixed by three corners (pdfium takes int pixels)."""
    width, height = pixel_size
    ox, oy = _d2p(page, pixel_size, 0, 0)
    xx, xy = _d2p(page, pixel_size, width, 0)
    yx, yy = _d2p(page, pixel_size, 0, height)
    return ((xx - ox) / width, (xy - oy) / width, (yx - ox) / height, (yy - oy) / height, ox, oy)


def _d2p(page: pdfium.PdfPage, pixel_size: tuple[int, int], x: int, y: int) -> tuple[float, float]:
    px, py = ctypes.c_double(), ctypes.c_double()
    # rotate=0: the image was rendered with no rotation beyond the page's own /Rotate, which pdfium applies.
    if not pdfium_c.FPDF_DeviceToPage(page, 0, 0, int(pixel_size[0]), int(pixel_size[1]), 0, x, y, px, py):
        raise pdfium.PdfiumError("FPDF_DeviceToPage failed")
    return px.value, py.value


def _compose(p: Affine, q: Affine) -> Affine:
    """p after q."""
    a, b, c, d, e, f = p
    qa, qb, qc, qd, qe, qf = q
    return (a * qa + c * qb, b * qa + d * qb, a * qc + c * qd, b * qc + d * qd,
            a * qe + c * qf + e, b * qe + d * qf + f)


def _clip_box(box: Sequence[float], pixel_size: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """The box inside the page, corners in order; None when nothing of it is left."""
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        return None
    width, height = pixel_size
    x1, x2 = sorted(min(max(v, 0.0), width) for v in (box[0], box[2]))
    y1, y2 = sorted(min(max(v, 0.0), height) for v in (box[1], box[3]))
    return (x1, y1, x2, y2) if x2 - x1 > 1e-3 and y2 - y1 > 1e-3 else None


# --- text ---

def _add_block(page: pdfium.PdfPage, block: TextBlock, pixel_size: tuple[int, int], to_page: Affine,
               fonts: _Fonts) -> None:
    box, lines = _clip_box(block.box, pixel_size), text_lines(block.text)
    if box is None or not lines:
        return
    x1, y1, x2, y2 = box
    line_height = (y2 - y1) / len(lines)
    for i, line in enumerate(lines):
        _add_line(page, line, (x1, y1 + i * line_height, x2, y1 + (i + 1) * line_height), to_page, fonts)


def _add_line(page: pdfium.PdfPage, text: str, band: tuple[float, float, float, float], to_page: Affine,
              fonts: _Fonts) -> None:
    """One invisible text object whose glyphs fill `band` (pixels), upright as displayed."""
    x1, y1, x2, y2 = band
    points_per_px = math.sqrt(abs(to_page[0] * to_page[3] - to_page[1] * to_page[2]))
    font = fonts.for_text(text)
    size = FONT_FILL * (y2 - y1) * points_per_px
    obj = pdfium_c.FPDFPageObj_CreateTextObj(fonts.doc, font, size)
    if not obj:
        raise pdfium.PdfiumError("cannot create a text object")
    try:
        _set_text(obj, text)
        left, right = _horizontal_bounds(obj)  # in text space (points), the matrix being identity
        if right - left <= 0:
            pdfium_c.FPDFPageObj_Destroy(obj)
            return
        ascent, descent = _font_metrics(font, size)
        # Text space (points, y up) -> pixels (y down): [left, right] stretched over the band, the
        # ascent..descent span centred in it; then pixels -> user space, which carries the page's rotation.
        stretch = (x2 - x1) * points_per_px / (right - left)
        baseline = (y1 + y2) / 2 + (ascent + descent) / 2 / points_per_px
        to_pixels = (stretch / points_per_px, 0.0, 0.0, -1 / points_per_px,
                     x1 - stretch * left / points_per_px, baseline)
        pdfium_c.FPDFPageObj_Transform(obj, *_compose(to_page, to_pixels))
        pdfium_c.FPDFTextObj_SetTextRenderMode(obj, pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE)
    except BaseException:
        pdfium_c.FPDFPageObj_Destroy(obj)
        raise
    pdfium_c.FPDFPage_InsertObject(page, obj)  # the page owns it from here


def text_lines(text: str) -> list[str]:
    """The non-blank lines of `text` as they go into the PDF: NFC, no control characters, BMP only."""
    lines = []
    for raw in unicodedata.normalize("NFC", text).splitlines():
        line = "".join(_clean_char(ch) for ch in raw.replace("\t", " ")).strip()
        if line:
            lines.append(line)
    return lines


def _clean_char(ch: str) -> str:
    if unicodedata.category(ch) == "Cc":
        return ""
    return ch if ord(ch) <= 0xFFFF else REPLACEMENT  # 16-bit codes only (see the module docstring)


def _set_text(obj: pdfium_c.FPDF_PAGEOBJECT, text: str) -> None:
    data = (text + "\0").encode("utf-16-le")
    buffer = (ctypes.c_ushort * (len(data) // 2)).from_buffer_copy(data)
    if not pdfium_c.FPDFText_SetText(obj, buffer):
        raise pdfium.PdfiumError("cannot set the text of a text object")


def _horizontal_bounds(obj: pdfium_c.FPDF_PAGEOBJECT) -> tuple[float, float]:
    left, bottom, right, top = (ctypes.c_float() for _ in range(4))
    if not pdfium_c.FPDFPageObj_GetBounds(obj, left, bottom, right, top):
        return 0.0, 0.0
    return left.value, right.value


def _font_metrics(font: pdfium_c.FPDF_FONT, size: float) -> tuple[float, float]:
    ascent, descent = ctypes.c_float(), ctypes.c_float()
    ok = pdfium_c.FPDFFont_GetAscent(font, size, ascent) and pdfium_c.FPDFFont_GetDescent(font, size, descent)
    if not ok:
        return 0.75 * size, -0.25 * size
    return ascent.value, descent.value


# --- fonts ---

def _helvetica_chars() -> frozenset[str]:
    """What pdfium's Helvetica encodes: WinAnsi, less DEL, NBSP and soft hyphen (they come out as 0xFF)."""
    chars = set()
    for code in range(0x20, 0x100):
        try:
            chars.add(bytes([code]).decode("cp1252"))
        except UnicodeDecodeError:
            continue
    return frozenset(chars - {"\x7f", "\xa0", "\xad"})


HELVETICA_CHARS = _helvetica_chars()


class _Fonts:
    """The output's two fonts, each loaded on first use; closed before the document."""

    def __init__(self, doc: pdfium.PdfDocument) -> None:
        self.doc = doc
        self._helvetica: pdfium_c.FPDF_FONT | None = None
        self._unicode: pdfium_c.FPDF_FONT | None = None
        self._keep: list[object] = []  # buffers handed to pdfium stay alive until the fonts are closed

    def for_text(self, text: str) -> pdfium_c.FPDF_FONT:
        if HELVETICA_CHARS.issuperset(text):
            if self._helvetica is None:
                self._helvetica = _checked_font(pdfium_c.FPDFText_LoadStandardFont(self.doc, b"Helvetica"))
            return self._helvetica
        if self._unicode is None:
            self._unicode = _load_unicode_font(self.doc, self._keep)
        return self._unicode

    def close(self) -> None:
        for font in (self._helvetica, self._unicode):
            if font is not None:
                pdfium_c.FPDFFont_Close(font)
        self._helvetica = self._unicode = None
        self._keep.clear()


def _checked_font(font: pdfium_c.FPDF_FONT) -> pdfium_c.FPDF_FONT:
    if not font:
        raise pdfium.PdfiumError("cannot load a font")
    return font


def _load_unicode_font(doc: pdfium.PdfDocument, keep: list[object]) -> pdfium_c.FPDF_FONT:
    """A Type0 font, Identity-H, whose 16-bit codes are their own Unicode values (ToUnicode) and whose every
    glyph is the same 1 em box: never drawn (render mode 3), it only has to exist and have a width."""
    font, gids = _box_truetype(), struct.pack(">H", 1) * 0x10000  # every CID -> glyph 1
    font_buf = (ctypes.c_uint8 * len(font)).from_buffer_copy(font)
    gids_buf = (ctypes.c_uint8 * len(gids)).from_buffer_copy(gids)
    keep += [font_buf, gids_buf]
    return _checked_font(pdfium_c.FPDFText_LoadCidType2Font(
        doc, font_buf, len(font), _identity_to_unicode().encode("ascii"), gids_buf, len(gids)))


def _identity_to_unicode() -> str:
    # One bfrange per high byte (a range must not cross one); the surrogate block maps to nothing.
    ranges = [f"<{hi:02X}00> <{hi:02X}FF> <{hi:02X}00>" for hi in range(256) if not 0xD8 <= hi <= 0xDF]
    body = []
    for i in range(0, len(ranges), 100):  # at most 100 entries per section
        chunk = ranges[i:i + 100]
        body += [f"{len(chunk)} beginbfrange", *chunk, "endbfrange"]
    return "\n".join([
        "/CIDInit /ProcSet findresource begin", "12 dict begin", "begincmap",
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def",
        "/CMapName /Adobe-Identity-UCS def", "/CMapType 2 def",
        "1 begincodespacerange", "<0000> <FFFF>", "endcodespacerange", *body,
        "endcmap", "CMapName currentdict /CMap defineresource pop", "end", "end", ""])


def _box_truetype() -> bytes:
    """A minimal valid TrueType font (about 500 bytes): glyph 0 empty, glyph 1 a box 1000 wide, -200..800."""
    units, ascent, descent, advance = 1000, 800, -200, 1000
    box = (struct.pack(">5h2H", 1, 0, descent, advance, ascent, 3, 0)  # 1 contour, bbox, ends at point 3
           + bytes([1, 1, 1, 1])  # 4 on-curve points
           + struct.pack(">4h", 0, 0, advance, 0)  # x deltas
           + struct.pack(">4h", descent, ascent - descent, 0, descent - ascent))  # y deltas
    tables = {
        b"cmap": struct.pack(">4HI7H5H", 0, 1, 3, 1, 12, 4, 24, 0, 2, 2, 0, 0, 0xFFFF, 0, 0xFFFF, 1, 0),
        b"glyf": box,
        b"head": struct.pack(">4I2H2q4h2H3h", 0x10000, 0x10000, 0, 0x5F0F3CF5, 0x000B, units, 0, 0,
                             0, descent, advance, ascent, 0, 8, 2, 0, 0),
        b"hhea": struct.pack(">I3hH11hH", 0x10000, ascent, descent, 0, advance, 0, 0, advance, 1, 0, 0,
                             0, 0, 0, 0, 0, 2),
        b"hmtx": struct.pack(">HhHh", advance, 0, advance, 0),
        b"loca": struct.pack(">3H", 0, 0, len(box) // 2),  # short offsets (halved)
        b"maxp": struct.pack(">IH13H", 0x10000, 2, 4, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0),
        b"name": _name_table("DsocrText"),
        b"post": struct.pack(">IIhhIIIII", 0x30000, 0, -100, 50, 0, 0, 0, 0, 0),
    }
    exponent = len(tables).bit_length() - 1
    header = struct.pack(">IHHHH", 0x10000, len(tables), 16 << exponent, exponent,
                         16 * len(tables) - (16 << exponent))
    directory, body, offset = b"", b"", 12 + 16 * len(tables)
    for tag in sorted(tables):
        data = tables[tag] + b"\0" * (-len(tables[tag]) % 4)
        directory += struct.pack(">4sIII", tag, _checksum(data), offset + len(body), len(tables[tag]))
        body += data
    return header + directory + body


def _name_table(family: str) -> bytes:
    raw = family.encode("utf-16-be")
    ids = (1, 4, 6)  # family, full name, PostScript name
    records = b"".join(struct.pack(">6H", 3, 1, 0x409, name_id, len(raw), 0) for name_id in ids)
    return struct.pack(">3H", 0, len(ids), 6 + len(records)) + records + raw  # the records share one string


def _checksum(data: bytes) -> int:
    return sum(struct.unpack(f">{len(data) // 4}I", data)) & 0xFFFFFFFF
