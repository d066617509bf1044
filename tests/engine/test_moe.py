"""Grouped MoE against the reference per-expert loop: same outputs, same greedy tokens, no extra memory."""

from __future__ import annotations

import copy

import pytest
import torch

from dsocr.engine.cpu import DenseExperts
from dsocr.engine.moe import GroupedExperts, _grouped, _grouped_static, grouped_mm_works, use_grouped_experts
from dsocr.generation.params import SamplingParams
from dsocr.generation.reference import GenerationRequest, generate
from dsocr.testing.fixtures import moe_layers, random_model, tiny_config


@pytest.fixture
def model():
    return random_model(tiny_config(), seed=0).eval()


# DenseExperts at 40 rows (2 x 40 > its 32): the grouped form's turn
@pytest.mark.parametrize("form, tokens", [(GroupedExperts, t) for t in (1, 3, 64, 500)]
                         + [(DenseExperts, t) for t in (1, 5, 16, 40)])
def test_expert_forms_equal_the_loop(model, form, tokens) -> None:
    moe = moe_layers(model)[0]
    x = torch.randn(2, tokens, moe.gate.weight.shape[1])
    with torch.no_grad():
        expected = moe(x)
        moe.grouped = form(moe)
        got = moe(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_packing_keeps_parameter_names_and_shares_storage(model) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_grouped_experts(model) == len(moe_layers(model)) > 0
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    moe = moe_layers(model)[0]
    packed = moe.grouped.w13
    assert moe.experts[1].up_proj.weight.data_ptr() == packed[1, :, moe.grouped.intermediate:].data_ptr()
    assert use_grouped_experts(model) == 0  # idempotent


def test_the_fallback_loop_equals_the_grouped_gemm() -> None:
    x, w = torch.randn(10, 8), torch.randn(3, 8, 4)
    ends = torch.tensor([3, 3, 10], dtype=torch.int32)  # an empty group in the middle
    expected = torch.cat([x[:3] @ w[0], x[3:] @ w[2]])
    torch.testing.assert_close(_grouped(x, w, ends, grouped_mm_works(x.device, x.dtype)), expected)
    torch.testing.assert_close(_grouped(x, w, ends, False), expected)  # the loop path
    torch.testing.assert_close(_grouped_static(x, w, ends), expected)  # the graph-capture path


def test_greedy_tokens_are_unchanged(model) -> None:
    grouped = copy.deepcopy(model)
    use_grouped_experts(grouped)
    embeds = torch.randn(9, model.config.language.hidden_size) * 0.02
    request = GenerationRequest(prompt_ids=[0] + [5] * 9 + [7, 8, 9], image_embeds=[embeds])
    params = SamplingParams(max_new_tokens=24, ignore_eos=True)
    kwargs = {"image_token_id": 5, "eos_token_id": 1}
    (a,) = generate(model, [request], params, **kwargs)
    (b,) = generate(grouped, [request], params, **kwargs)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 24
