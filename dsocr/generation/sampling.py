"""Pick the next token from logits: greedy, or temperature / top-k / top-p sampling with a seeded generator.

Must not know about sequences or guards (bans are applied to the logits before this is called), and must
not sync with the host: everything stays on the logits' device.
"""

from __future__ import annotations

import torch

from dsocr.errors import GenerationError
from dsocr.generation.params import SamplingParams


def sample_next(logits: torch.Tensor, params: SamplingParams,
                generator: torch.Generator | None) -> torch.Tensor:
    """logits (B, V) -> next token ids (B,) int64.

    Greedy is argmax, first index on ties. Otherwise: divide by the temperature, keep the top_k best, then
    the nucleus (the smallest set of best tokens whose probability reaches top_p, renormalised after top-k),
    and draw with `generator`. Ties in the ranking are broken by the lower id, so top_k=1 is greedy.
    """
    if logits.dim() != 2:
        raise GenerationError(f"sample_next expects (B, V) logits, got shape {tuple(logits.shape)}")
    if params.is_greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / params.temperature
    if params.top_k or params.top_p < 1.0:
        logits = _truncate(logits, params.top_k, params.top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _truncate(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """-inf outside the top-k / top-p set, computed in one stable sort (rank 0 = best, lower id first)."""
    ranked, order = logits.sort(dim=-1, descending=True, stable=True)
    if top_k:
        ranked[:, top_k:] = float("-inf")
    if top_p < 1.0:
        probs = ranked.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop = mass_before >= top_p  # the tokens before this one already reach top_p
        drop[:, 0] = False  # the best token always stays
        ranked = ranked.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, ranked)
