"""Alignment supervision: a training-only signal that tells the decoder where on the image each target token is.

Trained from scratch, the decoder learns which words an image holds long before it learns the order to read
them in (run 2, docs/training.md: teacher-forced, 40% of a snippet's tokens right, words of the image in the
wrong places). Like guided attention in speech synthesis, this loss asks one decoder layer's attention, at
the position that predicts target token t, to put its weight on the visual tokens showing t's characters,
which the synthetic generator knows (glyphs.py); and an earlier layer's, at the position that reads t, on the
same tokens: where the text just written is, the step the next place is found from. The model is unchanged;
only synthetic pages carry guides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from difflib import SequenceMatcher

import torch
from torch import nn

# (query position, key positions): at `query position` the decoder predicts a target token whose characters
# are shown by the visual tokens at `key positions` (positions in the input sequence).
Guide = tuple[int, tuple[int, ...]]


def char_glyphs(target: str, glyph_chars: str) -> list[int | None]:
    """For each character of `target`, the index of the drawn glyph it is (None for markup, spaces and text
    not drawn as glyphs): the longest matching blocks between the target and the glyphs in drawing order."""
    out: list[int | None] = [None] * len(target)
    matcher = SequenceMatcher(None, target, glyph_chars, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        for i in range(size):
            out[a + i] = b + i
    return out


def token_guides(target: str, offsets: Sequence[tuple[int, int]], glyph_chars: str,
                 visual_tokens: Sequence[Sequence[int]], image_start: int, first_query: int) -> list[Guide]:
    """The guides of a target's tokens (character `offsets` from the tokenizer): token i is predicted at
    position first_query + i; a visual token j sits at position image_start + j."""
    glyph_of = char_glyphs(target, glyph_chars)
    guides = []
    for i, (start, end) in enumerate(offsets):
        keys = {image_start + v for g in glyph_of[start:end] if g is not None for v in visual_tokens[g]}
        if keys:
            guides.append((first_query + i, tuple(sorted(keys))))
    return guides


@contextmanager
def attention_inputs(layer: nn.Module) -> Iterator[list[tuple[torch.Tensor, ...]]]:
    """Collect the (normalised input, cos, sin) a decoder layer's attention is called with."""
    calls: list[tuple[torch.Tensor, ...]] = []
    handle = layer.self_attn.register_forward_pre_hook(lambda module, args: calls.append(args[:3]))
    try:
        yield calls
    finally:
        handle.remove()


@dataclass(frozen=True, slots=True)
class RowGuides:
    """One batch row's guides as tensors: the loss makes one mask from them in one operation."""

    row: int
    queries: torch.Tensor  # (R,) query positions
    keys: torch.Tensor  # (P, 2): (index into queries, key position) pairs

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> RowGuides:  # Batch.to / pin_memory
        return RowGuides(self.row, fn(self.queries), fn(self.keys))


def row_guides(rows: Sequence[Sequence[Guide]]) -> list[RowGuides]:
    out = []
    for row, guides in enumerate(rows):
        if guides:
            pairs = [(r, key) for r, (_, keys) in enumerate(guides) for key in keys]
            out.append(RowGuides(row, torch.tensor([q for q, _ in guides]), torch.tensor(pairs)))
    return out


def alignment_loss(layer: nn.Module, inputs: tuple[torch.Tensor, ...], guides: Sequence[RowGuides],
                   shift: int = 0) -> torch.Tensor:
    """Mean over guided positions of -log(the layer's attention weight, averaged over the first half of its
    heads, on the visual tokens of the token predicted there); with shift=1, of the token read there (one
    position later: the token just written, whose place the decoder can find by its content). The other heads
    stay free for what a language model attends to."""
    x, cos, sin = inputs
    q, k, _ = layer.self_attn.project(x, cos, sin)  # (B, H, T, D), (B, H_kv, T, D)
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    guided = max(1, q.shape[1] // 2)
    q, k = q[:, :guided], k[:, :guided]
    losses = []
    for g in guides:
        queries = g.queries + shift
        scores = q[g.row][:, queries].float() @ k[g.row].float().transpose(-1, -2) / q.shape[-1] ** 0.5  # (H,R,T)
        causal = torch.arange(k.shape[2], device=q.device)[None] <= queries[:, None]  # (R, T)
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1).mean(0)  # (R, T)
        target = torch.zeros_like(causal)
        target[g.keys[:, 0], g.keys[:, 1]] = True
        losses.append(-torch.log((probs * target).sum(-1) + 1e-6))
    return torch.cat(losses).mean()
