import itertools
import re

import pytest

from dsocr.errors import InputError
from dsocr.output.grounding import (
    EOS_TEXT,
    Block,
    ParsedOutput,
    figure_boxes,
    normalize_box,
    parse_boxes,
    parse_grounding,
    strip_eos,
    to_pixels,
)

# Shaped like real DeepSeek-OCR 2 output for "<|grounding|>Convert the document to markdown."
REPORT = (
    "<|ref|>title<|/ref|><|det|>[[12, 30, 980, 80]]<|/det|>\n# Annual report\n\n"
    "<|ref|>text<|/ref|><|det|>[[12, 100, 500, 400], [520, 100, 980, 400]]<|/det|>\n"
    "两栏 text, with CJK: 营业收入增长。\n\n"
    "<|ref|>image<|/ref|><|det|>[[100,500,900,800]]<|/det|>\n\n"
    "<|ref|>image_caption<|/ref|><|det|>[[300, 802, 700, 820]]<|/det|>\n"
    "<center>Figure 1: Revenue</center>\n\n"
    "<|ref|>equation<|/ref|><|det|>[[100,830,900,850]]<|/det|>\n\\[\nE = mc^2 \\quad (1)\n\\]\n\n"
    "<|ref|>table<|/ref|><|det|>[[50, 860, 950, 990]]<|/det|>\n<table><tr><td>a</td><td>b</td></tr></table>"
    + EOS_TEXT
)
TAG = re.compile(r"<\|/?(?:ref|det)\|>")


def _summary(parsed: ParsedOutput) -> list[tuple[str, tuple, str]]:
    return [(b.label, b.grid_boxes, b.content) for b in parsed.blocks]


def test_well_formed_output_becomes_blocks_with_pixel_boxes() -> None:
    parsed = parse_grounding(REPORT, (1000, 2000))
    assert parsed.warnings == ()
    labels = ["title", "text", "image", "image_caption", "equation", "table"]
    assert [b.label for b in parsed.blocks] == labels
    assert [b.index for b in parsed.blocks] == list(range(6))
    title, text, image, caption, equation, table = parsed.blocks
    assert title.grid_boxes == ((12, 30, 980, 80),)
    assert title.boxes == ((int(12 / 999 * 1000), int(30 / 999 * 2000),
                            int(980 / 999 * 1000), int(80 / 999 * 2000)),)
    assert title.content == "# Annual report"
    assert text.grid_boxes == ((12, 100, 500, 400), (520, 100, 980, 400))
    assert text.content == "两栏 text, with CJK: 营业收入增长。"
    assert image.content == "" and caption.content == "<center>Figure 1: Revenue</center>"
    assert equation.content == "\\[\nE = mc^2 \\quad (1)\n\\]"
    assert table.content == "<table><tr><td>a</td><td>b</td></tr></table>"  # EOS removed
    assert figure_boxes(parsed.blocks) == image.boxes


def test_blocks_serialise_to_plain_json_types() -> None:
    parsed = parse_grounding(REPORT, (1000, 2000))
    assert parsed.blocks[0].to_dict() == {"index": 0, "label": "title", "boxes": [[12, 60, 980, 160]],
                                          "grid_boxes": [[12, 30, 980, 80]], "content": "# Annual report"}
    record = parsed.to_dict()
    assert record["markdown"] == parsed.markdown and record["warnings"] == [] and len(record["blocks"]) == 6


WELL_FORMED = {
    "free-ocr": ("Just some free OCR text.\nSecond line." + EOS_TEXT,
                 [("text", (), "Just some free OCR text.\nSecond line.")]),
    "free-ocr-cjk-latex": ("第一章 总则\n\n第一条 为了规范……\\[ a^2 + b^2 = c^2 \\]\n",
                           [("text", (), "第一章 总则\n\n第一条 为了规范……\\[ a^2 + b^2 = c^2 \\]")]),
    "text-before-first-tag": ("preamble\n<|ref|>text<|/ref|><|det|>[[0,0,999,999]]<|/det|>\nbody",
                              [("text", (), "preamble"), ("text", ((0, 0, 999, 999),), "body")]),
    "locate-answer": ("<|ref|>the red car<|/ref|><|det|>[[10, 20, 30, 40]]<|/det|>",
                      [("the red car", ((10, 20, 30, 40),), "")]),
    "ref-without-det": ("<|ref|>sub_title<|/ref|>\n## 二、主要业务", [("sub_title", (), "## 二、主要业务")]),
    "space-between-ref-and-det": ("<|ref|>text<|/ref|> <|det|>[[1,2,3,4]]<|/det|>x",
                                  [("text", ((1, 2, 3, 4),), "x")]),
    "single-box-form": ("<|ref|>text<|/ref|><|det|>[1, 2, 3, 4]<|/det|>x", [("text", ((1, 2, 3, 4),), "x")]),
    "whitespace-in-coordinates": ("<|ref|>text<|/ref|><|det|>[[ 1 ,2,\n3, 4 ] , [5,6,7,8]]<|/det|>x",
                                  [("text", ((1, 2, 3, 4), (5, 6, 7, 8)), "x")]),
    "eos-then-newline": ("a\n\n" + EOS_TEXT + "\n", [("text", (), "a")]),
    "eos-inside-is-not-trailing": ("a" + EOS_TEXT + " b", [("text", (), "a" + EOS_TEXT + " b")]),
    "empty": ("", []),
    "only-eos": (EOS_TEXT, []),
}


@pytest.mark.parametrize(("text", "expected"), WELL_FORMED.values(), ids=WELL_FORMED.keys())
def test_well_formed_outputs_parse_without_warnings(text: str, expected: list) -> None:
    parsed = parse_grounding(text, (999, 999))
    assert _summary(parsed) == expected
    assert parsed.warnings == ()


@pytest.mark.parametrize("coords", [
    "[[1, 2, x, 4]]", "[[1, 2, 3]]", "[[1, 2, 3, 4, 5]]", "__import__('os').system('true')", "[[1,2,3,4]",
    "", "[]", "[[]]", "[[1.5, 2, 3, 4]]", "[[1,2,3,4],]", "[[１,2,3,4]]", "[[1,2,3,4]] [[5,6,7,8]]",
    "[[1234567890, 1, 2, 3]]", "((1, 2, 3, 4))", "[[1,2,3,4],[5,6]]",
])
def test_malformed_coordinates_keep_the_block_and_its_content_and_warn(coords: str) -> None:
    table = "<table><tr><td>kept</td></tr></table>"
    parsed = parse_grounding(f"<|ref|>table<|/ref|><|det|>{coords}<|/det|>\n{table}", (100, 100))
    assert [(b.label, b.boxes, b.content) for b in parsed.blocks] == [("table", (), table)]
    assert len(parsed.warnings) == 1
    assert parsed.warnings[0].startswith("block 0: malformed <|det|> coordinates")
    assert repr(coords[:60]) in parsed.warnings[0]


MALFORMED = {
    "cut-in-coordinates": (
        "<|ref|>title<|/ref|><|det|>[[1,2,3,4]]<|/det|>\n# Title\n\n<|ref|>text<|/ref|><|det|>[[10, 20, 3",
        [("title", ((1, 2, 3, 4),), "# Title"), ("text", (), "")],
        "block 1: output cut off inside <|det|>"),
    "cut-after-det": ("<|ref|>text<|/ref|><|det|>", [("text", (), "")], "output cut off inside <|det|>"),
    "cut-in-label": (
        "intro <|ref|>tit", [("text", (), "intro"), ("text", (), "tit")], "block 1: unclosed <|ref|>"),
    "det-never-closed": (
        "<|ref|>title<|/ref|><|det|>[[1,2,3,4]]\n# T\n\n<|ref|>text<|/ref|><|det|>[[5,6,7,8]]<|/det|>\nx",
        [("title", ((1, 2, 3, 4),), "# T"), ("text", ((5, 6, 7, 8),), "x")],
        "block 0: unclosed <|det|>"),
    "det-with-text-never-closed": (
        "<|ref|>text<|/ref|><|det|>hello 世界", [("text", (), "hello 世界")], "its text kept as content"),
    "ref-never-closed": (
        "<|ref|>title\n# T\n\n<|ref|>text<|/ref|><|det|>[[5,6,7,8]]<|/det|>\nx",
        [("text", (), "title\n# T"), ("text", ((5, 6, 7, 8),), "x")],
        "block 0: unclosed <|ref|>"),
    "label-over-a-line-break": (
        "<|ref|>title\n# T\n\ntext<|/ref|><|det|>[[5,6,7,8]]<|/det|>\nx",
        [("text", (), "title\n# T\n\ntext"), ("text", ((5, 6, 7, 8),), "x")],
        "block 0: unclosed <|ref|>"),
    "empty-label": (
        "<|ref|><|/ref|><|det|>[[1,2,3,4]]<|/det|>x", [("text", ((1, 2, 3, 4),), "x")],
        "empty <|ref|> label"),
    "det-without-ref": (
        "<|det|>[[1,2,3,4]]<|/det|>\nx", [("text", ((1, 2, 3, 4),), "x")], "<|det|> without a <|ref|>"),
    "second-det-after-content": (
        "<|ref|>text<|/ref|><|det|>[[1,2,3,4]]<|/det|>x<|det|>[[5,6,7,8]]<|/det|>y",
        [("text", ((1, 2, 3, 4),), "x"), ("text", ((5, 6, 7, 8),), "y")],
        "block 1: <|det|> without"),
    "stray-closing-tags": (
        "a <|/det|>b<|/ref|> c", [("text", (), "a b c")], "stray <|/det|> at character 2 removed"),
    "reversed-and-out-of-range": (
        "<|ref|>text<|/ref|><|det|>[[900, 800, 100, 1200]]<|/det|>x",
        [("text", ((100, 800, 900, 999),), "x")],
        "clamped to 0..999 and ordered"),
    "negative": ("<|ref|>text<|/ref|><|det|>[[-5, 0, 10, 10]]<|/det|>x", [("text", ((0, 0, 10, 10),), "x")],
                 "clamped"),
}


@pytest.mark.parametrize(("text", "expected", "warning"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_and_cut_off_outputs_parse_with_a_warning(text: str, expected: list, warning: str) -> None:
    parsed = parse_grounding(text, (999, 999))
    assert _summary(parsed) == expected
    assert any(warning in w for w in parsed.warnings), parsed.warnings


def _cut_points(text: str) -> list[int]:
    """Every place generation can stop: tags are single tokens, so never inside one."""
    inside = {i for m in TAG.finditer(text) for i in range(m.start() + 1, m.end())}
    return [i for i in range(len(text) + 1) if i not in inside]


def test_output_cut_off_anywhere_parses_and_keeps_every_finished_block() -> None:
    body = REPORT[: -len(EOS_TEXT)]
    full = parse_grounding(body, (1000, 2000)).blocks
    tags = list(TAG.finditer(body))
    open_spans = [(m.end(), n.start()) for m, n in itertools.pairwise(tags)
                  if m.group() in ("<|ref|>", "<|det|>")]
    for cut in _cut_points(body):
        parsed = parse_grounding(body[:cut], (1000, 2000))
        finished = max(len(parsed.blocks) - 1, 0)  # the last block may be the one being written
        assert parsed.blocks[:finished] == full[:finished], cut
        assert [b.index for b in parsed.blocks] == list(range(len(parsed.blocks)))
        assert not any(TAG.search(b.content) for b in parsed.blocks) and not TAG.search(parsed.markdown)
        assert all(0 <= v <= 2000 for b in parsed.blocks for box in b.boxes for v in box)
        if any(start <= cut <= end for start, end in open_spans):  # stopped inside a label or box list
            assert parsed.warnings, cut


def test_strict_box_grammar_and_normalisation() -> None:
    assert parse_boxes("[[900, 800, 100, 1200]]") == ((900, 800, 100, 1200),)  # as written
    assert normalize_box((900, 800, 100, 1200)) == (100, 800, 900, 999)
    assert normalize_box((-3, 5, 2000, 4)) == (0, 4, 999, 5)
    assert parse_boxes("[1, 2, 3, 4]") == ((1, 2, 3, 4),)
    assert parse_boxes(" [[1,2,3,4],[5, 6, 7, 8]] ") == ((1, 2, 3, 4), (5, 6, 7, 8))
    assert parse_boxes("[[007, 2, 3, 4]]") == ((7, 2, 3, 4),)
    assert parse_boxes("[[1,2,3,4]]x") is None and parse_boxes("[[1,2,3,4]") is None


def test_grid_to_pixels_truncates_like_the_reference() -> None:
    assert to_pixels((999, 999, 999, 999), 1700, 2200) == (1700, 2200, 1700, 2200)
    assert to_pixels((0, 0, 0, 0), 1700, 2200) == (0, 0, 0, 0)
    assert to_pixels((500, 500, 500, 500), 1700, 2200) == (int(500 / 999 * 1700), int(500 / 999 * 2200)) * 2
    assert to_pixels((1, 1, 1, 1), 998, 998) == (0, 0, 0, 0)  # 1/999*998 = 0.999 truncates to 0


def test_figure_boxes_count_every_box_of_every_image_block_in_reading_order() -> None:
    text = ("<|ref|>image<|/ref|><|det|>[[0,0,9,9],[10,10,19,19]]<|/det|>\n"
            "<|ref|>text<|/ref|><|det|>[[1,1,2,2]]<|/det|>\nx\n"
            "<|ref|>image<|/ref|><|det|>bad<|/det|>\n"
            "<|ref|>image<|/ref|><|det|>[[20,20,29,29]]<|/det|>")
    blocks = parse_grounding(text, (999, 999)).blocks
    assert figure_boxes(blocks) == ((0, 0, 9, 9), (10, 10, 19, 19), (20, 20, 29, 29))


def test_eos_is_stripped_only_at_the_end() -> None:
    assert strip_eos("abc" + EOS_TEXT) == "abc"
    assert strip_eos("abc" + EOS_TEXT + EOS_TEXT + "\n") == "abc"
    assert strip_eos(EOS_TEXT + "abc") == EOS_TEXT + "abc"


def test_non_positive_image_size_is_an_input_error() -> None:
    with pytest.raises(InputError, match="image_size"):
        parse_grounding("x", (0, 10))


def test_blocks_are_immutable() -> None:
    block = parse_grounding("x", (1, 1)).blocks[0]
    assert isinstance(block, Block)
    with pytest.raises(AttributeError):
        block.label = "title"  # type: ignore[misc]
