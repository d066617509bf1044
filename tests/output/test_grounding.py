import pytest

from dsocr.output.grounding import EOS_TEXT, parse_boxes, parse_grounding, to_pixels

DOC = (
    "<|ref|>title<|/ref|><|det|>[[12, 30, 980, 80]]<|/det|>\n# Annual report\n\n"
    "<|ref|>text<|/ref|><|det|>[[12, 100, 500, 400], [520, 100, 980, 400]]<|/det|>\n两栏 text, with CJK.\n\n"
    "<|ref|>image<|/ref|><|det|>[[100,500,900,800]]<|/det|>\n\n"
    "<|ref|>equation<|/ref|><|det|>[[100,810,900,850]]<|/det|>\n\\[ E = mc^2 \\]\n\n"
    "<|ref|>table<|/ref|><|det|>[[50, 860, 950, 990]]<|/det|>\n<table><tr><td>a</td><td>b</td></tr></table>"
    + EOS_TEXT
)


def test_well_formed_output_becomes_blocks_with_pixel_boxes() -> None:
    parsed = parse_grounding(DOC, (1000, 2000))
    assert parsed.warnings == ()
    assert [b.label for b in parsed.blocks] == ["title", "text", "image", "equation", "table"]
    assert [b.index for b in parsed.blocks] == [0, 1, 2, 3, 4]
    title, text, image, equation, table = parsed.blocks
    assert title.grid_boxes == ((12, 30, 980, 80),)
    assert title.boxes == ((int(12 / 999 * 1000), int(30 / 999 * 2000), int(980 / 999 * 1000), int(80 / 999 * 2000)),)
    assert title.content == "# Annual report"
    assert len(text.boxes) == 2 and text.content == "两栏 text, with CJK."
    assert image.content == "" and equation.content == "\\[ E = mc^2 \\]"
    assert table.content == "<table><tr><td>a</td><td>b</td></tr></table>"  # EOS removed


def test_plain_text_without_tags_is_one_text_block() -> None:
    parsed = parse_grounding("Just some free OCR text.\nSecond line." + EOS_TEXT, (100, 100))
    assert [(b.label, b.boxes, b.content) for b in parsed.blocks] == [
        ("text", (), "Just some free OCR text.\nSecond line.")]


def test_text_before_the_first_tag_is_kept() -> None:
    parsed = parse_grounding("preamble\n<|ref|>text<|/ref|><|det|>[[0,0,999,999]]<|/det|>\nbody", (999, 999))
    assert [(b.label, b.content) for b in parsed.blocks] == [("text", "preamble"), ("text", "body")]
    assert parsed.blocks[1].boxes == ((0, 0, 999, 999),)


@pytest.mark.parametrize("coords", ["[[1, 2, x, 4]]", "[[1, 2, 3]]", "__import__('os')", "[[1,2,3,4]", "", "[[]]"])
def test_malformed_coordinates_keep_the_content_and_warn(coords: str) -> None:
    parsed = parse_grounding(f"<|ref|>text<|/ref|><|det|>{coords}<|/det|>\nkept content", (100, 100))
    assert [(b.label, b.boxes, b.content) for b in parsed.blocks] == [("text", (), "kept content")]
    assert len(parsed.warnings) == 1 and "malformed" in parsed.warnings[0]


def test_output_cut_off_inside_a_tag_still_parses_with_a_warning() -> None:
    cut = "<|ref|>title<|/ref|><|det|>[[1,2,3,4]]<|/det|>\n# Title\n\n<|ref|>text<|/ref|><|det|>[[10, 20, 3"
    parsed = parse_grounding(cut, (999, 999))
    assert [b.label for b in parsed.blocks] == ["title", "text"] and parsed.blocks[0].content == "# Title"
    assert any("unclosed" in w for w in parsed.warnings)
    unclosed_ref = parse_grounding("intro <|ref|>tit", (999, 999))
    assert [b.content for b in unclosed_ref.blocks] == ["intro", "tit"] and unclosed_ref.warnings


def test_boxes_are_clamped_and_ordered() -> None:
    assert parse_boxes("[[900, 800, 100, 1200]]") == ((100, 800, 900, 999),)
    assert parse_boxes("[1, 2, 3, 4]") == ((1, 2, 3, 4),)  # single-box form
    assert parse_boxes(" [[1,2,3,4],[5, 6, 7, 8]] ") == ((1, 2, 3, 4), (5, 6, 7, 8))
    assert parse_boxes("[[-1, 2, 3, 4]]") is None


def test_grid_to_pixels_truncates_like_the_reference() -> None:
    assert to_pixels((999, 999, 999, 999), 1700, 2200) == (1700, 2200, 1700, 2200)
    assert to_pixels((500, 500, 500, 500), 1700, 2200) == (int(500 / 999 * 1700), int(500 / 999 * 2200)) * 2


def test_ref_without_det_is_a_block_without_boxes() -> None:
    parsed = parse_grounding("<|ref|>sub_title<|/ref|>\n## Heading", (10, 10))
    assert [(b.label, b.boxes, b.content) for b in parsed.blocks] == [("sub_title", (), "## Heading")]
    assert parsed.blocks[0].to_dict()["boxes"] == []
