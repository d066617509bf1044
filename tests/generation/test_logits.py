import random

import pytest
import torch

from dsocr.generation.logits import NoRepeatNGramGuard, WindowedNGramGuard, apply_bans


def _windowed_brute_force(ids: list[int], n: int, window: int, whitelist: set[int]) -> set[int]:
    """Spec 8.2, steps 1-4, written as literally as possible."""
    length = len(ids)
    if length < n:
        return set()
    prefix = ids[length - n + 1:]
    banned = {ids[s + n - 1] for s in range(length - n + 1)
              if s >= max(0, length - window) and ids[s:s + n - 1] == prefix}
    return banned - whitelist


def _whole_brute_force(ids: list[int], n: int) -> set[int]:
    """transformers' rule: every t such that ids[L-n+1:L] + [t] already occurs as an n-gram."""
    length = len(ids)
    if length + 1 < n:
        return set()
    key = ids[length - n + 1:]
    return {ids[i + n - 1] for i in range(length - n + 1) if ids[i:i + n - 1] == key}


@pytest.mark.parametrize("seed", range(20))
def test_windowed_guard_matches_the_spec_on_random_sequences(seed: int) -> None:
    rng = random.Random(seed)
    n, window = rng.randint(2, 5), rng.randint(5, 30)
    ids = [rng.randint(0, 3) for _ in range(rng.randint(0, 60))]
    guard = WindowedNGramGuard(n, window, {2})
    for length in range(len(ids) + 1):
        assert guard.banned(ids[:length]) == _windowed_brute_force(ids[:length], n, window, {2})


@pytest.mark.parametrize("seed", range(20))
def test_whole_sequence_guard_matches_transformers_rule_incrementally(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 4)
    prompt = [rng.randint(0, 3) for _ in range(rng.randint(0, 10))]
    guard = NoRepeatNGramGuard(n, prompt)
    ids = list(prompt)
    for _ in range(40):
        assert guard.banned() == _whole_brute_force(ids, n)
        token = rng.randint(0, 3)
        guard.append(token)
        ids.append(token)


def test_window_boundary_is_inclusive_at_length_minus_window() -> None:
    # n = 3, L = 10, window 6: starts 4..7 are inside; an n-gram at start 3 is not.
    ids = [9, 9, 9, 1, 2, 7, 0, 0, 1, 2]
    assert WindowedNGramGuard(3, 6).banned(ids) == set()  # "1 2 7" starts at 3
    assert WindowedNGramGuard(3, 7).banned(ids) == {7}  # now start 3 is inside


def test_whitelisted_tokens_are_never_banned() -> None:
    ids = [5, 6, 7, 5, 6]
    assert WindowedNGramGuard(3, 90).banned(ids) == {7}
    assert WindowedNGramGuard(3, 90, whitelist_ids={7}).banned(ids) == set()


def test_short_sequences_ban_nothing_and_prompt_ngrams_ban_in_hf_guard() -> None:
    assert WindowedNGramGuard(4, 90).banned([1, 2, 3]) == set()
    guard = NoRepeatNGramGuard(2, [0, 5, 6])
    guard.append(5)
    assert guard.banned() == {6}  # "5 6" occurred in the prompt


def test_apply_bans_sets_minus_infinity_on_a_copy() -> None:
    row = torch.zeros(5)
    out = apply_bans(row, {1, 3})
    assert out.tolist() == [0, float("-inf"), 0, float("-inf"), 0] and row.tolist() == [0] * 5
