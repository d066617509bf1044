"""The fast engine against the reference loop, on a tiny random model on CPU: same greedy tokens, same finish
reasons, whatever the batch composition, cache size or arrival order."""

import random

import pytest
import torch

from dsocr.engine.engine import FINISH_ABORT, FINISH_ERROR, EngineConfig, EngineRequest, LLMEngine
from dsocr.engine.guard import push_history, update_loop_runs, windowed_ngram_bans
from dsocr.errors import GenerationError
from dsocr.generation.logits import WindowedNGramGuard
from dsocr.generation.params import SamplingParams
from dsocr.generation.reference import FINISH_LENGTH, FINISH_STOP, GenerationRequest, generate
from dsocr.generation.repetition import FINISH_REPETITION, LoopDetector, loop_period
from dsocr.testing.fixtures import random_model, tiny_config

IMAGE_ID, EOS_ID = 3, 1


@pytest.fixture(scope="module")
def model():
    """The engine's model (the engine switches its MoE layers to grouped experts)."""
    return random_model(tiny_config(), seed=7)


@pytest.fixture(scope="module")
def reference_model():
    """The same weights, left as they are: the plain per-expert loop."""
    return random_model(tiny_config(), seed=7)


@pytest.fixture(scope="module")
def images(model):
    """Visual sequences of three images (2, 0 and 1 crops), from the model's own vision tower."""
    g = torch.randn(3, 3, 192, 192, generator=torch.Generator().manual_seed(1))
    crops = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        return model.model.embed_images(g, crops, [2, 0, 1])


def _engine(model, **config) -> LLMEngine:
    return LLMEngine(model, encode_images=lambda embeds: list(embeds), eos_token_id=EOS_ID, image_token_id=IMAGE_ID,
                     token_id=lambda token: 4 + len(token), config=EngineConfig(**config))


def _cases(images) -> list[tuple[list[int], torch.Tensor | None]]:
    rng = random.Random(0)
    cases = []
    for i in range(8):
        text = [rng.randrange(10, 500) for _ in range(rng.randrange(1, 12))]
        if i % 4 == 3:
            cases.append(([0] + text, None))
        else:
            image = images[i % 3]
            cases.append(([0] + [IMAGE_ID] * len(image) + text, image))
    return cases


def _reference(reference_model, prompt, image, params):
    request = GenerationRequest(prompt_ids=prompt, image_embeds=[image] if image is not None else [])
    return generate(reference_model, [request], params, image_token_id=IMAGE_ID, eos_token_id=EOS_ID,
                    whitelist_ids=[4 + len(t) for t in params.ngram_whitelist])[0]


PARAMS = [
    SamplingParams(max_new_tokens=60),  # the default guard, EOS honoured
    SamplingParams(max_new_tokens=45, ngram_size=0, ignore_eos=True, stop_on_loop=False),
    SamplingParams(max_new_tokens=50, ngram_size=3, ngram_window=12, ignore_eos=True),
]


@pytest.mark.parametrize("params", PARAMS, ids=["default", "plain", "tight-guard"])
def test_greedy_tokens_equal_the_reference_one_by_one(model, reference_model, images, params) -> None:
    cases = _cases(images)
    engine = _engine(model)
    requests = engine.generate([EngineRequest(prompt_ids=p, image=img, params=params) for p, img in cases])
    for (prompt, image), r in zip(cases, requests):
        expected = _reference(reference_model, prompt, image, params)
        assert (r.token_ids, r.finish_reason) == (expected.token_ids, expected.finish_reason)
    assert engine.allocator.num_free == engine.allocator.capacity  # every block came back
    assert not engine.rows and not engine.has_work()


def test_requests_join_and_leave_a_running_batch(model, reference_model, images) -> None:
    """Two rows and a cache for about two requests: the others wait for memory and join while the first
    ones still decode; each result still equals its reference."""
    cases = _cases(images)
    params = [SamplingParams(max_new_tokens=n, ngram_size=0, ignore_eos=True, stop_on_loop=False)
              for n in (5, 40, 12, 30, 8, 25, 3, 20)]
    engine = _engine(model, max_batch=3, kv_cache_tokens=2 * 64 * 5, max_prefill_tokens=64)
    requests = engine.generate([EngineRequest(prompt_ids=p, image=img, params=sp)
                                for (p, img), sp in zip(cases, params)])
    for (prompt, image), sp, r in zip(cases, params, requests):
        assert r.token_ids == _reference(reference_model, prompt, image, sp).token_ids
        assert r.finish_reason == FINISH_LENGTH
    assert engine.stats.peak_running <= 3
    assert engine.stats.prefills >= 4  # admitted over time, not in one batch
    joined_late = [r for r in requests if r.started_at > min(q.first_token_at for q in requests)]
    still_running = [r for r in requests if r.finished_at > max(q.started_at for q in joined_late)]
    assert joined_late and still_running  # someone joined while another was decoding


def test_a_loop_is_stopped_early_with_finish_reason_repetition(model, reference_model) -> None:
    """Without the n-gram guard these prompts fall into a loop; both paths stop at the same token, a couple of
    hundred tokens into the loop, not at the token limit."""
    params = SamplingParams(max_new_tokens=520, ngram_size=0, ignore_eos=True)
    engine = _engine(model)
    prompts = [[0] + [random.Random(seed).randrange(10, 500) for _ in range(5)] for seed in (3, 4)]
    for prompt, r in zip(prompts, engine.generate([EngineRequest(prompt_ids=p, params=params) for p in prompts])):
        expected = _reference(reference_model, prompt, None, params)
        assert (r.token_ids, r.finish_reason) == (expected.token_ids, FINISH_REPETITION)
        assert len(r.token_ids) < 520 and loop_period(r.token_ids) is not None
    # The same prompts with loop stopping off run to the limit.
    off = SamplingParams(max_new_tokens=520, ngram_size=0, ignore_eos=True, stop_on_loop=False)
    assert engine.generate([EngineRequest(prompt_ids=prompts[0], params=off)])[0].finish_reason == FINISH_LENGTH


def test_sampling_is_reproducible_and_leaves_greedy_neighbours_alone(model, reference_model, images) -> None:
    (prompt, image), (prompt2, image2) = _cases(images)[:2]
    greedy = SamplingParams(max_new_tokens=20, ngram_size=0, ignore_eos=True)
    sampled = SamplingParams(max_new_tokens=20, temperature=1.0, top_p=0.9, seed=5, ngram_size=0, ignore_eos=True)
    runs = []
    for _ in range(2):
        engine = _engine(model)
        a, b = engine.generate([EngineRequest(prompt_ids=prompt, image=image, params=greedy),
                                EngineRequest(prompt_ids=prompt2, image=image2, params=sampled)])
        runs.append(b.token_ids)
        assert a.token_ids == _reference(reference_model, prompt, image, greedy).token_ids
    assert runs[0] == runs[1] and len(runs[0]) == 20


def test_a_bad_request_fails_alone_and_others_go_on(model, reference_model, images) -> None:
    (prompt, image), (prompt2, image2) = _cases(images)[:2]
    params = SamplingParams(max_new_tokens=10, ngram_size=0, ignore_eos=True)
    engine = _engine(model)
    bad = EngineRequest(prompt_ids=prompt[:1] + prompt[2:], image=image, params=params)  # one placeholder short
    good = EngineRequest(prompt_ids=prompt2, image=image2, params=params)
    engine.generate([bad, good])
    assert bad.finish_reason == FINISH_ERROR and "placeholder" in str(bad.error)
    assert good.token_ids == _reference(reference_model, prompt2, image2, params).token_ids
    assert engine.allocator.num_free == engine.allocator.capacity


def test_abort_stops_a_running_request(model) -> None:
    params = SamplingParams(max_new_tokens=200, ngram_size=0, ignore_eos=True, stop_on_loop=False)
    engine = _engine(model)
    seen = []
    victim = EngineRequest(prompt_ids=[0, 20, 30], params=params)
    victim.on_token = lambda t: seen.append(t) if len(seen) < 5 else engine.abort(victim)
    other = EngineRequest(prompt_ids=[0, 40], params=params)
    engine.generate([victim, other])
    assert victim.finish_reason == FINISH_ABORT and len(victim.token_ids) < 10
    assert other.finish_reason == FINISH_LENGTH and len(other.token_ids) == 200


def test_streaming_and_finish_callbacks(model) -> None:
    streamed, finished = [], []
    params = SamplingParams(max_new_tokens=15, ngram_size=0, ignore_eos=True)
    engine = _engine(model)
    (r,) = engine.generate([EngineRequest(prompt_ids=[0, 9, 9], params=params, on_token=streamed.append,
                                          on_finish=finished.append)])
    assert streamed == r.token_ids and finished == [r]
    assert r.ttft > 0 and r.decode_seconds > 0


def test_eos_ends_a_request_without_the_eos_token(model) -> None:
    free = _engine(model).generate([EngineRequest(prompt_ids=[0, 17, 42], params=SamplingParams(
        max_new_tokens=6, ngram_size=0, ignore_eos=True))])[0].token_ids
    engine = LLMEngine(model, encode_images=list, eos_token_id=free[2], image_token_id=IMAGE_ID, token_id=len)
    (r,) = engine.generate([EngineRequest(prompt_ids=[0, 17, 42], params=SamplingParams(max_new_tokens=6,
                                                                                       ngram_size=0))])
    assert r.finish_reason == FINISH_STOP and r.token_ids == free[:free.index(free[2])]


def test_requests_that_can_never_run_are_refused(model) -> None:
    engine = _engine(model, kv_cache_tokens=256)
    with pytest.raises(GenerationError, match="KV cache"):
        engine.add(EngineRequest(prompt_ids=[0, 5], params=SamplingParams(max_new_tokens=1000)))
    with pytest.raises(GenerationError, match="context"):
        engine.add(EngineRequest(prompt_ids=[0] * 2048, params=SamplingParams()))
    with pytest.raises(GenerationError, match="no_repeat_ngram_size"):
        engine.add(EngineRequest(prompt_ids=[0, 5], params=SamplingParams(no_repeat_ngram_size=3)))


@pytest.mark.parametrize(("n", "window"), [(1, 5), (2, 6), (3, 12), (30, 90), (20, 256)])
def test_device_ngram_bans_equal_the_host_guard(n, window) -> None:
    rng = random.Random(n)
    whitelist_ids = [7]
    rows = [[rng.randrange(0, 9) for _ in range(rng.randrange(0, window + 40))] for _ in range(12)]
    rows.append([1, 2] * (window + 3))  # a periodic row: many matches
    history = torch.full((len(rows), max(window, 8)), -1, dtype=torch.int64)
    for i, row in enumerate(rows):
        for token in row:
            push_history(history[i:i + 1], torch.tensor([token]))
    whitelist = torch.zeros(10, dtype=torch.bool)
    whitelist[whitelist_ids] = True
    enabled = torch.ones(len(rows), dtype=torch.bool)
    enabled[0] = False
    banned = windowed_ngram_bans(history[:, -window:], n, 10, enabled, whitelist)
    host = WindowedNGramGuard(n, window, whitelist_ids)
    for i, row in enumerate(rows):
        expected = host.banned(row) if i else set()
        assert set(torch.nonzero(banned[i]).view(-1).tolist()) == expected, (i, row)


def test_device_loop_counters_equal_the_host_detector() -> None:
    rng = random.Random(3)
    sequences = [[rng.randrange(0, 4) for _ in range(300)],
                 [rng.randrange(0, 50) for _ in range(100)] + list(range(70)) * 6,
                 [5] * 250]
    history = torch.full((3, 257), -1, dtype=torch.int64)
    runs = torch.zeros(3, 256, dtype=torch.int32)
    spans = torch.tensor([max(3 * p, 192) for p in range(1, 257)], dtype=torch.int32)
    detectors = [LoopDetector() for _ in sequences]
    for step in range(max(map(len, sequences))):
        tokens = torch.tensor([s[step] if step < len(s) else -1 for s in sequences])
        push_history(history, tokens)
        flags = update_loop_runs(history, runs, spans)
        for i, s in enumerate(sequences):
            if step < len(s):
                assert bool(flags[i]) == detectors[i].push(s[step]), (i, step)
    assert detectors[1].push(0) and detectors[2].push(5)  # the loops were seen
