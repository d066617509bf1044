import dataclasses

import pytest

from dsocr.errors import GenerationError
from dsocr.generation.params import SamplingParams


def test_defaults_are_greedy_with_the_windowed_guard() -> None:
    params = SamplingParams()
    assert params.is_greedy and params.max_new_tokens == 8192 and params.top_p == 1.0 and params.top_k == 0
    assert (params.ngram_size, params.ngram_window, params.ngram_whitelist) == (30, 90, ("<td>", "</td>"))
    assert params.no_repeat_ngram_size == 0 and params.seed is None and not params.ignore_eos
    assert not SamplingParams(temperature=0.5).is_greedy


def test_params_are_frozen_and_keyword_only() -> None:
    params = SamplingParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.temperature = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        SamplingParams(100)  # type: ignore[misc]
    assert dataclasses.replace(params, top_k=5).top_k == 5


@pytest.mark.parametrize(("field", "value"), [
    ("max_new_tokens", 0), ("max_new_tokens", 1.5), ("max_new_tokens", True),
    ("temperature", -1.0), ("temperature", float("nan")), ("temperature", float("inf")), ("temperature", "1"),
    ("top_p", 0.0), ("top_p", 1.5), ("top_p", float("nan")),
    ("top_k", -1), ("ngram_size", -1), ("no_repeat_ngram_size", -2),
    ("seed", -1), ("seed", 1.0), ("seed", 2**64),
    ("ngram_window", 10),
    ("ngram_whitelist", "<td>"), ("ngram_whitelist", None), ("ngram_whitelist", ("<td>", 128821)),
])
def test_invalid_values_raise_generation_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(GenerationError, match=f"^{field}: must be"):
        SamplingParams(**{field: value})  # type: ignore[arg-type]


def test_window_must_hold_an_ngram_only_when_the_guard_is_on() -> None:
    assert SamplingParams(ngram_size=20, ngram_window=20).ngram_window == 20
    assert SamplingParams(ngram_size=0, ngram_window=0).ngram_size == 0
    with pytest.raises(GenerationError, match=r"ngram_window: must be an integer >= 20, got 19"):
        SamplingParams(ngram_size=20, ngram_window=19)


def test_whitelist_is_stored_as_a_tuple() -> None:
    params = SamplingParams(ngram_whitelist=["<td>"])  # type: ignore[arg-type]
    assert params.ngram_whitelist == ("<td>",)
    assert hash(params) == hash(SamplingParams(ngram_whitelist=("<td>",)))
