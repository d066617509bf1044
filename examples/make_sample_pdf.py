"""Writes examples/sample.pdf: a small two-page report with real (vector) text, a table, a chart and a formula.

Run `python examples/make_sample_pdf.py` to rebuild it (the same pages every time; the file carries its
creation date). Uses pypdfium2's raw PDFium API only (no other PDF library).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

WIDTH, HEIGHT = 612.0, 792.0  # US Letter, points
MARGIN = 72.0

PAGES = [
    [
        ("Helvetica-Bold", 20, "Quarterly Report: Document Conversion"),
        ("Helvetica-Oblique", 11, "Operations team, third quarter"),
        ("Helvetica-Bold", 14, "1. Summary"),
        ("Times-Roman", 11, "This quarter we converted 1.2 million pages from scanned archives into Markdown."),
        ("Times-Roman", 11, "Throughput rose by 38 percent after the move to batched GPU decoding, while the"),
        ("Times-Roman", 11, "share of pages needing manual review fell from 4.1 to 2.6 percent."),
        ("Helvetica-Bold", 14, "2. Volume by source"),
        ("table", 0, ""),
        ("Helvetica-Oblique", 10, "Table 1: Pages converted per source and month (thousands)."),
        ("Helvetica-Bold", 14, "3. Method"),
        ("Times-Roman", 11, "Each page is rendered at 144 DPI, cut into tiles and read by the model; the"),
        ("Times-Roman", 11, "cost per page follows C = t_render + n_tiles * t_tile + n_tokens * t_token."),
    ],
    [
        ("Helvetica-Bold", 14, "4. Error analysis"),
        ("Times-Roman", 11, "Most remaining errors come from faint stamps, handwriting in the margins and"),
        ("Times-Roman", 11, "tables that span two pages. Figure 1 shows review rates per document type."),
        ("chart", 0, ""),
        ("Helvetica-Oblique", 10, "Figure 1: Share of pages sent to manual review, by document type."),
        ("Helvetica-Bold", 14, "5. Next steps"),
        ("Times-Roman", 11, "- Extend the pipeline to multi-column newspapers."),
        ("Times-Roman", 11, "- Publish the evaluation set with its ground truth."),
        ("Times-Roman", 11, "- Reduce the time to first page below one second."),
    ],
]
TABLE = [["Source", "July", "August", "September"], ["Invoices", "182", "175", "201"],
         ["Contracts", "96", "104", "99"], ["Letters", "61", "58", "73"]]
CHART = [("Invoices", 0.021), ("Contracts", 0.034), ("Letters", 0.018), ("Forms", 0.041)]


OUTPUT = Path(__file__).with_name("sample.pdf")


def text() -> str:
    """The sample's text, what reading it should give: its lines in order, the table row by row (the chart's
    labels are the figure's), whitespace collapsed."""
    lines = []
    for content in PAGES:
        for font, _, line in content:
            lines += [" ".join(row) for row in TABLE] if font == "table" else [line] if line else []
    return " ".join(" ".join(lines).split())


def main(path: Path = OUTPUT) -> None:
    pdf = pdfium.PdfDocument.new()
    fonts = {}
    for content in PAGES:
        page = pdfium_c.FPDFPage_New(pdf, pdfium_c.FPDF_GetPageCount(pdf), WIDTH, HEIGHT)
        y = HEIGHT - MARGIN
        for font, size, text in content:
            if font == "table":
                y = _table(pdf, page, fonts, y)
            elif font == "chart":
                y = _chart(pdf, page, fonts, y)
            else:
                y -= size * (1.9 if font.endswith("Bold") else 1.45)
                _text(pdf, page, fonts, font, size, MARGIN, y, text)
        pdfium_c.FPDFPage_GenerateContent(page)
        pdfium_c.FPDF_ClosePage(page)
    pdf.save(path)
    print(f"wrote {path}")


def _text(pdf, page, fonts, font: str, size: float, x: float, y: float, text: str) -> None:
    if font not in fonts:
        fonts[font] = pdfium_c.FPDFText_LoadStandardFont(pdf, font.encode())
    obj = pdfium_c.FPDFPageObj_CreateTextObj(pdf, fonts[font], ctypes.c_float(size))
    encoded = (text + "\0").encode("utf-16-le")
    buffer = ctypes.create_string_buffer(encoded, len(encoded))
    pdfium_c.FPDFText_SetText(obj, ctypes.cast(buffer, ctypes.POINTER(pdfium_c.FPDF_WCHAR)))
    pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, x, y)
    pdfium_c.FPDFPage_InsertObject(page, obj)


def _rect(page, x: float, y: float, w: float, h: float, fill: tuple[int, int, int] | None) -> None:
    obj = pdfium_c.FPDFPageObj_CreateNewRect(x, y, w, h)
    if fill:
        pdfium_c.FPDFPageObj_SetFillColor(obj, *fill, 255)
    pdfium_c.FPDFPageObj_SetStrokeColor(obj, 40, 40, 40, 255)
    pdfium_c.FPDFPageObj_SetStrokeWidth(obj, ctypes.c_float(0.8))
    pdfium_c.FPDFPath_SetDrawMode(obj, pdfium_c.FPDF_FILLMODE_ALTERNATE if fill else 0, True)
    pdfium_c.FPDFPage_InsertObject(page, obj)


def _table(pdf, page, fonts, y: float) -> float:
    row_h, col_w = 20.0, 110.0
    y -= 10
    for r, row in enumerate(TABLE):
        y -= row_h
        for c, cell in enumerate(row):
            x = MARGIN + c * col_w
            _rect(page, x, y, col_w, row_h, (225, 230, 240) if r == 0 else None)
            _text(pdf, page, fonts, "Helvetica-Bold" if r == 0 else "Helvetica", 10, x + 6, y + 6, cell)
    return y - 6


def _chart(pdf, page, fonts, y: float) -> float:
    y -= 20
    top = y
    bar_w, gap, scale = 60.0, 40.0, 4000.0
    base = top - 180
    _rect(page, MARGIN, base - 30, 400, 210, None)
    for i, (label, value) in enumerate(CHART):
        x = MARGIN + 30 + i * (bar_w + gap)
        _rect(page, x, base, bar_w, value * scale, (70, 110, 180))
        _text(pdf, page, fonts, "Helvetica", 9, x + 4, base - 14, label)
        _text(pdf, page, fonts, "Helvetica", 9, x + 14, base + value * scale + 4, f"{value:.1%}")
    return base - 36


if __name__ == "__main__":
    main()
