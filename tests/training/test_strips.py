"""Line views for training (training/strips.py): deterministic, drawn the way the pipeline packs lines, glyphs
where the characters are."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")  # the fonts

from dsocr.processing import lines
from dsocr.training.strips import generate_strips


@pytest.fixture(scope="module")
def views() -> list:
    return [generate_strips(seed, 640) for seed in range(24)]


def test_same_seed_gives_the_same_view() -> None:
    a, b = generate_strips(5, 384), generate_strips(5, 384)
    assert a.rows == b.rows and a.glyphs == b.glyphs and a.image.tobytes() == b.image.tobytes()
    assert generate_strips(6, 384).rows != a.rows


def test_rows_hold_one_line_each_inside_their_cells(views: list) -> None:
    for view in views:
        assert view.image.size == (640, 640) and 1 <= len(view.rows) <= lines.rows_per_view(640)
        assert view.target == "\n".join(view.rows) and all(r and "\n" not in r for r in view.rows)
        ink = np.asarray(view.image.convert("L")) < lines.INK_LEVEL
        for row in range(lines.rows_per_view(640)):
            band = ink[row * lines.ROW:(row + 1) * lines.ROW]
            if row >= len(view.rows):
                assert not band.any()  # unused rows are blank
                continue
            ys, xs = np.nonzero(band)
            top = (lines.ROW - lines.INK_HEIGHT) // 2
            assert ys.min() >= top - 1 and ys.max() <= top + lines.INK_HEIGHT  # the ink height, centred
            assert xs.min() >= lines.MARGIN - 1 and xs.max() < 640 - lines.MARGIN + 1


def test_glyphs_are_the_rows_characters_in_order_on_their_ink(views: list) -> None:
    for view in views:
        ink = np.asarray(view.image.convert("L")) < 200
        chars = "".join(ch for ch, _, _ in view.glyphs)
        assert chars == "".join(view.target.split())  # every character but spaces, in reading order
        rows = [int(y // lines.ROW) for _, _, y in view.glyphs]
        assert rows == sorted(rows)
        near = 0
        for _, x, y in view.glyphs:
            x0, y0 = int(x), int(y)
            near += ink[y0 - 22:y0 + 22, max(0, x0 - 8):x0 + 8].any()
        assert near == len(view.glyphs)  # each centre has ink within half a character


def test_text_is_prose_words_numbers_and_labelled_lines(views: list) -> None:
    text = " ".join(v.target for v in views)
    assert any(ch.isdigit() for ch in text) and any(ch in ".,:;" for ch in text)
    assert len(set(text.split())) > 150  # varied: nothing to learn by heart
