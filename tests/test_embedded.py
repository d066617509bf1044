"""The embedded model (dsocr/embedded): it reads a sentence it never saw, and the README's main command converts
the sample document with it, offline, with no model named. Skipped while the folder holds no checkpoint (the
model is trained on a GPU machine: docs/training.md)."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from dsocr.hub import EMBEDDED_DIR, choose_model
from dsocr.training.evaluate import cer

REPO = Path(__file__).resolve().parents[1]
SAMPLE = runpy.run_path(str(REPO / "examples" / "make_sample_pdf.py"))  # text(), TABLE: what the sample holds

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (EMBEDDED_DIR / "config.json").exists(),
                                                   reason="no embedded checkpoint in dsocr/embedded yet")]
# Words in an order no corpus holds: the model must read them.
SENTENCE = "Seven quiet lanterns measure the orange harbour while numbers drift past 4719 kites."


def _render(text: str) -> Image.Image:
    from dsocr.training.synthetic import load_font

    font = load_font("DejaVuSerif.ttf", 22)
    image = Image.new("RGB", (1300, 300), "white")  # the whole sentence on one line, margins to spare
    ImageDraw.Draw(image).text((60, 120), text, fill="black", font=font)
    return image


def test_the_embedded_model_reads_a_sentence_it_never_saw() -> None:
    from dsocr.api import OCR

    ocr = OCR.from_pretrained(EMBEDDED_DIR, device="cpu")
    text = ocr.ocr(_render(SENTENCE), "free").text
    assert " ".join(text.split()) == SENTENCE, f"CER {cer(' '.join(text.split()), SENTENCE):.3f}: {text!r}"


CELLS = [["Region", "Quarter", "Orders", "Share"], ["north", "second", "4182", "37%"],
         ["harbour", "third", "906", "8%"], ["valley", "fourth", "7351", "55%"]]


def _table() -> Image.Image:
    from dsocr.training.synthetic import load_font

    font = load_font("DejaVuSans.ttf", 20)
    image = Image.new("RGB", (1000, 500), "white")
    draw = ImageDraw.Draw(image)
    left, top, width, height = 80, 80, 200, 44
    draw.line((left, top, left + 4 * width, top), fill="black", width=2)
    for r, row in enumerate(CELLS):
        for c, cell in enumerate(row):
            draw.text((left + 10 + c * width, top + 10 + r * height), cell, fill="black", font=font)
        y = top + (r + 1) * height
        draw.line((left, y, left + 4 * width, y), fill="black", width=1 if r else 2)
    return image


def test_the_embedded_model_reads_a_table_of_one_word_cells() -> None:
    """Each cell is a row of a line view: ten one-word rows in a row, where the model loses its place (it answers
    junk lines after the ninth); the view is read again in halves (`line_reader.reread`)."""
    from dsocr.api import OCR

    ocr = OCR.from_pretrained(EMBEDDED_DIR, device="cpu")
    result = ocr.ocr(_table(), "markdown")
    cells = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in CELLS)
    assert [b.label for b in result.blocks] == ["table"] and result.blocks[0].content == f"<table>{cells}</table>", \
        result.text


def test_convert_uses_the_embedded_model_offline_when_no_model_is_named(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # an empty cache
    env.pop("DSOCR_MODEL", None)
    assert choose_model(cache_dir=tmp_path / "hf").source == "embedded"
    run = subprocess.run([sys.executable, "-m", "dsocr", "convert", str(REPO / "examples/sample.pdf"), "-o",
                          str(tmp_path / "out"), "--device", "cpu"], capture_output=True, text=True, env=env,
                         timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "embedded" in run.stderr
    markdown = (tmp_path / "out" / "sample" / "sample.md").read_text()
    # The page's structure comes from the layout step, its text from the model: 3.6% CER measured (run 7).
    assert markdown.startswith("# ") and "\n<--- Page Split --->\n" in markdown, markdown[:2000]
    assert markdown.count("<tr>") == len(SAMPLE["TABLE"]), markdown[:2000]
    assert "![](images/page-0002-1.jpg)" in markdown, markdown
    assert cer(_plain(markdown), SAMPLE["text"]()) <= 0.08, markdown


def _plain(markdown: str) -> str:
    """Markdown's words: no heading marks, page splits, figure links or table tags."""
    text = re.sub(r"<--- Page Split --->|!\[\]\([^)]*\)|<[^>]+>|^#+ ", " ", markdown, flags=re.MULTILINE)
    return " ".join(text.split())
