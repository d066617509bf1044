"""A scanned page's skew: found from its ink, undone by a rotation, and boxes mapped back to the page as given.

The layout step finds text lines by smearing ink sideways and a lines model reads each line cut at its ink box:
a page turned by a degree or two makes a long line climb several of its own x-heights, so it is straightened
first. The angle is the one whose rows of ink are sharpest: projected along the right slant, each text line's
ink falls into a few rows and the rows between lines are empty (the classical projection-profile method).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

MAX_ANGLE = 3.0  # degrees: scans and photos of pages flat on a glass are within this
COARSE_STEP, FINE_STEP = 0.1, 0.01  # degrees
MIN_ANGLE = 0.1  # degrees: below this a line of 1000 px climbs under 2 px, less than any effect on reading
MAX_POINTS = 60_000  # ink pixels sampled: enough for 0.01 degree on a page, a few ms per trial angle
MIN_POINTS = 200  # too little ink to tell (a blank page, a stamp)


def skew_angle(image: Image.Image) -> float:
    """The angle in degrees (counterclockwise, as `Image.rotate` turns) that the page's text lines are turned
    by; 0.0 when under MIN_ANGLE or when the page has too little ink to tell."""
    points = _ink_points(image)
    if points is None:
        return 0.0
    ys, xs = points
    coarse = np.arange(-MAX_ANGLE, MAX_ANGLE + COARSE_STEP / 2, COARSE_STEP)
    best = coarse[np.argmax([_sharpness(ys, xs, a) for a in coarse])]
    fine = np.arange(best - COARSE_STEP, best + COARSE_STEP + FINE_STEP / 2, FINE_STEP)
    angle = float(fine[np.argmax([_sharpness(ys, xs, a) for a in fine])])
    return round(angle, 2) if abs(angle) >= MIN_ANGLE else 0.0


def _ink_points(image: Image.Image) -> tuple[np.ndarray, np.ndarray] | None:
    """Coordinates of (a deterministic sample of) the page's ink pixels: clearly darker than its paper."""
    grey = np.asarray(image.convert("L"))
    paper = float(np.percentile(grey[::4, ::4], 80))
    ys, xs = np.nonzero(grey < min(paper - 60, 160))
    if ys.size < MIN_POINTS:
        return None
    if ys.size > MAX_POINTS:
        keep = np.random.default_rng(0).choice(ys.size, MAX_POINTS, replace=False)
        ys, xs = ys[keep], xs[keep]
    return ys.astype(np.float64), xs.astype(np.float64)


def _sharpness(ys: np.ndarray, xs: np.ndarray, angle: float) -> float:
    """How concentrated the ink's rows are when the page is read along `angle`: the sum of squared row counts.
    A line turned counterclockwise climbs to the right (y falls as x grows), so y + x tan(angle) is level."""
    rows = np.round(ys + xs * math.tan(math.radians(angle))).astype(np.int64)
    counts = np.bincount(rows - rows.min())
    return float(np.dot(counts, counts))


def straighten(image: Image.Image, angle: float, fill: tuple[int, int, int]) -> Image.Image:
    """The page turned back by `angle` (bicubic, the canvas grown so that no corner is lost, on `fill`)."""
    return image.convert("RGB").rotate(-angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)


def box_on_page(box: tuple[int, int, int, int], angle: float, page: tuple[int, int],
                straight: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box found on the straightened page (size `straight`), as the box around it on the page as given
    (size `page`, turned by `angle`), clipped to the page."""
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    (w, h), (sw, sh) = page, straight
    xs, ys = [], []
    for x, y in ((box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])):
        dx, dy = x - sw / 2, y - sh / 2  # the straightened page turned by `angle` again, about the centres
        xs.append(w / 2 + cos * dx + sin * dy)
        ys.append(h / 2 - sin * dx + cos * dy)
    return (max(0, math.floor(min(xs))), max(0, math.floor(min(ys))),
            min(w, math.ceil(max(xs))), min(h, math.ceil(max(ys))))
