"""Prompt presets and resolution (spec section 7.3)."""

from __future__ import annotations

import pytest

from dsocr.errors import GenerationError
from dsocr.processing.prompts import PRESETS, resolve_prompt


def test_presets_are_the_official_prompts_verbatim() -> None:
    assert dict(PRESETS) == {
        "markdown": "<image>\n<|grounding|>Convert the document to markdown.",
        "ocr": "<image>\n<|grounding|>OCR this image.",
        "free": "<image>\nFree OCR.",
        "figure": "<image>\nParse the figure.",
        "describe": "<image>\nDescribe this image in detail.",
        "locate": "<image>\nLocate <|ref|>{text}<|/ref|> in the image.",
    }


def test_no_prompt_means_document_to_markdown() -> None:
    assert resolve_prompt(None) == "<image>\n<|grounding|>Convert the document to markdown."


@pytest.mark.parametrize("name", ["markdown", "ocr", "free", "figure", "describe"])
def test_preset_name_resolves_to_its_text(name: str) -> None:
    assert resolve_prompt(name) == PRESETS[name]


def test_locate_fills_in_the_text_to_find() -> None:
    assert resolve_prompt("locate", locate_text="the {red} car") == \
        "<image>\nLocate <|ref|>the {red} car<|/ref|> in the image."


@pytest.mark.parametrize("locate_text", [None, "", "  "])
def test_locate_without_text_is_refused(locate_text: str | None) -> None:
    with pytest.raises(GenerationError, match="locate_text"):
        resolve_prompt("locate", locate_text=locate_text)


def test_locate_text_with_another_prompt_is_refused() -> None:
    with pytest.raises(GenerationError, match="locate"):
        resolve_prompt("free", locate_text="x")
    with pytest.raises(GenerationError, match="locate"):
        resolve_prompt("<image>\nFind it.", locate_text="x")


def test_custom_prompt_without_image_placeholder_gets_one_in_front() -> None:
    assert resolve_prompt("Read the table.") == "<image>\nRead the table."


def test_custom_prompt_with_image_placeholder_is_kept_and_stripped_like_the_plain_template() -> None:
    assert resolve_prompt("  <image>\n<|grounding|>Convert the document to markdown. ") == \
        "<image>\n<|grounding|>Convert the document to markdown."
    assert resolve_prompt("Compare <image> and <image>.") == "Compare <image> and <image>."


def test_empty_custom_prompt_is_refused() -> None:
    with pytest.raises(GenerationError, match="empty"):
        resolve_prompt("   ")
