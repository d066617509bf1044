"""Blocks: table regions from their lines, paragraphs, labels (title, sub_title, text, header, footer) and the
X-Y cut reading order. Must not look at pixels: it works on the lines and tables found before.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dsocr.pipeline.layout.boxes import Box, Line, Region, _union
from dsocr.pipeline.layout.lines import _TextLine
from dsocr.pipeline.layout.rules import _Table

FURNITURE = 0.085  # header and footer live in this fraction of the page (of its longer side)


def _table_of(box: Box, tables: list[_Table]) -> int:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    for i, t in enumerate(tables):
        if t.box[0] <= cx < t.box[2] and t.box[1] <= cy < t.box[3]:
            return i
    return -1


def _table_region(table: _Table, lines: list[_TextLine]) -> Region:
    cells: list[list[list[Box]]] = [[[] for _ in table.cols[1:]] for _ in table.rows[1:]]
    for line in lines:
        row, col = table.cell(line.box)
        cells[row][col].append(line.box)
    grid = tuple(tuple(tuple(Line(box) for box in sorted(cell, key=lambda b: (b[1], b[0]))) for cell in row)
                 for row in cells)
    return Region("table", table.box, cells=grid)


def _blocks(lines: list[_TextLine]) -> list[list[int]]:
    """Lines joined into paragraphs: each line with the nearest line under it that overlaps it, when both
    see each other so, have the same size and weight, and sit one regular line pitch apart."""
    n = len(lines)
    if n == 0:
        return []
    box = np.array([line.box for line in lines], float)
    size = np.array([line.size for line in lines])
    tall = box[:, 3] - box[:, 1]
    stroke = np.array([line.stroke for line in lines])
    base = np.array([line.base for line in lines])
    overlap = np.minimum(box[:, None, 2], box[None, :, 2]) - np.maximum(box[:, None, 0], box[None, :, 0])
    narrow = np.minimum(box[:, None, 2] - box[:, None, 0], box[None, :, 2] - box[None, :, 0])
    pitch = base[None, :] - base[:, None]
    under = (overlap >= 0.3 * narrow) & (pitch > 0.5 * np.maximum(size[:, None], size[None, :]))
    nearest = np.where(under, pitch, np.inf)
    below, above = np.argmin(nearest, axis=1), np.argmin(nearest, axis=0)
    mutual = [(i, below[i]) for i in range(n) if np.isfinite(nearest[i, below[i]]) and above[below[i]] == i]
    pairs = np.array(mutual, int).reshape(-1, 2)
    i, j = pairs[:, 0], pairs[:, 1]
    # one size: by glyph height or by line height (each is fooled by some short lines: "cases.", "Mm")
    alike = _near(stroke[j] / stroke[i], 1.43)  # the same weight
    same = alike & (_near(size[j] / size[i], 1.4) | _near(tall[j] / tall[i], 1.3))
    body = float(np.median(size))
    low, high = np.minimum(size[i], size[j]) / body, np.maximum(size[i], size[j]) / body
    scale = np.where(low >= 1.25, low, np.where(high <= 0.8, high, 1.0))  # the pitch of clearly other text
    regular = pitch[i, j][same & (scale == 1.0)]
    step = float(np.percentile(regular, 25)) if len(regular) else 3.0 * body
    if step > 3.6 * body and (regular < 3.6 * body).any():  # few lines: most pairs are paragraph breaks
        step = float(regular[regular < 3.6 * body].max())
    close = pitch[i, j] <= np.maximum(1.08 * step, step + 2) * scale
    # exactly the regular pitch: one paragraph even when a short line's glyphs mislead about its size
    exact = alike & (np.abs(pitch[i, j] - step) <= max(1.5, 0.04 * step)) & _near(size[j] / size[i], 1.6)
    joined = close & (same | exact)
    graph = coo_matrix((np.ones(int(joined.sum())), (i[joined], j[joined])), shape=(n, n))
    count, group = connected_components(graph, directed=False)
    return [sorted(np.flatnonzero(group == g).tolist(), key=lambda k: lines[k].base) for g in range(count)]


def _near(ratio: np.ndarray, limit: float) -> np.ndarray:
    return (ratio < limit) & (ratio > 1 / limit)


def _text_regions(lines: list[_TextLine], blocks: list[list[int]], shape: tuple[int, int]) -> list[Region]:
    """Label the blocks: header and footer (one small line alone at the top or bottom of the page), the title
    (large text with nothing but furniture above it), sub_titles (one or two lines larger or bolder than the
    body), text. A block's size and weight are its widest line's (a short line's few glyphs mislead)."""
    if not blocks:
        return []
    height, zone = shape[0], FURNITURE * max(shape)
    body = [lines[i] for b in blocks if len(b) > 1 for i in b] or lines  # paragraphs, when there are any
    body_size = float(np.median([s.size for s in body]))
    body_height = float(np.median([s.box[3] - s.box[1] for s in body]))
    body_stroke = float(np.median([s.stroke for s in body]))
    boxes = [_union(np.array([lines[i].box for i in b])) for b in blocks]
    widest = [lines[max(b, key=lambda i: lines[i].box[2] - lines[i].box[0])] for b in blocks]
    labels = ["text"] * len(blocks)
    for k, (b, line) in enumerate(zip(blocks, widest)):
        ink_height = (line.box[3] - line.box[1]) / body_height
        # "12" has no x-height letter to size it by; a body line without descenders is low but long
        short = line.size <= 0.95 * body_size or line.box[2] - line.box[0] <= 0.3 * shape[1]
        small = line.size <= 0.88 * body_size or (ink_height <= 0.85 and short)
        cy = (boxes[k][1] + boxes[k][3]) / 2
        if len(b) == 1 and small and cy < zone:
            labels[k] = "header"
        elif len(b) == 1 and small and cy > height - zone:
            labels[k] = "footer"
        elif len(b) <= 2 and ((line.size >= 1.12 * body_size and ink_height >= 0.9)
                              or (line.stroke >= (1.2 if line.size >= body_size else 1.3) * body_stroke
                                  and line.size >= 0.85 * body_size)):  # bold: a small bold heading too
            labels[k] = "sub_title"
    furniture = {"header", "footer"}
    for k in range(len(blocks)):  # furniture stands alone in its rows: not the top line of a column
        if labels[k] in furniture and any(labels[m] not in furniture and boxes[m][1] < boxes[k][3]
                                          and boxes[k][1] < boxes[m][3] for m in range(len(blocks))):
            labels[k] = "text"
    content = [boxes[k] for k in range(len(blocks)) if labels[k] not in furniture]
    titles = [k for k in range(len(blocks)) if labels[k] == "sub_title" and widest[k].size >= 1.45 * body_size
              and not any(box[3] <= boxes[k][1] for box in content)]  # nothing but furniture above it
    if titles:
        labels[max(titles, key=lambda k: widest[k].size)] = "title"
    return [Region(label, tuple(int(v) for v in box), tuple(Line(lines[i].box) for i in b))
            for label, box, b in zip(labels, boxes, blocks)]


def _reading_order(regions: list[Region], unit: float) -> list[Region]:
    """Header first, footer last, the rest by a recursive X-Y cut."""
    top = sorted((r for r in regions if r.label == "header"), key=lambda r: r.box[0])
    bottom = sorted((r for r in regions if r.label == "footer"), key=lambda r: r.box[0])
    body = [r for r in regions if r.label not in ("header", "footer")]
    boxes = np.array([r.box for r in body], float).reshape(-1, 4)
    return top + [body[i] for i in _xy_cut(np.arange(len(body)), boxes, unit)] + bottom


def _xy_cut(index: np.ndarray, boxes: np.ndarray, unit: float) -> list[int]:
    """Columns first: cut at white vertical strips; else cut into horizontal bands, and read consecutive
    bands that share a column gap (or sit on one side of it) together, so that a two-column stretch is read
    column by column even where its paragraph gaps line up."""
    if len(index) <= 1:
        return index.tolist()
    b = boxes[index]
    cols = _cuts(b[:, 0], b[:, 2], unit)
    if len(cols) > 1:
        return [i for part in cols for i in _xy_cut(index[part], boxes, unit)]
    bands = _cuts(b[:, 1], b[:, 3], 0)
    if len(bands) == 1:
        return index[np.lexsort((b[:, 0], b[:, 1]))].tolist()
    merged: list[np.ndarray] = []
    gaps: list[tuple[float, float]] = []
    for band in bands:
        own = _gaps_of(b[band], unit)
        shared = _shared(gaps, b[merged[-1]], own, b[band]) if merged else None
        if shared is not None:
            merged[-1], gaps = np.concatenate([merged[-1], band]), shared
        else:
            merged.append(band)
            gaps = own
    if len(merged) == 1:  # nothing to cut: top to bottom
        return index[np.lexsort((b[:, 0], b[:, 1]))].tolist()
    return [i for part in merged for i in _xy_cut(index[part], boxes, unit)]


def _cuts(starts: np.ndarray, stops: np.ndarray, min_gap: float) -> list[np.ndarray]:
    """Items split at the white gaps (wider than min_gap) of their projection, in order."""
    order = np.argsort(starts, kind="stable")
    reach = np.maximum.accumulate(stops[order])
    breaks = np.flatnonzero(starts[order][1:] - reach[:-1] > min_gap) + 1
    return np.split(order, breaks)


def _gaps_of(b: np.ndarray, unit: float) -> list[tuple[float, float]]:
    """The x intervals wider than `unit` that no item of a band covers, between its leftmost and rightmost."""
    parts = _cuts(b[:, 0], b[:, 2], unit)
    return [(float(b[p, 2].max()), float(b[q, 0].min())) for p, q in pairwise(parts)]


def _shared(gaps: list[tuple[float, float]], before: np.ndarray, own: list[tuple[float, float]],
            after: np.ndarray) -> list[tuple[float, float]] | None:
    """The column gaps of two bands read as one stretch of columns (None when they are not): gaps that
    overlap, or the gaps of one when the other lies wholly on one side of the middle of one of them."""
    common = [(max(a, c), min(b, d)) for a, b in gaps for c, d in own if max(a, c) < min(b, d)]
    if common:
        return common
    for mine, other in ((gaps, after), (own, before)):
        beside = [(lo, hi) for lo, hi in mine
                  if other[:, 2].max() <= (lo + hi) / 2 or other[:, 0].min() >= (lo + hi) / 2]
        if beside:
            return beside
    return None
