"""Alignment supervision: target characters find their drawn glyphs, target tokens find the visual tokens
that show them, and the loss pulls one decoder layer's attention there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dsocr.processing.image import processing_config_for_mode
from dsocr.processing.tokenizer import Tokenizer
from dsocr.testing.fixtures import tiny_config
from dsocr.training.alignment import alignment_loss, attention_inputs, char_glyphs, row_guides, token_guides
from dsocr.training.data import encode, encode_glyphs, page_example
from dsocr.training.synthetic import SNIPPETS, SyntheticConfig, generate_page


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint: Path) -> Tokenizer:
    return Tokenizer.from_file(tiny_checkpoint / "tokenizer.json")


def test_target_characters_map_to_the_glyphs_drawn_for_them_and_markup_to_none() -> None:
    target = "## Results\n\nSee <td>1.5</td>"
    glyphs = "ResultsSee1.5"
    mapping = char_glyphs(target, glyphs)
    assert [glyphs[g] if g is not None else None for g in mapping] == [
        None, None, None, *"Results", None, None, *"See", None, *[None] * 4, *"1.5", *[None] * 5]


def test_each_token_is_guided_to_the_visual_tokens_of_its_characters() -> None:
    target = "ab cd"
    visual = [(0,), (1,), (5, 9), (6,)]  # glyphs a, b, c, d
    guides = token_guides(target, [(0, 2), (2, 3), (3, 5)], "abcd", visual, image_start=10, first_query=100)
    assert guides == [(100, (10, 11)), (102, (15, 16, 19))]  # the space token shows nothing


def test_guides_of_a_page_point_into_its_image_tokens(tokenizer: Tokenizer) -> None:
    processing = processing_config_for_mode("gundam", base_size=640, crop_size=512)
    for config, prompt in ((SyntheticConfig(), "markdown"), (SNIPPETS, "free")):
        example = page_example(generate_page(5, config), prompt)
        encoded = encode(example, tokenizer, processing, 4096, glyphs=encode_glyphs(example, processing),
                         guides=True)
        images = [i for i, t in enumerate(encoded.input_ids) if t == tokenizer.image_id]
        n_target = len(encoded.input_ids) - encoded.prompt_length
        assert len(encoded.guides) >= 0.3 * n_target  # most text tokens (tags, boxes and spaces are not)
        for query, keys in encoded.guides:
            assert encoded.prompt_length - 1 <= query < len(encoded.input_ids) - 1
            assert set(keys) <= set(images[:-1])  # never the view separator


def test_the_loss_pulls_the_layers_attention_onto_the_guided_tokens() -> None:
    from dsocr.model.weights import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config(vocab_size=64), device="cpu")
    layer = model.model.layers[1]
    embeds = torch.randn(2, 12, model.config.language.hidden_size)
    positions = torch.arange(12)[None].expand(2, 12)
    causal = torch.ones(12, 12, dtype=torch.bool).tril()[None, None]
    guides = row_guides([[(8, (2,)), (9, (3,))], [(10, (4, 5))]])

    def loss() -> torch.Tensor:
        with attention_inputs(layer) as calls:
            model.model.decode(embeds, positions, causal)
        return alignment_loss(layer, calls[0], guides)

    with torch.no_grad():
        everything = row_guides([[(8, tuple(range(9)))]])  # every key a causal query may see: all its weight
        with attention_inputs(layer) as calls:
            model.model.decode(embeds, positions, causal)
        assert alignment_loss(layer, calls[0], everything).item() < 1e-4
        # shift=1 asks the position one later (the one reading the predicted token)
        some = row_guides([[(7, (2, 8))]])
        torch.testing.assert_close(alignment_loss(layer, calls[0], some, shift=1),
                                   alignment_loss(layer, calls[0], row_guides([[(8, (2, 8))]])))
    before = loss().item()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.25 * before, (before, loss().item())
