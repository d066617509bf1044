"""SamplingParams: what one generation request asks for (decoding, limits, repetition guards).

Must not import torch or know token ids: the whitelist is given as token strings, resolved by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsocr.errors import GenerationError


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise GenerationError(f"{field}: {message}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingParams:
    max_new_tokens: int = 8192
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None
    ngram_size: int = 30  # windowed guard of DeepSeek's vLLM recipe; 0 = off
    ngram_window: int = 90  # over the last N generated tokens
    ngram_whitelist: tuple[str, ...] = ("<td>", "</td>")  # never banned (table cells repeat legitimately)
    no_repeat_ngram_size: int = 0  # transformers-style guard over the whole sequence; 0 = off
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        _check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.temperature >= 0.0, "temperature", f"must be >= 0, got {self.temperature}")
        _check(0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.top_k >= 0, "top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        _check(self.ngram_size >= 0, "ngram_size", f"must be >= 0 (0 = off), got {self.ngram_size}")
        _check(self.ngram_size == 0 or self.ngram_window >= self.ngram_size, "ngram_window",
               f"must be >= ngram_size ({self.ngram_size}), got {self.ngram_window}")
        _check(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size",
               f"must be >= 0 (0 = off), got {self.no_repeat_ngram_size}")
        object.__setattr__(self, "ngram_whitelist", tuple(self.ngram_whitelist))

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0
