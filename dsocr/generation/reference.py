"""The reference generation loop: prefill + KV-cached decode for a batch of prompts, on any device.

Must stay simple and obviously correct: it is the oracle the fast engine is tested against, so no
scheduling, no CUDA graphs, no cleverness. Prompts in one batch are left-padded; padding is masked out
of attention and positions restart at 0 for every prompt, so results equal one-by-one runs. Sequences that
have finished leave the batch (their rows of the cache dropped) once a quarter of its rows are done: on the CPU a
step's work grows with its rows, and the line views of a page answer in 40 to 150 tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch

from dsocr.errors import GenerationError
from dsocr.generation.logits import NoRepeatNGramGuard, WindowedNGramGuard, apply_bans
from dsocr.generation.params import SamplingParams
from dsocr.generation.repetition import FINISH_REPETITION, LoopDetector
from dsocr.generation.sampling import sample_next
from dsocr.model.ocr import DeepseekOCR2ForCausalLM

FINISH_STOP = "stop"  # EOS produced
FINISH_LENGTH = "length"  # max_new_tokens or the context limit reached
KEEP_SHARE = 0.75  # the batch drops its finished rows once no more than this share of its rows is still going


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationRequest:
    prompt_ids: Sequence[int]
    image_embeds: Sequence[torch.Tensor] = ()  # one visual sequence per image placeholder run, in order


@dataclass(slots=True, kw_only=True)
class GenerationResult:
    token_ids: list[int] = field(default_factory=list)  # generated tokens, EOS excluded
    finish_reason: str = FINISH_LENGTH
    prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


class _Guards:
    """The repetition guards of one sequence, and its loop detector."""

    def __init__(self, params: SamplingParams, prompt_ids: Sequence[int], whitelist_ids: Collection[int]) -> None:
        self.loops = LoopDetector() if params.stop_on_loop else None
        self.windowed = (WindowedNGramGuard(params.ngram_size, params.ngram_window, whitelist_ids)
                         if params.ngram_size > 0 else None)
        self.whole = (NoRepeatNGramGuard(params.no_repeat_ngram_size, prompt_ids)
                      if params.no_repeat_ngram_size > 0 else None)

    def banned(self, generated: Sequence[int]) -> set[int]:
        banned: set[int] = set()
        if self.windowed:
            banned |= self.windowed.banned(generated)
        if self.whole:
            banned |= self.whole.banned()
        return banned

    def append(self, token: int) -> bool:
        """Record an accepted token; True when the sequence is now looping."""
        if self.whole:
            self.whole.append(token)
        return self.loops.push(token) if self.loops else False


@torch.inference_mode()
def generate(model: DeepseekOCR2ForCausalLM, requests: Sequence[GenerationRequest], params: SamplingParams, *,
             image_token_id: int, eos_token_id: int, whitelist_ids: Collection[int] = (),
             on_token: Callable[[int, int], None] | None = None) -> list[GenerationResult]:
    """Generate for every request; `on_token(request_index, token_id)` is called as each token is accepted."""
    if not requests:
        return []
    device = model.device
    lengths = [len(r.prompt_ids) for r in requests]
    if min(lengths) == 0:
        raise GenerationError("empty prompt")
    longest = max(lengths)
    limit = model.config.language.max_position_embeddings
    if longest >= limit:
        raise GenerationError(f"prompt of {longest} tokens does not fit the {limit}-token context")
    max_new = min(params.max_new_tokens, limit - longest)

    ids, valid = _left_pad([list(r.prompt_ids) for r in requests], longest, device)
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # (B, T): 0..L_i-1 on the real tokens
    image_mask = (ids == image_token_id) & valid
    image_embeds = [e for r in requests for e in r.image_embeds]

    results = [GenerationResult(prompt_tokens=n) for n in lengths]
    guards = [_Guards(params, r.prompt_ids, whitelist_ids) for r in requests]
    generator = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
    cache = model.new_cache(len(requests), longest + max_new)
    key_valid = torch.ones(len(requests), longest + max_new, dtype=torch.bool, device=device)
    key_valid[:, :longest] = valid

    start = time.perf_counter()
    embeds = model.model.embed_inputs(ids, image_mask, image_embeds)
    logits = model(embeds, positions, _prefill_mask(valid), cache, 0, last_only=True)[:, -1]
    prefill_done = time.perf_counter()
    for r in results:
        r.prefill_seconds = prefill_done - start

    finished = [False] * len(requests)
    active = list(range(len(requests)))  # the request of each batch row
    next_positions = positions[:, -1:] + 1
    for step in range(max_new):
        tokens = _pick(logits, [results[i] for i in active], [guards[i] for i in active], params, generator)
        for i, token in zip(active, tokens):
            if finished[i]:
                continue
            if token == eos_token_id and not params.ignore_eos:
                finished[i], results[i].finish_reason = True, FINISH_STOP
                continue
            results[i].token_ids.append(token)
            looping = guards[i].append(token)
            if on_token:
                on_token(i, token)
            if looping:
                finished[i], results[i].finish_reason = True, FINISH_REPETITION
            elif len(results[i].token_ids) >= max_new:
                finished[i] = True
        if all(finished):
            break
        pos = longest + step
        rows = [r for r, i in enumerate(active) if not finished[i]]
        if len(rows) <= len(active) * KEEP_SHARE:
            # Drop the finished rows: a step's work is the batch's rows (views' answers differ in length by 2x
            # and more), against copying the live rows' cache once.
            keep = torch.tensor(rows, device=device)
            cache.keep(keep, pos)
            key_valid, next_positions = key_valid[keep], next_positions[keep]
            active, tokens = [active[r] for r in rows], [tokens[r] for r in rows]
        step_ids = torch.tensor(tokens, device=device)[:, None]  # a finished row still in the batch: ignored
        mask = key_valid[:, None, None, : pos + 1]  # (B, 1, 1, pos+1)
        logits = model(model.model.embed_inputs(step_ids), next_positions, mask, cache, pos)[:, -1]
        next_positions = next_positions + 1
    decode_seconds = time.perf_counter() - prefill_done
    for r in results:
        r.decode_seconds = decode_seconds
    return results


def _left_pad(prompts: list[list[int]], length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.zeros(len(prompts), length, dtype=torch.long)
    valid = torch.zeros(len(prompts), length, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, length - len(p):] = torch.tensor(p)
        valid[i, length - len(p):] = True
    return ids.to(device), valid.to(device)


def _prefill_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool: causal over real tokens; padding rows see only themselves so no row is empty."""
    t = valid.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(t, dtype=torch.bool, device=valid.device)
    return ((causal & valid[:, None, :]) | eye)[:, None]


def _pick(logits: torch.Tensor, results: list[GenerationResult], guards: list[_Guards], params: SamplingParams,
          generator: torch.Generator | None) -> list[int]:
    rows = []
    for i, row in enumerate(logits):
        banned = guards[i].banned(results[i].token_ids)
        rows.append(apply_bans(row, banned) if banned else row)
    return sample_next(torch.stack(rows), params, generator).tolist()
