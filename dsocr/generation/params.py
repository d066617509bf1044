"""SamplingParams: what one generation request asks for (decoding, limits, repetition guards).

Must not import torch or know token ids: the whitelist is given as token strings, resolved by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from dsocr.errors import GenerationError


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingParams:
    """Defaults: greedy decoding with the windowed n-gram guard of DeepSeek's vLLM recipe (spec 8.2)."""

    max_new_tokens: int = 8192
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # nucleus mass kept, in (0, 1]; 1 = off
    top_k: int = 0  # 0 = off
    seed: int | None = None  # None = the caller's default generator (not reproducible)
    ngram_size: int = 30  # windowed guard over the generated tokens; 0 = off
    ngram_window: int = 90  # the guard looks at n-grams inside the last `ngram_window` generated tokens
    ngram_whitelist: tuple[str, ...] = ("<td>", "</td>")  # never banned: table cells repeat legitimately
    no_repeat_ngram_size: int = 0  # transformers-style guard over prompt + generated; 0 = off
    ignore_eos: bool = False
    stop_on_loop: bool = True  # stop a sequence caught in a loop early, finish reason "repetition"

    def __post_init__(self) -> None:
        _check_int(self.max_new_tokens, "max_new_tokens", minimum=1)
        _check_int(self.top_k, "top_k", minimum=0)
        _check_int(self.ngram_size, "ngram_size", minimum=0)
        _check_int(self.no_repeat_ngram_size, "no_repeat_ngram_size", minimum=0)
        _check_int(self.ngram_window, "ngram_window", minimum=self.ngram_size)  # a shorter window never bans
        if self.seed is not None:
            _check_int(self.seed, "seed", minimum=0, maximum=2**64 - 1)  # what torch.Generator accepts
        _check_float(self.temperature, "temperature", "a finite number >= 0 (0 = greedy)",
                     lambda t: math.isfinite(t) and t >= 0.0)
        _check_float(self.top_p, "top_p", "in (0, 1]", lambda p: 0.0 < p <= 1.0)
        # A bare string would silently become a tuple of characters, so only a tuple or list is taken.
        whitelist = self.ngram_whitelist
        if not isinstance(whitelist, (tuple, list)) or not all(isinstance(t, str) for t in whitelist):
            raise GenerationError(f"ngram_whitelist: must be a sequence of token strings, "
                                  f"got {self.ngram_whitelist!r}")
        object.__setattr__(self, "ngram_whitelist", tuple(self.ngram_whitelist))

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0


def _check_int(value: object, field: str, *, minimum: int, maximum: int | None = None) -> None:
    in_range = isinstance(value, int) and value >= minimum and (maximum is None or value <= maximum)
    if isinstance(value, bool) or not in_range:
        allowed = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise GenerationError(f"{field}: must be an integer {allowed}, got {value!r}")


def _check_float(value: object, field: str, allowed: str, ok: Callable[[float], bool]) -> None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (is_number and ok(float(value))):  # type: ignore[arg-type]
        raise GenerationError(f"{field}: must be {allowed}, got {value!r}")
