"""The page's boxes: the Box type, the Line and Region that the analysis returns, and box arithmetic on
(n, 4) arrays shared by the stages. Must not look at pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 page pixels, x2/y2 exclusive


@dataclass(frozen=True, slots=True)
class Line:
    box: Box  # tight bounding box of the line's ink (after removing ruling lines)


@dataclass(frozen=True, slots=True)
class Region:
    label: str  # "title", "sub_title", "text", "table", "image", "header", "footer"
    box: Box  # tight box of the region (tables: the grid's outer box; images: the graphic)
    lines: tuple[Line, ...] = ()  # text lines in reading order (text-like labels)
    cells: tuple[tuple[tuple[Line, ...], ...], ...] = ()  # tables only: rows of cells, each cell's lines


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
