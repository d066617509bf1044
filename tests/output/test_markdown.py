from dsocr.output.grounding import EOS_TEXT
from dsocr.output.markdown import to_markdown


def test_tags_removed_figures_linked_and_latex_fixed() -> None:
    text = ("<|ref|>title<|/ref|><|det|>[[1,1,9,9]]<|/det|>\n# T\n\n"
            "<|ref|>image<|/ref|><|det|>[[1,1,5,5], [6,6,9,9]]<|/det|>\n\n"
            "<|ref|>text<|/ref|><|det|>[[1,1,9,9]]<|/det|>\nLet $a \\coloneqq b$ and $c \\eqqcolon d$.\n\n\n\n"
            "<|ref|>image<|/ref|><|det|>[[1,1,5,5]]<|/det|>\n" + EOS_TEXT)
    assert to_markdown(text) == ("# T\n\n![](images/0.jpg)\n\n![](images/1.jpg)\n\n"
                                 "Let $a := b$ and $c =: d$.\n\n![](images/2.jpg)")


def test_custom_figure_links_and_dropping_figures() -> None:
    text = "<|ref|>image<|/ref|><|det|>[[1,1,5,5]]<|/det|>\n<|ref|>text<|/ref|><|det|>[[1,1,5,5]]<|/det|>\nx"
    assert to_markdown(text, figure_link=lambda n: f"![fig](page3_{n}.png)") == "![fig](page3_0.png)\n\nx"
    assert to_markdown(text, figure_link=None) == "x"


def test_tables_keep_their_html_and_free_text_passes_through() -> None:
    table = "<table><tr><td>1</td><td>2</td></tr></table>"
    assert to_markdown(f"<|ref|>table<|/ref|><|det|>[[0,0,9,9]]<|/det|>\n{table}") == table
    assert to_markdown("plain\n\n\n\ntext" + EOS_TEXT) == "plain\n\ntext"
