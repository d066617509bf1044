import pytest
import torch

from dsocr.errors import GenerationError
from dsocr.generation.params import SamplingParams
from dsocr.generation.sampling import sample_next


def test_greedy_picks_the_first_maximum() -> None:
    logits = torch.tensor([[0.0, 3.0, 3.0, 1.0], [5.0, 1.0, 5.0, 5.0]])
    assert sample_next(logits, SamplingParams(), None).tolist() == [1, 0]


def test_same_seed_same_samples_and_top_k_1_is_greedy() -> None:
    logits = torch.randn(4, 50)
    params = SamplingParams(temperature=1.0, seed=1)
    a = sample_next(logits, params, torch.Generator().manual_seed(9))
    b = sample_next(logits, params, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert torch.equal(sample_next(logits, SamplingParams(temperature=1.0, top_k=1), None), logits.argmax(-1))
    assert torch.equal(sample_next(logits, SamplingParams(temperature=1.0, top_p=1e-6), None), logits.argmax(-1))


def test_sampling_follows_the_distribution_and_top_p_cuts_the_tail() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(20000, 4)
    gen = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample_next(logits, SamplingParams(temperature=1.0), gen), minlength=4) / 20000
    assert torch.allclose(counts, probs, atol=0.02)
    nucleus = torch.bincount(sample_next(logits, SamplingParams(temperature=1.0, top_p=0.8), gen), minlength=4)
    assert nucleus[2] == 0 and nucleus[3] == 0  # 0.5 + 0.3 reaches 0.8
    assert abs(nucleus[0] / 20000 - 0.5 / 0.8) < 0.02


@pytest.mark.parametrize("kwargs", [{"max_new_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5},
                                    {"top_k": -1}, {"ngram_size": 30, "ngram_window": 10}])
def test_invalid_sampling_params_raise_generation_error_naming_the_field(kwargs: dict) -> None:
    with pytest.raises(GenerationError, match=next(iter(kwargs)) if "ngram_window" not in kwargs else "ngram_window"):
        SamplingParams(**kwargs)
