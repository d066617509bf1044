import torch

from dsocr.model.qwen2_encoder import flow_attention_mask
from dsocr.model.sam import relative_position_table, window_partition, window_unpartition
from dsocr.testing.fixtures import random_model, tiny_config


def _encoder_with_queries(seed: int = 0):
    model = random_model(tiny_config(), seed=seed)
    return model.model.qwen2_model


def test_flow_mask_is_prefix_lm() -> None:
    mask = flow_attention_mask(3, torch.float32, torch.device("cpu"))
    allowed = (mask == 0).int().tolist()
    assert allowed == [
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
    ]
    assert mask.min() == torch.finfo(torch.float32).min


def test_changing_a_later_query_never_changes_earlier_query_outputs() -> None:
    encoder = _encoder_with_queries()
    features = torch.randn(1, 48, 3, 3)  # 9 visual tokens -> the 9-query (global) table
    before = encoder(features)
    with torch.no_grad():
        encoder.query_1024.weight[5] += 1.0
    after = encoder(features)
    assert torch.equal(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_changing_any_visual_token_changes_every_query_output() -> None:
    encoder = _encoder_with_queries()
    features = torch.randn(1, 48, 3, 3)
    before = encoder(features)
    for y, x in ((0, 0), (1, 2), (2, 2)):
        changed = features.clone()
        changed[0, :, y, x] += 1.0
        after = encoder(changed)
        assert (before - after).abs().amax(dim=-1).min() > 1e-6, (y, x)


def test_query_table_is_chosen_by_view_token_count() -> None:
    model = random_model(tiny_config())
    crop, global_view = torch.randn(1, 3, 128, 128), torch.randn(1, 3, 192, 192)
    assert model.model.encode_views(crop).shape == (1, 4, 64)
    assert model.model.encode_views(global_view).shape == (1, 9, 64)


def test_unsupported_view_size_is_refused_with_a_clear_message() -> None:
    import pytest

    from dsocr.errors import ConfigError

    model = random_model(tiny_config())
    with pytest.raises(ConfigError, match="no learned causal-flow queries"):
        model.model.encode_views(torch.randn(1, 3, 256, 256))


def test_image_sequence_is_crops_then_global_then_separator() -> None:
    model = random_model(tiny_config())
    g = torch.randn(2, 3, 192, 192)
    crops = torch.randn(3, 3, 128, 128)
    first, second = model.model.embed_images(g, crops, [2, 1])
    assert first.shape == (2 * 4 + 9 + 1, 64) and second.shape == (1 * 4 + 9 + 1, 64)
    alone = model.model.encode_views(crops[1:2])[0]
    torch.testing.assert_close(first[4:8], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(first[8:17], model.model.encode_views(g[:1])[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(first[-1], model.model.view_seperator) and torch.equal(second[-1], first[-1])


def test_window_partition_pads_and_round_trips() -> None:
    x = torch.randn(2, 7, 7, 3)
    windows, padded = window_partition(x, 5)
    assert windows.shape == (2 * 4, 5, 5, 3) and padded == (10, 10)
    assert torch.equal(windows[0], x[0, :5, :5])
    assert torch.equal(windows[1, :, :2], x[0, :5, 5:7]) and torch.equal(windows[1, :, 2:], torch.zeros(5, 3, 3))
    assert torch.equal(window_unpartition(windows, 5, padded, (7, 7)), x)


def test_relative_position_table_indexes_offsets_and_resizes() -> None:
    table = torch.arange(5 * 2, dtype=torch.float32).reshape(5, 2)  # 2*3-1 rows for size 3
    rel = relative_position_table(table, 3)
    assert rel.shape == (3, 3, 2)
    assert torch.equal(rel[0, 0], table[2]) and torch.equal(rel[2, 0], table[4]) and torch.equal(rel[0, 2], table[0])
    resized = relative_position_table(table, 2)  # 5 rows -> 3 by linear interpolation
    assert resized.shape == (2, 2, 2)


def test_padded_window_tokens_take_part_as_keys() -> None:
    """The reference does not mask window padding: the output of a 7x7 grid with window 5 must differ
    from attention restricted to the real tokens (checked on one block)."""
    model = random_model(tiny_config())
    block = model.model.sam_model.blocks[0]
    assert block.window == 5
    x = torch.randn(1, 7, 7, 32)
    h = block.norm1(x)
    windows, padded = window_partition(h, 5)
    full = window_unpartition(block.attn(windows), 5, padded, (7, 7))
    # Bottom-right real 2x2 corner attended alone (no padding keys):
    corner = block.attn(h[:, 5:, 5:])
    assert not torch.allclose(full[:, 5:, 5:], corner, atol=1e-4)


def test_sam_augmented_attention_equals_the_materialised_bias() -> None:
    """The CUDA path folds the relative-position bias into the dot product; same result as the bias mask."""
    import torch.nn.functional as F

    from dsocr.model.sam import SamAttention

    gen = torch.Generator().manual_seed(0)
    for h, w, rel in [(14, 14, 14), (6, 6, 12), (5, 7, 8)]:
        attn = SamAttention(64, 4, rel)
        with torch.no_grad():
            for p in attn.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        x = torch.randn(3, h, w, 64, generator=gen)
        q, k, v = attn.qkv(x).reshape(3, h * w, 3, 4, -1).permute(2, 0, 3, 1, 4).unbind(0)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=attn._rel_pos_bias(q, h, w))
        out = attn._augmented_attention(q, k, v, h, w)
        assert (out - expected).abs().max() < 1e-4 * expected.abs().max()
