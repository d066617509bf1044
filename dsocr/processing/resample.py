"""Pillow's bicubic `Image.resize` and `ImageOps.pad`, bit for bit, on any torch device.

Must not be approximate: the model was trained on Pillow's pixels, and `tests/processing/test_resample.py`
compares every output byte with Pillow's. On a GPU this turns the most expensive part of preprocessing (two
bicubic resizes of a whole page, ~100 ms on one CPU core) into well under a millisecond, so the CPU only
renders pages and hands over uint8 pixels.

How it stays exact (Pillow's src/libImaging/Resample.c, 8-bit path):
- filter weights are computed in float64 on the CPU exactly as Pillow does (same operations in the same
  order, the sum of weights accumulated tap by tap), then rounded to 22-bit fixed point like Pillow;
- each pass is a product of uint8 pixels with those integer weights. Every product and partial sum is an
  integer below 2**31, which float64 holds exactly, so a float64 matmul gives Pillow's integer sums in any
  summation order; `(sum + 2**21) >> 22` clamped to 0..255 is Pillow's `clip8`;
- the two passes run in the installed Pillow's order, with the uint8 rounding in between: Pillow 13 runs the
  vertical pass first when the height shrinks more than twice as much as the width, older Pillow always
  runs the horizontal pass first (the two differ only for such extreme shapes, never for document pages).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import PIL
import torch

PRECISION_BITS = 32 - 8 - 2
SUPPORT = 2.0  # bicubic
VERTICAL_PASS_FIRST = int(PIL.__version__.split(".")[0]) >= 13  # see the module docstring


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@lru_cache(maxsize=64)
def _weights(in_size: int, out_size: int) -> np.ndarray:
    """(in_size, out_size) float64 matrix of Pillow's fixed-point weights for a full-range resize."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = SUPPORT * filterscale
    ksize = math.ceil(support) * 2 + 1
    inv_filterscale = 1.0 / filterscale
    center = 0.0 + (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C's (int) truncates; values are >= 0 here
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    valid = taps[None, :] < xmax[:, None]
    w = np.where(valid, _bicubic(((taps[None, :] + xmin[:, None]) - center[:, None] + 0.5) * inv_filterscale), 0.0)
    ww = np.zeros(out_size)
    for k in range(ksize):  # tap by tap, like the C loop (numpy's sum would pair them differently)
        ww = ww + w[:, k]
    w = np.where(ww[:, None] != 0.0, w / np.where(ww == 0.0, 1.0, ww)[:, None], w)
    fixed = np.where(w < 0, np.trunc(-0.5 + w * (1 << PRECISION_BITS)), np.trunc(0.5 + w * (1 << PRECISION_BITS)))
    matrix = np.zeros((in_size, out_size), dtype=np.float64)
    rows = (xmin[:, None] + taps[None, :])
    cols = np.broadcast_to(np.arange(out_size)[:, None], rows.shape)
    keep = valid & (fixed != 0)
    matrix[rows[keep], cols[keep]] = fixed[keep]
    return matrix


def _clip8(sums: torch.Tensor) -> torch.Tensor:
    return torch.floor((sums + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)).clamp_(0, 255)


@lru_cache(maxsize=8)  # pages of one document share their sizes; a matrix is up to ~30 MB
def _weights_on(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(_weights(in_size, out_size)).to(device)


def _horizontal(pixels: torch.Tensor, width: int) -> torch.Tensor:
    """(C, H, W) float64 holding uint8 values -> (C, H, width)."""
    return _clip8(pixels @ _weights_on(pixels.shape[-1], width, pixels.device))


def _vertical(pixels: torch.Tensor, height: int) -> torch.Tensor:
    weights = _weights_on(pixels.shape[-2], height, pixels.device)
    return _clip8((pixels.transpose(-1, -2) @ weights).transpose(-1, -2))


def resize(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`Image.resize(size, BICUBIC)` of a (3, H, W) uint8 tensor; size is (width, height) like Pillow's."""
    width, height = size
    in_height, in_width = pixels.shape[-2:]
    if (in_width, in_height) == (width, height):
        return pixels.clone()
    x = pixels.to(torch.float64)
    shrinks_height_most = in_height - height > 0 and in_height - height > (in_width - width) * 2
    horizontal_first = not (VERTICAL_PASS_FIRST and shrinks_height_most)
    passes = [(width != in_width, _horizontal, width), (height != in_height, _vertical, height)]
    if not horizontal_first:
        passes.reverse()
    for needed, apply, target in passes:
        if needed:
            x = apply(x, target)
    return x.to(torch.uint8)


def pad(pixels: torch.Tensor, side: int, colour: tuple[int, int, int]) -> torch.Tensor:
    """`ImageOps.pad(image, (side, side), BICUBIC, color=colour, centering=(0.5, 0.5))`."""
    height, width = pixels.shape[-2:]
    size = (side, side)
    if width / height != 1.0:  # ImageOps.contain's arithmetic, Python floats and round()
        if width / height > 1.0:
            new_height = round(height / width * side)
            size = (side, new_height) if new_height != side else size
        else:
            new_width = round(width / height * side)
            size = (new_width, side) if new_width != side else size
    resized = resize(pixels, size)
    if size == (side, side):
        return resized
    out = torch.tensor(colour, dtype=torch.uint8, device=pixels.device).view(3, 1, 1).expand(3, side, side).clone()
    if size[0] != side:
        x = round((side - size[0]) * 0.5)
        out[:, :, x:x + size[0]] = resized
    else:
        y = round((side - size[1]) * 0.5)
        out[:, y:y + size[1], :] = resized
    return out
