"""Line views (processing/lines.py): normalizing, splitting at word gaps, packing one segment per row."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dsocr.processing import lines


def _bars(widths_and_gaps: list[int], height: int = lines.ROW) -> Image.Image:
    """Black bars of the given widths separated by the given gaps: [bar, gap, bar, gap, ..., bar]."""
    image = Image.new("RGB", (sum(widths_and_gaps), height), "white")
    draw, x = ImageDraw.Draw(image), 0
    for i, w in enumerate(widths_and_gaps):
        if i % 2 == 0 and w:
            draw.rectangle((x, 0, x + w - 1, height - 1), fill="black")
        x += w
    return image


def _ink_runs(image: Image.Image) -> list[int]:
    ink = (np.asarray(image.convert("L")) < lines.INK_LEVEL).any(axis=0)
    edges = np.diff(np.concatenate(([0], ink.astype(np.int8), [0])))
    return list(np.nonzero(edges == -1)[0] - np.nonzero(edges == 1)[0])


def test_rows_are_the_vision_towers_cells() -> None:
    assert lines.ROW == 64 and lines.rows_per_view(640) == 10 and lines.rows_per_view(384) == 6
    assert lines.segment_width(640) == 640 - 2 * lines.MARGIN


def test_normalize_scales_the_x_height_band_and_puts_the_baseline_in_place() -> None:
    # a "line": 8 sparse rows (ascenders), 20 dense rows (the x-height band), 6 sparse rows (descenders)
    crop = Image.new("L", (300, 34), 255)
    draw = ImageDraw.Draw(crop)
    draw.rectangle((0, 8, 299, 27), fill=0)
    for x in range(0, 300, 30):
        draw.rectangle((x, 0, x + 2, 33), fill=0)
    scaling = lines.line_scaling(crop)
    assert scaling.scale == pytest.approx(lines.X_HEIGHT / 20, rel=0.08)  # edges placed to a sub-pixel
    line = lines.normalize_line(crop)
    assert line.mode == "RGB" and line.size == (round(300 * scaling.scale), lines.ROW)
    dense = np.nonzero((np.asarray(line.convert("L")) < lines.INK_LEVEL).mean(axis=1) > 0.5)[0]
    assert abs(dense[-1] + 1 - lines.BASELINE) <= 1 and abs(len(dense) - lines.X_HEIGHT) <= 2


def test_lines_of_one_size_get_one_scale_whatever_letters_they_have() -> None:
    from dsocr.training.synthetic import load_font

    font = load_font("DejaVuSerif.ttf", 28)
    scales = []
    for text in ("charactdo", "foundation Idtvp", "a man saw an ox", "Spawn an external command"):
        image = Image.new("RGB", (700, 60), "white")
        ImageDraw.Draw(image).text((10, 10), text, fill="black", font=font)
        scales.append(lines.line_scaling(image.crop(lines.ink_box(image))).scale)
    assert max(scales) / min(scales) < 1.12  # by the ink box alone: 1.4 ("a man saw an ox" has no ascenders)


@pytest.mark.parametrize("face", ["DejaVuSerif-Bold.ttf", "STIXGeneralBol.ttf", "DejaVuSans.ttf"])
def test_title_case_and_a_list_items_bold_lead_are_scaled_by_their_x_height(face: str) -> None:
    """Capitals, digits and brackets fill the rows above the x-height of such lines: the band must not run up
    to the capitals' tops (a real page's headings and bold list leads were shrunk to two thirds)."""
    from dsocr.training.synthetic import load_font

    font = load_font(face, 28)
    scales = []
    for text in ("a man saw an ox", "Pre-Digital Era (19th - Early 20th Century)",
                 "IBM MT/ST (Magnetic Tape/Selectric Typewriter): Introduced in 1964"):
        image = Image.new("RGB", (1400, 60), "white")
        ImageDraw.Draw(image).text((10, 10), text, fill="black", font=font)
        scales.append(lines.line_scaling(image.crop(lines.ink_box(image))).scale)
    assert max(scales) / min(scales) < 1.12, scales
    caps = Image.new("RGB", (700, 60), "white")  # no x-height letters: scaled by its capitals, as before
    ImageDraw.Draw(caps).text((10, 10), "TOTAL 2026 INVOICES", fill="black", font=font)
    assert lines.line_scaling(caps.crop(lines.ink_box(caps))).scale < 0.8 * scales[0]


def test_ink_box_is_tight_and_none_on_blank() -> None:
    image = Image.new("RGB", (50, 30), "white")
    ImageDraw.Draw(image).rectangle((10, 5, 19, 24), fill="black")
    assert lines.ink_box(image) == (10, 5, 20, 25)
    assert lines.ink_box(Image.new("RGB", (5, 5), "white")) is None


def test_split_cuts_only_in_word_gaps_and_keeps_every_bar_whole() -> None:
    # ten words of 50 px, 12 px apart (a word space), letters 3 px apart inside a word
    word = [10, 3, 10, 3, 24]  # 50 px of "letters"
    spec: list[int] = []
    for i in range(10):
        spec += word + ([12] if i < 9 else [])
    line = _bars(spec)
    segments = lines.split_line(line, max_width=200)
    assert all(s.width <= 200 for s in segments)
    assert len(segments) == 4  # 3 words (174 px) per segment, the last one 1 word
    assert sum(_ink_runs(s) == [10, 10, 24] * (len(_ink_runs(s)) // 3) for s in segments) == 4
    assert sum(len(_ink_runs(s)) for s in segments) == 30  # no bar cut or lost


def test_split_cuts_at_a_word_space_not_at_a_wide_gap_between_two_letters() -> None:
    # monospaced or spaced type: gaps of 7 px inside words (over MIN_GAP), 16 px between them
    word = [10, 7, 10, 7, 10]  # 44 px
    spec: list[int] = []
    for i in range(12):
        spec += word + ([16] if i < 11 else [])
    segments = lines.split_line(_bars(spec), max_width=200)
    assert all(s.width <= 200 for s in segments)
    assert all(len(_ink_runs(s)) % 3 == 0 for s in segments)  # whole words only
    assert sum(len(_ink_runs(s)) for s in segments) == 36
    assert [len(_ink_runs(s)) // 3 for s in segments] == [3, 3, 3, 3]  # as many words as fit: 3 x 44 + 2 x 16


def test_split_trims_blank_ends_and_cuts_a_gapless_line_hard() -> None:
    line = _bars([0, 20, 500, 30])  # blank 20, ink 500, blank 30
    segments = lines.split_line(line, max_width=200)
    assert [s.width for s in segments] == [200, 200, 100]
    assert lines.split_line(Image.new("RGB", (100, lines.ROW), "white"), 50) == []


def test_split_keeps_a_faint_period_at_a_segments_ends() -> None:
    """Light print's small period, upscaled, is grey (~180 on paper 249), lighter than INK_LEVEL: the segment
    must still end after it, or its sentence is read without it."""
    line = Image.new("RGB", (400, lines.ROW), (249, 249, 249))
    draw = ImageDraw.Draw(line)
    draw.rectangle((10, 20, 29, 45), fill=(181, 181, 181))  # a faint mark before the first word
    draw.rectangle((40, 20, 239, 45), fill="black")  # words
    draw.rectangle((250, 40, 255, 45), fill=(180, 180, 180))  # the faint period
    draw.rectangle((300, 20, 319, 45), fill=(230, 230, 230))  # a shade of paper, no mark
    segments = lines.split_line(line, max_width=380)
    assert [s.width for s in segments] == [256 - 10]  # from the first mark (x 10) to the period's end (x 255)
    assert np.asarray(segments[0].convert("L"))[40, 255 - 10] == 180


def test_pack_puts_one_segment_per_row_and_fills_views_in_order() -> None:
    segments = [_bars([40 + 10 * i]) for i in range(13)]
    views, placements = lines.pack(segments, 384)
    assert len(views) == 3 and all(v.size == (384, 384) for v in views)
    assert [(p.view, p.row) for p in placements] == [(i // 6, i % 6) for i in range(13)]
    last = np.asarray(views[2].convert("L")) < lines.INK_LEVEL
    assert last.any() and not last[lines.ROW:].any()  # view 3 holds one segment, in its first row
    for i, p in enumerate(placements):
        grey = np.asarray(views[p.view].convert("L")) < lines.INK_LEVEL
        band = grey[p.row * lines.ROW:(p.row + 1) * lines.ROW]
        _, xs = np.nonzero(band)
        assert band.all(axis=0)[lines.MARGIN:lines.MARGIN + 40 + 10 * i].all()  # the whole row high
        assert xs.min() == lines.MARGIN and xs.max() == lines.MARGIN + 40 + 10 * i - 1


def test_joined_lines_keep_a_word_gap_and_split_there() -> None:
    a, b = _bars([300]), _bars([250])
    strip = lines.join_lines([a, b])
    assert strip.size == (300 + lines.WORD_GAP + 250, lines.ROW)
    assert [s.width for s in lines.split_line(strip, 400)] == [300, 250]


@pytest.mark.parametrize("size", [384, 640])
def test_pack_crops_a_segment_wider_than_a_row(size: int) -> None:
    views, _ = lines.pack([_bars([size * 2])], size)
    ink = np.asarray(views[0].convert("L")) < lines.INK_LEVEL
    assert np.nonzero(ink.any(axis=0))[0].max() == lines.MARGIN + lines.segment_width(size) - 1


def test_views_are_filled_with_the_pages_paper() -> None:
    page = Image.new("RGB", (200, 100), (236, 232, 220))
    ImageDraw.Draw(page).rectangle((20, 20, 120, 40), fill="black")
    paper = lines.paper_colour(page)
    assert paper == (236, 232, 220)
    views, _ = lines.pack([_bars([30])], 384, paper)
    assert views[0].getpixel((383, 383)) == paper and views[0].getpixel((lines.MARGIN, 20)) == (0, 0, 0)


def test_a_line_on_a_shade_of_its_own_is_moved_onto_the_pages_paper() -> None:
    paper = (250, 248, 240)
    header = _bars([4, 10, 4, 10, 4, 10], height=30).convert("L").point(lambda v: 40 if v < 128 else 200).convert("RGB")
    moved = np.asarray(lines.on_paper(header, paper)).astype(int)
    assert np.abs(moved[0, 7] - paper).max() <= 1  # the shade, between bars, is the page's paper now
    assert np.abs(moved[0, 0] - 40).max() <= 1  # the ink keeps its darkness
    small = Image.new("L", (40, 12), 255)  # small print on the page's paper: grey edges, no shade
    ImageDraw.Draw(small).text((1, 0), "print", fill=0)
    small = small.resize((20, 6), Image.Resampling.BICUBIC).convert("RGB")
    assert lines.on_paper(small, (255, 255, 255)) is small
    plain = _bars([4, 10, 4, 10]).convert("L").point(lambda v: 0 if v < 128 else 245).convert("RGB")
    assert lines.on_paper(plain, paper) is plain  # on (nearly) the page's paper already
