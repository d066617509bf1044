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
    baselines = []
    for view in views:
        assert view.image.size == (640, 640) and 1 <= len(view.rows) <= lines.rows_per_view(640)
        assert view.target == "\n".join(view.rows) and all(r and "\n" not in r for r in view.rows)
        ink = np.asarray(view.image.convert("L")) < lines.INK_LEVEL
        for row in range(lines.rows_per_view(640)):
            band = ink[row * lines.ROW:(row + 1) * lines.ROW]
            if row >= len(view.rows):
                assert not band.any()  # unused rows are blank
                continue
            _, xs = np.nonzero(band)
            baselines.append(lines.line_scaling(view.image.crop((0, row * lines.ROW, 640, (row + 1) * lines.ROW))))
            assert xs.min() >= lines.MARGIN - 1 and xs.max() < 640 - lines.MARGIN + 1
    # scaled again as they lie, the rows keep their x-height and baseline (a few light or blurred ones drift)
    near = [abs(s.scale - 1) < 0.15 and abs(s.top - (lines.BASELINE - lines.BASELINE * s.scale)) < 4
            for s in baselines]
    assert sum(near) >= 0.85 * len(near)


def test_glyphs_are_the_rows_characters_in_order_on_their_ink(views: list) -> None:
    for view in views:
        ink = np.asarray(view.image.convert("L")) < 200
        chars = "".join(ch for ch, _, _ in view.glyphs)
        text = [row for row in view.rows if not row.startswith("\\[ ")]  # formulas: drawn, no glyph positions
        assert chars == "".join("".join(text).split())  # every character but spaces, in reading order
        assert len(view.formulas) == len(view.rows) - len(text)
        rows = [int(y // lines.ROW) for _, _, y in view.glyphs]
        assert rows == sorted(rows)
        near = 0
        for _, x, y in view.glyphs:
            x0, y0 = int(x), int(y)
            near += ink[y0 - 22:y0 + 22, max(0, x0 - 8):x0 + 8].any()
        assert near == len(view.glyphs)  # each centre has ink within half a character


def test_some_rows_are_display_formulas_read_as_latex_in_their_row(views: list) -> None:
    formulas = [(view, row) for view in views for row, text in enumerate(view.rows) if text.startswith("\\[ ")]
    assert formulas and all(text.endswith(" \\]") for view in views for text in view.rows if text.startswith("\\["))
    for view, row in formulas:  # each formula's box is its row, and has ink
        (box,) = [b for b in view.formulas if b[1] // lines.ROW == row]
        assert box[3] - box[1] == lines.ROW and (np.asarray(view.image.crop(box).convert("L")) < 128).any()


def test_text_is_prose_words_numbers_and_labelled_lines(views: list) -> None:
    text = " ".join(v.target for v in views)
    assert any(ch.isdigit() for ch in text) and any(ch in ".,:;" for ch in text)
    assert len(set(text.split())) > 150  # varied: nothing to learn by heart


def test_some_rows_are_prose_shuffled_with_its_punctuation(views: list) -> None:
    """A period before a lower-case word ("thereof. non-virtual"): read as printed, not as prose would go."""
    import re

    rows = [row for view in views for row in view.rows]
    assert sum(bool(re.search(r"[a-z]\. [a-z]", row)) for row in rows) >= 3


def test_a_view_is_one_paper_and_computer_modern_only_draws_what_it_encodes(views: list) -> None:
    from dsocr.training import strips

    for view in views:  # the paper around the rows is the paper under them: no patch edges to read
        grey = np.asarray(view.image.convert("L"))
        assert grey[:, -4:].min() == grey[:, -4:].max()
    assert {"<", ">", "{", "|", "_", '"'}.isdisjoint(strips._CM_SAFE)
    from random import Random

    faces = {strips._font(Random(i), 'x_{a} "b"').path.rsplit("/", 1)[-1] for i in range(200)}
    assert not any(face.startswith("cm") for face in faces)  # text with unsafe characters: never TeX fonts
    faces = {strips._font(Random(i), "plain words 12").path.rsplit("/", 1)[-1] for i in range(200)}
    assert {"cmr10.ttf", "cmss10.ttf", "cmtt10.ttf"} <= faces


def test_rows_mix_words_the_manual_does_not_have() -> None:
    from dsocr.training import corpus

    manual = set(corpus.words())
    words = {w.strip(".,;:()\"'") for seed in range(40) for w in generate_strips(seed, 640).target.split()}
    unknown = {w for w in words if w.isalpha() and w not in manual}
    assert len(unknown) > len(words) / 4
    docs = corpus.docstrings()
    assert len(docs) > 1000 and docs == corpus.docstrings() and all(len(d) >= 40 and d.isascii() for d in docs)


def test_some_rows_are_typeset_with_what_print_has_beyond_ascii() -> None:
    text = " ".join(generate_strips(seed, 640).target for seed in range(120))
    assert {"’", "é"} & set(text) and any(ch in text for ch in "“”–—•")
    assert sum(not ch.isascii() for ch in text) < len(text) / 50  # a seasoning, not the meal


def test_some_views_are_a_tables_cells_one_short_row_each() -> None:
    """As the pipeline packs a table (one cell a row): runs of one-word rows, where the model lost its place."""
    views = [generate_strips(seed, 640) for seed in range(60)]
    columns = [v for v in views if len(v.rows) >= 6 and all(len(r.split()) <= 3 for r in v.rows)]
    assert len(columns) >= 3
    words = [w for v in columns for r in v.rows for w in r.split()]
    assert any(w.isalpha() for w in words) and any(w[:1].isdigit() for w in words)
