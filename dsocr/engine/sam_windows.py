"""SAM's windowed blocks before its first global one (all of them in a tower with no global block, e.g. a
windowed embedded model), computed window by window, and only for the windows that show something.

Must compute what the reference blocks compute, up to float32 rounding (tested against them); the parameters do
not change. Why: up to the first global block, a window's output depends on its own patches and its place on the
view alone. A line view (`dsocr.pipeline.line_reader`) is text packed on flat paper: on the synthetic pages 18% of
the embedded model's 160-pixel windows show nothing but the paper, and a view read again as two halves half of them. So:

- the tokens stay cut into windows through those blocks (a window-sized input is one window to `SamBlock`: no
  partition and unpartition copies around each);
- a window whose patch embeddings are all one vector (one flat colour) is not computed: its output at each place
  is computed once per colour (the first time the colour is seen: the cost of one view) and kept.

The blocks from the first global one on run as the reference runs them (global attention mixes the paper's
windows with the rest).
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from dsocr.model.sam import SamEncoder, resize_pos_embed, window_partition, window_unpartition

CACHED_COLOURS = 8  # flat colours whose windows' outputs are kept (a page's views share their paper's)


def leading_windowed(sam: SamEncoder) -> int:
    """How many of `sam`'s blocks, from the first, attend in windows of the first one's size."""
    count = 0
    for block in sam.blocks:
        if block.window == 0 or block.window != sam.blocks[0].window:
            break
        count += 1
    return count


class BlankWindows:
    """`SamEncoder.blocks_runner`: patch embeddings (V, G, G, C) -> the blocks' output (V, G, G, C)."""

    def __init__(self, sam: SamEncoder, colours: int = CACHED_COLOURS) -> None:
        self.leading = leading_windowed(sam)
        if not self.leading:
            raise ValueError("BlankWindows needs a SAM tower whose first block is windowed")
        self.sam, self.window, self.colours = sam, sam.blocks[0].window, colours
        self.cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()  # (colour, grid) -> (n, w, w, C)

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        v, g, _, c = patches.shape
        # Windows padded at the edge (their outputs depend on the padding) and training (kept outputs would
        # carry a graph) go the reference way.
        if g % self.window or torch.is_grad_enabled():
            return self.sam.run_blocks(patches)
        windows, _ = window_partition(patches, self.window)  # (V * n, w, w, C), no padding
        first = windows[:, :1, :1]
        flat = (windows == first).flatten(1).all(1)  # (V * n,) windows of one vector
        pos = resize_pos_embed(self.sam.pos_embed, g).to(patches.dtype)
        pos, _ = window_partition(pos, self.window)  # (n, w, w, C)
        n = pos.shape[0]
        places = torch.arange(v * n, device=patches.device) % n
        out = torch.empty_like(windows)
        live = (~flat).nonzero().flatten()
        if len(live):
            out[live] = self._blocks(windows[live] + pos[places[live]])
        blank = flat.nonzero().flatten()
        if len(blank):
            colours, which = torch.unique(first[blank].reshape(len(blank), c), dim=0, return_inverse=True)
            for i, colour in enumerate(colours):
                rows = blank[which == i]
                out[rows] = self._flat(colour, g, pos)[places[rows]]
        x = window_unpartition(out, self.window, (g, g), (g, g))
        for block in self.sam.blocks[self.leading:]:
            x = block(x)
        return x

    def _blocks(self, windows: torch.Tensor) -> torch.Tensor:
        """The leading windowed blocks on windows (N, w, w, C)."""
        for block in self.sam.blocks[:self.leading]:
            windows = block(windows)
        return windows

    def _flat(self, colour: torch.Tensor, grid: int, pos: torch.Tensor) -> torch.Tensor:
        """The blocks' output of a window of one `colour` (patch embedding, (C,)) at each place (n, w, w, C)."""
        key = (colour.dtype, grid, colour.float().cpu().numpy().tobytes())  # float: numpy has no bfloat16
        if key not in self.cache:
            self.cache[key] = self._blocks(colour + pos)
            if len(self.cache) > self.colours:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        return self.cache[key]


def use_blank_windows(model: torch.nn.Module) -> int:
    """Switch every SAM tower of `model` whose first block is windowed to `BlankWindows`; returns how many were
    switched (calling it again switches nothing)."""
    switched = 0
    for module in model.modules():
        if isinstance(module, SamEncoder) and module.blocks_runner is None and leading_windowed(module):
            module.blocks_runner = BlankWindows(module)
            switched += 1
    return switched
