import pytest
import torch

from dsocr.errors import GenerationError
from dsocr.generation.params import SamplingParams
from dsocr.generation.sampling import sample_next

N = 20000
PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])


def _frequencies(params: SamplingParams, probs: torch.Tensor = PROBS, seed: int = 0) -> torch.Tensor:
    logits = probs.log().expand(N, len(probs))
    samples = sample_next(logits, params, torch.Generator().manual_seed(seed))
    return torch.bincount(samples, minlength=len(probs)) / N


def test_greedy_picks_the_first_maximum() -> None:
    logits = torch.tensor([[0.0, 3.0, 3.0, 1.0], [5.0, 1.0, 5.0, 5.0]])
    out = sample_next(logits, SamplingParams(), None)
    assert out.tolist() == [1, 0] and out.dtype == torch.int64 and out.shape == (2,)


def test_same_seed_gives_the_same_samples() -> None:
    logits = torch.randn(64, 50)
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=20)
    a = sample_next(logits, params, torch.Generator().manual_seed(9))
    b = sample_next(logits, params, torch.Generator().manual_seed(9))
    c = sample_next(logits, params, torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_k_1_and_tiny_top_p_are_greedy_even_on_ties() -> None:
    logits = torch.randn(32, 50)
    logits[:4, 7] = logits[:4, 30] = logits[:4].max(-1).values + 1  # rows with a tie for the best token
    greedy = sample_next(logits, SamplingParams(), None)
    assert greedy[:4].tolist() == [7] * 4
    for params in (SamplingParams(temperature=1.0, top_k=1), SamplingParams(temperature=0.7, top_p=1e-6)):
        assert torch.equal(sample_next(logits, params, torch.Generator().manual_seed(0)), greedy)


def test_sampling_follows_the_distribution() -> None:
    assert torch.allclose(_frequencies(SamplingParams(temperature=1.0)), PROBS, atol=0.02)
    hot = PROBS.pow(1 / 2.0) / PROBS.pow(1 / 2.0).sum()  # temperature 2 flattens
    assert torch.allclose(_frequencies(SamplingParams(temperature=2.0)), hot, atol=0.02)


@pytest.mark.parametrize(("params", "expected"), [
    (SamplingParams(temperature=1.0, top_k=2), [0.625, 0.375, 0, 0]),
    (SamplingParams(temperature=1.0, top_p=0.75), [0.625, 0.375, 0, 0]),  # 0.5 + 0.3 reaches 0.75
    (SamplingParams(temperature=1.0, top_p=0.85), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0]),
    (SamplingParams(temperature=1.0, top_p=0.4), [1, 0, 0, 0]),  # the top token alone reaches it
    # top-p sees the distribution renormalised after top-k: 0.625 >= 0.6 already, so token 1 goes too.
    (SamplingParams(temperature=1.0, top_k=2, top_p=0.6), [1, 0, 0, 0]),
])
def test_top_k_then_top_p_keep_the_right_tokens_renormalised(params: SamplingParams, expected: list) -> None:
    frequencies = _frequencies(params)
    assert torch.allclose(frequencies, torch.tensor(expected, dtype=torch.float32), atol=0.02)
    assert all(f == 0 for f, e in zip(frequencies.tolist(), expected, strict=True) if e == 0)


def test_banned_tokens_are_never_drawn_and_the_input_is_untouched() -> None:
    logits = torch.zeros(2000, 6)
    logits[:, [1, 4]] = float("-inf")
    before = logits.clone()
    params = SamplingParams(temperature=1.5, top_p=0.95)
    samples = sample_next(logits, params, torch.Generator().manual_seed(3))
    assert not ({1, 4} & set(samples.tolist()))
    assert torch.equal(logits, before)


def test_logits_must_be_a_batch_of_rows() -> None:
    with pytest.raises(GenerationError, match="logits"):
        sample_next(torch.zeros(5), SamplingParams(), None)
