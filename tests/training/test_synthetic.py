import math
import re
from collections import Counter
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dsocr.errors import ConfigError
from dsocr.output.grounding import parse_grounding
from dsocr.training import corpus
from dsocr.training.synthetic import (
    SyntheticConfig,
    SyntheticPage,
    generate_page,
    plain_text,
    to_grid,
)

FLAT = SyntheticConfig(augment=0.0)  # no scan effects: pixels are exactly what was drawn
SEEDS = range(24)
LABELS = {"title", "sub_title", "text", "table", "table_caption", "equation", "image", "image_caption",
          "header", "footer"}


@pytest.fixture(scope="module")
def pages() -> list[SyntheticPage]:
    return [generate_page(seed) for seed in SEEDS]


@pytest.fixture(scope="module")
def flat_pages() -> list[SyntheticPage]:
    return [generate_page(seed, FLAT) for seed in SEEDS]


@pytest.fixture(scope="module")
def bare_pages() -> tuple[list[SyntheticPage], list[SyntheticPage]]:
    """The same ten layouts without header and footer (the header's rule is drawn but is no block), scanned
    and not scanned: augmentation runs after the layout, so only pixels and boxes differ."""
    scanned, flat = (SyntheticConfig(augment=a, p_header_footer=0.0) for a in (1.0, 0.0))
    return [generate_page(s, scanned) for s in range(10)], [generate_page(s, flat) for s in range(10)]


def _dark(image: Image.Image, threshold: int = 110) -> np.ndarray:
    return np.asarray(image.convert("L")) < threshold


def _assert_round_trip(page: SyntheticPage) -> None:
    width, height = page.image.size
    parsed = parse_grounding(page.grounding_target(), page.image.size)
    assert parsed.warnings == ()
    assert [b.label for b in parsed.blocks] == [b.label for b in page.blocks]
    assert [b.content for b in parsed.blocks] == [b.content for b in page.blocks]
    step = (math.ceil(width / 999), math.ceil(height / 999)) * 2  # one grid step in whole pixels
    for parsed_block, block in zip(parsed.blocks, page.blocks):
        assert parsed_block.grid_boxes == (to_grid(block.box, page.image.size),)
        (box,) = parsed_block.boxes
        assert all(abs(a - b) <= s for a, b, s in zip(box, block.box, step)), (box, block.box)
        # tighter: the grid rounds to nearest, the reader truncates: each pixel comes back, or the one before
        assert all(0 <= b - a <= 1 for a, b in zip(box, block.box)), (box, block.box)


def _assert_on_page(page: SyntheticPage) -> None:
    width, height = page.image.size
    for block in page.blocks:
        x1, y1, x2, y2 = block.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, block


def test_same_seed_gives_identical_image_and_targets() -> None:
    first = generate_page(7)
    generate_page(8)  # caches warmed by another page must not change anything
    again = generate_page(7)
    assert again.image.mode == "RGB" and again.image.size == first.image.size
    assert again.image.tobytes() == first.image.tobytes()
    assert again.grounding_target() == first.grounding_target()
    assert again.plain_target() == first.plain_target()
    other = generate_page(8)
    assert other.grounding_target() != first.grounding_target()
    assert other.image.tobytes() != first.image.tobytes()


def test_grounding_target_round_trips_through_the_parser(pages: list[SyntheticPage]) -> None:
    for page in pages:
        _assert_round_trip(page)


def test_grounding_target_has_the_official_block_layout(pages: list[SyntheticPage]) -> None:
    box = r"\[\[\d{1,3}, \d{1,3}, \d{1,3}, \d{1,3}\]\]"
    block = re.compile(rf"<\|ref\|>[a-z_]+<\|/ref\|><\|det\|>{box}<\|/det\|>\n")
    for page in pages:
        target = page.grounding_target()
        heads = block.findall(target)
        assert len(heads) == len(page.blocks) and target.startswith(heads[0])
        assert "\n\n<|ref|>" in target or len(page.blocks) == 1
        assert target.count("<|ref|>") == len(page.blocks)


def test_all_labels_appear_over_a_few_dozen_pages(pages: list[SyntheticPage]) -> None:
    assert {b.label for page in pages for b in page.blocks} == LABELS


def test_boxes_lie_on_the_page_and_hold_ink(flat_pages: list[SyntheticPage]) -> None:
    for page in flat_pages:
        _assert_on_page(page)
        dark = _dark(page.image, threshold=160)
        for block in page.blocks:
            x1, y1, x2, y2 = block.box
            assert dark[y1:y2, x1:x2].sum() > 0, block


def test_every_dark_pixel_belongs_to_a_block(bare_pages: tuple[list[SyntheticPage], ...]) -> None:
    for page in bare_pages[1]:
        assert _outside_fraction(page, [b.box for b in page.blocks]) == 0.0


def test_paragraphs_are_corpus_prose_or_its_words_shuffled_and_headings_markdown(
        flat_pages: list[SyntheticPage]) -> None:
    prose = corpus.paragraphs()
    bags = [Counter(p.split()) for p in prose]
    verbatim = shuffled = 0
    for page in flat_pages:
        for block in page.blocks:
            if block.label == "text" and not re.match(r"(- |\d+\. )", block.content):
                if any(block.content in p for p in prose):
                    verbatim += 1
                else:  # a paragraph's words in another order (or a piece of one, split over two columns)
                    words = Counter(block.content.split())
                    assert any(words <= bag for bag in bags), block.content
                    shuffled += 1
            if block.label == "title":
                assert block.content.startswith("# ")
            if block.label == "sub_title":
                assert block.content.startswith("## ")
            if block.label in ("image_caption", "table_caption"):
                assert re.fullmatch(r"<center>(Figure|Table) \d+: .+</center>", block.content, re.DOTALL)
            if block.label == "image":
                assert block.content == ""
    assert verbatim > 10 and shuffled > 10, (verbatim, shuffled)


def test_no_shuffling_when_turned_off() -> None:
    prose = corpus.paragraphs()
    for seed in range(6):
        for block in generate_page(seed, SyntheticConfig(augment=0.0, p_scramble=0.0)).blocks:
            if block.label == "text" and not re.match(r"(- |\d+\. )", block.content):
                assert any(block.content in p for p in prose), block.content


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        assert attrs == [] and tag in ("table", "tr", "td")
        assert self.stack == {"table": [], "tr": ["table"], "td": ["table", "tr"]}[tag]
        self.stack.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag == "td":
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        assert self.stack.pop() == tag

    def handle_data(self, data: str) -> None:
        assert self.stack[-1] == "td", repr(data)  # no text or whitespace between tags
        self.rows[-1][-1] += data


def _line_runs(flags: np.ndarray) -> int:
    """Number of runs of consecutive True values."""
    return int(flags[0]) + int(np.count_nonzero(flags[1:] & ~flags[:-1]))


def test_tables_are_compact_html_with_the_drawn_rows_and_cells(flat_pages: list[SyntheticPage]) -> None:
    tables = [(page, b) for page in flat_pages for b in page.blocks if b.label == "table"]
    assert len(tables) >= 3
    for page, block in tables:
        parser = _TableParser()
        parser.feed(block.content)
        assert parser.stack == []
        rows, cols = len(parser.rows), len(parser.rows[0])
        assert rows >= 2 and cols >= 2 and all(len(r) == cols and all(r) for r in parser.rows)
        # ruling lines drawn across the whole table: rows + 1 and cols + 1 (grid) or 3 and 0 (rules only)
        dark = _dark(page.image.crop(block.box), threshold=160)
        horizontal = _line_runs(dark.mean(axis=1) > 0.9)
        vertical = _line_runs(dark.mean(axis=0) > 0.9)
        assert (horizontal, vertical) in ((rows + 1, cols + 1), (3, 0)), (horizontal, vertical, rows, cols)


def test_formula_targets_are_display_latex_that_mathtext_renders(flat_pages: list[SyntheticPage]) -> None:
    from matplotlib.mathtext import MathTextParser

    equations = [b.content for page in flat_pages for b in page.blocks if b.label == "equation"]
    assert len(equations) >= 5 and len(set(equations)) == len(equations)  # generated, not a short list
    parser = MathTextParser("path")
    for content in equations:
        match = re.fullmatch(r"\\\[ (.+?)(?: \\quad \(\d+\))? \\\]", content)
        assert match, content
        parser.parse(f"${match.group(1)}$")  # raises on LaTeX mathtext cannot read


def test_plain_target_has_every_text_in_order_and_no_tags(pages: list[SyntheticPage]) -> None:
    for page in pages:
        plain = page.plain_target()
        assert not re.search(r"<\|/?(ref|det)\|>|</?(table|tr|td|center)>|^#", plain, re.MULTILINE)
        position = 0
        for block in page.blocks:
            text = plain_text(block)
            if block.label == "image":
                assert text == ""
                continue
            if block.label in ("text", "header", "footer", "equation"):
                assert text == block.content
            if block.label == "table":
                assert text.split() == re.findall(r"<td>(.*?)</td>", block.content)
            position = plain.index(text, position) + len(text)  # ValueError if missing or out of order


def test_augmented_pages_round_trip_with_boxes_that_follow_the_rotation(
        bare_pages: tuple[list[SyntheticPage], ...]) -> None:
    stale = []
    for seed, (page, flat) in enumerate(zip(*bare_pages)):
        _assert_round_trip(page)
        _assert_on_page(page)
        assert page.image.tobytes() != flat.image.tobytes()
        assert [(b.label, b.content) for b in page.blocks] == [(b.label, b.content) for b in flat.blocks]
        assert _outside_fraction(page, [b.box for b in page.blocks]) == 0.0, seed
        stale.append(_outside_fraction(page, [b.box for b in flat.blocks]))
    assert max(stale) > 0.005  # some pages were rotated enough for unrotated boxes to miss ink


def test_two_columns_are_read_column_by_column() -> None:
    config = SyntheticConfig(columns=(0.0, 1.0), font_sizes=(14, 16), p_title=0.0, p_header_footer=0.0,
                             augment=0.0)
    for seed in range(4):
        page = generate_page(seed, config)
        middle = page.image.width / 2
        sides = [b.box[0] >= middle for b in page.blocks]
        assert sides == sorted(sides) and sides[0] is False and sides[-1] is True, sides


@pytest.mark.parametrize("changes", [{"augment": 1.5}, {"width": (900, 800)}, {"fonts": ("comic",)},
                                     {"columns": (0.0, 0.0)}, {"max_rotation": 45.0}])
def test_config_rejects_invalid_values(changes: dict) -> None:
    with pytest.raises(ConfigError):
        SyntheticConfig(**changes)


def _outside_fraction(page: SyntheticPage, boxes: list[tuple[int, int, int, int]]) -> float:
    """Share of dark pixels more than one pixel away from every box."""
    inside = Image.new("1", page.image.size, 0)
    draw = ImageDraw.Draw(inside)
    for x1, y1, x2, y2 in boxes:
        draw.rectangle((x1 - 1, y1 - 1, x2 + 1, y2 + 1), fill=1)
    dark = _dark(page.image)
    return float((dark & ~np.asarray(inside)).sum() / max(1, dark.sum()))
