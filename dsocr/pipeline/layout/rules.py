"""Rules, tables and graphics: long thin strokes, the table grids and frames their crossings make, tables
ruled only across (open tables), and the boxes of images. Must not form text lines or label text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dsocr.pipeline.layout.boxes import Box, _inside_any, _overlap_groups, _touch, _union
from dsocr.pipeline.layout.ink import _components


@dataclass(frozen=True, slots=True)
class _Table:
    box: Box
    rows: np.ndarray  # y edges, top to bottom (rows + 1 of them), along the table's slant
    cols: np.ndarray  # x edges, left to right (columns + 1)
    slant: float = 0.0  # dy/dx of its rules: row edges hold at x = box[0]

    def cell(self, box: Box) -> tuple[int, int]:
        """Row and column of the cell that holds the centre of `box`."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        row = int(np.searchsorted(self.rows, cy - self.slant * (cx - self.box[0]))) - 1
        col = int(np.searchsorted(self.cols, cx)) - 1
        return min(max(row, 0), len(self.rows) - 2), min(max(col, 0), len(self.cols) - 2)


def _rules(labels: np.ndarray, comps: np.ndarray,
           unit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ink of long thin strokes, horizontal and vertical, and their boxes. Only components long enough to hold
    one are searched (a table grid, an underline, a chart's axes), each within its own box."""
    hmask, vmask = np.zeros(labels.shape, bool), np.zeros(labels.shape, bool)
    lengths = (int(max(15, 6 * unit)) | 1, int(max(12, 4.5 * unit)) | 1)  # odd: the openings stay centred
    found: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    widths, heights = comps[:, 2] - comps[:, 0], comps[:, 3] - comps[:, 1]
    for k in np.flatnonzero((widths >= lengths[0]) | (heights >= lengths[1])):
        x1, y1, x2, y2 = (int(v) for v in comps[k, :4])
        own = labels[y1:y2, x1:x2] == k + 1
        for axis, length, mask, boxes in ((1, lengths[0], hmask, found[0]), (0, lengths[1], vmask, found[1])):
            if own.shape[axis] >= length:
                stroke, where = _strokes(own, length, axis, max(3.0, 0.35 * unit))
                mask[y1:y2, x1:x2] |= stroke
                boxes.append(where + [x1, y1, x1, y1])
    hboxes, vboxes = (np.concatenate(b).reshape(-1, 4) if b else np.zeros((0, 4), np.int64) for b in found)
    return hmask, hboxes, vmask, vboxes


def _strokes(own: np.ndarray, length: int, axis: int, thick: float) -> tuple[np.ndarray, np.ndarray]:
    """Runs of at least `length` along `axis` (1: horizontal), at most `thick` on average across; looked for
    in ink thickened by a pixel across, so that a rule slanted by a scan's rotation is still one run."""
    band = ndimage.maximum_filter1d(own.view(np.uint8), 3, axis=1 - axis)
    runs = ndimage.maximum_filter1d(ndimage.minimum_filter1d(band, length, axis=axis), length, axis=axis)
    labels, parts = _components(runs.view(bool) & own)
    along = parts[:, 3] - parts[:, 1] if axis == 0 else parts[:, 2] - parts[:, 0]
    keep = (along >= length) & (parts[:, 4] <= thick * along)
    return np.concatenate([[False], keep])[labels], parts[keep, :4]


def _rule_structures(hboxes: np.ndarray,
                     vboxes: np.ndarray) -> tuple[list[_Table], list[np.ndarray], np.ndarray]:
    """Crossing rules make table grids (two cells or more) or frames (a chart's axes, a box around a drawing);
    also returns the horizontal rules that cross nothing (underlines, the rules of open tables)."""
    rules = np.concatenate([hboxes, vboxes])
    horizontal = np.arange(len(rules)) < len(hboxes)
    grids, frames, loose = [], [], []
    for group in _overlap_groups(rules, pad=2):
        hs, vs = rules[group[horizontal[group]]], rules[group[~horizontal[group]]]
        if len(hs) == 0 or len(vs) == 0:
            loose += [i for i in group if horizontal[i]]
            continue
        table = _grid(hs, vs)
        if table is not None:
            grids.append(table)
        else:
            frames.append(_union(rules[group]))
    return grids, frames, rules[np.array(loose, int)]


def _grid(hs: np.ndarray, vs: np.ndarray) -> _Table | None:
    """A table when the rules that span the structure cut it into two cells or more."""
    box = _union(np.concatenate([hs, vs]))
    width, height = box[2] - box[0], box[3] - box[1]
    ys = hs[(hs[:, 2] - hs[:, 0]) >= 0.85 * width][:, [1, 3]].mean(axis=1)
    xs = vs[(vs[:, 3] - vs[:, 1]) >= 0.85 * height][:, [0, 2]].mean(axis=1)
    # a slanted rule's centre lies up to its own height inside the grid's box
    rows = _edges(ys, box[1], box[3], max(4, int((hs[:, 3] - hs[:, 1]).max())))
    cols = _edges(xs, box[0], box[2], max(4, int((vs[:, 2] - vs[:, 0]).max())))
    if (len(rows) - 1) * (len(cols) - 1) < 2:
        return None
    return _Table(tuple(int(v) for v in box), rows, cols)


def _edges(centres: np.ndarray, lo: float, hi: float, merge: float = 4) -> np.ndarray:
    """Sorted cut positions from lo to hi; rule centres near an end or near each other count once."""
    edges = [float(lo)]
    for c in np.sort(centres):
        if c - edges[-1] > merge and hi - c > merge:
            edges.append(float(c))
    return np.array(edges + [float(hi)])


def _coloured(labels: np.ndarray, comps: np.ndarray, colour: np.ndarray | None) -> np.ndarray:
    """Components mostly of coloured (not grey) pixels."""
    if colour is None or not len(comps):
        return np.zeros(len(comps), bool)
    counts = np.bincount(labels[colour > 60], minlength=len(comps) + 1)[1:]
    return (counts > 0.4 * comps[:, 4]) & (comps[:, 4] >= 6)


def _graphic_seeds(comps: np.ndarray, coloured: np.ndarray, unit: float) -> np.ndarray:
    """Components that are no glyph: much taller than text, large and filled, or coloured and not print.
    Coloured glyphs (links, headings, highlighted code) are print when they are in a word (`_in_words`) and
    touch no large coloured mark (a chart's dots and labels)."""
    heights, widths, areas = comps[:, 3] - comps[:, 1], comps[:, 2] - comps[:, 0], comps[:, 4]
    filled = (heights > 3 * unit) & (widths > 3 * unit) & (areas > 0.6 * heights * widths)
    glyphs = coloured & (heights <= 2.5 * unit) & (widths <= 3 * unit)
    marks = coloured & ~glyphs
    seeds = ((heights > 6 * unit) & ~_formula_strokes(comps, coloured, unit)) | filled | marks
    if glyphs.any():
        index = np.flatnonzero(glyphs)
        by_mark = _touch(comps[index, :4], comps[marks, :4], pad=unit).any(axis=1)
        seeds[index[~_in_words(index, comps, unit) | by_mark]] = True
    return seeds


def _formula_strokes(comps: np.ndarray, coloured: np.ndarray, unit: float) -> np.ndarray:
    """Tall strokes of a display formula, which are print, not drawings: a radical's check over a fraction (its
    bar is taken for a rule), a big integral or bracket; a narrow black stroke up to ten glyphs tall with the
    formula's glyphs close beside it (a chart's strokes are wider, coloured or stand alone)."""
    heights, widths = comps[:, 3] - comps[:, 1], comps[:, 2] - comps[:, 0]
    tall = np.flatnonzero(~coloured & (heights > 6 * unit) & (heights <= 10 * unit) & (widths <= 0.5 * heights)
                          & (comps[:, 4] < 0.5 * heights * widths))
    strokes = np.zeros(len(comps), bool)
    small = np.flatnonzero((heights <= 2.5 * unit) & ~coloured)
    if not len(tall) or not len(small):
        return strokes
    middle = (comps[small, 1] + comps[small, 3]) / 2
    gap = 2.5 * unit
    for i in tall:
        x1, y1, x2, y2 = comps[i, :4]
        level = (middle > y1) & (middle < y2)
        right = (comps[small, 0] >= x2 - 0.5 * unit) & (comps[small, 0] <= x2 + gap)
        left = (comps[small, 2] <= x1 + 0.5 * unit) & (comps[small, 2] >= x1 - gap)
        strokes[i] = bool((level & (right | left)).any())
    return strokes


def _in_words(index: np.ndarray, comps: np.ndarray, unit: float) -> np.ndarray:
    """Which of the components `index` have a neighbour within a letter gap, as the letters of a word do (a
    chart's dots mostly stand alone)."""
    touching = _touch(comps[index, :4], comps[:, :4], pad=0.6 * unit)
    touching[np.arange(len(index)), index] = False
    return touching.any(axis=1)


def _drawing_frames(frames: list[np.ndarray], comps: np.ndarray, seeds: np.ndarray, coloured: np.ndarray,
                    unit: float) -> list[np.ndarray]:
    """The frames around drawings, not those that box text (`_boxes_text`), whose text is read."""
    return [frame for frame in frames if not _boxes_text(frame, comps, seeds, coloured, unit)]


def _boxes_text(frame: np.ndarray, comps: np.ndarray, seeds: np.ndarray, coloured: np.ndarray,
                unit: float) -> bool:
    """A code listing or a callout (no graphic mark inside, three glyphs or more), or a box of text around a
    picture (an infobox: the marks cover under half of it, twenty glyphs or more beside them); the glyphs
    mostly black and mostly in words (a scatter plot's dots are not)."""
    boxes = comps[:, :4]
    inside = ((boxes[:, 0] > frame[0]) & (boxes[:, 2] < frame[2]) & (boxes[:, 1] > frame[1])
              & (boxes[:, 3] < frame[3]))
    glyph = inside & ~seeds & (comps[:, 3] - comps[:, 1] <= 2.5 * unit)
    least = 3
    if (inside & seeds).any():
        drawn = _union(boxes[inside & seeds]) + np.array([-unit, -unit, unit, unit])
        if _area(drawn) >= 0.5 * _area(frame):
            return False
        glyph &= ~_inside_any(boxes, drawn[None])
        least = 20
    glyphs = np.flatnonzero(glyph)
    black = int((~coloured[glyphs]).sum())
    return black >= least and 2 * black >= len(glyphs) and _in_words(glyphs, comps, unit).mean() >= 0.7


def _area(box: np.ndarray) -> float:
    return float(max(0, box[2] - box[0]) * max(0, box[3] - box[1]))


def _graphics(seeds: np.ndarray, frames: list[np.ndarray], loose: np.ndarray, unit: float) -> np.ndarray:
    """Boxes of images: seeds and rule frames near each other (a chart's bars, slices, dots and axes) make
    one, with the loose rules that touch it (a bar chart's base line)."""
    parts = np.concatenate([seeds.reshape(-1, 4), np.array(frames, np.int64).reshape(-1, 4)])
    boxes = np.array([_union(parts[g]) for g in _overlap_groups(parts, pad=unit)]).reshape(-1, 4)
    if len(boxes) and len(loose):
        boxes = np.concatenate([boxes, loose[_touch(loose, boxes, pad=2).any(axis=1)]])
        boxes = np.array([_union(boxes[g]) for g in _overlap_groups(boxes, pad=2)])
    big = (boxes[:, 2] - boxes[:, 0] >= 2 * unit) & (boxes[:, 3] - boxes[:, 1] >= 2 * unit)
    return boxes[big]


def _open_tables(hrules: np.ndarray, hmask: np.ndarray, comps: np.ndarray, unit: float) -> list[_Table]:
    """Tables ruled only across (top, under the header, bottom): stacked rules of one width with text between
    them that falls into rows and aligned columns."""
    stacks: list[list[int]] = []  # (tables side by side in two columns stack apart)
    for i in np.argsort(hrules[:, 1]):
        rule, tol = hrules[i], max(4.0, 0.02 * (hrules[i, 2] - hrules[i, 0]))
        fit = [stack for stack in stacks if abs(hrules[stack[-1], 0] - rule[0]) <= tol
               and abs(hrules[stack[-1], 2] - rule[2]) <= tol and rule[1] - hrules[stack[-1], 3] < 40 * unit]
        if fit:
            fit[-1].append(i)
        else:
            stacks.append([i])
    tables = []
    for stack in stacks:
        start = 0
        while start < len(stack) - 1:  # the most rules from `start` on that enclose one table
            for end in range(len(stack), start + 1, -1):
                table = _open_table(hrules[stack[start:end]], hmask, comps, unit)
                if table is not None:
                    tables.append(table)
                    break
            start = end - 1 if table is not None else start + 1  # its bottom rule may top the next
    return tables


def _open_table(rules: np.ndarray, hmask: np.ndarray, comps: np.ndarray, unit: float) -> _Table | None:
    """Rows and columns from the white gaps between the glyphs, measured along the rules' slant."""
    box = _union(rules)
    ys, xs = np.nonzero(hmask[rules[0, 1]:rules[0, 3], rules[0, 0]:rules[0, 2]])
    slant = float(np.polyfit(xs, ys, 1)[0]) if len(xs) > 1 and np.ptp(xs) > 0 else 0.0
    inside = comps[_inside_any(comps[:, :4], box[None])]
    glyphs = inside[(inside[:, 3] - inside[:, 1]) >= 0.5 * unit]  # dots and commas open no row gap
    if len(glyphs) < 4:
        return None
    shift = np.round(slant * ((glyphs[:, 0] + glyphs[:, 2]) / 2 - box[0])).astype(np.int64)
    tops, bottoms = glyphs[:, 1] - shift, glyphs[:, 3] - shift
    row_gaps = _gaps(tops, bottoms, int(tops.min()), int(bottoms.max()), 0.5 * unit)
    col_gaps = _gaps(glyphs[:, 0], glyphs[:, 2], box[0], box[2], 1.2 * unit)
    if not row_gaps or not col_gaps:
        return None
    rows = np.array([-np.inf, *[(a + b) / 2 for a, b in row_gaps], np.inf])
    cols = np.array([box[0], *[(a + b) / 2 for a, b in col_gaps], box[2]], float)
    return _Table(tuple(int(v) for v in box), rows, cols, slant)


def _gaps(starts: np.ndarray, stops: np.ndarray, lo: int, hi: int, min_gap: float) -> list[tuple[int, int]]:
    """White intervals wider than min_gap between covered ones (not at the ends) of [lo, hi)."""
    cover = np.zeros(hi - lo + 1, int)
    np.add.at(cover, np.clip(starts - lo, 0, hi - lo), 1)
    np.add.at(cover, np.clip(stops - lo, 0, hi - lo), -1)
    covered = np.flatnonzero(np.cumsum(cover)[:-1] > 0)
    jumps = np.flatnonzero(np.diff(covered) > min_gap)
    return [(lo + int(covered[k]) + 1, lo + int(covered[k + 1])) for k in jumps]
