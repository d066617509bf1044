"""Searchable PDF: the text is found where the boxes say, on image, imported, rotated and cropped pages."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image, ImageDraw

from dsocr.pipeline import searchable_pdf
from dsocr.pipeline.searchable_pdf import PdfPageInput, TextBlock, text_lines, write_searchable_pdf

DATA = Path(__file__).parent.parent / "data"
TOL = 1.5  # points (or pixels): glyph boxes vs. the box they were fitted to


@pytest.fixture(scope="module")
def rotations_pdf() -> Path:
    """4 pages with /Rotate 0, 180, 90, 270 (shipped in tests/data)."""
    return DATA / "nemotron_multipage.pdf"


def image_page(blocks: list[TextBlock], size: tuple[int, int], dpi: float = 144.0) -> PdfPageInput:
    return PdfPageInput(blocks=blocks, pixel_size=size, dpi=dpi,
                        image=lambda: Image.new("RGB", size, "white"))


def pdf_page(src: Path, index: int, blocks: list[TextBlock], size: tuple[int, int], **kw) -> PdfPageInput:
    return PdfPageInput(blocks=blocks, pixel_size=size, source_pdf=src, page_index=index, **kw)


def make_pdf(path: Path, sizes: list[tuple[int, int]], colours: list[str]) -> Path:
    """One image page per size (Pillow writes them at 72 DPI: pixels = points)."""
    pages = [Image.new("RGB", size, colour) for size, colour in zip(sizes, colours)]
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=72.0)
    return path


def rendered_size(page: pdfium.PdfPage, scale: float) -> tuple[int, int]:
    bitmap = page.render(scale=scale, rotation=0)
    return bitmap.width, bitmap.height


def char_boxes(textpage: pdfium.PdfTextPage, text: str) -> list[tuple[float, float, float, float]]:
    """The boxes (PDF points) of the first occurrence of `text`, one per character."""
    start = textpage.get_text_range().index(text)  # no \r\n before it in these tests: indices match
    return [textpage.get_charbox(i) for i in range(start, start + len(text))]


def to_device(page: pdfium.PdfPage, size: tuple[int, int], x: float, y: float) -> tuple[int, int]:
    dx, dy = ctypes.c_int(), ctypes.c_int()
    assert pdfium_c.FPDF_PageToDevice(page, 0, 0, size[0], size[1], 0, x, y, dx, dy)
    return dx.value, dy.value


def device_box(page: pdfium.PdfPage, size: tuple[int, int], box: tuple[float, float, float, float]):
    """A char box (PDF points) as a pixel box of the page rendered at `size`."""
    corners = [to_device(page, size, x, y) for x in (box[0], box[2]) for y in (box[1], box[3])]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return min(xs), min(ys), max(xs), max(ys)


def text_objects(page: pdfium.PdfPage) -> list:
    return [obj for obj in page.get_objects() if obj.type == pdfium_c.FPDF_PAGEOBJ_TEXT]


def test_image_page(tmp_path):
    image = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(image).rectangle((300, 200, 399, 299), fill=(200, 0, 0))
    blocks = [TextBlock("Hello searchable", (40, 30, 240, 70)),
              TextBlock("Second block", (40, 150, 200, 180))]
    out = tmp_path / "out.pdf"
    page_input = PdfPageInput(blocks=blocks, pixel_size=(400, 300), image=lambda: image)
    assert write_searchable_pdf(out, [page_input]) == 1

    pdf = pdfium.PdfDocument(out)
    page = pdf[0]
    assert page.get_size() == pytest.approx((200, 150))  # 144 dpi: 2 pixels a point
    text = page.get_textpage().get_text_range()
    assert "Hello searchable" in text and "Second block" in text
    # Pixels (40, 30)-(240, 70) are points x 20..120, y 150-35..150-15 (PDF y goes up).
    boxes = char_boxes(page.get_textpage(), "Hello")
    for left, bottom, right, top in boxes:
        assert 20 - TOL <= left <= right <= 120 + TOL and 115 - TOL <= bottom <= top <= 135 + TOL
    assert boxes[0][0] == pytest.approx(20, abs=TOL)  # the line runs from the box's left edge ...
    last = char_boxes(page.get_textpage(), "searchable")[-1]
    assert last[2] == pytest.approx(120, abs=TOL)  # ... to its right edge
    assert all(obj.get_font().get_base_name() == "Helvetica" for obj in text_objects(page))
    # The image fills the page (rendered at its size, it comes back pixel for pixel); the text is invisible.
    rendered = page.render(scale=2).to_pil().convert("RGB")
    assert rendered.size == image.size
    assert rendered.getpixel((350, 250)) == (200, 0, 0) and rendered.getpixel((60, 50)) == (255, 255, 255)


def test_source_pages_in_reverse_order_keep_sizes_and_look_unchanged(tmp_path):
    src = make_pdf(tmp_path / "src.pdf", [(300, 400), (500, 250)], ["white", "yellow"])
    source = pdfium.PdfDocument(src)
    sizes = [rendered_size(source[i], 2) for i in range(2)]
    pages = [pdf_page(src, i, [TextBlock(f"text of page {i + 1}", (20, 20, 300, 60))], sizes[i])
             for i in (1, 0)]
    out = tmp_path / "out.pdf"
    assert write_searchable_pdf(out, pages) == 2

    pdf = pdfium.PdfDocument(out)
    assert [pdf[i].get_size() for i in range(2)] == [(500, 250), (300, 400)]
    assert "text of page 2" in pdf[0].get_textpage().get_text_range()
    assert "text of page 1" in pdf[1].get_textpage().get_text_range()
    assert "page 1" not in pdf[0].get_textpage().get_text_range()
    for out_index, src_index in ((0, 1), (1, 0)):  # imported unchanged, the text layer never drawn
        before = source[src_index].render(scale=0.5).to_pil().tobytes()
        assert pdf[out_index].render(scale=0.5).to_pil().tobytes() == before


def test_rotated_pages_text_upright_in_displayed_top_left(tmp_path, rotations_pdf):
    source = pdfium.PdfDocument(rotations_pdf)
    sizes = [rendered_size(source[i], 2) for i in range(len(source))]
    words = [f"Rotated{i}page" for i in range(len(source))]
    boxes = [(0.05 * w, 0.05 * h, 0.4 * w, 0.15 * h) for w, h in sizes]  # in the top-left quarter
    pages = [pdf_page(rotations_pdf, i, [TextBlock(words[i], boxes[i])], sizes[i]) for i in range(4)]
    out = tmp_path / "out.pdf"
    assert write_searchable_pdf(out, iter(pages)) == 4

    pdf = pdfium.PdfDocument(out)
    rotations = [source[i].get_rotation() for i in range(4)]
    assert [pdf[i].get_rotation() for i in range(4)] == rotations == [0, 180, 90, 270]
    for i, (w, h) in enumerate(sizes):
        page = pdf[i]
        assert page.get_size() == source[i].get_size()
        boxes = [device_box(page, (w, h), box) for box in char_boxes(page.get_textpage(), words[i])]
        for x1, y1, x2, y2 in boxes:  # all in the displayed top-left quarter, inside the block's box
            assert 0.05 * w - TOL <= x1 <= x2 <= 0.4 * w + TOL
            assert 0.05 * h - TOL <= y1 <= y2 <= 0.15 * h + TOL
        assert [b[0] for b in boxes] == sorted(b[0] for b in boxes)  # left to right as displayed
        assert boxes[0][0] == pytest.approx(0.05 * w, abs=2) and boxes[-1][2] == pytest.approx(0.4 * w, abs=2)
        assert_upright(page, (w, h))


def assert_upright(page: pdfium.PdfPage, size: tuple[int, int]) -> None:
    """Every text object's x axis runs right and its y axis up on the displayed page (not mirrored)."""
    for obj in text_objects(page):
        m = obj.get_matrix()
        origin = to_device(page, size, m.e, m.f)
        along = to_device(page, size, m.e + 50 * m.a, m.f + 50 * m.b)
        up = to_device(page, size, m.e + 50 * m.c, m.f + 50 * m.d)
        assert along[0] - origin[0] > 10 and abs(along[1] - origin[1]) <= 1
        assert origin[1] - up[1] > 10 and abs(up[0] - origin[0]) <= 1


def test_cropped_rotated_page(tmp_path):
    """A crop box away from the origin, on a /Rotate 90 page."""
    src = tmp_path / "crop.pdf"
    doc = pdfium.PdfDocument.new()
    page = doc.new_page(600, 800)
    page.set_cropbox(100, 200, 500, 700)
    page.set_rotation(90)
    page.close()
    doc.save(src)
    size = rendered_size(pdfium.PdfDocument(src)[0], 1)
    assert size == (500, 400)
    out = tmp_path / "out.pdf"
    write_searchable_pdf(out, [pdf_page(src, 0, [TextBlock("Cropped", (50, 40, 250, 80))], size)])
    page = pdfium.PdfDocument(out)[0]
    assert page.get_rotation() == 90 and page.get_cropbox() == (100, 200, 500, 700)
    boxes = [device_box(page, size, box) for box in char_boxes(page.get_textpage(), "Cropped")]
    assert min(b[0] for b in boxes) == pytest.approx(50, abs=2)
    assert max(b[2] for b in boxes) == pytest.approx(250, abs=2)
    assert all(40 - TOL <= b[1] <= b[3] <= 80 + TOL for b in boxes)
    assert_upright(page, size)


def test_multi_line_block_shares_the_height_and_empty_text_is_skipped(tmp_path):
    blocks = [TextBlock("first line\n\n  second line  \nthird line", (20, 20, 220, 110)),
              TextBlock("", (20, 150, 200, 170)), TextBlock(" \n\t", (20, 150, 200, 170)),
              TextBlock("outside", (500, 500, 600, 600)), TextBlock("flat", (20, 190, 200, 190))]
    out = tmp_path / "out.pdf"
    write_searchable_pdf(out, [image_page(blocks, (300, 200), dpi=72)])
    page = pdfium.PdfDocument(out)[0]
    textpage = page.get_textpage()
    assert textpage.get_text_range().split() == ["first", "line", "second", "line", "third", "line"]
    assert len(text_objects(page)) == 3  # blank lines, empty text, boxes off the page or flat: nothing
    for n, word in enumerate(("first", "second", "third")):  # dpi 72: pixels = points; line n is 30 px tall
        band_top, band_bottom = 200 - 20 - 30 * n, 200 - 20 - 30 * (n + 1)
        for left, bottom, right, top in char_boxes(textpage, word):
            assert band_bottom - TOL <= bottom <= top <= band_top + TOL
            assert 20 - TOL <= left <= right <= 220 + TOL


def test_non_latin_text_stays_searchable(tmp_path):
    lines = ["Plain Latin: café", "Ελληνικά и кириллица", "漢字かなカナ 한국어", "emoji 😀 here",
             "a\u0301 \u00a0x\x07y"]
    out = tmp_path / "out.pdf"
    block = TextBlock("\n".join(lines), (10, 10, 390, 290))
    write_searchable_pdf(out, [image_page([block], (400, 300))])
    page = pdfium.PdfDocument(out)[0]
    text = page.get_textpage().get_text_range()
    assert "ÿ" not in text  # what pdfium makes of characters Helvetica cannot encode
    for expected in ("Plain Latin: café", "Ελληνικά и кириллица", "漢字かなカナ 한국어", "emoji \ufffd here"):
        assert expected in text
    assert "á" in text and "xy" in text  # NFC-composed; the control character dropped
    fonts = [obj.get_font().get_base_name() for obj in text_objects(page)]
    assert fonts == ["Helvetica"] + ["DsocrText"] * 4  # the last line too: NBSP is not in pdfium's WinAnsi
    band_top, band_bottom = (150 - (10 + 56 * n) / 2 for n in (2, 3))  # line 3 of 5, 56 px each; 2 px a point
    for left, bottom, right, top in char_boxes(page.get_textpage(), "漢字"):
        assert 5 - TOL <= left <= right <= 195 + TOL and band_bottom - TOL <= bottom <= top <= band_top + TOL


def test_text_lines_normalisation():
    assert text_lines("  a\tb \r\n\n\u2028c\x00") == ["a b", "c"]
    assert text_lines("e\u0301\U0001F600") == ["é\ufffd"]
    assert text_lines("") == [] and text_lines(" \n ") == []


def test_bad_inputs():
    def image() -> Image.Image:
        return Image.new("RGB", (10, 10))

    with pytest.raises(ValueError, match="exactly one"):
        PdfPageInput(blocks=[], pixel_size=(10, 10))
    with pytest.raises(ValueError, match="exactly one"):
        PdfPageInput(blocks=[], pixel_size=(10, 10), source_pdf="a.pdf", page_index=0, image=image)
    with pytest.raises(ValueError, match="page_index"):
        PdfPageInput(blocks=[], pixel_size=(10, 10), source_pdf="a.pdf")
    with pytest.raises(ValueError, match="page_index"):
        PdfPageInput(blocks=[], pixel_size=(10, 10), source_pdf="a.pdf", page_index=-1)
    with pytest.raises(ValueError, match="pixel_size"):
        PdfPageInput(blocks=[], pixel_size=(0, 10), image=image)
    with pytest.raises(ValueError, match="dpi"):
        PdfPageInput(blocks=[], pixel_size=(10, 10), image=image, dpi=0)


def test_bad_writes_leave_no_file(tmp_path):
    src = make_pdf(tmp_path / "src.pdf", [(100, 100)], ["white"])
    out = tmp_path / "out.pdf"
    with pytest.raises(ValueError, match="out of range"):
        write_searchable_pdf(out, [pdf_page(src, 1, [], (10, 10))])
    with pytest.raises(ValueError, match="no pages"):
        write_searchable_pdf(out, [])
    with pytest.raises(FileNotFoundError):
        write_searchable_pdf(out, [pdf_page(tmp_path / "missing.pdf", 0, [], (10, 10))])
    assert not out.exists()


def test_iterator_consumed_one_page_at_a_time(tmp_path):
    events: list[str] = []

    def image(i: int) -> Image.Image:
        events.append(f"image {i}")
        return Image.new("RGB", (80, 60), "white")

    def pages() -> Iterator[PdfPageInput]:
        for i in range(3):
            events.append(f"yield {i}")
            yield PdfPageInput(blocks=[TextBlock(f"page{i}", (5, 5, 70, 20))], pixel_size=(80, 60),
                               image=lambda i=i: image(i))

    out = tmp_path / "out.pdf"
    assert write_searchable_pdf(out, pages()) == 3
    assert events == ["yield 0", "image 0", "yield 1", "image 1", "yield 2", "image 2"]  # lazily, each once
    pdf = pdfium.PdfDocument(out)
    assert [pdf[i].get_textpage().get_text_range().strip() for i in range(3)] == ["page0", "page1", "page2"]


def test_sources_reopened_after_eviction(tmp_path, monkeypatch):
    """Evicted sources are closed before the output is saved: imported pages must not depend on them."""
    monkeypatch.setattr(searchable_pdf, "MAX_OPEN_SOURCES", 1)
    a = make_pdf(tmp_path / "a.pdf", [(100, 100), (110, 100)], ["white", "white"])
    b = make_pdf(tmp_path / "b.pdf", [(200, 100)], ["white"])
    order = [(a, 0), (b, 0), (a, 1), (b, 0)]
    pages = [pdf_page(path, index, [TextBlock(f"{path.stem}{index}", (10, 10, 90, 40))], (100, 100))
             for path, index in order]
    out = tmp_path / "out.pdf"
    assert write_searchable_pdf(out, pages) == 4
    pdf = pdfium.PdfDocument(out)
    assert [pdf[i].get_size()[0] for i in range(4)] == [100, 200, 110, 200]
    assert [pdf[i].get_textpage().get_text_range().strip() for i in range(4)] == ["a0", "b0", "a1", "b0"]


def test_password_protected_source(tmp_path):
    src = DATA / "libreoffice-writer-password.pdf"
    size = rendered_size(pdfium.PdfDocument(src, password="openpassword")[0], 1)
    out = tmp_path / "out.pdf"
    write_searchable_pdf(out, [pdf_page(src, 0, [TextBlock("OCRLAYER", (10, 10, 200, 40))], size,
                                        password="openpassword")])
    text = pdfium.PdfDocument(out)[0].get_textpage().get_text_range()  # opened without a password
    assert "OCRLAYER" in text
