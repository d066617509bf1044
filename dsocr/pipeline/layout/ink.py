"""Ink: the page's grey levels and colourfulness, binarisation against the paper, 8-connected components and
the glyph unit every later distance scales with. Must not tell glyphs from rules or group them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageChops
from scipy import ndimage

NOISE = 40  # grey levels under the paper that JPEG ringing and sensor noise can reach
EIGHT = np.ones((3, 3), bool)  # 8-connectivity


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
