"""Writers: plain text for the PDF layer, math styles, status markers, HTML sanitising, atomic writes."""

from __future__ import annotations

import pytest

from dsocr.pipeline.document import Block, Document, Page
from dsocr.pipeline.writers import (
    atomic_write,
    document_html,
    document_markdown,
    label_colour,
    plain_text,
    to_dollar_math,
)


def _block(content: str, fmt: str, label: str = "text") -> Block:
    return Block(index=0, label=label, content=content, format=fmt, boxes=[(0, 0, 10, 10)], bbox=(0, 0, 10, 10),
                 bbox_norm=(0, 0, 1, 1), bbox_pt=None)


def test_plain_text_drops_markup_but_keeps_words_and_latex() -> None:
    table = "<table><tr><th>Source</th><th>July</th></tr><tr><td>Invoices &amp; co</td><td>182</td></tr></table>"
    assert plain_text(_block(table, "html", "table")) == "Source July\nInvoices & co 182"
    markdown = "## **Bold** title, [a link](http://x) and `code` \\(x^2\\)\n\n![](images/a.jpg)\n- item"
    assert plain_text(_block(markdown, "markdown")) == "Bold title, a link and code x^2\n- item"
    assert plain_text(_block("\\[ E = mc^2 \\]", "latex", "equation")) == "E = mc^2"


def test_dollar_math() -> None:
    assert to_dollar_math("a \\( x \\) b \\[\ny = 1\n\\]") == "a $x$ b $$\ny = 1\n$$"


def test_markdown_marks_pages_that_are_not_ok() -> None:
    doc = Document(source="d.pdf", name="d", kind="pdf", pages=[
        Page(index=0, markdown="first"), Page(index=1, status="failed", reason="cannot render"),
        Page(index=2, status="repetition", reason="loops", markdown="partial")])
    text = document_markdown(doc, page_separator="\n\n=={page}==\n\n")
    assert text == ("first\n\n==2==\n\n> **dsocr: page 2 failed**: cannot render\n\n==3==\n\n"
                    "> **dsocr: page 3 repetition**: loops\n\npartial\n")


def test_html_tables_are_sanitised_and_markdown_is_escaped() -> None:
    evil = '<table><tr><td colspan="2" onclick="steal()">x<script>alert(1)</script></td></tr></table>'
    page = Page(index=0, blocks=[_block(evil, "html", "table"), _block("<img src=x onerror=alert(1)> *hi*",
                                                                          "markdown")])
    html = document_html(Document(source="d", name="d", kind="pdf", pages=[page]))
    assert '<td colspan="2">x</td>' in html
    assert "onclick" not in html and "<script" not in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt; <em>hi</em>" in html


def test_a_centred_caption_is_centred_in_html_and_its_tags_are_not_text() -> None:
    caption = _block("<center>Figure 2: *Share* of pages</center>", "markdown", "image_caption")
    assert plain_text(caption) == "Figure 2: Share of pages"
    html = document_html(Document(source="d", name="d", kind="pdf", pages=[Page(index=0, blocks=[caption])]))
    assert '<div class="center"><p>Figure 2: <em>Share</em> of pages</p>' in html and "&lt;center" not in html
    # Only a whole block in <center> is: any other raw HTML in Markdown stays escaped.
    other = _block("<center>a</center> and <center>b</center>", "markdown")
    html = document_html(Document(source="d", name="d", kind="pdf", pages=[Page(index=0, blocks=[other])]))
    assert "&lt;center&gt;a" in html


def test_label_colours_are_fixed() -> None:
    assert label_colour("title") == (214, 39, 40)
    assert label_colour("some_new_label") == label_colour("some_new_label")


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path) -> None:
    target = tmp_path / "out" / "doc.md"
    atomic_write(target, "old")

    def explode(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, explode)
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["doc.md"]
