"""Classical layout analysis of a clean printed page: text lines with tight ink boxes, in blocks, in order.

Owns binarisation, ruling lines, ruled tables, graphics, text lines, paragraphs, labels and reading order,
with numpy and scipy only; must not deskew, read text or load a model (its lines feed a one-line reader).

How: ink is what is clearly darker than the paper; long thin strokes are rules (crossing rules make a table
grid, rules with text between them an open table, rule frames and large or coloured marks an image); glyphs
join into lines through a horizontal smear that stops at column gutters (tall white strips with text on both
sides); lines join into paragraphs while the baseline pitch and the text size stay the same; and a recursive
X-Y cut orders the blocks, reading a band of columns column by column. Distances scale with `unit`, the
page's typical glyph height (about an x-height).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from PIL import Image, ImageChops
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 page pixels, x2/y2 exclusive

NOISE = 40  # grey levels under the paper that JPEG ringing and sensor noise can reach
FURNITURE = 0.085  # header and footer live in this fraction of the page (of its longer side)
EIGHT = np.ones((3, 3), bool)  # 8-connectivity


@dataclass(frozen=True, slots=True)
class Line:
    box: Box  # tight bounding box of the line's ink (after removing ruling lines)


@dataclass(frozen=True, slots=True)
class Region:
    label: str  # "title", "sub_title", "text", "table", "image", "header", "footer"
    box: Box  # tight box of the region (tables: the grid's outer box; images: the graphic)
    lines: tuple[Line, ...] = ()  # text lines in reading order (text-like labels)
    cells: tuple[tuple[tuple[Line, ...], ...], ...] = ()  # tables only: rows of cells, each cell's lines


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


@dataclass(frozen=True, slots=True)
class _TextLine:
    box: Box
    size: float  # median glyph height: the text size, nearly free of which letters the line has
    base: float  # baseline at x = 0, the page's skew taken out
    stroke: float  # mean horizontal ink run: longer in bold text


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
    seeds = _graphic_seeds(labels, comps, colour, unit)
    images = _graphics(comps[seeds, :4], frames, loose, unit)
    free = np.flatnonzero(~seeds & ~_inside_any(comps[:, :4], images))
    grids = [t for t in grids if not _inside_any(np.array([t.box]), images)[0]]  # boxes in a drawing
    tables = grids + _open_tables(loose[~_inside_any(loose, images)], hmask, comps[free], unit)
    walls = vmask.copy()  # what no line crosses: vertical rules (a pixel wider), open tables' column cuts
    walls[:, 1:] |= vmask[:, :-1]
    for table in tables:
        for x in table.cols[1:-1]:
            walls[table.box[1]:table.box[3], int(x)] = True
    line_of = _lines(comps[free], walls, _gutters(ink, unit), unit)
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


# --- ink -------------------------------------------------------------------------------------------------


def _channels(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels, and for colour images each pixel's colourfulness (max - min channel)."""
    if "A" in image.getbands():  # transparent parts are paper
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    gray = np.asarray(image.convert("L"))
    if image.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
        return gray, None
    r, g, b = image.convert("RGB").split()
    high = ImageChops.lighter(ImageChops.lighter(r, g), b)
    low = ImageChops.darker(ImageChops.darker(r, g), b)
    return gray, np.asarray(ImageChops.subtract(high, low))


def _binarize(gray: np.ndarray) -> np.ndarray | None:
    """Ink = darker than the paper by 30% of the paper-to-text contrast (at least NOISE levels): pale grey
    text still counts, speckle does not. None for a page without ink."""
    hist = np.bincount(gray.ravel(), minlength=256)
    cum = np.cumsum(hist)
    paper = int(np.searchsorted(cum, cum[-1] / 2))
    candidates = int(cum[paper - NOISE - 1]) if paper > NOISE else 0
    if candidates < 12:
        return None
    dark = int(np.searchsorted(cum, candidates * 0.1))  # the text's own level, not the darkest speck
    return gray < paper - max(NOISE, 0.3 * (paper - dark))


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components: the label image (component k is label k + 1) and (n, 5) rows x1, y1, x2, y2,
    area."""
    labels, count = ndimage.label(mask, structure=EIGHT)
    slices = ndimage.find_objects(labels)
    boxes = np.array([(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices], np.int64)
    boxes = boxes.reshape(-1, 4)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return labels, np.column_stack([boxes, areas])


def _glyph_unit(comps: np.ndarray) -> float:
    """The page's typical glyph height (about an x-height): the scale of every distance below."""
    heights, widths = comps[:, 3] - comps[:, 1], comps[:, 2] - comps[:, 0]
    glyphs = (heights >= 3) & (comps[:, 4] >= 4) & (widths <= 4 * heights)
    return max(3.0, float(np.median(heights[glyphs]))) if glyphs.sum() >= 3 else 8.0


# --- rules, tables and graphics -----------------------------------------------------------------------


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


def _overlap_groups(boxes: np.ndarray, pad: float) -> list[np.ndarray]:
    """Indices of boxes that touch, directly or through others, once grown by `pad` on every side."""
    if len(boxes) == 0:
        return []
    count, group = connected_components(coo_matrix(_touch(boxes, boxes, pad)), directed=False)
    return [np.flatnonzero(group == g) for g in range(count)]


def _touch(a: np.ndarray, b: np.ndarray, pad: float) -> np.ndarray:
    """(len(a), len(b)) matrix: box a[i] grown by pad overlaps box b[j]."""
    return ((a[:, None, 0] - pad < b[None, :, 2]) & (b[None, :, 0] < a[:, None, 2] + pad)
            & (a[:, None, 1] - pad < b[None, :, 3]) & (b[None, :, 1] < a[:, None, 3] + pad))


def _union(boxes: np.ndarray) -> np.ndarray:
    return np.array([boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()])


def _inside_any(boxes: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Which boxes have their centre inside one of the regions."""
    if len(regions) == 0 or len(boxes) == 0:
        return np.zeros(len(boxes), bool)
    cx, cy = (boxes[:, None, 0] + boxes[:, None, 2]) / 2, (boxes[:, None, 1] + boxes[:, None, 3]) / 2
    return ((regions[None, :, 0] <= cx) & (cx < regions[None, :, 2])
            & (regions[None, :, 1] <= cy) & (cy < regions[None, :, 3])).any(axis=1)


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


def _graphic_seeds(labels: np.ndarray, comps: np.ndarray, colour: np.ndarray | None,
                   unit: float) -> np.ndarray:
    """Components that are no glyph: much taller than text, large and filled, or coloured."""
    heights, widths, areas = comps[:, 3] - comps[:, 1], comps[:, 2] - comps[:, 0], comps[:, 4]
    filled = (heights > 3 * unit) & (widths > 3 * unit) & (areas > 0.6 * heights * widths)
    seeds = (heights > 6 * unit) | filled
    if colour is not None and len(comps):
        coloured = np.bincount(labels[colour > 60], minlength=len(comps) + 1)[1:]
        seeds |= (coloured > 0.4 * areas) & (areas >= 6)
    return seeds


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
               and abs(hrules[stack[-1], 2] - rule[2]) <= tol and rule[1] - hrules[stack[-1], 3] < 25 * unit]
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


# --- text lines ------------------------------------------------------------------------------------------


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


def _group_boxes(ids: np.ndarray, boxes: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) union box of each group (empty groups: x1 > x2)."""
    out = np.tile(np.array([np.iinfo(np.int64).max] * 2 + [np.iinfo(np.int64).min] * 2), (n, 1))
    for k, ufunc in enumerate((np.minimum, np.minimum, np.maximum, np.maximum)):
        ufunc.at(out[:, k], ids, boxes[:, k])
    return out


def _group_median(ids: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Lower median of the values of each group (0 for an empty group)."""
    order = np.lexsort((values, ids))
    counts = np.bincount(ids, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.where(counts > 0, values[order][np.minimum(starts + (counts - 1) // 2, len(ids) - 1)], 0)


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
    line heights apart. Never across a wall; a gutter keeps them apart unless the text is large (a title over
    two columns), the left piece is a bullet, or the right piece does not start at a column edge (a start
    fewer than two other lines share: a word gap that runs into the white beside a figure or an equation)."""
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
        fits = (level | bullet | mark) & (gap >= -0.5 * low) & (gap <= 1.5 * high)
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
    base = _group_median(g, bottom - skew * cx, n)
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


# --- blocks, labels and order ----------------------------------------------------------------------------


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
                              or (line.stroke >= 1.3 * body_stroke and line.size >= 0.95 * body_size)):
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
