"""The tokenizer wrapper, the streaming detokenizer and the test tokenizer builder (spec section 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsocr.errors import CheckpointError, CheckpointNotFoundError, ConfigError, GenerationError
from dsocr.processing.prompts import resolve_prompt
from dsocr.processing.tokenizer import BOS, EOS, IMAGE_TOKEN, PAD, REPLACEMENT_CHAR, StreamDecoder, Tokenizer
from dsocr.testing.tokenizer import SPECIAL_TOKENS, build_test_tokenizer

MIXED_TEXT = "Total: 1,234 € — 中文文档 😀🎉 <td>x</td> naïve <|det|>[[1, 2, 3, 4]]<|/det|>\n"


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.from_file(tokenizer_path)


# --- the test tokenizer ---------------------------------------------------------------------------


def test_test_tokenizer_is_byte_identical_on_every_build(tmp_path: Path) -> None:
    first = build_test_tokenizer(tmp_path / "a" / "tokenizer.json").read_bytes()
    second = build_test_tokenizer(tmp_path / "b" / "tokenizer.json").read_bytes()
    assert first == second


def test_test_tokenizer_puts_bos_eos_pad_at_0_1_2_and_all_tags_as_special_tokens(tokenizer_path: Path,
                                                                               tokenizer: Tokenizer) -> None:
    assert SPECIAL_TOKENS[:3] == (BOS, EOS, PAD)
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (0, 1, 2)
    added = {t["content"]: t for t in json.loads(tokenizer_path.read_text(encoding="utf-8"))["added_tokens"]}
    for token in SPECIAL_TOKENS:
        assert added[token]["special"], token
        assert tokenizer.encode(token) == [tokenizer.token_id(token)]


@pytest.mark.parametrize("vocab_size", [300, 400, 512])
def test_test_tokenizer_vocab_fits_the_requested_size(tmp_path: Path, vocab_size: int) -> None:
    tok = Tokenizer.from_file(build_test_tokenizer(tmp_path / "tokenizer.json", vocab_size=vocab_size))
    assert tok.vocab_size <= vocab_size


def test_test_tokenizer_refuses_a_vocab_too_small_for_bytes_and_specials(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vocab_size"):
        build_test_tokenizer(tmp_path / "tokenizer.json", vocab_size=100)


# --- encoding and decoding ------------------------------------------------------------------------


def test_any_text_round_trips_through_the_byte_level_tokenizer(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode(MIXED_TEXT)
    assert tokenizer.decode(ids) == MIXED_TEXT
    assert all(0 <= i < tokenizer.vocab_size for i in ids)


def test_decode_keeps_special_tokens(tokenizer: Tokenizer) -> None:
    ids = [tokenizer.bos_id, *tokenizer.encode("<tr><td>a</td></tr>"), tokenizer.eos_id]
    assert tokenizer.decode(ids) == f"{BOS}<tr><td>a</td></tr>{EOS}"


def test_prompt_ids_are_bos_then_image_tokens_then_the_text_after_the_image(tokenizer: Tokenizer) -> None:
    prompt = resolve_prompt("markdown")
    ids = tokenizer.encode_prompt(prompt, [1121])
    tail = tokenizer.encode("\n<|grounding|>Convert the document to markdown.")
    assert ids == [tokenizer.bos_id] + [tokenizer.image_id] * 1121 + tail
    assert tokenizer.token_id("<|grounding|>") in tail


def test_each_text_piece_is_encoded_separately_around_images(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode_prompt("Compare<image>with<image> please", [2, 3])
    image = tokenizer.image_id
    assert ids == [tokenizer.bos_id, *tokenizer.encode("Compare"), image, image, *tokenizer.encode("with"),
                   image, image, image, *tokenizer.encode(" please")]


@pytest.mark.parametrize(("prompt", "counts"), [
    ("<image>\nFree OCR.", []), ("<image>\nFree OCR.", [257, 257]), ("Free OCR.", [257]),
])
def test_image_count_must_match_the_placeholders(tokenizer: Tokenizer, prompt: str,
                                                 counts: list[int]) -> None:
    with pytest.raises(GenerationError, match=IMAGE_TOKEN):
        tokenizer.encode_prompt(prompt, counts)


def test_image_with_no_tokens_is_refused(tokenizer: Tokenizer) -> None:
    with pytest.raises(GenerationError):
        tokenizer.encode_prompt("<image>\nFree OCR.", [0])


def test_unknown_token_is_a_config_error(tokenizer: Tokenizer) -> None:
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        tokenizer.token_id("<|no such token|>")


def test_missing_tokenizer_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"absent\.json"):
        Tokenizer.from_file(tmp_path / "absent.json")


def test_malformed_tokenizer_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"tokenizer\.json"):
        Tokenizer.from_file(path)


def test_tokenizer_without_the_image_token_is_a_checkpoint_error(tmp_path: Path,
                                                                 tokenizer_path: Path) -> None:
    data = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != IMAGE_TOKEN]
    del data["model"]["vocab"][IMAGE_TOKEN]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CheckpointError, match="<image>"):
        Tokenizer.from_file(path)


# --- streaming ------------------------------------------------------------------------------------


def stream(tokenizer: Tokenizer, ids: list[int]) -> tuple[list[str], str]:
    decoder = StreamDecoder(tokenizer)
    return [decoder.push(i) for i in ids], decoder.flush()


def test_multibyte_characters_are_split_across_byte_tokens(tokenizer: Tokenizer) -> None:
    # Precondition of the streaming tests: the tiny vocabulary has no whole CJK or emoji tokens.
    assert len(tokenizer.encode("中")) == 3 and len(tokenizer.encode("😀")) == 4


def test_streamed_pieces_concatenate_to_the_full_decode(tokenizer: Tokenizer) -> None:
    ids = [*tokenizer.encode(MIXED_TEXT * 3), tokenizer.eos_id]
    pieces, tail = stream(tokenizer, ids)
    assert "".join(pieces) + tail == tokenizer.decode(ids)
    assert tail == ""


def test_streaming_never_emits_half_a_character(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("中文😀")
    pieces, _ = stream(tokenizer, ids)
    assert [p for p in pieces if p] == ["中", "文", "😀"]
    assert not any(REPLACEMENT_CHAR in p for p in pieces)


def test_flush_releases_an_unfinished_character_as_decode_would(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("ab😀")[:-2]  # cut inside the emoji
    pieces, tail = stream(tokenizer, ids)
    assert "".join(pieces) == "ab"
    assert "".join(pieces) + tail == tokenizer.decode(ids)
    assert tail.endswith(REPLACEMENT_CHAR)


def test_invalid_bytes_in_the_middle_do_not_stall_the_stream(tokenizer: Tokenizer) -> None:
    broken = tokenizer.encode("😀")[:2]  # half an emoji, then ordinary text
    ids = [*tokenizer.encode("start "), *broken, *tokenizer.encode(" and more text")]
    pieces, tail = stream(tokenizer, ids)
    assert "".join(pieces) + tail == tokenizer.decode(ids)
    assert tail == ""
