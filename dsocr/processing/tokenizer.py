"""The tokenizer: tokenizer.json through `tokenizers`, special-token ids, image-token expansion, streaming.

Must not import transformers or torch, and must not hard-code token ids: every id is looked up by string.

Prompt ids follow the reference (spec 7.2): BOS, then the prompt split on `<image>` with each text
piece encoded on its own (no special tokens added) and N image ids in place of each `<image>`.
Decoding keeps special tokens, or tables (`<td>`) and boxes (`<|det|>`) would vanish.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import tokenizers

from dsocr.errors import CheckpointError, CheckpointNotFoundError, ConfigError, GenerationError

IMAGE_TOKEN = "<image>"
BOS = "<｜begin▁of▁sentence｜>"  # fullwidth bars U+FF5C and U+2581, as in the official tokenizer
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
REPLACEMENT_CHAR = "\ufffd"  # what a partial UTF-8 sequence decodes to


class Tokenizer:
    """A byte-level BPE tokenizer with DeepSeek-OCR's special tokens."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, *, source: str = "tokenizer") -> None:
        self._tokenizer = tokenizer
        self.source = source
        ids = {}
        for token in (BOS, EOS, PAD, IMAGE_TOKEN):
            token_id = tokenizer.token_to_id(token)
            if token_id is None:
                raise CheckpointError(f"{source}: required token {token!r} is not in the vocabulary")
            ids[token] = token_id
        self.bos_id = ids[BOS]
        self.eos_id = ids[EOS]
        self.pad_id = ids[PAD]
        self.image_id = ids[IMAGE_TOKEN]

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise CheckpointNotFoundError(f"tokenizer file not found: {path}")
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
            raise CheckpointError(f"cannot read tokenizer {path}: {e}") from e
        return cls(tokenizer, source=str(path))

    @property
    def vocab_size(self) -> int:
        """Size of the tokenizer's vocabulary, added tokens included (the model's may be larger)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise ConfigError(f"token {token!r} is not in the vocabulary of {self.source}")
        return token_id

    def encode(self, text: str) -> list[int]:
        """Ids of `text` without BOS/EOS; added tokens such as `<|grounding|>` become single ids."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """`encode` plus each token's (start, end) character span in `text`."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return encoding.ids, encoding.offsets

    def encode_prompt(self, prompt: str, image_token_counts: Sequence[int]) -> list[int]:
        """BOS + prompt ids with each `<image>` expanded to its image's number of image tokens."""
        pieces = prompt.split(IMAGE_TOKEN)
        if len(pieces) - 1 != len(image_token_counts):
            raise GenerationError(f"the prompt has {len(pieces) - 1} {IMAGE_TOKEN} placeholders "
                                  f"but {len(image_token_counts)} images were given")
        ids = [self.bos_id]
        for i, piece in enumerate(pieces):
            ids += self.encode(piece)
            if i < len(image_token_counts):
                count = image_token_counts[i]
                if count < 1:
                    raise GenerationError(f"image {i} has {count} image tokens; it needs at least one")
                ids += [self.image_id] * count
        return ids

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokenizer.id_to_token(token_id)

    def special_tokens(self) -> list[str]:
        """The strings of the tokens flagged special in tokenizer.json (what `skip_special_tokens` drops)."""
        return sorted((t.content for t in self._tokenizer.get_added_tokens_decoder().values() if t.special),
                      key=len, reverse=True)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` with special tokens kept and no clean-up of spaces (as the reference)."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)


class StreamDecoder:
    """Turns a stream of token ids into text pieces that never end inside a UTF-8 character.

    Decodes a short window (the previously emitted tokens plus the new ones) and emits what the new
    tokens added; while the window's text ends in U+FFFD the last character is incomplete and is held
    back. The concatenation of all pieces plus `flush()` equals `Tokenizer.decode` of all ids.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0  # window start: context so that decoding the window is stable
        self._read_offset = 0  # ids before this have been emitted

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is held back (an unfinished character decodes to U+FFFD, as in `decode`)."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        prefix_text = self._tokenizer.decode(self._ids[self._prefix_offset:self._read_offset])
        text = self._tokenizer.decode(self._ids[self._prefix_offset:])
        if len(text) <= len(prefix_text) or (text.endswith(REPLACEMENT_CHAR) and not final):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return text[len(prefix_text):]
