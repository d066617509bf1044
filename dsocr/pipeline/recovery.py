"""Page status and loop recovery: classify a model answer, and the retries that change the visual input.

Must not know about files or batching; the pipeline runs the retries this module describes.

A page is "truncated" when it ends without EOS, "repetition" when it also ends in a loop (its last tokens
repeat with a short period). Either is retried, each retry with a stricter repetition guard:
1. "fewer-crops": the same page with two crop tiles fewer (or the global view only), so the model sees it
   at another resolution; on a page too small for crops, the same view (only the guard changes);
2. "split-halves": the page cut in two at the whitest row near the middle, each half read on its own and
   the results joined, boxes mapped back to the whole page.
The first retry that ends with EOS wins; when none does, the original answer is kept with its status.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dsocr.generation.params import SamplingParams
from dsocr.generation.repetition import FINISH_REPETITION, loop_period
from dsocr.pipeline.backend import FINISH_STOP, View
from dsocr.pipeline.document import OK, REPETITION, TRUNCATED

STRATEGIES = ("fewer-crops", "split-halves")
STRICT_NGRAM_SIZE = 20  # default guard: 30-gram within 90 tokens
STRICT_NGRAM_WINDOW = 256


def classify(finish_reason: str, token_ids: Sequence[int], max_new_tokens: int) -> tuple[str, str]:
    """(status, reason) of one answer."""
    if finish_reason == FINISH_STOP:
        return OK, ""
    if finish_reason == FINISH_REPETITION:  # the generator saw the loop and stopped early
        period = loop_period(token_ids)
        shape = f" (period {period} tokens)" if period else ""
        return REPETITION, f"output repeats{shape}; stopped early after {len(token_ids)} tokens"
    period = loop_period(token_ids)
    if period is not None:
        return REPETITION, f"output repeats (period {period} tokens) until the limit of {max_new_tokens} tokens"
    return TRUNCATED, f"no end of sentence within {max_new_tokens} tokens"


def stricter(sampling: SamplingParams) -> SamplingParams:
    """The same request with a tighter windowed n-gram guard (on even if it was off)."""
    size = min(sampling.ngram_size or STRICT_NGRAM_SIZE, STRICT_NGRAM_SIZE)
    return dataclasses.replace(sampling, ngram_size=size, ngram_window=max(sampling.ngram_window, STRICT_NGRAM_WINDOW))


def fewer_crops_view(view: View, crops: int, min_crops: int) -> View:
    """Two tiles fewer than the `crops` the page had (global view only below `min_crops`)."""
    if crops - 2 >= min_crops:
        return dataclasses.replace(view, max_crops=crops - 2, min_crops=min(min_crops, crops - 2))
    if crops > 0:
        return View(mode="base")
    return view


@dataclass(frozen=True, slots=True)
class Half:
    image: Image.Image
    top: int  # y offset in the whole page


def split_halves(image: Image.Image) -> tuple[Half, Half]:
    """Cut at the whitest row between 40% and 60% of the height, so a text line is rarely cut."""
    width, height = image.size
    if height < 4:
        cut = max(1, height // 2)
    else:
        gray = np.asarray(image.convert("L").resize((max(1, min(width, 256)), height)), dtype=np.float32)
        lo, hi = int(height * 0.4), max(int(height * 0.6), int(height * 0.4) + 1)
        brightness = gray[lo:hi].mean(axis=1)
        cut = lo + int(np.argmax(brightness))  # first of the brightest rows: deterministic
    cut = min(max(cut, 1), height - 1)
    return Half(image.crop((0, 0, width, cut)), 0), Half(image.crop((0, cut, width, height)), cut)
