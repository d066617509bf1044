"""A tiny deterministic byte-level BPE tokenizer.json with DeepSeek-OCR's special tokens, for tests.

Must not import pytest or torch, nor touch the network; the file is trained from the corpus below.

Like the real tokenizer it is byte-level (any text encodes, multi-byte characters split into byte
tokens), keeps BOS/EOS/PAD at ids 0/1/2 and has the grounding and table tags as special tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from dsocr.errors import ConfigError
from dsocr.processing.tokenizer import BOS, EOS, IMAGE_TOKEN, PAD

# Order fixes the ids: BOS 0, EOS 1, PAD 2 as in the official tokenizer, then the tags.
SPECIAL_TOKENS: tuple[str, ...] = (
    BOS, EOS, PAD,
    IMAGE_TOKEN, "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>",
    "<td>", "</td>", "<tr>", "</tr>", "<|User|>", "<|Assistant|>",
)

_CORPUS = (
    "# Annual Report\n\n## 1. Introduction\n\nThe quick brown fox jumps over the lazy dog.",
    "This document describes the results of the experiment and the methods we used.",
    "Convert the document to markdown. OCR this image. Free OCR. Parse the figure.",
    "Describe this image in detail. Locate the title in the image.",
    "| Name | Value | Unit |\n|------|-------|------|\n| width | 1024 | px |\n| height | 768 | px |",
    "<table><tr><td>Item</td><td>Price</td></tr><tr><td>Apple</td><td>1.25</td></tr></table>",
    "<|ref|>title<|/ref|><|det|>[[120, 45, 880, 96]]<|/det|>\n# Results",
    "<|ref|>text<|/ref|><|det|>[[64, 130, 936, 412]]<|/det|>\nThe model reads the page in order.",
    "<|ref|>table<|/ref|><|det|>[[70, 430, 930, 700]]<|/det|>",
    "- first item\n- second item\n- third item\n\n1. one\n2. two\n3. three",
    "**Bold text** and *italic text* with `inline code` and a [link](https://example.com).",
    "The equation $E = mc^2$ and $$\\sum_{i=1}^{n} x_i = 0$$ are shown below.",
    "Figure 2: Accuracy of the model on the test set, 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9.",
    "Page 12 of 340. Date: 2024-01-31. Total: $1,234.56 (including tax).",
)


def build_test_tokenizer(path: str | os.PathLike, *, vocab_size: int = 400) -> Path:
    """Train and write the test tokenizer.json at `path`; identical bytes on every call."""
    minimum = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < minimum:
        raise ConfigError(f"vocab_size: {vocab_size} is below the {minimum} special and byte tokens")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path
