"""Loops: a sequence whose last tokens repeat with a fixed period. `loop_period` classifies a finished answer;
`LoopDetector` stops a running one early (finish reason "repetition"), a few hundred tokens into the loop
instead of at the token limit, where a looping page would cost ~18 typical pages of decode.

Must not touch the model or logits. The detector counts, for every period p, how many consecutive newest
tokens equal the token p places before them; the engine keeps the same counters on the GPU
(`dsocr.engine.guard.update_loop_runs`), so both paths stop at the same token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FINISH_REPETITION = "repetition"
MAX_PERIOD = 256  # longest loop period looked for
EARLY_STOP_SPAN = 192  # an early stop needs the repetition over max(3p, this) tokens
CLASSIFY_SPAN = 48  # a finished answer counts as a loop from max(3p, this) tokens


def loop_span(period: int, min_span: int = EARLY_STOP_SPAN) -> int:
    return max(3 * period, min_span)


def loop_period(tokens: Sequence[int], *, max_period: int = MAX_PERIOD, min_span: int = CLASSIFY_SPAN) -> int | None:
    """The shortest period p such that the last max(3p, min_span) tokens repeat with period p, else None."""
    t = np.asarray(tokens, dtype=np.int64)
    for p in range(1, max_period + 1):
        span = loop_span(p, min_span)
        if span + p > len(t):
            break
        tail = t[-(span + p):]
        if np.array_equal(tail[p:], tail[:-p]):
            return p
    return None


class LoopDetector:
    """Incremental early-stop check for one sequence: O(MAX_PERIOD) per token, vectorised."""

    def __init__(self, max_period: int = MAX_PERIOD, min_span: int = EARLY_STOP_SPAN) -> None:
        self.periods = np.arange(1, max_period + 1)
        self.spans = np.maximum(3 * self.periods, min_span)
        self.runs = np.zeros(max_period, dtype=np.int64)  # runs[p-1]: newest tokens equal to the one p back
        self.recent = np.full(max_period + 1, -1, dtype=np.int64)  # the last max_period+1 tokens, newest last

    def push(self, token: int) -> bool:
        """Add a token; True when the sequence is now looping."""
        self.recent[:-1] = self.recent[1:]
        self.recent[-1] = token
        same = self.recent[-1 - self.periods] == token
        self.runs = np.where(same, self.runs + 1, 0)
        return bool((self.runs >= self.spans).any())
