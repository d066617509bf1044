"""Pages read by a model that reads lines: the answer assembled from row texts, and the whole path (layout,
line views, generation, assembly) through `OCR` and `dsocr convert` on a tiny random-weight lines model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dsocr.api import OCR, PreparedLines, native_bf16
from dsocr.cli import main
from dsocr.engine.engine import EngineConfig
from dsocr.errors import ConfigError
from dsocr.generation.params import SamplingParams
from dsocr.output.grounding import to_pixels
from dsocr.pipeline import layout, line_reader
from dsocr.pipeline.layout import Line, Region
from dsocr.pipeline.line_reader import GROUNDING, PLAIN, LinePage, Segment
from dsocr.processing.lines import rows_per_view
from dsocr.server.engine import Engine
from dsocr.testing.fixtures import tiny_config, write_random_checkpoint

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VIEW = 384  # the lines model's base_size: 6 rows of 64 px
SHORT = SamplingParams(max_new_tokens=16)
PAGE = (800, 1000)


def _line(y: int) -> Line:
    return Line((110, y, 690, y + 20))


# Regions in reading order with their lines, and the texts the model read for their streams, in the same order.
REGIONS = (
    Region("header", (100, 10, 700, 30), lines=(_line(10),)),
    Region("title", (100, 50, 700, 100), lines=(_line(60),)),
    Region("text", (100, 120, 700, 220), lines=(_line(120), _line(150), _line(180))),
    Region("table", (100, 240, 700, 340), cells=(((_line(240),), (_line(240),)),
                                                 ((_line(280),), (_line(280), _line(300))))),
    Region("image", (100, 360, 700, 600), lines=(_line(400),)),  # text inside a figure is not read
    Region("text", (100, 610, 700, 640), lines=(_line(610),)),
    Region("sub_title", (100, 660, 700, 690), lines=(_line(660),)),
    Region("text", (100, 700, 700, 740), lines=(_line(700), _line(720))),
    Region("footer", (380, 960, 420, 990), lines=(_line(960),)),
)
# One text per stream: a region's lines are read as one run of text, a table's cells one by one.
TEXTS = ("Annual report 2024", "Results", "The model reads a page line by line, with hyphen- ation kept.",
         "Item", "Price", "Apple", "1.25 each", "Figure 3: accuracy by page.", "Method",
         "Table 2 lists the prices.", "7")


def test_the_grounding_answer_has_one_block_per_region_with_grid_boxes_tables_and_captions() -> None:
    text = line_reader.grounding_text(REGIONS, TEXTS, PAGE)
    assert text == (
        "<|ref|>header<|/ref|><|det|>[[125, 10, 874, 30]]<|/det|>\nAnnual report 2024\n\n"
        "<|ref|>title<|/ref|><|det|>[[125, 50, 874, 100]]<|/det|>\n# Results\n\n"
        "<|ref|>text<|/ref|><|det|>[[125, 120, 874, 220]]<|/det|>\n"
        "The model reads a page line by line, with hyphen- ation kept.\n\n"
        "<|ref|>table<|/ref|><|det|>[[125, 240, 874, 340]]<|/det|>\n"
        "<table><tr><td>Item</td><td>Price</td></tr><tr><td>Apple</td><td>1.25 each</td></tr></table>\n\n"
        "<|ref|>image<|/ref|><|det|>[[125, 360, 874, 599]]<|/det|>\n\n\n"
        "<|ref|>image_caption<|/ref|><|det|>[[125, 609, 874, 639]]<|/det|>\n"
        "<center>Figure 3: accuracy by page.</center>\n\n"  # centred on its figure, as the official model writes
        "<|ref|>sub_title<|/ref|><|det|>[[125, 659, 874, 689]]<|/det|>\n## Method\n\n"
        "<|ref|>table_caption<|/ref|><|det|>[[125, 699, 874, 739]]<|/det|>\nTable 2 lists the prices.\n\n"
        "<|ref|>footer<|/ref|><|det|>[[475, 959, 524, 989]]<|/det|>\n7"
    )


def test_only_a_caption_centred_on_the_figure_or_table_next_to_it_is_wrapped_in_center() -> None:
    figure = Region("image", (100, 100, 700, 400))
    def caption(x1: int, x2: int) -> Region:
        return Region("text", (x1, 410, x2, 430), lines=(Line((x1, 410, x2, 430)),))
    texts = ["Figure 1: a chart."]
    for box, centred in (((300, 500), True), ((290, 500), True), ((100, 400), False), ((100, 700), True)):
        text = line_reader.grounding_text((figure, caption(*box)), texts, PAGE)
        assert text.endswith("\n<center>Figure 1: a chart.</center>" if centred else "\nFigure 1: a chart."), box
    # Above a table too (a table's caption comes first); not beside a text block.
    table = Region("table", (100, 440, 700, 600), lines=(Line((110, 450, 690, 470)),))
    text = line_reader.grounding_text((caption(300, 500), table), ["Table 1: prices.", "x"], PAGE)
    assert "<center>Table 1: prices.</center>" in text
    paragraph = Region("text", (100, 440, 700, 600), lines=(Line((110, 450, 690, 470)),))
    text = line_reader.grounding_text((caption(300, 500), paragraph), ["Table 1: prices.", "x"], PAGE)
    assert "center" not in text


def test_an_equations_number_beside_it_is_joined_to_it_as_the_official_model_writes_one() -> None:
    def region(label: str, box: tuple[int, int, int, int]) -> Region:
        return Region(label, box, lines=(Line(box),))
    equation, number = region("text", (300, 400, 500, 440)), region("sub_title", (650, 408, 690, 430))
    below = region("text", (650, 450, 690, 470))  # a "(2)" on the next line is not this equation's
    texts = [r"\[ E = m c^2 \]", "(12)", "(2)"]
    text = line_reader.grounding_text((equation, number, below), texts, PAGE)
    assert text == ("<|ref|>equation<|/ref|><|det|>[[375, 400, 862, 440]]<|/det|>\n\\[ E = m c^2 \\quad (12) \\]\n\n"
                    "<|ref|>text<|/ref|><|det|>[[812, 450, 862, 470]]<|/det|>\n(2)")
    assert line_reader.plain_text((equation, number, below), texts) == "\\[ E = m c^2 \\quad (12) \\]\n\n(2)"
    # Not a paragraph's: "(12)" beside text stays a block of its own.
    plain = line_reader.grounding_text((equation, number), ["E is m c squared", "(12)"], PAGE)
    assert plain.count("<|ref|>") == 2 and plain.endswith("\n## (12)")


def test_an_equation_is_boxed_at_its_ink_and_other_blocks_as_their_type() -> None:
    equation = Region("text", (300, 392, 500, 450), lines=(Line((300, 400, 500, 440)),))  # boxed as typeset
    paragraph = Region("text", (100, 480, 700, 530), lines=(Line((100, 486, 700, 524)),))
    ink = [(300, 400, 500, 440), (100, 486, 700, 524)]
    text = line_reader.grounding_text((equation, paragraph), [r"\[ x = 1 \]", "Then"], PAGE, ink)
    assert text == ("<|ref|>equation<|/ref|><|det|>[[375, 400, 624, 440]]<|/det|>\n\\[ x = 1 \\]\n\n"
                    "<|ref|>text<|/ref|><|det|>[[125, 480, 874, 529]]<|/det|>\nThen")


def test_pieces_the_layout_cut_off_an_equation_join_it_and_their_text_is_dropped() -> None:
    def region(label: str, box: tuple[int, int, int, int]) -> Region:
        return Region(label, box, lines=() if label == "image" else (Line(box),))
    regions = (region("text", (300, 400, 500, 460)),  # the formula's main line
               region("text", (380, 428, 420, 431)),  # its fraction's bar, read "- -"
               region("image", (450, 405, 520, 455)),  # its radical, taken for a figure
               region("text", (300, 470, 310, 490)),  # "m" below it: not inside, a block of its own
               region("text", (300, 500, 700, 540)))  # a paragraph
    texts = [r"\[ x = \frac{a}{b} \]", "- -", "m", "Then"]
    text = line_reader.grounding_text(regions, texts, PAGE)
    assert text == ("<|ref|>equation<|/ref|><|det|>[[375, 400, 649, 460]]<|/det|>\n\\[ x = \\frac{a}{b} \\]\n\n"
                    "<|ref|>text<|/ref|><|det|>[[375, 470, 387, 490]]<|/det|>\nm\n\n"
                    "<|ref|>text<|/ref|><|det|>[[375, 500, 874, 539]]<|/det|>\nThen")
    assert line_reader.plain_text(regions, texts) == "\\[ x = \\frac{a}{b} \\]\n\nm\n\nThen"
    # Beside text, nothing is a piece: "- -" stays.
    assert "- -" in line_reader.grounding_text(regions, ["x is a over b", "- -", "m", "Then"], PAGE)


def test_a_caption_set_like_a_heading_is_a_caption_and_a_heading_naming_a_figure_stays_a_heading() -> None:
    heading = Region("sub_title", (100, 100, 300, 140), lines=(Line((100, 100, 300, 140)),))
    blocks = [line_reader.region_content(heading, iter([text])) for text in
              ("Figure 1: Share of pages sent to review.", "Table 2. Prices", "Figure 3 and what it shows")]
    assert blocks == [("image_caption", "Figure 1: Share of pages sent to review."),
                      ("table_caption", "Table 2. Prices"), ("sub_title", "## Figure 3 and what it shows")]


def test_a_title_with_a_section_number_is_a_section_heading() -> None:
    title = Region("title", (100, 100, 300, 140), lines=(Line((100, 100, 300, 140)),))
    assert line_reader.region_content(title, iter(["4. Error analysis"])) == ("sub_title", "## 4. Error analysis")
    assert line_reader.region_content(title, iter(["2.3 Results"])) == ("sub_title", "## 2.3 Results")
    assert line_reader.region_content(title, iter(["Quarterly Report"])) == ("title", "# Quarterly Report")
    assert line_reader.region_content(title, iter(["2024 in review"])) == ("title", "# 2024 in review")


def test_a_bulleted_list_read_as_one_run_of_text_becomes_markdown_items() -> None:
    region = Region("text", (100, 100, 300, 200), lines=(Line((100, 100, 300, 120)), Line((100, 130, 300, 150))))
    read = "\u2022 Microsoft Office Suite: dominant \u2022 OpenOffice: free and open"
    items = "- Microsoft Office Suite: dominant\n- OpenOffice: free and open"
    assert line_reader.region_content(region, iter([read])) == ("text", items)
    assert line_reader.plain_text([region], [read]) == items
    assert line_reader.region_content(region, iter(["A dot \u2022 in a sentence"]))[1] == "A dot \u2022 in a sentence"
    numbered = "1. Open the file 2. Read 3 pages 3. Close it"
    assert line_reader.plain_text([region], [numbered]) == "1. Open the file\n2. Read 3 pages\n3. Close it"
    assert line_reader.plain_text([region], ["1. Open it 3. times"]) == "1. Open it 3. times"  # 2 comes first
    dashed = "- Extend the pipeline to multi-column newspapers. - Publish the set - all of it. - Reduce the time"
    assert line_reader.plain_text([region], [dashed]) == (
        "- Extend the pipeline to multi-column newspapers.\n- Publish the set - all of it.\n- Reduce the time")
    assert line_reader.plain_text([region], ["A range - Two to three"]) == "A range - Two to three"


def test_a_region_read_as_a_display_formula_is_an_equation_block() -> None:
    regions = (Region("sub_title", (100, 100, 300, 140), lines=(Line((100, 100, 300, 140)),)),
               Region("text", (100, 150, 300, 170), lines=(Line((100, 150, 300, 170)),)))
    texts = [r"\[ E = m c^2 \]", r"where \[ c \] is the speed of light"]
    assert line_reader.grounding_text(regions, texts, (400, 400)) == (
        "<|ref|>equation<|/ref|><|det|>[[250, 250, 749, 350]]<|/det|>\n\\[ E = m c^2 \\]\n\n"
        "<|ref|>text<|/ref|><|det|>[[250, 375, 749, 425]]<|/det|>\nwhere \\[ c \\] is the speed of light")


def test_the_plain_answer_separates_regions_by_blank_lines_and_table_rows_by_lines() -> None:
    assert line_reader.plain_text(REGIONS, TEXTS) == (
        "Annual report 2024\n\nResults\n\nThe model reads a page line by line, with hyphen- ation kept.\n\n"
        "Item Price\nApple 1.25 each\n\nFigure 3: accuracy by page.\n\nMethod\n\n"
        "Table 2 lists the prices.\n\n7"
    )


def test_rows_missing_from_a_view_answer_are_empty_and_extra_lines_join_the_last_row() -> None:
    assert line_reader.split_rows("one\ntwo\n", 3) == (["one", "two", ""], 1)
    assert line_reader.split_rows("one\ntwo\nthree\nfour", 2) == (["one", "two three four"], 0)
    assert line_reader.split_rows("a <|ref|>x<|/ref|>", 1) == (["a x"], 0)  # no forged blocks


def _marked_view(marks: list[int], paper: tuple[int, int, int] = (250, 250, 250)) -> Image.Image:
    """A view whose row r holds a block of grey marks[r]: what `_reader` reads as that row's text."""
    view = Image.new("RGB", (VIEW, VIEW), paper)
    for row, grey in enumerate(marks):
        view.paste((grey,) * 3, (8, row * 64 + 20, 40, row * 64 + 44))
    return view


def _reader(calls: list[list[int]], loses_place_at: int) -> line_reader.ViewReader:
    """Reads a view's marked rows, one line each, but adds a line of junk when it has `loses_place_at` rows or
    more (as the model loses its place in a run of one-word rows)."""
    def read(jobs):
        calls.append([v for v, _ in jobs])
        answers = []
        for _, image in jobs:
            marks = [image.getpixel((20, row * 64 + 32))[0] for row in range(VIEW // 64)]
            rows = [f"mark {m}" for m in marks if m != image.getpixel((VIEW - 1, VIEW - 1))[0]]
            answers.append("\n".join(rows + (["= = ch ch"] if len(rows) >= loses_place_at else [])))
        return answers
    return read


def test_a_misread_view_is_read_again_as_two_views_of_half_its_rows() -> None:
    views = [_marked_view([10, 20, 30, 40, 50, 60]), _marked_view([70, 80]), _marked_view([90, 100, 110, 120, 130])]
    rows = [6, 2, 5]
    first = ["mark 10\nmark 20\n= = ch\nch\nmark 30\nmark 40\nmark 50", "mark 70\nmark 80", "mark 90"]
    assert [line_reader.misread(t, r) for t, r in zip(first, rows)] == [True, False, True]
    assert not line_reader.misread("one\ntwo\n", 2)  # a final newline is not a line
    calls: list[list[int]] = []
    texts = line_reader.reread(views, rows, first, _reader(calls, loses_place_at=4), [(250, 250, 250)] * 3)
    # Views 0 and 2 are read again in halves (3 + 3 and 3 + 2 rows), as one batch; view 1 is not read again.
    assert calls == [[0, 0, 2, 2]]
    assert texts == ["\n".join(f"mark {m}" for m in (10, 20, 30, 40, 50, 60)), first[1],
                     "\n".join(f"mark {m}" for m in (90, 100, 110, 120, 130))]
    # A half misread too is taken as a view's answer is (extra lines join its last row), and a view of one row
    # is never read again: its answer is that row's, however many lines.
    calls.clear()
    texts = line_reader.reread(views, rows, first, _reader(calls, loses_place_at=3), [(250, 250, 250)] * 3)
    assert texts[0] == "mark 10\nmark 20\nmark 30 = = ch ch\nmark 40\nmark 50\nmark 60 = = ch ch"
    calls.clear()
    assert line_reader.reread([views[1]], [1], ["a\nb"], _reader(calls, loses_place_at=1), [(250,) * 3]) == ["a\nb"]
    assert calls == []


def test_rows_moved_into_a_view_of_their_own_keep_their_pixels_and_the_paper() -> None:
    view = _marked_view([10, 20, 30], paper=(240, 235, 230))
    moved = line_reader.rows_view(view, [2, 0], (240, 235, 230))
    assert moved.size == view.size
    assert moved.crop((0, 0, VIEW, 64)).tobytes() == view.crop((0, 128, VIEW, 192)).tobytes()
    assert moved.crop((0, 64, VIEW, 128)).tobytes() == view.crop((0, 0, VIEW, 64)).tobytes()
    assert moved.crop((0, 128, VIEW, VIEW)).getcolors() == [((VIEW - 128) * VIEW, (240, 235, 230))]


def test_a_stream_cut_into_segments_reads_as_its_segments_joined_by_a_space() -> None:
    regions = (Region("text", (0, 0, 10, 5), lines=(Line((0, 0, 10, 5)),)),
               Region("text", (0, 5, 10, 10), lines=(Line((0, 5, 10, 10)),)))
    assert line_reader.page_streams(regions) == [regions[0].lines, regions[1].lines]
    # Stream 0 has three segments over two views of two rows; stream 1 has one.
    segments = (Segment(0, 0, 0), Segment(0, 0, 1), Segment(0, 1, 0), Segment(1, 1, 1))
    page = LinePage(regions=regions, views=(), segments=segments, num_streams=2, image_size=(10, 10))
    texts, warnings = line_reader.stream_texts(page, ["The quick\nbrown", "fox"])
    assert texts == ["The quick brown fox", ""]
    assert warnings == [("1 of 2 line views answered fewer lines than they have rows (views 2); "
                         "their last rows are left empty")]
    text, _ = line_reader.read_page(page, ["a\nb", "c\nd"], PLAIN)
    assert text == "a b c\n\nd"


def test_a_paragraphs_lines_are_one_stream_and_a_tables_cells_one_each() -> None:
    assert [len(s) for s in line_reader.page_streams(REGIONS)] == [1, 1, 3, 1, 1, 1, 2, 1, 1, 2, 1]


def test_a_page_is_as_unfinished_as_its_worst_view() -> None:
    assert line_reader.worst_finish(["stop", "stop"]) == ("stop", None)
    reason, warning = line_reader.worst_finish(["stop", "length", "repetition", "length"])
    assert reason == "repetition" and warning is not None and "3 of 4 line views" in warning


def test_only_the_document_prompts_are_answered() -> None:
    assert line_reader.answer_format(None) == line_reader.answer_format("markdown") == GROUNDING
    assert line_reader.answer_format("free") == line_reader.answer_format("ocr") == PLAIN
    assert line_reader.answer_format("<image>\nFree OCR.") == PLAIN  # the preset's text (the server's)
    for prompt in ("describe", "figure", "What is in this picture?"):
        with pytest.raises(ConfigError, match="reads the text lines of documents only"):
            line_reader.answer_format(prompt)


# --- a tiny random-weight lines model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def lines_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = replace(tiny_config(), reading="lines", base_size=VIEW)
    return write_random_checkpoint(tmp_path_factory.mktemp("lines") / "model", config, seed=0)


@pytest.fixture(scope="module")
def ocr(lines_checkpoint: Path) -> OCR:
    return OCR.from_pretrained(lines_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def page() -> Image.Image:
    pytest.importorskip("matplotlib")  # the synthetic pages' fonts
    from dsocr.training.synthetic import SyntheticConfig, generate_page

    return generate_page(3, SyntheticConfig(augment=0.0)).image


def test_a_page_becomes_base_views_with_one_segment_per_row(ocr: OCR, page: Image.Image) -> None:
    assert ocr.reads_lines
    prepared = ocr.prepare(page, "markdown", mode="gundam", max_crops=9)  # the mode does not apply
    assert isinstance(prepared, PreparedLines) and prepared.image_size == page.size
    streams = line_reader.page_streams(layout.analyze(page))
    found = prepared.page
    assert found.num_streams == len(streams) > 0 and len(found.views) == len(prepared.views) > 0
    # A paragraph's lines run on in its rows: fewer rows than cutting every line on its own would take.
    line_by_line = sum(len(line_reader.cut_stream(page, (line,), VIEW)) for s in streams for line in s)
    assert len(found.segments) < line_by_line
    # Every stream has at least one segment; segments follow the streams' order and fill the rows in order.
    assert sorted({s.stream for s in found.segments}) == list(range(found.num_streams))
    assert [s.stream for s in found.segments] == sorted(s.stream for s in found.segments)
    rows = rows_per_view(VIEW)
    assert [(s.view, s.row) for s in found.segments] == [divmod(i, rows) for i in range(len(found.segments))]
    for view in prepared.views:
        assert view.inputs.global_pixels.shape == (3, VIEW, VIEW) and view.inputs.num_crops == 0
        assert view.inputs.num_image_tokens == (VIEW // 64) ** 2 + 1
        assert view.prompt_ids == prepared.views[0].prompt_ids


def test_a_page_reads_into_one_block_per_layout_region(ocr: OCR, page: Image.Image) -> None:
    regions = line_reader.line_views(page, VIEW).regions  # the layout's, boxed by their type
    assert [r.label for r in regions] == [r.label for r in layout.analyze(page)]
    result = ocr.ocr(page, "markdown", sampling=SHORT)
    assert len(result.blocks) == len(regions) > 0
    for block, region in zip(result.blocks, regions):
        captions = ("image_caption", "table_caption") if region.label == "text" else ()
        assert block.label == region.label or block.label in captions
        (box,) = block.boxes
        assert all(abs(a - b) <= 2 for a, b in zip(box, region.box)), (box, region.box)
        assert to_pixels(line_reader.to_grid(region.box, page.size), *page.size) == box
    views = len(ocr.prepare(page, "markdown").views)
    per_view = (VIEW // 64) ** 2 + 1
    read = result.num_image_tokens // per_view  # its views, and the smaller ones misread views were read again in
    assert result.num_image_tokens % per_view == 0 and views <= read <= views * (3 + rows_per_view(VIEW))
    assert 0 < len(result.token_ids) <= read * SHORT.max_new_tokens
    assert result.finish_reason in ("stop", "length", "repetition")
    assert result.is_finished or any("line views ended without end-of-sentence" in w for w in result.warnings)
    assert set(result.timings) >= {"preprocess", "vision", "prefill", "decode"}


def test_auto_dtype_runs_the_vision_in_bfloat16_where_the_cpu_has_it(lines_checkpoint: Path, ocr: OCR,
                                                                     page: Image.Image) -> None:
    native = native_bf16(torch.device("cpu"))
    assert ocr.model.model.sam_model.patch_embed.proj.weight.dtype == (torch.bfloat16 if native else torch.float32)
    assert ocr.model.lm_head.weight.dtype == ocr.model.model.embed_tokens.weight.dtype == torch.float32
    exact = OCR.from_pretrained(lines_checkpoint, device="cpu", dtype="float32")
    assert {p.dtype for p in exact.model.parameters()} == {torch.float32}
    mixed = OCR.from_pretrained(lines_checkpoint, device="cpu", dtype="float32")
    mixed.model.model.vision_to(torch.bfloat16)
    assert mixed.model.model.view_seperator.dtype == mixed.model.model.projector.layers.weight.dtype == torch.bfloat16
    inputs = [v.inputs for v in exact.prepare(page).views[:2]]
    for a, b in zip(exact._embed(inputs), mixed._embed(inputs)):
        assert a.dtype == torch.float32 and b.dtype == torch.bfloat16
        assert (b.float() - a).norm() / a.norm() < 0.05
    result = mixed.ocr(page, "markdown", sampling=SHORT)  # the decoder takes bfloat16 embeddings in float32
    assert len(result.blocks) == len(line_reader.line_views(page, VIEW).regions)


def test_free_text_and_streaming_give_the_assembled_text(ocr: OCR, page: Image.Image) -> None:
    pieces: list[str] = []
    result = ocr.ocr(page, "free", sampling=SHORT, on_text=pieces.append)
    assert "<|ref|>" not in result.text and pieces == [result.text]
    assert all(b.label == "text" and not b.boxes for b in result.blocks)


def test_a_page_without_text_lines_gives_an_empty_result(ocr: OCR) -> None:
    (result,) = ocr.ocr_batch([Image.new("RGB", (300, 200), "white")], "markdown", sampling=SHORT)
    assert result.text == "" and result.blocks == () and result.token_ids == ()
    assert result.finish_reason == "stop" and result.num_image_tokens == 0


def test_prompts_other_than_the_document_ones_are_refused(ocr: OCR, page: Image.Image) -> None:
    with pytest.raises(ConfigError, match="'markdown' prompt"):
        ocr.ocr(page, "describe")
    with pytest.raises(ConfigError):
        ocr.prepare(page, "Locate the title.")


def test_a_lines_page_is_not_a_single_engine_request(ocr: OCR, page: Image.Image) -> None:
    with pytest.raises(ConfigError, match="OCR.run"):
        ocr.engine_request(ocr.prepare(page), SamplingParams())


def test_the_fast_engine_and_the_server_read_lines_pages_as_the_reference_loop(lines_checkpoint: Path,
                                                                             ocr: OCR) -> None:
    sample = Image.open(EXAMPLES / "sample.png")
    expected = ocr.ocr_batch([sample, sample], "markdown", sampling=SHORT)
    fast = OCR.from_pretrained(lines_checkpoint, device="cpu", engine="fast",
                               engine_config=EngineConfig(compile=False))
    assert fast.engine is not None
    assert [r.token_ids for r in fast.ocr_batch([sample, sample], "markdown", sampling=SHORT)] == \
        [r.token_ids for r in expected]
    server = Engine(fast)  # a page is several views with one assembled answer: batches of OCR.run
    try:
        assert server.llm is None
        pieces: list[str] = []
        result = server.run(fast.prepare(sample, "markdown"), SHORT, on_text=pieces.append)
    finally:
        server.stop()
    assert result.text == expected[0].text and pieces == [result.text]


def test_convert_writes_markdown_with_a_lines_model(lines_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = CliRunner().invoke(main, ["convert", str(EXAMPLES / "sample.pdf"), "-o", str(out), "--model",
                                    str(lines_checkpoint), "--max-tokens", "12", "--retries", "0",
                                    "--device", "cpu", "--format", "md,json", "-q"])
    assert run.exit_code == 0, run.output
    markdown = (out / "sample/sample.md").read_text()
    data = json.loads((out / "sample/sample.json").read_text())
    assert len(data["pages"]) == 2 and markdown.strip()
    assert all(p["status"] in ("ok", "truncated", "repetition") and p["blocks"] for p in data["pages"])


def test_convert_refuses_a_prompt_a_lines_model_cannot_answer(lines_checkpoint: Path, tmp_path: Path) -> None:
    run = CliRunner().invoke(main, ["convert", str(EXAMPLES / "sample.pdf"), "-o", str(tmp_path / "out"),
                                    "--model", str(lines_checkpoint), "--prompt", "describe",
                                    "--device", "cpu"])
    assert run.exit_code != 0 and "documents only" in run.output


def test_text_regions_are_boxed_by_their_type_as_typeset_blocks_are() -> None:
    """The layout's boxes are tight around the ink; a block's box runs from its first line's ascent to its last
    line's descent (as the synthetic targets, and the official answers, box them)."""
    pytest.importorskip("matplotlib")
    from dsocr.training.evaluate import iou
    from dsocr.training.synthetic import SyntheticConfig, generate_page

    found = tight = total = 0
    for seed in range(12):
        page = generate_page(seed, SyntheticConfig(augment=0.0))
        typeset, ink = line_reader.line_views(page.image, VIEW).regions, layout.analyze(page.image)
        for block in page.blocks:
            if block.label in ("title", "sub_title", "text", "header", "footer"):
                total += 1
                found += any(iou(r.box, block.box) >= 0.7 for r in typeset)
                tight += any(iou(r.box, block.box) >= 0.7 for r in ink)
    assert total > 80 and found >= 0.97 * total and tight < 0.8 * total, (total, found, tight)
