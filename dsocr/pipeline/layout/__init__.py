"""Classical layout analysis of a clean printed page: text lines with tight ink boxes, in blocks, in order.

Owns binarisation, ruling lines, ruled tables, graphics, text lines, paragraphs, labels and reading order,
with numpy and scipy only; must not deskew, read text or load a model (its lines feed a one-line reader).

How: ink is what is clearly darker than the paper; long thin strokes are rules (crossing rules make a table
grid, rules with text between them an open table, rule frames and large or coloured marks an image, but not a
display formula's tall radical or bracket); glyphs join into lines through a horizontal smear that stops at
column gutters (tall white strips with text on both sides), and a fraction's numerator, denominator and what
stands beside its bar join into one line; lines join into paragraphs while the baseline pitch and the text size
stay the same; and a recursive X-Y cut orders the blocks, reading a band of columns column by column.
Distances scale with `unit`, the page's typical glyph height (about an x-height).

The stages, one module each, in the order `analyze` runs them: `ink` (binarisation, components, the unit),
`rules` (ruling lines, ruled and open tables, graphics), `lines` (gutters, text lines, marks), `blocks`
(paragraphs, labels, reading order); `boxes` holds the result types and box arithmetic.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dsocr.pipeline.layout.blocks import (
    FURNITURE,
    _blocks,
    _reading_order,
    _table_of,
    _table_region,
    _text_regions,
)
from dsocr.pipeline.layout.boxes import Box, Line, Region, _inside_any
from dsocr.pipeline.layout.ink import EIGHT, NOISE, _binarize, _channels, _components, _glyph_unit
from dsocr.pipeline.layout.lines import _gutters, _join_fractions, _line_stats, _lines
from dsocr.pipeline.layout.rules import (
    _coloured,
    _drawing_frames,
    _graphic_seeds,
    _graphics,
    _open_tables,
    _rule_structures,
    _rules,
)

__all__ = ["EIGHT", "FURNITURE", "NOISE", "Box", "Line", "Region", "analyze"]


def analyze(image: Image.Image) -> list[Region]:
    """Regions of a printed page in reading order (see the module doc); [] for a page without ink."""
    gray, colour = _channels(image)
    ink = _binarize(gray)
    if ink is None:
        return []
    labels, comps = _components(ink)
    unit = _glyph_unit(comps)
    hmask, hboxes, vmask, vboxes = _rules(labels, comps, unit)
    text = ink & ~(hmask | vmask)
    if len(hboxes) or len(vboxes):
        labels, comps = _components(text)
    grids, frames, loose = _rule_structures(hboxes, vboxes)
    coloured = _coloured(labels, comps, colour)
    seeds = _graphic_seeds(comps, coloured, unit)
    frames = _drawing_frames(frames, comps, seeds, coloured, unit)  # a frame boxing text is not a drawing
    images = _graphics(comps[seeds, :4], frames, loose, unit)
    free = np.flatnonzero(~seeds & ~_inside_any(comps[:, :4], images))
    grids = [t for t in grids if not _inside_any(np.array([t.box]), images)[0]]  # boxes in a drawing
    loose = loose[~_inside_any(loose, images)]  # not a drawing's
    tables = grids + _open_tables(loose, hmask, comps[free], unit)
    walls = vmask.copy()  # what no line crosses: vertical rules (a pixel wider), open tables' column cuts
    walls[:, 1:] |= vmask[:, :-1]
    for table in tables:
        for x in table.cols[1:-1]:
            walls[table.box[1]:table.box[3], int(x)] = True
    line_of = _lines(comps[free], walls, _gutters(ink, unit), unit)
    bars = loose[~_inside_any(loose, np.array([t.box for t in tables]).reshape(-1, 4))]  # a fraction's, maybe
    line_of = _join_fractions(line_of, comps[free], bars, unit)
    stats = _line_stats(labels, text, comps, free, line_of, unit)
    owner = np.array([_table_of(line.box, tables) for line in stats], int)
    regions = []
    for i, table in enumerate(tables):  # a grid without text is a drawing
        inside = [line for line, k in zip(stats, owner) if k == i]
        regions.append(_table_region(table, inside) if inside else Region("image", table.box))
    regions += [Region("image", tuple(int(v) for v in box)) for box in images]
    body = [line for line, k in zip(stats, owner) if k < 0]
    regions += _text_regions(body, _blocks(body), gray.shape)
    return _reading_order(regions, unit)
