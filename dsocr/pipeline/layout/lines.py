"""Text lines: column gutters, the smear that joins glyphs into lines, splitting lines that touched, joining
marks and pieces, and each line's box, size, baseline and stroke. Must not join lines into blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dsocr.pipeline.layout.boxes import Box


@dataclass(frozen=True, slots=True)
class _TextLine:
    box: Box
    size: float  # median glyph height: the text size, nearly free of which letters the line has
    base: float  # baseline at x = 0, the page's skew taken out
    stroke: float  # mean horizontal ink run: longer in bold text


def _gutters(ink: np.ndarray, unit: float) -> np.ndarray:
    """White strips between columns: at least 1.5 glyph heights wide, white for at least 8 down, and for at
    least 20 of them between ink on both sides (page margins reach the page edge; a word gap in a title has
    ink beside it for its own height only). Worked out on rows of half a glyph height."""
    step = max(1, int(unit // 2))
    height, width = ink.shape
    rows = -(-height // step)
    padded = np.zeros((rows * step, width), bool)
    padded[:height] = ink
    occupied = padded.reshape(rows, step, width).any(axis=1)  # (rows, width)
    index, cols = np.arange(rows, dtype=np.int32)[:, None], np.arange(width, dtype=np.int32)[None, :]
    above = np.maximum.accumulate(np.where(occupied, index, -1), axis=0)
    below = np.minimum.accumulate(np.where(occupied, index, rows)[::-1], axis=0)[::-1]
    near = ndimage.maximum_filter1d(occupied.view(np.uint8), 3, axis=0).view(bool)  # a row's ink, or its rim's
    left = np.maximum.accumulate(np.where(near, cols, -1), axis=1)
    right = np.minimum.accumulate(np.where(near, cols, width)[:, ::-1], axis=1)[:, ::-1]
    tall = ((below - above - 1) * step >= 8 * unit).view(np.uint8)
    wide = int(1.5 * unit) | 1  # an opening across: single white pixel columns (monospace text) do not count
    tall = ndimage.maximum_filter1d(ndimage.minimum_filter1d(tall, wide, axis=1), wide, axis=1).view(bool)
    between = tall & (left >= 0) & (right < width)
    count = np.concatenate([np.zeros((1, width), np.int32), np.cumsum(between, axis=0, dtype=np.int32)])
    beside = (np.take_along_axis(count, np.clip(below, 0, rows), axis=0)
              - np.take_along_axis(count, np.clip(above + 1, 0, rows), axis=0))
    gutter = (between & (beside * step >= 20 * unit)).view(np.uint8)
    gutter = ndimage.maximum_filter1d(ndimage.minimum_filter1d(gutter, wide, axis=1), wide, axis=1)  # still wide
    # Closed over short breaks down its white: where one column is blank for a line or two (a paragraph ends
    # there) the gutter still runs on, or a line beside it smears into the blank and on to a lone mark. Not
    # over ink: a line across both columns (a title, a wide caption) is not cut.
    gap = 2 * int(4 * unit // step) + 1
    closed = ndimage.minimum_filter1d(ndimage.maximum_filter1d(gutter, gap, axis=0), gap, axis=0)
    gutter |= closed & tall
    return np.repeat(gutter.view(bool), step, axis=0)[:height]


def _lines(comps: np.ndarray, walls: np.ndarray, gutters: np.ndarray, unit: float) -> np.ndarray:
    """The text line of each glyph component (ids 0..n-1): a horizontal smear of each glyph's box by twice its
    height (a word space, monospace included) joins the glyphs of a line, stopped by walls and gutters; then
    lines that touched are split, lone marks joined to their line and pieces of one line joined."""
    if len(comps) == 0:
        return np.zeros(0, int)
    heights = comps[:, 3] - comps[:, 1]
    reach = np.ceil(2 * np.maximum(heights, unit)).astype(int)
    smear, own = np.zeros(walls.shape, bool), np.zeros(walls.shape, bool)
    for x1, y1, x2, y2, x3 in np.column_stack([comps[:, :4], comps[:, 2] + reach]).tolist():
        smear[y1:y2, x2:x3] = True
        own[y1:y2, x1:x2] = True
    labels, _ = ndimage.label(smear & ~(walls | gutters) | own)  # they cut the reach, never a glyph's own box
    blob = labels[(comps[:, 1] + comps[:, 3]) // 2, comps[:, 0]]
    ids = np.unique(blob, return_inverse=True)[1].reshape(-1)
    ids = _split_stacked(ids, comps)
    ids = _attach_marks(ids, comps)
    return _absorb_inner(_join_pieces(ids, comps, walls, gutters, unit), comps)


def _join_fractions(ids: np.ndarray, comps: np.ndarray, bars: np.ndarray, unit: float) -> np.ndarray:
    """One line for a display formula's fraction: its bar (a short rule, taken out of the text) has lines
    stacked right above and below it within its width (numerator, denominator, a sum's limits) and a line at
    its height beside it ("17 ="). Read apart, each piece was a formula of its own; read as one line, the
    formula is read whole. A heading's underline has no line beside it, a table's rules run wider."""
    if len(comps) == 0 or len(bars) == 0:
        return ids
    n = int(ids.max()) + 1
    box = _group_boxes(ids, comps, n)
    target = np.arange(n)
    for x1, y1, x2, y2 in bars[(bars[:, 2] - bars[:, 0]) <= 25 * unit].tolist():
        inside = (box[:, 0] >= x1 - unit) & (box[:, 2] <= x2 + unit)
        above = inside & (box[:, 3] <= y1 + 1) & (box[:, 3] >= y1 - 6 * unit)
        below = inside & (box[:, 1] >= y2 - 1) & (box[:, 1] <= y2 + 6 * unit)
        level = (box[:, 1] < y1) & (box[:, 3] > y2)
        beside = level & (((box[:, 0] < x1) & (box[:, 2] >= x1 - 3 * unit))  # it may reach under the bar
                          | ((box[:, 2] > x2) & (box[:, 0] <= x2 + 3 * unit)))
        if above.any() and below.any() and beside.any():
            joined = np.isin(target, target[above | below | beside | (inside & level)])
            target[joined] = target[joined].min()
    return np.unique(target[ids], return_inverse=True)[1].reshape(-1)


def _group_boxes(ids: np.ndarray, boxes: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) union box of each group (empty groups: x1 > x2)."""
    out = np.tile(np.array([np.iinfo(np.int64).max] * 2 + [np.iinfo(np.int64).min] * 2), (n, 1))
    for k, ufunc in enumerate((np.minimum, np.minimum, np.maximum, np.maximum)):
        ufunc.at(out[:, k], ids, boxes[:, k])
    return out


def _group_median(ids: np.ndarray, values: np.ndarray, n: int, share: float = 0.5) -> np.ndarray:
    """Lower median of the values of each group (0 for an empty group); with `share`, that quantile."""
    order = np.lexsort((values, ids))
    counts = np.bincount(ids, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.floor((counts - 1) * share).astype(np.int64)
    return np.where(counts > 0, values[order][np.minimum(starts + rank, len(ids) - 1)], 0)


def _glyphs(ids: np.ndarray, comps: np.ndarray, n: int) -> np.ndarray:
    """Which components are glyphs, not marks (dots, underscores, commas): 40% of their line's tallest."""
    return _share_of_tallest(ids, comps, n, 0.4)


def _share_of_tallest(ids: np.ndarray, comps: np.ndarray, n: int, share: float) -> np.ndarray:
    heights = comps[:, 3] - comps[:, 1]
    tallest = np.zeros(n, np.int64)
    np.maximum.at(tallest, ids, heights)
    return heights >= share * tallest[ids]


def _group_size(ids: np.ndarray, comps: np.ndarray, n: int) -> np.ndarray:
    """Each line's text size: the median height of its glyphs."""
    glyphs = _glyphs(ids, comps, n)
    return _group_median(ids[glyphs], comps[glyphs, 3] - comps[glyphs, 1], n)


def _members(ids: np.ndarray, n: int) -> list[np.ndarray]:
    order = np.argsort(ids, kind="stable")
    return np.split(order, np.cumsum(np.bincount(ids, minlength=n))[:-1])


def _split_stacked(ids: np.ndarray, comps: np.ndarray) -> np.ndarray:
    """Split lines that hold lines one above the other (ink that touched across lines)."""
    n = int(ids.max()) + 1
    box = _group_boxes(ids, comps, n)
    size = _group_size(ids, comps, n)
    suspects = np.flatnonzero((box[:, 3] - box[:, 1] > 2.6 * size) & (np.bincount(ids, minlength=n) >= 4))
    if len(suspects) == 0:
        return ids
    ids = ids.copy()
    members = _members(ids, n)
    for g in suspects:
        for part in _stack_parts(members[g], comps)[1:]:
            ids[part] = n
            n += 1
    return ids


def _stack_parts(group: np.ndarray, comps: np.ndarray) -> list[np.ndarray]:
    """The glyph centres, less the line's slope, fall into clusters a line apart: one part per cluster."""
    boxes = comps[group]
    heights = boxes[:, 3] - boxes[:, 1]
    size = float(np.median(heights))
    letters = heights >= 0.6 * size
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    if letters.sum() < 3:
        return [group]
    slope = np.polyfit(cx[letters], cy[letters], 1)[0] if np.ptp(cx[letters]) > 0 else 0.0
    residual = cy - slope * cx
    ranked = np.sort(residual[letters])
    jumps = np.flatnonzero(np.diff(ranked) > 0.9 * size)
    if len(jumps) == 0:
        return [group]
    upper = residual < (ranked[jumps[0]] + ranked[jumps[0] + 1]) / 2
    width = np.ptp(cx) + 1
    for part in (upper, ~upper):  # lines, not a low glyph or two: several glyphs over much of the width
        if (part & letters).sum() < 3 or np.ptp(cx[part]) < 0.25 * width:
            return [group]
    return _stack_parts(group[upper], comps) + _stack_parts(group[~upper], comps)


def _attach_marks(ids: np.ndarray, comps: np.ndarray) -> np.ndarray:
    """Join lone small marks (dots of i and j, accents, quotes, underscores) to their line: the one above or
    below, over it, whose glyphs are more than twice as tall and whose core (from the median glyph top to the
    median glyph bottom, about x-height to baseline) is nearest: an underscore hangs under its line's
    baseline, a dot sits just over its line's x-height."""
    n = int(ids.max()) + 1
    box = _group_boxes(ids, comps, n)
    glyphs = _glyphs(ids, comps, n)
    size = _group_median(ids[glyphs], comps[glyphs, 3] - comps[glyphs, 1], n)
    top = _group_median(ids[glyphs], comps[glyphs, 1], n)
    bottom = _group_median(ids[glyphs], comps[glyphs, 3], n)
    height = box[:, 3] - box[:, 1]
    marks = np.flatnonzero(height <= 0.6 * size.max())
    b, h = box[marks], height[marks][:, None]
    cx = (b[:, 0] + b[:, 2])[:, None] / 2
    gap = np.maximum(np.maximum(top[None, :] - b[:, None, 3], b[:, None, 1] - bottom[None, :]), 0)
    below = box[None, :, 1] >= b[:, None, 1]
    slack = np.where(below, 0.5, 2.0) * size  # a dot sits over a glyph; underscores run on past the last one
    fits = ((h <= 0.6 * size) & (h <= 0.45 * height) & (gap <= 0.45 * size)
            & (cx >= box[:, 0] - slack) & (cx <= box[:, 2] + slack))
    fits[np.arange(len(marks)), marks] = False
    if not fits.any():
        return ids
    score = np.where(fits, 2 * gap + ~below, np.inf)  # on a tie the line below (dots, accents)
    target = np.arange(n)
    has = np.isfinite(score.min(axis=1))
    target[marks[has]] = np.argmin(score[has], axis=1)
    for _ in range(3):  # a mark on a mark: follow to the line
        target = target[target]
    return np.unique(target[ids], return_inverse=True)[1].reshape(-1)


def _ends(ids: np.ndarray, comps: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each line piece's left and right end, (n, 2, 4): the band of its glyphs within two glyph heights of
    that end (level on a slanted line; marks left out unless there is nothing else), with the piece's outer x;
    and (n, 2) the x where its glyphs of at least half the text size begin and end (an underscore may reach
    under the next piece, a quote or dash stand beyond)."""
    heights = comps[:, 3] - comps[:, 1]
    size = _group_size(ids, comps, n)[ids]
    letters = _share_of_tallest(ids, comps, n, 0.5)
    reach = _group_boxes(ids[letters], comps[letters], n)
    first = letters & (comps[:, 0] <= reach[ids, 0] + 2 * size)
    last = letters & (comps[:, 2] >= reach[ids, 2] - 2 * size)
    outer, head, tail = (_group_boxes(ids, comps, n), _group_boxes(ids[first], comps[first], n),
                         _group_boxes(ids[last], comps[last], n))
    left = np.column_stack([outer[:, 0], head[:, 1:]])
    right = np.column_stack([tail[:, :2], outer[:, 2], tail[:, 3]])
    glyphs = heights >= 0.5 * size
    inner = _group_boxes(ids[glyphs], comps[glyphs], n)[:, [0, 2]]
    return np.stack([left, right], axis=1), np.where(inner[:, :1] <= inner[:, 1:], inner, outer[:, [0, 2]])


def _join_pieces(ids: np.ndarray, comps: np.ndarray, walls: np.ndarray, gutters: np.ndarray,
                 unit: float) -> np.ndarray:
    """Join pieces of one line that the smear left apart (a wide space after a dash, quote or underscore):
    side by side, level at their facing ends (or one a small mark within the other's band), less than 1.5
    line heights apart (a lone bullet 2.5). Never across a wall; a gutter keeps them apart unless the text is
    large (a title over two columns), the left piece is a bullet, or the right piece does not start at a column
    edge (a start fewer than two other lines share: a word gap that runs into the white beside a figure or an
    equation)."""
    for _ in range(3):  # a piece grown by a mark can reach the next
        n = int(ids.max()) + 1
        if n < 2:
            break
        ends, inner = _ends(ids, comps, n)
        size = _group_size(ids, comps, n)
        right, left = ends[:, None, 1], ends[None, :, 0]  # piece i's right end against piece j's left end
        hr, hl = right[..., 3] - right[..., 1], left[..., 3] - left[..., 1]
        low, high = np.minimum(hr, hl), np.maximum(hr, hl)
        level = np.minimum(right[..., 3], left[..., 3]) - np.maximum(right[..., 1], left[..., 1]) >= 0.5 * low
        bullet = _small_within(right, left)  # a small piece on the left, within the band of the right one
        mark = _small_within(left, right)
        gap = left[..., 0] - right[..., 2]
        gap = np.where(gap >= -0.5 * low, gap, inner[None, :, 0] - inner[:, None, 1])
        lone = (ends[:, 1, 2] - ends[:, 0, 0])[:, None] <= high  # a piece no wider than a glyph: "•", "-", "1"
        reach = np.where(bullet & lone, 2.5, 1.5) * high  # a bullet stands up to two ems before its item
        fits = (level | bullet | mark) & (gap >= -0.5 * low) & (gap <= reach)
        fits &= left[..., 2] > right[..., 2]
        score = np.where(fits, gap, np.inf)
        nearest = np.argmin(score, axis=1)
        pairs = []
        for i in np.flatnonzero(np.isfinite(score[np.arange(n), nearest])):
            j = int(nearest[i])
            y1, y2 = int(min(ends[i, 1, 1], ends[j, 0, 1])), int(max(ends[i, 1, 3], ends[j, 0, 3]))
            x1, x2 = sorted((int(ends[i, 1, 2]), int(ends[j, 0, 0])))
            if walls[y1:y2, x1:x2].any():
                continue
            if (not gutters[y1:y2, x1:x2].any() or min(size[i], size[j]) >= 1.45 * unit or bullet[i, j]
                    or not _column_edge(ends, j, unit)):
                pairs.append((i, j))
        if not pairs:
            break
        rows, cols = zip(*pairs)
        graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        ids = connected_components(graph, directed=False)[1][ids]
    return ids


def _small_within(small: np.ndarray, big: np.ndarray) -> np.ndarray:
    """Whether the `small` end is under 0.7 of the `big` one's height and within its band grown by half."""
    h_small, h_big = small[..., 3] - small[..., 1], big[..., 3] - big[..., 1]
    return ((h_small <= 0.7 * h_big) & (small[..., 1] >= big[..., 1] - 0.5 * h_big)
            & (small[..., 3] <= big[..., 3] + 0.5 * h_big))


def _absorb_inner(ids: np.ndarray, comps: np.ndarray) -> np.ndarray:
    """Join a piece that lies within another line, between its glyphs there ("or" in "object.__or__(", whose
    underscores joined the glyphs around it at the bottom)."""
    n = int(ids.max()) + 1
    box = _group_boxes(ids, comps, n)
    cy, width = (box[:, 1] + box[:, 3]) / 2, box[:, 2] - box[:, 0]
    within = ((box[:, None, 0] >= box[None, :, 0]) & (box[:, None, 2] <= box[None, :, 2])
              & (cy[:, None] > box[None, :, 1]) & (cy[:, None] < box[None, :, 3]) & (width[:, None] < width))
    np.fill_diagonal(within, False)
    if not within.any():
        return ids
    members, target, size = _members(ids, n), np.arange(n), _group_size(ids, comps, n)
    for i, j in zip(*np.nonzero(within)):
        near = comps[members[j]]
        near = near[(near[:, 2] > box[i, 0] - 2 * size[j]) & (near[:, 0] < box[i, 2] + 2 * size[j])]
        if len(near) and near[:, 1].min() < cy[i] < near[:, 3].max():  # its band there, even on a slant
            target[i] = j
    for _ in range(3):
        target = target[target]
    return np.unique(target[ids], return_inverse=True)[1].reshape(-1)


def _column_edge(ends: np.ndarray, j: int, unit: float) -> bool:
    """Whether two other lines within ten lines of piece j start where it starts (a slant allowed)."""
    x, top, bottom = ends[j, 0, 0], ends[j, 0, 1], ends[j, 0, 3]
    rise = np.abs(ends[:, 0, 1] - top)
    aligned = np.abs(ends[:, 0, 0] - x) <= max(2.0, 0.3 * unit) + 0.03 * rise
    near = (rise <= 10 * max(bottom - top, unit)) & aligned
    near[j] = False
    return int(near.sum()) >= 2


def _line_stats(labels: np.ndarray, text: np.ndarray, comps: np.ndarray, index: np.ndarray, ids: np.ndarray,
                unit: float) -> list[_TextLine]:
    """Box, size, skew-free baseline and stroke of each line; specks too small to be text are dropped."""
    if len(index) == 0:
        return []
    starts = text.copy()
    starts[:, 1:] &= ~text[:, :-1]
    runs = np.bincount(labels[starts], minlength=len(comps) + 1)[1:][index]
    sub = comps[index]
    n = int(ids.max()) + 1
    box = _group_boxes(ids, sub, n)
    heights = sub[:, 3] - sub[:, 1]
    size = _group_size(ids, sub, n)
    letters = heights >= 0.6 * size[ids]
    cx, bottom, g = (sub[letters, 0] + sub[letters, 2]) / 2, sub[letters, 3].astype(float), ids[letters]
    skew = _skew(g, cx, bottom, n, box, unit)
    # the baseline: most letters sit on it, but where print runs together a short line's few pieces may mostly
    # hang a descender ("grou" "pi" "n" "g."): the lower quartile of their bottoms, not the median
    base = _group_median(g, bottom - skew * cx, n, share=0.25)
    stroke = np.bincount(ids, sub[:, 4], n) / np.maximum(1, np.bincount(ids, runs, n))
    keep = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]) >= 0.4 * unit
    return [_TextLine(tuple(int(v) for v in box[k]), float(size[k]), float(base[k]), float(stroke[k]))
            for k in np.flatnonzero(keep)]


def _skew(g: np.ndarray, x: np.ndarray, y: np.ndarray, n: int, box: np.ndarray, unit: float) -> float:
    """The page's slope: the median least-squares slope of glyph bottoms along the long lines."""
    count = np.bincount(g, minlength=n)
    sx, sy = np.bincount(g, x, n), np.bincount(g, y, n)
    sxx, sxy = np.bincount(g, x * x, n), np.bincount(g, x * y, n)
    var = sxx - sx * sx / np.maximum(count, 1)
    long = (count >= 8) & (box[:, 2] - box[:, 0] > 20 * unit) & (var > 0)
    if not long.any():
        return 0.0
    return float(np.median((sxy[long] - sx[long] * sy[long] / count[long]) / var[long]))
