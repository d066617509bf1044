"""Line views: how a model that reads lines (the embedded model, `reading: "lines"` in its config) sees a page.

A page's text lines (found by `dsocr.pipeline.layout`) are cut out at their ink box and scaled to one x-height,
their baselines at one height in the row (`line_scaling`: the x-height band is where the line's ink is densest);
the lines of one paragraph (or table cell) are joined end to end with a word space, as their text is, and the
strip is split at word gaps into segments that fit a view's width. The segments are packed into views of `size`
x `size` pixels, one per row of 64 pixels: the vision tower's cell (16-pixel patches, compressed 4 x 4), so every
row of the view's visual tokens holds one run of print, read left to right, rows top to bottom. The model answers
the `free` prompt with the rows' texts, one per line. Training draws the same views (`dsocr.training.strips`)
with this module's functions, so what the model learns is what the pipeline shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dsocr.model.config import PIXELS_PER_TOKEN

ROW = PIXELS_PER_TOKEN  # one cell of the vision tower (patch 16 x the neck's two stride-2 convolutions)
X_HEIGHT = 18  # a line's x-height after scaling (~4 characters a cell)
BASELINE = 46  # a line's baseline, from the top of its row: ascenders reach ~20, descenders ~54
BAND = 0.5  # rows with this share of a line's typical busy row's ink make its x-height band
STEP = 0.65  # a band's rows above its sharpest rise with under this share of the ink below are capitals' tops
MARGIN = 8  # left margin of every row
MIN_GAP = 6  # columns without ink, at X_HEIGHT, that may separate two segments (a word space is ~10)
WORD_GAP = 12  # blank columns between two lines joined end to end
CUT_WINDOW = 0.5  # a long line is cut at a word space in the last half of a row's width ...
WORD_SPACE_SHARE = 0.7  # ... at least this share of the widest gap there
INK_LEVEL = 160  # grey values darker than this are ink (clean print on light paper)
FAINT = 40  # grey levels below the paper: a mark, however light (a segment's ends are trimmed to the marks)
SHADE = 24  # grey levels: a line's crop whose paper differs more from the page's sits on a shade (`on_paper`)
WHITE = (255, 255, 255)


def rows_per_view(size: int) -> int:
    return size // ROW


def segment_width(size: int) -> int:
    """The widest segment a row of a `size` view holds."""
    return size - 2 * MARGIN


def ink_box(image: Image.Image, level: int = INK_LEVEL) -> tuple[int, int, int, int] | None:
    """The box (x1, y1, x2, y2, exclusive) of the pixels darker than `level`, None if there are none."""
    grey = np.asarray(image.convert("L"))
    ys, xs = np.nonzero(grey < level)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@dataclass(frozen=True, slots=True)
class Scaling:
    scale: float  # row pixels per crop pixel
    top: float  # where the crop's top row lands in its row (negative: above it, clipped)


def line_scaling(crop: Image.Image) -> Scaling:
    """How a line's crop goes into a row: its x-height band (the rows holding at least BAND of a busy row's ink,
    the 75th percentile: the x-height letters; ascenders and descenders are sparser; in bold Title Case, from
    its sharpest rise: `_x_top`) scaled to X_HEIGHT, its bottom (the baseline) at BASELINE. A line with no
    x-height letters ("2026", "TOTAL") is scaled by what it has, its band at least 0.4 of its ink's height ("-",
    "."); a line that would not fit its row is scaled to fit. Training rows are scaled by the same rule."""
    grey = np.asarray(crop.convert("L"))
    if grey.size == 0:
        return Scaling(1.0, 0.0)
    # halfway between its paper and its darkest ink: light or blurred print keeps its thin strokes
    paper, darkest = _grey_percentiles(grey, (80, 1))
    if paper - darkest <= 40:  # no print: any scale will do
        return Scaling(X_HEIGHT / max(crop.height, 1), BASELINE - X_HEIGHT)
    counts = (grey < min((paper + darkest) / 2, INK_LEVEL + 40)).sum(axis=1)
    if not counts.any():
        return Scaling(X_HEIGHT / max(crop.height, 1), BASELINE - X_HEIGHT)
    ink = np.nonzero(counts)[0]
    level = BAND * np.percentile(counts[ink[0]:ink[-1] + 1], 75)  # not the max: one row of flat letter feet
    band = np.nonzero(counts >= level)[0]
    x_top = _x_top(counts[band[0]:band[-1] + 1])
    band = band[band >= band[0] + x_top]
    top = band[0] - _crossing(counts, band[0], band[0] - 1, level)  # sub-pixel edges: small print has
    if x_top:  # a step from the capitals' tops, not an edge from blank: halfway
        top = band[0] - 0.5
    base = band[-1] + 1 + _crossing(counts, band[-1], band[-1] + 1, level)  # an x-height of 5-8 pixels
    scale = X_HEIGHT / max(base - top, 0.4 * (int(ink[-1]) + 1 - int(ink[0])), 1.0)
    # A line taller than its row at that scale (a formula's fraction or integral) is scaled down to fit it,
    # its baseline kept: clipped, it could not be read. Text never is: its ascenders reach ~24 px of 46 above.
    above, below = base - ink[0], ink[-1] + 1 - base
    scale = min(scale, BASELINE / max(above, 1e-6), (ROW - BASELINE) / max(below, 1e-6))
    return Scaling(float(scale), float(BASELINE - base * scale))


def _x_top(band: np.ndarray) -> int:
    """Where the x-height letters start in a band that also holds the capitals' tops: in bold Title Case (a
    heading, "IBM MT/ST (Magnetic Tape)"), capitals, digits and ascenders fill the rows above the x-height to
    over BAND of a busy row, and the band would run from the capitals' top. The x-height's top is the band's
    sharpest rise, if the rows above it hold under STEP of the ink of the rows below and those are at least
    half the band (an x-height is ~0.7 of a capital's height); else 0, the whole band (small capitals, digits,
    lowercase text, whose band has no such step)."""
    if band.size < 4:
        return 0
    rise = int(np.argmax(np.diff(band.astype(np.int64)))) + 1  # first row after the sharpest rise
    if rise > band.size / 2 or band[:rise].mean() >= STEP * band[rise:].mean():
        return 0
    return rise


def _grey_percentiles(grey: np.ndarray, percents: Sequence[float]) -> list[float]:
    """`np.percentile(grey, percents)` (linear interpolation) of uint8 pixels, from their histogram: the same
    values at a fraction of the cost (a sort of every pixel, twice, was a third of a training row's cost)."""
    below = np.cumsum(np.bincount(grey.ravel(), minlength=256))  # below[v]: pixels <= v
    last = int(below[-1]) - 1
    values = []
    for percent in percents:
        rank = percent / 100 * last
        low = int(rank)
        a, b = np.searchsorted(below, (low, min(low + 1, last)), side="right")  # the low-th and next smallest
        values.append(float(a + (rank - low) * (b - a)))
    return values


def _crossing(counts: np.ndarray, inside: int, outside: int, level: float) -> float:
    """How far past the band's last row (0..1) the ink falls below `level`, by linear interpolation."""
    if not 0 <= outside < counts.size:
        return 0.0
    inner, outer = float(counts[inside]), float(counts[outside])
    return (inner - level) / (inner - outer) if inner > outer else 0.0


def normalize_line(crop: Image.Image, background: tuple[int, int, int] | None = None,
                   scaling: Scaling | None = None) -> Image.Image:
    """A line's crop (its ink box) in a ROW-high strip on `background` (default: the crop's paper), as
    `scaling` (default: `line_scaling(crop)`) says. Bicubic both ways: small print is enlarged, large print
    reduced, as the rows of training were."""
    scaling = scaling or line_scaling(crop)
    width = max(1, round(crop.width * scaling.scale))
    source = crop if crop.mode in ("L", "RGB") else crop.convert("RGB")  # grey crops resize at a third the cost
    resized = source.resize((width, max(1, round(crop.height * scaling.scale))), Image.Resampling.BICUBIC)
    strip = Image.new("RGB", (width, ROW), background or paper_colour(crop))
    strip.paste(resized.convert("RGB"), (0, round(scaling.top)))
    return strip


def join_lines(parts: Sequence[Image.Image], background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Normalized lines end to end, WORD_GAP apart, on `background`: a paragraph's lines as one strip, to be
    split into rows where its words allow (its text joins its lines with a space too)."""
    width = sum(p.width for p in parts) + WORD_GAP * (len(parts) - 1)
    strip = Image.new("RGB", (max(width, 1), ROW), background)
    x = 0
    for part in parts:
        strip.paste(part.convert("RGB"), (x, 0))
        x += part.width + WORD_GAP
    return strip


def split_line(line: Image.Image, max_width: int, min_gap: int = MIN_GAP) -> list[Image.Image]:
    """Cut a normalized line into segments no wider than `max_width`, each in a run of blank columns at least
    `min_gap` wide, at a word space where there is one (`_gap_cut`); a line without such a gap is cut hard at
    the limit. Blank columns at both ends of a segment are trimmed: blank of any mark FAINT darker than the paper,
    not only of ink (a small period upscaled from light print is grey, and its sentence ended without it)."""
    grey = np.asarray(line.convert("L"))
    ink = (grey < INK_LEVEL).any(axis=0)  # where the words are: segments are cut between them
    paper = _grey_percentiles(grey, (95,))[0]
    marks = (grey < max(paper - FAINT, INK_LEVEL)).any(axis=0)  # what a segment keeps at its ends, ink included
    segments, start, width = [], 0, ink.size
    while start < width:
        while start < width and not marks[start]:
            start += 1
        if start >= width:
            break
        if width - start <= max_width:
            end = _last_ink(marks, start, width)
            segments.append(line.crop((start, 0, end, line.height)))
            break
        cut = _gap_cut(ink, start, start + max_width, min_gap)
        end = _last_ink(marks, start, cut)
        segments.append(line.crop((start, 0, end, line.height)))
        start = cut
    return segments


def _last_ink(ink: np.ndarray, start: int, stop: int) -> int:
    columns = np.nonzero(ink[start:stop])[0]
    return start + int(columns[-1]) + 1 if columns.size else stop


def _gap_cut(ink: np.ndarray, start: int, stop: int, min_gap: int) -> int:
    """The column at which to end a segment that starts at `start` and must end by `stop`: the middle of a blank
    run of at least `min_gap` columns before `stop`, the rightmost one of the widest kind in the segment's last
    CUT_WINDOW (a word space there, not a wide gap between two letters of a word: mono and spaced type have those,
    and a word cut in two reads as two), else the rightmost anywhere, else `stop`."""
    blank = ~ink[start:stop]
    edges = np.diff(np.concatenate(([0], blank.astype(np.int8), [0])))
    runs = [(a, b) for a, b in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0])
            if b - a >= min_gap and a > 0]
    if not runs:
        return stop
    window = [(a, b) for a, b in runs if (a + b) / 2 >= (1 - CUT_WINDOW) * (stop - start)]
    if window:
        widest = max(b - a for a, b in window)
        runs = [(a, b) for a, b in window if b - a >= WORD_SPACE_SHARE * widest]
    run_start, run_end = runs[-1]
    return start + int(run_start + run_end) // 2


@dataclass(frozen=True, slots=True)
class Placement:
    view: int  # which view
    row: int  # which row of it


def row_origin(row: int, segment_height: int) -> tuple[int, int]:
    """Where a segment's top-left corner goes in its view: the left margin, centred in its row (a normalized
    segment is a row high)."""
    return MARGIN, row * ROW + (ROW - segment_height) // 2


def paper_colour(image: Image.Image) -> tuple[int, int, int]:
    """The paper of a page or of a line's crop: the 80th percentile of (a grid of) its pixels' colours, paper on a
    page and still paper in a tight crop of bold print. Views are filled with it, so that a cut-out line sits
    on the same paper as around it (training draws a view's rows on one paper too)."""
    step = 4 if min(image.size) >= 64 else 1
    pixels = np.asarray(image.convert("RGB"))[::step, ::step].reshape(-1, 3)
    r, g, b = (int(v) for v in np.percentile(pixels, 80, axis=0)) if pixels.size else WHITE
    return r, g, b


def on_paper(crop: Image.Image, paper: tuple[int, int, int]) -> Image.Image:
    """A line's crop that sits on a shade of its own (a table's header row, a highlight, a coloured box) moved
    onto the page's `paper`: a view shows all its rows on one paper, as training draws them, not a grey box
    around one. The shade is the crop's lightest tenth (small print's grey edges fill most of its box, so not
    its median); its ink keeps its darkness. A crop on (nearly) the page's paper is returned as it is."""
    grey = np.asarray(crop.convert("L"))
    if grey.size == 0:
        return crop
    shade, darkest = _grey_percentiles(grey, (90, 1))
    if abs(shade - _luma(paper)) <= SHADE or shade - darkest <= 40:  # the page's paper, or no print to keep
        return crop
    t = np.clip((grey.astype(np.float32) - darkest) / (shade - darkest), 0.0, 1.0)[..., None]  # 0 ink .. 1 shade
    rgb = darkest + t * (np.asarray(paper, dtype=np.float32) - darkest)
    return Image.fromarray(np.rint(rgb).astype(np.uint8), "RGB")


def _luma(colour: tuple[int, int, int]) -> float:
    r, g, b = colour
    return 0.299 * r + 0.587 * g + 0.114 * b  # as Pillow's "L"


def pack(segments: Sequence[Image.Image], size: int,
         background: tuple[int, int, int] = WHITE) -> tuple[list[Image.Image], list[Placement]]:
    """Segments into views of `size` x `size` filled with `background`, one segment per row in order; the last
    view's unused rows stay blank."""
    rows = rows_per_view(size)
    views: list[Image.Image] = []
    placements: list[Placement] = []
    for i, segment in enumerate(segments):
        view, row = divmod(i, rows)
        if row == 0:
            views.append(Image.new("RGB", (size, size), background))
        if segment.width > segment_width(size):
            segment = segment.crop((0, 0, segment_width(size), segment.height))
        views[view].paste(segment.convert("RGB"), row_origin(row, segment.height))
        placements.append(Placement(view, row))
    return views, placements
