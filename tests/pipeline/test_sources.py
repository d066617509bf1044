"""Sources: PDF rendering (ranges, passwords, /Rotate, huge and tiny pages), images, and every bad input."""

from __future__ import annotations

from pathlib import Path

import pypdfium2 as pdfium
import pytest
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
from dsocr.pipeline.sources import (
    RenderSettings,
    expand_inputs,
    open_source,
    parse_page_ranges,
    render_scale,
    select_pages,
)

DATA = Path(__file__).parent.parent / "data"


def make_pdf(path: Path, sizes: list[tuple[int, int]], colours: list[str] | None = None) -> Path:
    """A PDF with one image page per size (Pillow writes them at 72 DPI: pixels = points)."""
    colours = colours or ["white"] * len(sizes)
    pages = [Image.new("RGB", size, colour) for size, colour in zip(sizes, colours)]
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=72.0)
    return path


def test_page_ranges_parse_and_select():
    assert parse_page_ranges(None) is None
    assert parse_page_ranges("1-3, 7,10-") == [(1, 3), (7, 7), (10, None)]
    assert select_pages(parse_page_ranges("1-3,7,10-"), 11) == [0, 1, 2, 6, 9, 10]
    assert select_pages(parse_page_ranges("2,2,1"), 5) == [0, 1]  # page order, each once
    assert select_pages(parse_page_ranges("-2"), 5) == [0, 1]
    assert select_pages(parse_page_ranges("4-9"), 5) == [3, 4]  # clipped to the document
    for bad in ("a", "3-1", "0", "1-x"):
        with pytest.raises(ConfigError, match="pages"):
            parse_page_ranges(bad)
    with pytest.raises(EmptyDocumentError, match="selects none"):
        select_pages(parse_page_ranges("8-"), 5)


def test_expand_inputs_directories_globs_and_missing(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.pdf", "a.png", "sub/c.tiff", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = expand_inputs([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.png", "b.pdf", "sub/c.tiff"]
    assert [p.name for p in expand_inputs([str(tmp_path / "*.p*")])] == ["a.png", "b.pdf"]
    assert expand_inputs([tmp_path / "missing.pdf"]) == [tmp_path / "missing.pdf"]  # fails later, alone
    assert expand_inputs([str(tmp_path / "*.jpg")]) == [tmp_path / "*.jpg"]


def test_pdf_pages_render_at_dpi_in_order(tmp_path):
    pdf = make_pdf(tmp_path / "three.pdf", [(612, 792), (792, 612), (612, 792)], ["red", "lime", "blue"])
    source = open_source(pdf, render=RenderSettings(dpi=144))
    assert (source.kind, source.num_pages) == ("pdf", 3)
    pages = [source.render(i) for i in (0, 1, 2)]
    assert [p.image.size for p in pages] == [(1224, 1584), (1584, 1224), (1224, 1584)]
    # The dominant channel of each page says which page it is (Pillow stores the pages as JPEG).
    assert [max(range(3), key=p.image.getpixel((10, 10)).__getitem__) for p in pages] == [0, 1, 2]
    assert pages[1].size_pt == pytest.approx((792, 612)) and pages[1].dpi == 144
    source.close()


def test_rotate_is_honoured():
    source = open_source(DATA / "nemotron_multipage.pdf", render=RenderSettings(dpi=72, min_long_side=0))
    sizes = [source.render(i).image.size for i in range(source.num_pages)]
    # /Rotate 0, 180, 90, 270 on A4 portrait pages: the 90 and 270 pages come out landscape.
    assert [w > h for w, h in sizes] == [False, False, True, True]
    assert source.page_size_pt(2)[0] > source.page_size_pt(2)[1]


def test_small_pages_render_up_to_min_side_and_huge_pages_down_to_max_pixels():
    settings = RenderSettings(dpi=144, max_pixels=2048 * 2048, min_long_side=1024)
    assert render_scale(612, 792, settings) == 2.0  # a letter page at 144 DPI: unchanged
    assert render_scale(120, 86, settings) * 120 == pytest.approx(1024)  # tiny page: long side 1024
    huge = open_source(DATA / "hugemono.pdf", render=settings)  # 8400 x 8400 pt, 35000 px CCITT image
    page = huge.render(0)
    assert page.image.width * page.image.height <= 2048 * 2048 and page.image.size[0] >= 2000
    assert page.dpi < 20  # effective resolution, recorded


@pytest.mark.parametrize("name, password", [("crazyones-encrypted-256.pdf", "password"),
                                            ("libreoffice-writer-password.pdf", "openpassword")])
def test_passwords(name, password):
    with pytest.raises(PasswordError, match="encrypted; give its password"):
        open_source(DATA / name)
    with pytest.raises(PasswordError, match="wrong password"):
        open_source(DATA / name, password="not-it")
    source = open_source(DATA / name, password=password)
    assert source.num_pages >= 1 and source.render(0).image.width > 0


@pytest.mark.parametrize("name", ["invalid.pdf", "edgar_truncated60.pdf"])
def test_corrupt_pdfs_are_clean_errors(name):
    with pytest.raises(DocumentDecodeError, match="not a valid PDF"):
        open_source(DATA / name)


def test_bad_files(tmp_path):
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "text.pdf").write_text("hello, not a document")
    png = tmp_path / "page.png"
    Image.new("RGB", (300, 200), "white").save(png)
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[:120])
    with pytest.raises(EmptyDocumentError):
        open_source(tmp_path / "empty.pdf")
    pdfium.PdfDocument.new().save(tmp_path / "zero-pages.pdf")
    with pytest.raises(EmptyDocumentError, match="has no pages"):
        open_source(tmp_path / "zero-pages.pdf")
    with pytest.raises(UnsupportedFormatError, match="not a PDF or an image"):
        open_source(tmp_path / "text.pdf")
    with pytest.raises(ImageDecodeError):
        open_source(tmp_path / "cut.png")
    with pytest.raises(InputError, match="no such file"):
        open_source(tmp_path / "missing.pdf")
    with pytest.raises(InputError, match="not a file"):
        open_source(tmp_path)
    with pytest.raises(InputError, match="decompression-bomb"):
        open_source(png, render=RenderSettings(max_image_pixels=300 * 200 - 1))


def test_images_multipage_tiff_gif_first_frame_and_exif(tmp_path):
    tiff = open_source(DATA / "2206.01062.tif")
    assert (tiff.kind, tiff.num_pages) == ("image", 2)
    assert tiff.render(1).image.size == (612, 792)

    frames = [Image.new("RGB", (64, 48), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    gif = open_source(tmp_path / "anim.gif")
    assert gif.num_pages == 1 and gif.render(0).image.getpixel((0, 0)) == (255, 0, 0)

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 clockwise to display
    Image.new("RGB", (80, 40), "white").save(tmp_path / "photo.jpg", exif=exif)
    assert open_source(tmp_path / "photo.jpg").render(0).image.size == (40, 80)


def test_big_images_are_scaled_to_max_pixels(tmp_path):
    Image.new("RGB", (4000, 3000), "white").save(tmp_path / "big.png")
    page = open_source(tmp_path / "big.png", render=RenderSettings(max_pixels=1000 * 750)).render(0)
    assert page.image.size == (1000, 750) and page.dpi == pytest.approx(36)
