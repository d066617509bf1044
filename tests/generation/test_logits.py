import random

import pytest
import torch

from dsocr.errors import GenerationError
from dsocr.generation.logits import NoRepeatNGramGuard, WindowedNGramGuard, apply_bans


def _windowed_brute_force(ids: list[int], n: int, window: int, whitelist: set[int]) -> set[int]:
    """Spec 8.2, steps 1-4, written as literally as possible."""
    length = len(ids)
    if length < n:
        return set()
    prefix = ids[length - n + 1:length]
    banned = set()
    for s in range(max(0, length - window), length - n + 1):
        if ids[s:s + n - 1] == prefix:
            banned.add(ids[s + n - 1])
    return banned - whitelist


def _whole_brute_force(ids: list[int], n: int) -> set[int]:
    """transformers' rule: every t such that ids[L-n+1:L] + [t] already occurs as an n-gram."""
    length = len(ids)
    if length + 1 < n:
        return set()
    grams = [tuple(ids[i:i + n]) for i in range(length - n + 1)]
    key = tuple(ids[length - n + 1:])
    return {g[-1] for g in grams if g[:-1] == key}


@pytest.mark.parametrize("seed", range(25))
def test_windowed_guard_matches_the_spec_on_random_sequences(seed: int) -> None:
    rng = random.Random(seed)
    n, window = rng.randint(1, 6), rng.randint(0, 40)
    whitelist = set(rng.sample(range(4), rng.randint(0, 2)))
    ids = [rng.randint(0, 3) for _ in range(rng.randint(0, 80))]
    guard = WindowedNGramGuard(n, window, whitelist)
    for length in range(len(ids) + 1):
        assert guard.banned(ids[:length]) == _windowed_brute_force(ids[:length], n, window, whitelist)


@pytest.mark.parametrize("seed", range(25))
def test_whole_sequence_guard_matches_transformers_rule_incrementally(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 5)
    prompt = [rng.randint(0, 3) for _ in range(rng.randint(0, 12))]
    guard = NoRepeatNGramGuard(n, prompt)
    ids = list(prompt)
    for _ in range(60):
        assert guard.banned() == _whole_brute_force(ids, n)
        token = rng.randint(0, 3)
        guard.append(token)
        ids.append(token)


def test_window_boundary_an_ngram_starting_at_length_minus_window_counts() -> None:
    # n = 3, L = 10, window 6: L - window = 4, so an n-gram starting at 4 counts and one at 3 does not.
    at_4 = [9, 9, 9, 9, 1, 2, 7, 0, 1, 2]
    at_3 = [9, 9, 9, 1, 2, 7, 0, 0, 1, 2]
    assert WindowedNGramGuard(3, 6).banned(at_4) == {7}
    assert WindowedNGramGuard(3, 6).banned(at_3) == set()
    assert WindowedNGramGuard(3, 7).banned(at_3) == {7}


def test_windowed_guard_only_sees_the_ids_it_is_given() -> None:
    # vLLM gives the processor the generated ids only: "5 6 7" in the prompt does not count.
    assert WindowedNGramGuard(3, 90).banned([5, 6]) == set()
    assert WindowedNGramGuard(3, 90).banned([5, 6, 7, 5, 6]) == {7}


def test_whitelisted_tokens_are_never_banned() -> None:
    cells = [128821, 42, 128822, 128821, 42, 128822, 128821, 42]
    assert WindowedNGramGuard(2, 90).banned(cells) == {128822}
    assert WindowedNGramGuard(2, 90, whitelist_ids={128821, 128822}).banned(cells) == set()
    assert WindowedNGramGuard(3, 90, whitelist_ids={7}).banned([5, 6, 7, 5, 6]) == set()


def test_short_sequences_ban_nothing() -> None:
    assert WindowedNGramGuard(4, 90).banned([1, 2, 3]) == set()
    assert WindowedNGramGuard(3, 90).banned([1, 1, 1]) == {1}  # L == n: the n-gram just completed counts
    assert NoRepeatNGramGuard(4, [1, 2]).banned() == set()  # L + 1 < n


def test_whole_sequence_guard_bans_prompt_ngrams_with_no_window() -> None:
    guard = NoRepeatNGramGuard(2, [0, 5, 6] + [9] * 500)
    guard.append(5)
    assert guard.banned() == {6}  # "5 6" occurred in the prompt, 500 tokens back
    assert NoRepeatNGramGuard(1, [3, 4, 3]).banned() == {3, 4}  # n = 1: every token seen


def test_guards_reject_sizes_that_mean_off() -> None:
    with pytest.raises(GenerationError):
        WindowedNGramGuard(0, 90)
    with pytest.raises(GenerationError):
        NoRepeatNGramGuard(0, [])


def test_apply_bans_sets_minus_infinity_on_a_copy() -> None:
    row = torch.zeros(5, dtype=torch.bfloat16)
    out = apply_bans(row, {1, 3})
    assert out.tolist() == [0, float("-inf"), 0, float("-inf"), 0] and out.dtype == torch.bfloat16
    assert row.tolist() == [0] * 5
    untouched = apply_bans(row, ())
    assert torch.equal(untouched, row) and untouched.data_ptr() != row.data_ptr()
    with pytest.raises(GenerationError, match="row"):
        apply_bans(torch.zeros(2, 5), {1})
