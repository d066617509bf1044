import itertools

import pytest
import torch

from dsocr.errors import GenerationError
from dsocr.generation.params import SamplingParams
from dsocr.generation.reference import FINISH_LENGTH, FINISH_STOP, GenerationRequest, generate
from dsocr.model.decoder import KVCache
from dsocr.testing.fixtures import random_model, tiny_config

IMAGE_ID, EOS_ID = 3, 1


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config(), seed=7)


def _greedy_by_recomputation(model, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    for _ in range(steps):
        t = len(ids)
        x = torch.tensor([ids])
        logits = model(model.model.embed_inputs(x), torch.arange(t)[None],
                       torch.ones(t, t, dtype=torch.bool).tril()[None, None])
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


def _greedy(max_new: int, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new, ngram_size=0, ignore_eos=True, **kw)


def test_cached_generation_equals_full_recomputation(model) -> None:
    prompt = [0, 17, 42, 99, 250, 7, 300]
    (result,) = generate(model, [GenerationRequest(prompt_ids=prompt)], _greedy(12),
                         image_token_id=IMAGE_ID, eos_token_id=EOS_ID)
    assert result.token_ids == _greedy_by_recomputation(model, prompt, 12)
    assert result.finish_reason == FINISH_LENGTH and result.prompt_tokens == len(prompt)


def test_batched_generation_with_padding_equals_one_by_one(model) -> None:
    prompts = [[0, 5, 6, 7], [0, 8, 9, 10, 11, 12, 13, 14, 15], [0, 200]]
    alone = [generate(model, [GenerationRequest(prompt_ids=p)], _greedy(10), image_token_id=IMAGE_ID,
                      eos_token_id=EOS_ID)[0].token_ids for p in prompts]
    batched = generate(model, [GenerationRequest(prompt_ids=p) for p in prompts], _greedy(10),
                       image_token_id=IMAGE_ID, eos_token_id=EOS_ID)
    assert [r.token_ids for r in batched] == alone


def test_images_in_a_batch_land_in_their_own_prompts(model) -> None:
    g = torch.randn(2, 3, 192, 192)
    crops = torch.randn(2, 3, 128, 128)
    seqs = model.model.embed_images(g, crops, [2, 0])
    prompts = [[0] + [IMAGE_ID] * len(s) + [40, 41] for s in seqs]
    requests = [GenerationRequest(prompt_ids=p, image_embeds=[s]) for p, s in zip(prompts, seqs)]
    alone = [generate(model, [r], _greedy(8), image_token_id=IMAGE_ID, eos_token_id=EOS_ID)[0].token_ids
             for r in requests]
    batched = generate(model, requests, _greedy(8), image_token_id=IMAGE_ID, eos_token_id=EOS_ID)
    assert [r.token_ids for r in batched] == alone
    assert alone[0] != alone[1]


def test_generation_stops_at_eos_and_excludes_it(model) -> None:
    prompt = [0, 17, 42]
    free = generate(model, [GenerationRequest(prompt_ids=prompt)], _greedy(6), image_token_id=IMAGE_ID,
                    eos_token_id=EOS_ID)[0].token_ids
    # Declare the third greedy token to be EOS: generation must stop right before it.
    (result,) = generate(model, [GenerationRequest(prompt_ids=prompt)],
                         SamplingParams(max_new_tokens=6, ngram_size=0), image_token_id=IMAGE_ID,
                         eos_token_id=free[2])
    assert result.finish_reason == FINISH_STOP
    assert result.token_ids == free[:free.index(free[2])]


def test_streaming_callback_sees_every_token_in_order(model) -> None:
    seen: list[tuple[int, int]] = []
    results = generate(model, [GenerationRequest(prompt_ids=[0, 1 + 4]), GenerationRequest(prompt_ids=[0, 9, 9])],
                       _greedy(5), image_token_id=IMAGE_ID, eos_token_id=EOS_ID,
                       on_token=lambda i, t: seen.append((i, t)))
    for i, r in enumerate(results):
        assert [t for j, t in seen if j == i] == r.token_ids


def test_sampling_with_a_seed_is_reproducible(model) -> None:
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=123, ngram_size=0,
                            ignore_eos=True)
    run = lambda: generate(model, [GenerationRequest(prompt_ids=[0, 4, 5])], params,
                           image_token_id=IMAGE_ID, eos_token_id=EOS_ID)[0].token_ids
    assert run() == run()


def test_repetition_guard_is_applied_during_generation(model) -> None:
    params = SamplingParams(max_new_tokens=40, ngram_size=0, no_repeat_ngram_size=2, ignore_eos=True)
    (result,) = generate(model, [GenerationRequest(prompt_ids=[0, 4, 5])], params, image_token_id=IMAGE_ID,
                         eos_token_id=EOS_ID)
    seq = [0, 4, 5] + result.token_ids
    bigrams = list(itertools.pairwise(seq))
    assert len(bigrams) == len(set(bigrams))


def test_prompt_longer_than_the_context_is_refused(model) -> None:
    with pytest.raises(GenerationError, match="context"):
        generate(model, [GenerationRequest(prompt_ids=[0] * 2048)], _greedy(2), image_token_id=IMAGE_ID,
                 eos_token_id=EOS_ID)


def test_rows_that_finish_early_leave_the_batch_and_the_rest_read_on_unchanged(model, monkeypatch) -> None:
    prompts = [[0, 5 + i, 60 + 7 * i, 9] for i in range(8)]
    free = [generate(model, [GenerationRequest(prompt_ids=p)], _greedy(14), image_token_id=IMAGE_ID,
                     eos_token_id=EOS_ID)[0].token_ids for p in prompts]

    def stops(eos: int) -> list[int]:
        return [seq.index(eos) if eos in seq else len(seq) for seq in free]

    # An EOS that some rows meet early and others late or never, so the batch shrinks while others go on.
    eos = max({t for seq in free for t in seq}, key=lambda t: (len(set(stops(t))), -min(stops(t))))
    assert len(set(stops(eos))) >= 3 and max(stops(eos)) > min(stops(eos)) + 2
    params = SamplingParams(max_new_tokens=14, ngram_size=0)
    alone = [generate(model, [GenerationRequest(prompt_ids=p)], params, image_token_id=IMAGE_ID,
                      eos_token_id=eos)[0] for p in prompts]
    kept: list[int] = []
    keep = KVCache.keep
    monkeypatch.setattr(KVCache, "keep", lambda self, rows, length: (kept.append(len(rows)), keep(self, rows, length)))
    batched = generate(model, [GenerationRequest(prompt_ids=p) for p in prompts], params, image_token_id=IMAGE_ID,
                       eos_token_id=eos)
    assert [(r.token_ids, r.finish_reason) for r in batched] == [(r.token_ids, r.finish_reason) for r in alone]
    assert kept and kept == sorted(kept, reverse=True) and kept[-1] < len(prompts)
