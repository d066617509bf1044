"""Repetition guards of one sequence: the vLLM recipe's windowed n-gram ban, transformers' no-repeat n-gram.

Must not sample or touch the model; a guard only says which token ids are banned at the next step.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import torch

from dsocr.errors import GenerationError


class WindowedNGramGuard:
    """DeepSeek's vLLM rule (spec 8.2) over the GENERATED tokens only: if the last n-1 tokens also start an
    n-gram lying entirely inside the last `window_size` tokens, the token that completed that n-gram is
    banned, unless whitelisted."""

    def __init__(self, ngram_size: int, window_size: int, whitelist_ids: Collection[int] = ()) -> None:
        if ngram_size < 1 or window_size < 0:
            raise GenerationError(f"n-gram guard needs ngram_size >= 1 and window_size >= 0, "
                                  f"got {ngram_size} and {window_size}")
        self.ngram_size = ngram_size
        self.window_size = window_size
        self.whitelist_ids = frozenset(whitelist_ids)

    def banned(self, generated: Sequence[int]) -> set[int]:
        n, length = self.ngram_size, len(generated)
        if length < n:
            return set()
        ids = list(generated[max(0, length - self.window_size):])  # the window; n-grams must fit inside it
        prefix = ids[len(ids) - n + 1:]
        banned = {ids[s + n - 1] for s in range(len(ids) - n + 1) if ids[s:s + n - 1] == prefix}
        return banned - self.whitelist_ids


class NoRepeatNGramGuard:
    """transformers' NoRepeatNGramLogitsProcessor over the whole sequence (prompt + generated): no n-gram may
    occur twice. Incremental: a map (n-1)-gram -> tokens seen after it, so a step costs O(n), not
    O(length)."""

    def __init__(self, ngram_size: int, prompt_ids: Sequence[int]) -> None:
        if ngram_size < 1:
            raise GenerationError(f"no_repeat_ngram_size must be >= 1 for a guard, got {ngram_size}")
        self.ngram_size = ngram_size
        self.ids: list[int] = []
        self.followers: dict[tuple[int, ...], set[int]] = {}
        for token in prompt_ids:
            self.append(int(token))

    def append(self, token_id: int) -> None:
        self.ids.append(token_id)
        if len(self.ids) >= self.ngram_size:
            gram = tuple(self.ids[len(self.ids) - self.ngram_size:])
            self.followers.setdefault(gram[:-1], set()).add(gram[-1])

    def banned(self) -> set[int]:
        if len(self.ids) + 1 < self.ngram_size:
            return set()
        key = tuple(self.ids[len(self.ids) - self.ngram_size + 1:])  # the last n-1 ids; () when n == 1
        return set(self.followers.get(key, ()))


def apply_bans(logits: torch.Tensor, banned: Iterable[int]) -> torch.Tensor:
    """A copy of the (V,) logits row with the banned ids at -inf (the input is never modified)."""
    if logits.dim() != 1:
        raise GenerationError(f"apply_bans expects one (V,) logits row, got shape {tuple(logits.shape)}")
    out = logits.clone()
    ids = sorted(banned)
    if ids:
        out[torch.tensor(ids, dtype=torch.long, device=logits.device)] = float("-inf")
    return out
