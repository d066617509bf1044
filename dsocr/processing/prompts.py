"""Prompt presets and the chat template of DeepSeek-OCR 2 (spec section 7).

Must not tokenize or import torch; it only turns a preset name or custom text into the prompt string.

The reference renders the conversation with the "plain" template: no roles, no separators, the user
message stripped. So the effective prompt is the user text, stripped, with `<image>` marking where the
image tokens go.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from dsocr.errors import GenerationError

IMAGE_PLACEHOLDER = "<image>"
DEFAULT_PRESET = "markdown"
LOCATE_SLOT = "{text}"

PRESETS: Mapping[str, str] = MappingProxyType({
    "markdown": "<image>\n<|grounding|>Convert the document to markdown.",
    "ocr": "<image>\n<|grounding|>OCR this image.",
    "free": "<image>\nFree OCR.",
    "figure": "<image>\nParse the figure.",
    "describe": "<image>\nDescribe this image in detail.",
    "locate": "<image>\nLocate <|ref|>{text}<|/ref|> in the image.",
})


def resolve_prompt(prompt: str | None, *, locate_text: str | None = None) -> str:
    """The prompt text for a preset name (None -> "markdown") or a custom prompt.

    A custom prompt without `<image>` gets "<image>\\n" in front, as every official prompt has.
    """
    if prompt is None:
        prompt = DEFAULT_PRESET
    if prompt in PRESETS:
        text = _fill_preset(prompt, locate_text)
    else:
        if locate_text is not None:
            raise GenerationError("locate_text is only used with the 'locate' preset")
        if not prompt.strip():
            raise GenerationError("prompt is empty; pass None for the default or a preset name: "
                                  + ", ".join(PRESETS))
        text = prompt if IMAGE_PLACEHOLDER in prompt else f"{IMAGE_PLACEHOLDER}\n{prompt}"
    return text.strip()  # the "plain" conversation template strips the user message


def _fill_preset(name: str, locate_text: str | None) -> str:
    text = PRESETS[name]
    if LOCATE_SLOT not in text:
        if locate_text is not None:
            raise GenerationError(f"locate_text is only used with the 'locate' preset, not {name!r}")
        return text
    if locate_text is None or not locate_text.strip():
        raise GenerationError(f"the {name!r} prompt needs locate_text: what to find in the image")
    return text.replace(LOCATE_SLOT, locate_text)  # replace, not format: the text may contain braces
