"""Deskew (dsocr/pipeline/deskew.py): a turned page's angle from its ink, and boxes found on the straightened
page mapped back onto the page as given; the line reader straightens turned pages before their layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from dsocr.pipeline import deskew, layout, line_reader

WHITE = (255, 255, 255)


@pytest.fixture(scope="module")
def page() -> Image.Image:
    pytest.importorskip("matplotlib")  # the synthetic pages' fonts
    from dsocr.training.synthetic import SyntheticConfig, generate_page

    return generate_page(5, SyntheticConfig(augment=0.0)).image


def _turned(image: Image.Image, angle: float) -> Image.Image:
    return image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=WHITE)


@pytest.mark.parametrize("angle", [-2.6, -0.8, 0.5, 1.3, 2.9])
def test_the_angle_of_a_turned_page_is_found_within_five_hundredths_of_a_degree(page: Image.Image,
                                                                               angle: float) -> None:
    assert deskew.skew_angle(_turned(page, angle)) == pytest.approx(angle, abs=0.05)


def test_a_straight_page_a_blank_page_and_a_speck_are_left_as_they_are(page: Image.Image) -> None:
    assert deskew.skew_angle(page) == 0.0
    blank = Image.new("RGB", (800, 1000), (240, 238, 230))
    assert deskew.skew_angle(blank) == 0.0
    ImageDraw.Draw(blank).rectangle((100, 100, 104, 104), fill="black")
    assert deskew.skew_angle(blank) == 0.0


def _largest_blob(image: Image.Image) -> tuple[int, int, int, int]:
    labels, count = ndimage.label(np.asarray(image.convert("L")) < 100)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, range(1, count + 1))
    rows, cols = ndimage.find_objects(labels)[int(np.argmax(sizes))]
    return cols.start, rows.start, cols.stop, rows.stop


def test_a_box_on_the_straightened_page_maps_back_onto_the_turned_page() -> None:
    image = Image.new("RGB", (900, 1200), WHITE)
    draw = ImageDraw.Draw(image)
    for i in range(30):
        draw.text((80, 100 + 30 * i), "The quick brown fox jumps over the lazy dog. " * 2, fill="black")
    draw.rectangle((600, 1100, 660, 1160), fill="black")
    turned = _turned(image, 1.5)
    angle = deskew.skew_angle(turned)
    straight = deskew.straighten(turned, angle, WHITE)
    assert straight.size > turned.size  # grown: no corner lost
    found = deskew.box_on_page(_largest_blob(straight), angle, turned.size, straight.size)
    assert all(abs(a - b) <= 2 for a, b in zip(found, _largest_blob(turned))), (found, _largest_blob(turned))


def _line_height(regions: object) -> float:
    return float(np.mean([line.box[3] - line.box[1] for region in regions for line in region.lines]))


def test_the_line_reader_reads_a_turned_page_as_the_straight_one_with_boxes_on_the_turned_page(
        page: Image.Image) -> None:
    straight = line_reader.line_views(page, 640)
    turned = _turned(page, 1.4)
    # Without straightening, a turned line's box holds its climb: much taller than the line.
    assert _line_height(layout.analyze(turned)) > 1.3 * _line_height(straight.regions)
    read = line_reader.line_views(turned, 640)
    assert read.image_size == turned.size
    assert [r.label for r in read.regions] == [r.label for r in straight.regions]
    assert [len(r.lines) for r in read.regions] == [len(r.lines) for r in straight.regions]
    assert len(read.segments) == len(straight.segments)
    assert _line_height(read.regions) == pytest.approx(_line_height(straight.regions), abs=1.0)
    for got, want in zip(read.regions, straight.regions):  # boxes on the turned page: the straight ones turned
        expected = deskew.box_on_page(want.box, 1.4, page.size, page.size)
        assert all(abs(a - b) <= 6 for a, b in zip(got.box, expected)), (got.box, expected)
    assert len(read.ink_boxes) == len(read.regions)  # and the ink boxes the same way
    for got, want in zip(read.ink_boxes, straight.ink_boxes):
        expected = deskew.box_on_page(want, 1.4, page.size, page.size)
        assert all(abs(a - b) <= 6 for a, b in zip(got, expected)), (got, expected)
