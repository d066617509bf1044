"""The windowed n-gram guard (spec 8.2, `dsocr.generation.logits.WindowedNGramGuard`) for a whole batch, on
the device: no host sync, static shapes, so it runs inside the captured decode step.

Must ban exactly what the host guard bans (tested against it). Each row keeps its last `window` generated
tokens in a (B, window) history, -1 where nothing was generated yet.
"""

from __future__ import annotations

import torch


def windowed_ngram_bans(history: torch.Tensor, ngram_size: int, vocab_size: int, enabled: torch.Tensor,
                        whitelist: torch.Tensor) -> torch.Tensor:
    """(B, V) bool: the tokens each row may not produce next.

    history (B, W) int64, newest last, -1 = empty; enabled (B,) bool; whitelist (V,) bool (never banned).
    A token is banned when it followed an earlier occurrence, inside the window, of the row's last n-1 tokens.
    """
    w = history.shape[1]
    n = ngram_size
    if n == 1:  # every token already in the window
        return _scatter(history >= 0, history, enabled, vocab_size) & ~whitelist
    prefix = history[:, w - n + 1:]  # (B, n-1): the last n-1 tokens
    starts = history.unfold(1, n - 1, 1)[:, : w - n + 1]  # (B, W-n+1, n-1): windows that have a follower
    followers = history[:, n - 1:]  # (B, W-n+1): the token after each window
    match = (starts == prefix[:, None]).all(dim=-1) & (prefix[:, :1] >= 0) & (starts[..., 0] >= 0)
    return _scatter(match, followers, enabled, vocab_size) & ~whitelist


def _scatter(match: torch.Tensor, followers: torch.Tensor, enabled: torch.Tensor, vocab_size: int) -> torch.Tensor:
    match = match & enabled[:, None]
    ids = torch.where(match, followers, torch.full_like(followers, vocab_size))  # no match -> a spare column
    banned = torch.zeros(match.shape[0], vocab_size + 1, dtype=torch.bool, device=match.device)
    return banned.scatter_(1, ids, True)[:, :vocab_size]


def push_history(history: torch.Tensor, tokens: torch.Tensor) -> None:
    """Append one token per row, dropping the oldest (in place)."""
    history.copy_(torch.cat([history[:, 1:], tokens[:, None]], dim=1))


def update_loop_runs(history: torch.Tensor, runs: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """The batch form of `dsocr.generation.repetition.LoopDetector.push`, after the newest token was pushed
    into `history` (B, >= P+1). runs (B, P) int32 is updated in place; returns (B,) bool: looping now."""
    p = runs.shape[1]
    newest = history[:, -1:]
    same = (history[:, -p - 1:-1].flip(1) == newest) & (newest >= 0)  # column p-1: the token p places back
    runs.copy_(torch.where(same, runs + 1, torch.zeros_like(runs)))
    return (runs >= spans).any(dim=1)
