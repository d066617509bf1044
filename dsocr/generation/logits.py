"""Repetition guards of one sequence: the vLLM recipe's windowed n-gram ban and transformers' no-repeat n-gram.

Must not sample or touch the model; a guard only says which token ids are banned at the next step.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import torch


class WindowedNGramGuard:
    """DeepSeek's vLLM rule over the GENERATED tokens: if the last n-1 tokens already occurred inside the last
    `window_size` tokens, the token that followed them there is banned, unless whitelisted."""

    def __init__(self, ngram_size: int, window_size: int, whitelist_ids: Collection[int] = ()) -> None:
        self.n = ngram_size
        self.window = window_size
        self.whitelist = frozenset(whitelist_ids)

    def banned(self, generated: Sequence[int]) -> set[int]:
        n, length = self.n, len(generated)
        if length < n:
            return set()
        prefix = list(generated[length - n + 1:])
        banned = set()
        # Only n-grams lying entirely inside the window: starts from max(0, L - window) to L - n.
        for start in range(max(0, length - self.window), length - n + 1):
            if list(generated[start:start + n - 1]) == prefix:
                banned.add(generated[start + n - 1])
        return banned - self.whitelist


class NoRepeatNGramGuard:
    """transformers' NoRepeatNGramLogitsProcessor over the whole sequence (prompt + generated): no n-gram may
    occur twice. Incremental: a map (n-1)-gram -> next tokens, so each step costs O(n), not O(length)."""

    def __init__(self, ngram_size: int, prompt_ids: Sequence[int]) -> None:
        self.n = ngram_size
        self.ids: list[int] = []
        self.followers: dict[tuple[int, ...], set[int]] = {}
        for token in prompt_ids:
            self.append(token)

    def append(self, token_id: int) -> None:
        self.ids.append(token_id)
        if len(self.ids) >= self.n:
            gram = tuple(self.ids[-self.n:])
            self.followers.setdefault(gram[:-1], set()).add(gram[-1])

    def banned(self) -> set[int]:
        if self.n < 1 or len(self.ids) + 1 < self.n:
            return set()
        key = tuple(self.ids[len(self.ids) - self.n + 1:]) if self.n > 1 else ()
        return set(self.followers.get(key, ()))


def apply_bans(logits: torch.Tensor, banned: Iterable[int]) -> torch.Tensor:
    """A copy of the (V,) logits row with the banned ids at -inf."""
    ids = list(banned)
    if not ids:
        return logits
    out = logits.clone()
    out[torch.tensor(ids, device=logits.device)] = float("-inf")
    return out
