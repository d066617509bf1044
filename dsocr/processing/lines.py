"""Line views: how a model that reads lines (the embedded model, `reading: "lines"` in its config) sees a page.

A page's text lines (found by `dsocr.pipeline.layout`) are cut out at their ink box, scaled to one ink height,
split at word gaps into segments that fit a view's width, and packed into views of `size` x `size` pixels,
one segment per row of 64 pixels: the vision tower's cell (16-pixel patches, compressed 4 x 4), so every row of
the view's visual tokens holds exactly one line of print, read left to right, rows top to bottom. The model
answers the `free` prompt with the rows' texts, one per line. Training draws the same views
(`dsocr.training.strips`) with this module's functions, so what the model learns is what the pipeline shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dsocr.model.config import PIXELS_PER_TOKEN

ROW = PIXELS_PER_TOKEN  # one cell of the vision tower (patch 16 x the neck's two stride-2 convolutions)
INK_HEIGHT = 44  # a line's ink box is scaled to this height, centred in its row
MARGIN = 8  # left margin of every row
MIN_GAP = 7  # columns without ink, at INK_HEIGHT, that may separate two segments (a word space is ~12)
INK_LEVEL = 160  # grey values darker than this are ink (clean print on light paper)
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


def normalize_line(crop: Image.Image, ink_height: int = INK_HEIGHT) -> Image.Image:
    """A line's crop (its ink box) scaled to `ink_height` pixels high, in RGB. Bicubic both ways: small print is
    enlarged, large print reduced, as the rows of training were."""
    width, height = crop.size
    scale = ink_height / max(height, 1)
    new = (max(1, round(width * scale)), ink_height)
    return crop.convert("RGB").resize(new, Image.Resampling.BICUBIC)


def split_line(line: Image.Image, max_width: int, min_gap: int = MIN_GAP) -> list[Image.Image]:
    """Cut a normalized line into segments no wider than `max_width`, each at the middle of the widest run of
    blank columns (at least `min_gap` wide) that keeps the segment under the limit; a line without such a gap
    is cut hard at the limit. Blank columns at both ends of a segment are trimmed."""
    ink = (np.asarray(line.convert("L")) < INK_LEVEL).any(axis=0)
    segments, start, width = [], 0, ink.size
    while start < width:
        while start < width and not ink[start]:
            start += 1
        if start >= width:
            break
        if width - start <= max_width:
            end = _last_ink(ink, start, width)
            segments.append(line.crop((start, 0, end, line.height)))
            break
        cut = _gap_cut(ink, start, start + max_width, min_gap)
        end = _last_ink(ink, start, cut)
        segments.append(line.crop((start, 0, end, line.height)))
        start = cut
    return segments


def _last_ink(ink: np.ndarray, start: int, stop: int) -> int:
    columns = np.nonzero(ink[start:stop])[0]
    return start + int(columns[-1]) + 1 if columns.size else stop


def _gap_cut(ink: np.ndarray, start: int, stop: int, min_gap: int) -> int:
    """The column at which to end a segment that starts at `start` and must end by `stop`: the middle of the
    rightmost blank run of at least `min_gap` columns before `stop`, else `stop`."""
    blank = ~ink[start:stop]
    edges = np.diff(np.concatenate(([0], blank.astype(np.int8), [0])))
    runs = list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]))
    for run_start, run_end in reversed(runs):
        if run_end - run_start >= min_gap and run_start > 0:
            return start + int(run_start + run_end) // 2
    return stop


@dataclass(frozen=True, slots=True)
class Placement:
    view: int  # which view
    row: int  # which row of it


def row_origin(row: int, segment_height: int) -> tuple[int, int]:
    """Where a segment's top-left corner goes in its view: the left margin, centred in its row."""
    return MARGIN, row * ROW + (ROW - segment_height) // 2


def paper_colour(image: Image.Image) -> tuple[int, int, int]:
    """The page's paper: the median colour of (a grid of) its pixels, which on a document are mostly paper. Views
    are filled with it, so that a cut-out line sits on the same paper as around it (training draws a view's
    rows on one paper too)."""
    pixels = np.asarray(image.convert("RGB"))[::4, ::4].reshape(-1, 3)
    r, g, b = (int(v) for v in np.median(pixels, axis=0)) if pixels.size else WHITE
    return r, g, b


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
