import re

import pytest

from dsocr.output.grounding import EOS_TEXT, figure_boxes, parse_grounding
from dsocr.output.markdown import blocks_to_markdown, default_figure_link, tidy_markdown, to_markdown

REF = "<|ref|>{label}<|/ref|><|det|>{boxes}<|/det|>\n"


def ref(label: str, boxes: str = "[[10, 10, 990, 990]]") -> str:
    return REF.format(label=label, boxes=boxes)


def _reference_markdown(text: str) -> str:
    """Spec 9.2 as the HF `infer()` does it (the box list is not evaluated: it is not needed for the text),
    plus the PDF script's blank-line collapsing. Only valid for one box per image ref."""
    text = text.removesuffix(EOS_TEXT).strip()
    matches = re.findall(r"(<\|ref\|>(.*?)<\|/ref\|><\|det\|>(.*?)<\|/det\|>)", text, flags=re.DOTALL)
    images = [m[0] for m in matches if "<|ref|>image<|/ref|>" in m[0]]
    others = [m[0] for m in matches if "<|ref|>image<|/ref|>" not in m[0]]
    for idx, span in enumerate(images):
        text = text.replace(span, f"![](images/{idx}.jpg)\n", 1)
    for span in others:
        text = text.replace(span, "").replace("\\coloneqq", ":=").replace("\\eqqcolon", "=:")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


WELL_FORMED = {
    "report": (ref("title") + "# Annual report\n\n" + ref("text") + "Revenue grew by 12%.\n\n"
               + ref("image") + "\n" + ref("image_caption") + "<center>Figure 1</center>\n\n" + ref("table")
               + "<table><tr><td>Q1</td><td>Q2</td></tr><tr><td>1</td><td>2</td></tr></table>" + EOS_TEXT),
    "cjk-latex": (ref("title") + "# 第一章 总则\n\n" + ref("text") + "第一条 为了规范公司的组织和行为。\n\n"
                  + ref("equation") + "\\[\nf(x) \\coloneqq \\sum_{i=1}^{n} x_i^2\n\\]\n\n"
                  + ref("image") + "\n" + ref("text") + "见上图。"),
    "two-figures": (ref("sub_title") + "## Methods\n\n" + ref("image") + "\n" + ref("image") + "\n"
                    + ref("text") + "Two figures, then text with $a \\eqqcolon b$."),
}


@pytest.mark.parametrize("text", WELL_FORMED.values(), ids=WELL_FORMED.keys())
def test_well_formed_output_matches_the_reference_conversion(text: str) -> None:
    assert to_markdown(text) == _reference_markdown(text)


CASES = {
    "one-link-per-box": (
        ref("title", "[[1,1,9,9]]") + "# T\n\n" + ref("image", "[[1,1,5,5], [6,6,9,9]]") + "\n"
        + ref("text") + "Let $a \\coloneqq b$ and $c \\eqqcolon d$.\n\n\n\n" + ref("image") + EOS_TEXT,
        "# T\n\n![](images/0.jpg)\n\n![](images/1.jpg)\n\nLet $a := b$ and $c =: d$.\n\n![](images/2.jpg)"),
    "figure-without-valid-boxes-has-nothing-to-link": (
        ref("image", "[[1, 2, x, 4]]") + "\n" + ref("image") + "\n" + ref("text") + "after",
        "![](images/0.jpg)\n\nafter"),
    "latex-fix-without-any-ref": (
        "Free OCR: $x \\coloneqq 1$\n\n\n\nnext" + EOS_TEXT, "Free OCR: $x := 1$\n\nnext"),
    "table-html-kept": (ref("table") + "<table><tr><td>1</td><td>2</td></tr></table>",
                        "<table><tr><td>1</td><td>2</td></tr></table>"),
    "cut-off-coordinates-dropped": (ref("title") + "# T\n\n<|ref|>text<|/ref|><|det|>[[10, 20, 3", "# T"),
    "cut-off-label-kept": ("intro\n\n" + ref("title") + "# T\n\n<|ref|>tex", "intro\n\n# T\n\ntex"),
    "unclosed-det": ("<|ref|>text<|/ref|><|det|>[[1,2,3,4]]\n正文 continues", "正文 continues"),
    "nothing": ("  \n\n" + EOS_TEXT, ""),
}


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_markdown_of_real_looking_outputs(text: str, expected: str) -> None:
    assert to_markdown(text) == expected


def test_link_numbers_match_the_crop_numbers() -> None:
    text = ref("image", "[[1,1,5,5],[6,6,9,9]]") + ref("text") + "x\n" + ref("image", "[[2,2,8,8]]")
    blocks = parse_grounding(text, (640, 480)).blocks
    links = re.findall(r"!\[\]\(images/(\d+)\.jpg\)", blocks_to_markdown(blocks))
    assert [int(n) for n in links] == list(range(len(figure_boxes(blocks)))) == [0, 1, 2]


def test_custom_figure_links_and_leaving_figures_out() -> None:
    text = ref("image") + ref("image") + ref("text") + "x"
    two_links = "![](page3_0.png)\n\n![](page3_1.png)\n\nx"
    assert to_markdown(text, figure_link=lambda n: f"page3_{n}.png") == two_links
    # A figure whose link is None is left out, and the next one keeps its crop number.
    assert to_markdown(text, figure_link=lambda n: None if n == 0 else f"f{n}.png") == "![](f1.png)\n\nx"
    assert to_markdown(text, figure_link=lambda n: None) == "x"
    assert to_markdown(text, figure_link=None) == to_markdown(text) == parse_grounding(text, (9, 9)).markdown
    assert default_figure_link(7) == "images/7.jpg"


def test_tidy_collapses_blank_runs_and_strips() -> None:
    assert tidy_markdown("\n\na\n\n\n\n\nb\n\nc\n\n\n") == "a\n\nb\n\nc"
    assert tidy_markdown("\\coloneqq\\eqqcolon") == ":==:"
