"""Glyph supervision: a training-only signal for a vision tower trained from scratch.

The decoder's loss reaches the vision tower only once the decoder has learnt where to look, and until then
it pushes the tower's output towards one image-independent vector (measured: docs/training.md, run 1). Here a
linear head on SAM's output grid (one cell per 64x64 view pixels, before the flow encoder) predicts which
characters each cell shows, from the glyph centres the synthetic generator records: a dense, local signal from
the first step. The targets say which character is centred in each 16x16 slot of each cell (or none); the loss
asks either for the cell's bag of characters (the default) or, with `slots`, for every slot's character: a cell
holds two to five characters and the decoder must read them in order (an experiment, docs/training.md). The head lives in the trainer, never in the checkpoint; the model is unchanged.

Must stay cheap in the data workers: targets are built once per image, as (cell, class) pairs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dsocr.processing.image import ProcessingConfig, crop_grid

CELL = 64  # view pixels per SAM output cell: 16 px patches, then two stride-2 convolutions
SLOT = 16  # view pixels per slot: SAM's patch
SLOTS = (CELL // SLOT) ** 2  # per cell, row-major
NUM_CLASSES = 95  # printable ASCII '!'..'~' and one class for any other character
BLANK = NUM_CLASSES  # a slot no character is centred in


def head_outputs(slots: bool) -> int:
    """The glyph head's outputs: a class (or blank) per slot, or one logit per class for the bag."""
    return SLOTS * (NUM_CLASSES + 1) if slots else NUM_CLASSES

Box = tuple[float, float, float, float]


def glyph_class(ch: str) -> int:
    code = ord(ch)
    return code - 33 if 33 <= code <= 126 else NUM_CLASSES - 1


@dataclass(frozen=True, slots=True)
class GlyphTargets:
    """One image's targets: for the global view and each crop, the class centred in each slot of each cell
    (BLANK where none is), and which cells count (a cell touching a formula, whose mathtext glyphs are not recorded, does not); and for each glyph,
    the visual tokens that show it (indices into the image's visual sequence: crops row-major, then the
    global view), for the alignment loss (alignment.py)."""

    global_classes: torch.Tensor  # (n_g, SLOTS) int16
    global_known: torch.Tensor  # (n_g,) bool
    crop_classes: torch.Tensor  # (K, n_c, SLOTS) int16
    crop_known: torch.Tensor  # (K, n_c) bool
    visual_tokens: tuple[tuple[int, ...], ...] = ()  # per glyph


def glyph_targets(glyphs: Sequence[tuple[str, float, float]], unknown: Sequence[Box], size: tuple[int, int],
                  processing: ProcessingConfig) -> GlyphTargets:
    """Map glyph centres and unknown regions (page pixels) onto the cells of the image's views, the way
    `preprocess_image` cuts them: the global view is the page fitted and centred in a square, the crops tile
    the page stretched to the grid."""
    width, height = size
    side, tile = processing.base_size, processing.crop_size
    if not processing.crop_mode and side <= processing.crop_size:
        fit = (side / width, side / height, 0.0, 0.0)  # squashed to a square first (see global_view)
    elif width >= height:
        h = round(height * side / width)
        fit = (side / width, h / height, 0.0, float(round((side - h) * 0.5)))
    else:
        w = round(width * side / height)
        fit = (w / width, side / height, float(round((side - w) * 0.5)), 0.0)
    placed = _cells(glyphs, fit, 1, 1, side)
    global_cells = [cell for cell, _ in placed]
    global_classes, global_known = _view_targets(glyphs, placed, unknown, fit, 1, 1, side)
    grid = crop_grid(width, height, processing)
    n_crop = (tile // CELL) ** 2
    if grid is None:
        return GlyphTargets(global_classes[0], global_known[0], torch.full((0, n_crop, SLOTS), BLANK, dtype=torch.int16),
                            torch.zeros(0, n_crop, dtype=torch.bool),
                            tuple((() if g is None else (g,)) for g in global_cells))
    cols, rows = grid
    stretch = (tile * cols / width, tile * rows / height, 0.0, 0.0)
    placed = _cells(glyphs, stretch, cols, rows, tile)
    crop_cells = [cell for cell, _ in placed]
    crop_classes, crop_known = _view_targets(glyphs, placed, unknown, stretch, cols, rows, tile)
    offset = cols * rows * n_crop  # the global view's tokens follow the crops'
    visual = tuple(tuple(i for i in (c, None if g is None else offset + g) if i is not None)
                   for c, g in zip(crop_cells, global_cells))
    return GlyphTargets(global_classes[0], global_known[0], crop_classes, crop_known, visual)


def _cells(glyphs: Sequence[tuple[str, float, float]], transform: tuple[float, float, float, float], cols: int,
           rows: int, tile: int) -> list[tuple[int | None, int]]:
    """Each glyph's cell as (tile index * cells per tile + cell index) in a cols x rows tiling (row-major
    tiles) of the transformed page (x' = sx * x + ox, etc.), None off the tiling; and its slot in the cell."""
    sx, sy, ox, oy = transform
    n, per_side = tile // CELL, CELL // SLOT
    out: list[tuple[int | None, int]] = []
    for _, x, y in glyphs:
        px, py = sx * x + ox, sy * y + oy
        cx, cy = int(px // CELL), int(py // CELL)
        inside = 0 <= cx < cols * n and 0 <= cy < rows * n
        slot = int(py % CELL // SLOT) * per_side + int(px % CELL // SLOT)
        out.append((_flat(cx, cy, n, cols) if inside else None, slot))
    return out


def _flat(cx: int, cy: int, n: int, cols: int) -> int:
    """Cell (cx, cy) of the whole tiling -> tile index * n * n + cell index within the tile (both row-major)."""
    return ((cy // n) * cols + cx // n) * n * n + (cy % n) * n + cx % n


def _view_targets(glyphs: Sequence[tuple[str, float, float]], placed: Sequence[tuple[int | None, int]],
                  unknown: Sequence[Box],
                  transform: tuple[float, float, float, float], cols: int, rows: int,
                  tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    sx, sy, ox, oy = transform
    n = tile // CELL
    classes = torch.full((rows * cols * n * n, SLOTS), BLANK, dtype=torch.int16)
    known = torch.ones(rows * cols * n * n, dtype=torch.bool)
    for (ch, _, _), (cell, slot) in zip(glyphs, placed):
        if cell is not None:
            classes[cell, slot] = glyph_class(ch)
    span = (cols * n, rows * n)  # cells across the whole tiling
    for x1, y1, x2, y2 in unknown:
        c1, c2 = max(0, int((sx * x1 + ox) // CELL)), min(span[0] - 1, int((sx * x2 + ox) // CELL))
        r1, r2 = max(0, int((sy * y1 + oy) // CELL)), min(span[1] - 1, int((sy * y2 + oy) // CELL))
        for cy in range(r1, r2 + 1):
            for cx in range(c1, c2 + 1):
                known[_flat(cx, cy, n, cols)] = False
    return classes.view(rows * cols, n * n, SLOTS), known.view(rows * cols, n * n)


@contextmanager
def sam_outputs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the SAM tower's outputs (V, C, h, w) during a forward pass, in call order (global views, then
    crops: see `DeepseekOCR2Model.embed_images`)."""
    outputs: list[torch.Tensor] = []
    handle = model.model.sam_model.register_forward_hook(lambda module, args, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()


def glyph_loss(head: nn.Linear, features: Sequence[torch.Tensor], classes: Sequence[torch.Tensor],
               known: Sequence[torch.Tensor], slots: bool = False) -> torch.Tensor:
    """Per known cell, averaged over cells: binary cross-entropy of the cell's bag of classes, summed over the
    classes; with `slots`, cross-entropy of each slot's class (or blank), summed over the slots.
    head: C -> head_outputs(slots); features[i]: (V, C, h, w); classes[i]: (V, h*w, SLOTS); known[i]: (V, h*w)."""
    logits, targets = [], []
    for feature, cls, ok in zip(features, classes, known):
        cells = feature.flatten(2).transpose(1, 2)  # (V, h*w, C), row-major like the targets
        logits.append(head(cells[ok].float()))
        targets.append(cls[ok].long())
    logits, target = torch.cat(logits), torch.cat(targets)
    if not len(target):
        return logits.sum() * 0.0
    if slots:
        return F.cross_entropy(logits.view(-1, NUM_CLASSES + 1), target.flatten(), reduction="sum") / len(target)
    bag = F.one_hot(target, NUM_CLASSES + 1)[..., :NUM_CLASSES].amax(dim=1).float()  # (cells, NUM_CLASSES)
    return F.binary_cross_entropy_with_logits(logits, bag, reduction="sum") / len(target)
