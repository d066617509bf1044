"""Document sources: PDFs rendered with pypdfium2 and images (multi-page TIFF included), one page at a time.

Must not import torch or the model. A source never holds more than the page being rendered, so a 2,000-page
PDF costs one page of memory. pdfium is not thread-safe: every pdfium call in dsocr holds `PDFIUM_LOCK`.
"""

from __future__ import annotations

import glob
import math
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image

from dsocr.errors import (
    ConfigError,
    DocumentDecodeError,
    EmptyDocumentError,
    ImageDecodeError,
    InputError,
    PasswordError,
    UnsupportedFormatError,
)
from dsocr.processing.image import DEFAULT_MAX_IMAGE_PIXELS, decode_image, open_image

PDFIUM_LOCK = threading.RLock()
PDF_SUFFIXES = (".pdf",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MULTI_PAGE_IMAGE_FORMATS = ("TIFF",)  # every frame is a page; other animations give their first frame only

DEFAULT_DPI = 144.0  # the reference renders PDFs at 144 DPI
DEFAULT_MAX_PAGE_PIXELS = 4096 * 4096  # bigger pages are rendered (or images scaled) down to this
DEFAULT_MIN_LONG_SIDE = 1024  # smaller pages are rendered at a higher DPI, up to the global view's size
_PDF_ERRORS = {2: "file not found or could not be opened", 3: "not a valid PDF (corrupt or truncated)",
               5: "unsupported security scheme", 6: "page not found or content error"}
_PDF_PASSWORD_ERROR = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderSettings:
    dpi: float = DEFAULT_DPI
    max_pixels: int = DEFAULT_MAX_PAGE_PIXELS  # per rendered page
    min_long_side: int = DEFAULT_MIN_LONG_SIDE  # 0 = always exactly `dpi`, like the reference
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # image files above this are refused (decompression bombs)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.dpi) and 18 <= self.dpi <= 1200):
            raise ConfigError(f"dpi: must be between 18 and 1200, got {self.dpi}")
        if self.max_pixels < 64 * 64:
            raise ConfigError(f"max page pixels: must be at least {64 * 64}, got {self.max_pixels}")
        if self.min_long_side < 0:
            raise ConfigError(f"min long side: must be >= 0, got {self.min_long_side}")


@dataclass(slots=True, kw_only=True)
class RenderedPage:
    index: int  # 0-based page index in the source
    image: Image.Image  # RGB, upright as displayed
    dpi: float  # effective resolution (after min-side / max-pixel adjustments)
    size_pt: tuple[float, float] | None  # displayed page size in PDF points; None for images


def parse_page_ranges(spec: str | None) -> list[tuple[int, int | None]] | None:
    """"1-3,7,10-" -> [(1, 3), (7, 7), (10, None)] (1-based, inclusive; None = to the end); None = all."""
    if spec is None or not spec.strip():
        return None
    ranges: list[tuple[int, int | None]] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                first, last = part.split("-", 1)
                start = int(first) if first.strip() else 1
                end = int(last) if last.strip() else None
            else:
                start = end = int(part)
        except ValueError:
            raise ConfigError(f"pages: cannot read {part!r} in {spec!r}; use e.g. 1-3,7,10-") from None
        if start < 1 or (end is not None and end < start):
            raise ConfigError(f"pages: {part!r} is not a valid range (pages count from 1)")
        ranges.append((start, end))
    return ranges


def select_pages(ranges: list[tuple[int, int | None]] | None, num_pages: int) -> list[int]:
    """0-based page indices selected by `ranges`, in page order, each once."""
    if num_pages == 0:
        raise EmptyDocumentError("document has no pages")
    if ranges is None:
        return list(range(num_pages))
    selected = sorted({i - 1 for start, end in ranges
                       for i in range(start, (num_pages if end is None else min(end, num_pages)) + 1)})
    if not selected:
        raise EmptyDocumentError(f"page selection selects none of the document's {num_pages} pages")
    return selected


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, directories searched recursively for PDFs and images, globs expanded; sorted within a
    directory or glob, order of the arguments kept. A missing path is kept (it fails later, on its own)."""
    paths: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_supported(p)))
        elif not path.exists() and glob.has_magic(str(raw)):
            matches = sorted(Path(p) for p in glob.glob(str(raw), recursive=True) if Path(p).is_file())
            paths.extend(matches or [path])  # a glob matching nothing fails like a missing file
        else:
            paths.append(path)
    return paths


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in PDF_SUFFIXES + IMAGE_SUFFIXES


def open_source(path: str | os.PathLike, *, password: str | None = None,
                render: RenderSettings | None = None) -> PdfSource | ImageSource:
    """Open a PDF or image file by its content (not its extension); raises InputError subclasses."""
    render = render or RenderSettings()
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if not path.is_file():
        raise InputError(f"not a file: {path}")
    try:
        with path.open("rb") as f:
            head = f.read(1024)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from e
    if not head:
        raise EmptyDocumentError(f"empty file: {path}")
    if b"%PDF-" in head:
        return PdfSource(path, password=password, render=render)
    return ImageSource(path, render=render)


class PdfSource:
    kind = "pdf"

    def __init__(self, path: Path, *, password: str | None, render: RenderSettings) -> None:
        self.path, self.render_settings = path, render
        with PDFIUM_LOCK:
            try:
                self._pdf = pdfium.PdfDocument(str(path), password=password)
            except pdfium.PdfiumError as e:
                raise _pdf_error(path, e, password) from None
            self.num_pages = len(self._pdf)
        if self.num_pages == 0:
            self.close()
            raise EmptyDocumentError(f"{path}: the PDF has no pages")

    def page_size_pt(self, index: int) -> tuple[float, float]:
        with PDFIUM_LOCK:
            return tuple(self._pdf[index].get_size())  # as displayed: /Rotate swaps width and height

    def render(self, index: int) -> RenderedPage:
        with PDFIUM_LOCK:
            page = self._pdf[index]
            try:
                width_pt, height_pt = page.get_size()
                scale = render_scale(width_pt, height_pt, self.render_settings)
                # pdfium honours /Rotate on its own; rotation=0 adds nothing to it.
                bitmap = page.render(scale=scale, rotation=0, may_draw_forms=True)
                image = bitmap.to_pil().convert("RGB")
            except pdfium.PdfiumError as e:
                raise DocumentDecodeError(f"page {index + 1}: cannot render: {e}") from None
            finally:
                page.close()
        return RenderedPage(index=index, image=image, dpi=round(scale * 72, 3), size_pt=(width_pt, height_pt))

    def close(self) -> None:
        with PDFIUM_LOCK:
            self._pdf.close()


def render_scale(width_pt: float, height_pt: float, settings: RenderSettings) -> float:
    """Pixels per point: `dpi`, raised for small pages up to `min_long_side`, lowered to fit `max_pixels`."""
    if not (width_pt > 0 and height_pt > 0):
        raise DocumentDecodeError(f"page has no area ({width_pt} x {height_pt} pt)")
    scale = settings.dpi / 72
    if settings.min_long_side and max(width_pt, height_pt) * scale < settings.min_long_side:
        scale = settings.min_long_side / max(width_pt, height_pt)
    if width_pt * height_pt * scale * scale > settings.max_pixels:
        scale = math.sqrt(settings.max_pixels / (width_pt * height_pt))
    return scale


def _pdf_error(path: Path, error: pdfium.PdfiumError, password: str | None) -> InputError:
    code = getattr(error, "err_code", None)
    if code == _PDF_PASSWORD_ERROR:
        if password is None:
            return PasswordError(f"{path}: the PDF is encrypted; give its password with --password")
        return PasswordError(f"{path}: wrong password for the encrypted PDF")
    if _looks_pageless(path):  # pdfium refuses these without an error code of their own
        return EmptyDocumentError(f"{path}: the PDF has no pages")
    return DocumentDecodeError(f"{path}: {_PDF_ERRORS.get(code, str(error))}")


def _looks_pageless(path: Path, limit: int = 1 << 24) -> bool:
    """A page tree that counts 0 pages and no page object: an empty PDF rather than a broken one."""
    try:
        with path.open("rb") as f:
            data = f.read(limit)
    except OSError:
        return False
    return re.search(rb"/Count\s*0\b", data) is not None and re.search(rb"/Type\s*/Page(?!s)", data) is None


class ImageSource:
    """An image file: one page, or one page per frame for multi-page TIFF."""

    kind = "image"

    def __init__(self, path: Path, *, render: RenderSettings) -> None:
        self.path, self.render_settings = path, render
        with self._open() as image:
            self.format = image.format or ""
            frames = getattr(image, "n_frames", 1) if self.format in MULTI_PAGE_IMAGE_FORMATS else 1
            self.num_pages = frames
            # Decode the first page now: a corrupt or truncated image is an error of the document, not a page.
            self._first: RenderedPage | None = self._decode(image, 0)

    def render(self, index: int) -> RenderedPage:
        if index == 0 and self._first is not None:
            page, self._first = self._first, None  # handed out once; memory is not kept
            return page
        with self._open() as image:
            try:
                image.seek(index)
            except (EOFError, OSError, ValueError) as e:
                raise ImageDecodeError(f"{self.path}: frame {index + 1}: {e}") from None
            return self._decode(image, index)

    def close(self) -> None:
        self._first = None

    def _open(self) -> Image.Image:
        try:
            return open_image(self.path, str(self.path), self.render_settings.max_image_pixels)
        except UnsupportedFormatError:
            raise UnsupportedFormatError(f"{self.path}: not a PDF or an image in a format we can read") from None

    def _decode(self, image: Image.Image, index: int) -> RenderedPage:
        dpi = _image_dpi(image)
        name = str(self.path) if self.num_pages == 1 else f"{self.path} (page {index + 1})"
        rgb = decode_image(image, max_pixels=self.render_settings.max_image_pixels, name=name)
        scale = _shrink_factor(rgb.width * rgb.height, self.render_settings.max_pixels)
        if scale < 1:  # huge but legal images are scaled down like huge PDF pages
            rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                             Image.Resampling.LANCZOS)
            dpi *= scale
        return RenderedPage(index=index, image=rgb, dpi=round(dpi, 3), size_pt=None)


def _shrink_factor(pixels: int, max_pixels: int) -> float:
    return 1.0 if pixels <= max_pixels else math.sqrt(max_pixels / pixels)


def _image_dpi(image: Image.Image) -> float:
    """The stored resolution when it is plausible, else the PDF default of 144."""
    dpi = image.info.get("dpi")
    try:
        value = float(dpi[0]) if dpi else 0.0
    except (TypeError, ValueError, IndexError):
        value = 0.0
    return value if 36 <= value <= 4800 else DEFAULT_DPI


def iter_pages(source: PdfSource | ImageSource, indices: Sequence[int]) -> Iterator[RenderedPage]:
    for index in indices:
        yield source.render(index)
