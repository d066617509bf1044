"""Training our own tokenizer (dsocr.training.tokenizer): official special tokens at fixed ids, exact byte-level
round trips, the prompt layout, skip_special_tokens, determinism, real compression and atomic writes."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tokenizers

from dsocr.errors import ConfigError
from dsocr.processing.prompts import PRESETS
from dsocr.processing.tokenizer import BOS, EOS, IMAGE_TOKEN, PAD, REPLACEMENT_CHAR, StreamDecoder, Tokenizer
from dsocr.training import corpus
from dsocr.training.tokenizer import (
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    structural_samples,
    train_tokenizer,
    training_text,
)

VOCAB_SIZE = 1024
HELD_OUT = frozenset(corpus.paragraphs()[::10])  # never trained on: the compression test reads them
TAGS = ("<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>", "<td>", "</td>", "<tr>", "</tr>",
        "<|User|>", "<|Assistant|>")
SPECIAL_PATTERN = re.compile("|".join(re.escape(t) for t in sorted(SPECIAL_TOKENS, key=len, reverse=True)))

ROUND_TRIP_TEXTS = (
    "",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé: naïve café, Straße, Ελληνικά, русский, עברית, العربية, हिन्दी, ไทย",
    "emoji 😀🎉👩‍👩‍👧‍👦 🇫🇷 flags and ZWJ sequences, ❤️ with a variation selector",
    "中文文档的标题 日本語のテキスト カタカナ 한국어 텍스트",
    r"\[ \frac{\partial u}{\partial t} = \alpha \nabla^2 u \] and \( e^{i\pi} + 1 = 0 \) or $x_1^2$",
    "<table><tr><td>Item</td><td>Price</td></tr><tr><td>Apple</td><td>1,234.56 €</td></tr></table>",
    "line one\nline two\r\nline three\n\n\n  indented\n\ttabbed\t\tcells\n",
    "multiple     spaces   between    words      and trailing   ",
    "<|ref|>title<|/ref|><|det|>[[120, 45, 880, 96]]<|/det|>\n# Results\n\n<|grounding|>",
    "numbers 0 7 42 2024 3.14159 -17 1e-9 12,345,678 ½ ² ٣ ๔",
    "control \x00\x01\x7f bytes, a lone combining mark \u0301 and \ufeff BOM",
    f"{BOS}{EOS}{PAD}{IMAGE_TOKEN}<|User|>hi<|Assistant|>",
)


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = (text for text in training_text() if text not in HELD_OUT)
    return train_tokenizer(texts, tmp_path_factory.mktemp("trained"), vocab_size=VOCAB_SIZE)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.from_file(tokenizer_path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- special tokens -------------------------------------------------------------------------------------


def test_special_tokens_are_bos_eos_pad_then_the_image_grounding_table_and_role_tags() -> None:
    assert SPECIAL_TOKENS[:4] == (BOS, EOS, PAD, IMAGE_TOKEN)
    assert set(TAGS) <= set(SPECIAL_TOKENS)
    assert len(set(SPECIAL_TOKENS)) == len(SPECIAL_TOKENS)


def test_trained_tokenizer_has_each_special_token_at_its_fixed_id_as_one_special_token(
        tokenizer_path: Path, tokenizer: Tokenizer) -> None:
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (0, 1, 2)
    assert tokenizer.image_id == SPECIAL_TOKENS.index(IMAGE_TOKEN)
    added = {t["content"]: t for t in json.loads(tokenizer_path.read_text(encoding="utf-8"))["added_tokens"]}
    assert set(added) == set(SPECIAL_TOKENS)
    for token_id, token in enumerate(SPECIAL_TOKENS):
        assert added[token]["id"] == token_id and added[token]["special"] and not added[token]["normalized"]
        assert tokenizer.token_id(token) == token_id
        assert tokenizer.encode(f"x{token}y")[1:-1] == [token_id], token  # one token even inside text
        assert tokenizer.decode([token_id]) == token
    assert sorted(tokenizer.special_tokens()) == sorted(SPECIAL_TOKENS)


def test_trained_tokenizer_fills_the_requested_vocab_size(tokenizer: Tokenizer) -> None:
    assert tokenizer.vocab_size == VOCAB_SIZE


def test_training_cuts_text_at_special_tokens_so_no_merge_is_spent_on_tags(tokenizer_path: Path) -> None:
    vocab = json.loads(tokenizer_path.read_text(encoding="utf-8"))["model"]["vocab"]
    byte_level = tokenizers.decoders.ByteLevel()
    regular = [byte_level.decode([token]) for token in vocab if token not in SPECIAL_TOKENS]
    fragments = [t for t in regular if any(f in t for f in ("<|", "|>", "<td", "</td", "<tr", "</tr"))]
    assert fragments == []


# --- encoding and decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_any_text_decodes_back_exactly(tokenizer: Tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_digits_are_one_token_each_and_space_runs_are_kept(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("31415926535")
    assert [tokenizer.decode([i]) for i in ids] == list("31415926535")
    assert tokenizer.decode(tokenizer.encode("a    b")) == "a    b"


def test_encode_prompt_is_bos_then_the_image_tokens_then_the_prompt_text(tokenizer: Tokenizer) -> None:
    prompt = PRESETS["markdown"]  # "<image>\n<|grounding|>Convert the document to markdown."
    ids = tokenizer.encode_prompt(prompt, [7])
    text_ids = tokenizer.encode(prompt.removeprefix(IMAGE_TOKEN))
    assert ids == [tokenizer.bos_id] + [tokenizer.image_id] * 7 + text_ids
    assert tokenizer.decode(text_ids[:1]) == "\n"
    assert text_ids[1] == tokenizer.token_id("<|grounding|>")
    assert tokenizer.decode(ids[8:]) == prompt.removeprefix(IMAGE_TOKEN)


def test_encode_prompt_expands_each_image_in_place(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode_prompt("<image>a<image>", [2, 3])
    image = tokenizer.image_id
    assert ids == [tokenizer.bos_id, image, image, *tokenizer.encode("a"), image, image, image]


def test_plain_encode_adds_bos_like_the_official_add_bos_token(tokenizer_path: Path) -> None:
    raw = tokenizers.Tokenizer.from_file(str(tokenizer_path))
    assert raw.encode("Free OCR.").ids == [0] + raw.encode("Free OCR.", add_special_tokens=False).ids


def test_skip_special_tokens_drops_exactly_the_special_tokens(tokenizer_path: Path,
                                                              tokenizer: Tokenizer) -> None:
    text = (f"{BOS}<|ref|>table<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>\n<table><tr><td>a b</td><td> 😀 </td>"
            f"</tr></table><|User|>q<|Assistant|>{IMAGE_TOKEN}<|grounding|>end{EOS}{PAD}")
    ids = tokenizer.encode(text)
    expected = SPECIAL_PATTERN.sub("", text)
    assert "<table>" in expected and "[[1, 2, 3, 4]]" in expected
    # the way the server strips (dsocr.server.app._special_stripper) and the way tokenizers skips
    stripped = tokenizer.decode(ids)
    for token in tokenizer.special_tokens():
        stripped = stripped.replace(token, "")
    assert stripped == expected
    assert tokenizers.Tokenizer.from_file(str(tokenizer_path)).decode(ids, skip_special_tokens=True) == expected


def test_streaming_decode_adds_up_to_decode_and_never_splits_a_character(tokenizer: Tokenizer) -> None:
    text = "Total: 1,234 € — 中文文档 😀🎉 <td>x</td> naïve <|det|>[[1, 2, 3, 4]]<|/det|>\n"
    ids = tokenizer.encode(text)
    stream = StreamDecoder(tokenizer)
    pieces = [stream.push(token_id) for token_id in ids] + [stream.flush()]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any(REPLACEMENT_CHAR in piece for piece in pieces)


# --- the corpus, determinism and compression ------------------------------------------------------------


def test_training_text_is_the_prose_then_the_structural_samples_then_extra() -> None:
    extra = ("first synthetic page", "second synthetic page")
    texts = list(training_text(extra))
    paragraphs, samples = corpus.paragraphs(), structural_samples()
    assert texts == [*paragraphs, *samples, *extra]
    assert samples == structural_samples()  # a fixed seed: the same corpus on every call
    joined = "\n".join(samples)
    for needle in ("\n## ", "\n- ", "<table><tr><td>", "|---|", "\\frac", "\\[", "2,", "%", "“", "<|det|>[[",
                   "    ", PRESETS["markdown"]):
        assert needle in joined, needle


def test_training_twice_gives_identical_bytes_whatever_the_thread_count(tmp_path: Path) -> None:
    first = train_tokenizer(training_text(), tmp_path / "a" / TOKENIZER_FILE, vocab_size=VOCAB_SIZE)
    second = train_tokenizer(training_text(), tmp_path / "b" / TOKENIZER_FILE, vocab_size=VOCAB_SIZE)
    assert first.read_bytes() == second.read_bytes()
    # another process (other hash seeds) on one thread: rayon's thread count must not change the merges
    script = ("import sys; from dsocr.training.tokenizer import train_tokenizer, training_text; "
              f"train_tokenizer(training_text(), sys.argv[1], vocab_size={VOCAB_SIZE})")
    single = tmp_path / "single" / TOKENIZER_FILE
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", script, str(single)], check=True, env=env, timeout=120)
    assert _sha256(single) == _sha256(first)


def test_held_out_prose_takes_far_fewer_tokens_than_characters_per_word(tokenizer: Tokenizer) -> None:
    held_out = sorted(HELD_OUT)
    words = sum(len(p.split()) for p in held_out)
    tokens = sum(len(tokenizer.encode(p)) for p in held_out)
    characters = sum(len(p) for p in held_out)
    tokens_per_word, characters_per_word = tokens / words, characters / words
    assert characters_per_word > 5.5  # 6.3, spaces included
    # measured 2.03 tokens per word at vocab 1024 (1.38 at 8192): over three characters per token
    assert tokens_per_word < 0.4 * characters_per_word


# --- writing --------------------------------------------------------------------------------------------


def test_training_into_a_folder_writes_tokenizer_json_and_nothing_else(tmp_path: Path) -> None:
    path = train_tokenizer(training_text(), tmp_path, vocab_size=300)
    assert path == tmp_path / TOKENIZER_FILE
    path = train_tokenizer(training_text(), tmp_path, vocab_size=400)  # replaces the file in place
    assert [p.name for p in tmp_path.iterdir()] == [TOKENIZER_FILE]
    assert Tokenizer.from_file(path).vocab_size == 400


def _failing_texts() -> Iterator[str]:
    yield from itertools.islice(training_text(), 50)
    raise RuntimeError("the corpus reader failed")


def test_a_failed_training_writes_nothing_and_keeps_the_previous_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="corpus reader failed"):
        train_tokenizer(_failing_texts(), tmp_path / "new" / TOKENIZER_FILE, vocab_size=300)
    assert not (tmp_path / "new").exists()
    previous = train_tokenizer(training_text(), tmp_path / "old" / TOKENIZER_FILE, vocab_size=300)
    before = previous.read_bytes()
    with pytest.raises(RuntimeError, match="corpus reader failed"):
        train_tokenizer(_failing_texts(), previous, vocab_size=300)
    with pytest.raises(ConfigError, match="must be str"):
        train_tokenizer(["text", b"bytes"], previous, vocab_size=300)  # type: ignore[list-item]
    assert previous.read_bytes() == before
    assert [p.name for p in previous.parent.iterdir()] == [TOKENIZER_FILE]


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / TOKENIZER_FILE).mkdir()  # renaming the written temporary file onto a folder fails
    with pytest.raises(IsADirectoryError):
        train_tokenizer(["some text to train on"], tmp_path, vocab_size=300)
    assert [p.name for p in tmp_path.iterdir()] == [TOKENIZER_FILE]


@pytest.mark.parametrize(("vocab_size", "min_frequency", "field"),
                         [(200, 2, "vocab_size"), (1024, 0, "min_frequency")])
def test_bad_settings_are_refused_before_training(tmp_path: Path, vocab_size: int, min_frequency: int,
                                                  field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        train_tokenizer(training_text(), tmp_path, vocab_size=vocab_size, min_frequency=min_frequency)
    assert list(tmp_path.iterdir()) == []
