"""CPU decoding forms (dense small-batch experts, packed LM head) against the reference modules."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dsocr.api import OCR
from dsocr.engine.cpu import DenseExperts, PackedLinear, onednn_packing, use_cpu_decoding
from dsocr.generation.params import SamplingParams
from dsocr.generation.reference import GenerationRequest, generate
from dsocr.testing.fixtures import moe_layers, random_model, tiny_config


@pytest.fixture
def model():
    return random_model(tiny_config(), seed=0).eval()


@pytest.mark.skipif(not onednn_packing(), reason="this torch build has no oneDNN weight packing")
def test_packed_head_equals_the_linear() -> None:
    linear = nn.Linear(64, 300, bias=False)
    packed = PackedLinear(linear)
    x = torch.randn(2, 5, 64)
    torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)
    assert packed.weight is linear.weight


def test_switching_keeps_names_and_values_and_is_idempotent(model) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    switched = use_cpu_decoding(model)
    assert switched["experts"] == len(moe_layers(model)) > 0
    assert switched["lm_head"] == int(onednn_packing())
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert use_cpu_decoding(model) == {"experts": 0, "lm_head": 0}


def test_greedy_tokens_are_unchanged(model) -> None:
    fast = copy.deepcopy(model)
    use_cpu_decoding(fast)
    hidden = model.config.language.hidden_size
    requests = [GenerationRequest(prompt_ids=[0] + [5] * 9 + [7, 8, 9 + i], image_embeds=[torch.randn(9, hidden) * 0.02])
                for i in range(3)]  # a batch, as a page's views decode
    params = SamplingParams(max_new_tokens=24, ignore_eos=True)
    kwargs = {"image_token_id": 5, "eos_token_id": 1}
    expected = generate(model, requests, params, **kwargs)
    got = generate(fast, requests, params, **kwargs)
    assert [r.token_ids for r in got] == [r.token_ids for r in expected]
    assert all(len(r.token_ids) == 24 for r in got)


def test_from_pretrained_switches_on_cpu_unless_the_reference_is_asked_for(tiny_checkpoint) -> None:
    auto = OCR.from_pretrained(tiny_checkpoint, device="cpu")
    reference = OCR.from_pretrained(tiny_checkpoint, device="cpu", engine="reference")
    assert all(isinstance(m.grouped, DenseExperts) for m in moe_layers(auto.model))
    assert all(m.grouped is None for m in moe_layers(reference.model))
    assert not isinstance(reference.model.lm_head, PackedLinear)
