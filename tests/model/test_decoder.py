import torch

from dsocr.testing.fixtures import random_model, tiny_config


def _causal(t: int) -> torch.Tensor:
    return torch.ones(t, t, dtype=torch.bool).tril()[None, None]


def test_kv_cache_decoding_equals_full_recomputation() -> None:
    model = random_model(tiny_config(), seed=1)
    ids = torch.randint(0, 512, (1, 12))
    positions = torch.arange(12)[None]
    full = model(model.model.embed_inputs(ids), positions, _causal(12))  # (1, 12, V)

    cache = model.new_cache(1, 12)
    prefix = model(model.model.embed_inputs(ids[:, :8]), positions[:, :8], _causal(8), cache, 0)
    torch.testing.assert_close(prefix, full[:, :8], rtol=1e-5, atol=1e-5)
    for t in range(8, 12):
        mask = torch.ones(1, 1, 1, t + 1, dtype=torch.bool)
        step = model(model.model.embed_inputs(ids[:, t:t + 1]), positions[:, t:t + 1], mask, cache, t)
        torch.testing.assert_close(step[:, 0], full[:, t], rtol=1e-5, atol=1e-5)


def test_moe_routes_to_top_k_experts_without_renormalising() -> None:
    model = random_model(tiny_config(), seed=2)
    moe = model.model.layers[1].mlp
    x = torch.randn(5, 64)
    weights, ids = moe.gate(x)
    assert ids.shape == (5, 3) and (weights.sum(-1) < 1).all()  # top-3 of 8 softmax probs, not renormalised
    expected = moe.shared_experts(x).clone()
    for n in range(5):
        routed = sum(weights[n, k] * moe.experts[int(ids[n, k])](x[n]) for k in range(3))
        expected[n] += routed
    torch.testing.assert_close(moe(x), expected, rtol=1e-5, atol=1e-5)


def test_layer_zero_is_dense_and_later_layers_are_moe() -> None:
    model = random_model(tiny_config())
    assert type(model.model.layers[0].mlp).__name__ == "SwiGLU"
    assert all(type(layer.mlp).__name__ == "DeepseekMoE" for layer in model.model.layers[1:])
