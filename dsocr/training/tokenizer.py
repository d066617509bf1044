"""Trains the tokenizer of our own small model: a byte-level BPE with DeepSeek-OCR's special tokens, written
as a Hugging Face tokenizer.json that `dsocr.processing.tokenizer.Tokenizer` loads like the official one.

Owns the pre-tokenizer, the default training corpus and the atomic write; refuses to touch torch or the
network. The special tokens are `dsocr.testing.tokenizer.SPECIAL_TOKENS` (imported, not repeated): BOS 0,
EOS 1, PAD 2 as in the official file, then the image, grounding, table and role tags, all flagged special
so that `skip_special_tokens` drops them, as it does with the official tokenizer (spec 7.4).

Training is deterministic without forcing one thread: `tokenizers`' BPE trainer breaks count ties by pair
ids and saves the vocabulary in id order, so the same texts and settings give the same bytes whatever
RAYON_NUM_THREADS is (checked with 1, 2 and 8 threads and across processes, tokenizers 0.23).
"""

from __future__ import annotations

import logging
import os
import random
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from dsocr.errors import ConfigError
from dsocr.processing.prompts import PRESETS
from dsocr.processing.tokenizer import BOS
from dsocr.testing.tokenizer import SPECIAL_TOKENS
from dsocr.training import corpus

__all__ = ["SPECIAL_TOKENS", "TOKENIZER_FILE", "structural_samples", "train_tokenizer", "training_text"]

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
BYTE_ALPHABET = pre_tokenizers.ByteLevel.alphabet()

# The official pre-tokenizer (DeepSeek-V3's, in DeepSeek-OCR's tokenizer.json) is Split(\p{N}{1,3}),
# Split(CJK/kana runs), Split(_WORDS), ByteLevel without its own regex. We keep it except for digits: one
# token per digit instead of groups of up to three. Groups cut a number by its length ("2024" -> "202" "4",
# "12024" -> "120" "24"), and a vocab of a few thousand holds only the frequent groups, the rest falling
# apart again; a 25M-parameter model copying numbers from pixels does better with ten digit tokens that
# always mean the same thing, at the cost of a few more tokens per number.
_DIGIT = r"\p{N}"
_CJK = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"
# As in the official file: ASCII punctuation + ASCII letters ("\frac", ".com"), a word with at most
# one leading non-letter (" word"), punctuation runs with an optional space and trailing newlines, newline
# runs with the spaces before them, then spaces (all but the last of a run, which joins the next word).
_WORDS = ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
          "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+")

# Encoding cuts text at added tokens before pre-tokenizing, training does not: we cut it ourselves.
_SPECIAL_SPLIT = re.compile("|".join(re.escape(t) for t in sorted(SPECIAL_TOKENS, key=len, reverse=True)))


def train_tokenizer(texts: Iterable[str], path: str | os.PathLike, *, vocab_size: int = 8192,
                    min_frequency: int = 2) -> Path:
    """Train on `texts` and write tokenizer.json atomically at `path` (a file path, or an existing folder
    to write `tokenizer.json` in); returns the file's path. Nothing is written if training fails.

    `vocab_size` counts the special and the 256 byte tokens; a small corpus may stop below it (no pair left
    that occurs `min_frequency` times), so size the model from `Tokenizer.vocab_size`, not from this number.
    """
    _check_settings(vocab_size, min_frequency)
    target = Path(path)
    if target.is_dir():
        target = target / TOKENIZER_FILE
    tokenizer = _new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=BYTE_ALPHABET,  # every byte is a token: any text encodes, no unknown token
        show_progress=False,
    )
    tokenizer.train_from_iterator(_between_special_tokens(texts), trainer=trainer)
    _write_atomically(target, tokenizer.to_str(pretty=True))
    logger.info("tokenizer: %d tokens (asked for %d) written to %s",
                tokenizer.get_vocab_size(with_added_tokens=True), vocab_size, target)
    return target


def training_text(extra: Iterable[str] = ()) -> Iterator[str]:
    """The default corpus: the manual's prose paragraphs, the structural samples, then `extra` (the trainer
    passes its synthetic page targets)."""
    yield from corpus.paragraphs()
    yield from structural_samples()
    yield from extra


def _check_settings(vocab_size: int, min_frequency: int) -> None:
    minimum = len(SPECIAL_TOKENS) + len(BYTE_ALPHABET)
    if vocab_size < minimum:
        raise ConfigError(f"vocab_size: {vocab_size} is below the {minimum} special and byte tokens")
    if min_frequency < 1:
        raise ConfigError(f"min_frequency: {min_frequency}; it must be at least 1")


def _new_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())  # no unk token, no byte fallback: bytes are in the vocabulary
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_DIGIT), behavior="isolated"),
        pre_tokenizers.Split(Regex(_CJK), behavior="isolated"),
        pre_tokenizers.Split(Regex(_WORDS), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    # add_bos_token is true in the official tokenizer_config: a plain `encode` (add_special_tokens=True)
    # gets BOS in front, as HF and vLLM text-only prompts do. dsocr encodes with add_special_tokens=False
    # and puts BOS itself, so this changes nothing there.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, SPECIAL_TOKENS.index(BOS))])
    return tokenizer


def _between_special_tokens(texts: Iterable[str]) -> Iterator[str]:
    """The pieces of each text between special tokens, so that no merge is spent on "<td" or "|det|>"."""
    for text in texts:
        if not isinstance(text, str):
            raise ConfigError(f"training texts must be str, got {type(text).__name__}")
        yield from (piece for piece in _SPECIAL_SPLIT.split(text) if piece)


def _write_atomically(path: Path, text: str) -> None:
    """Write next to `path` under a temporary name, then rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8", newline="") as f:  # "x": umask-respecting mode
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# --- structural samples ---------------------------------------------------------------------------------
# The prose has no newlines, markup, tables, formulas or many numbers; OCR targets are full of them. These
# samples are built from the corpus vocabulary with a fixed seed, so the corpus stays the same everywhere.

_SEED = 0
_LABELS = ("title", "sub_title", "text", "table", "image", "image_caption", "table_caption", "equation",
           "footnote", "header", "footer", "page_number")
_SYMBOLS = ("“", "”", "‘", "’", "–", "—", "…", "•", "·", "©", "®", "™", "°", "±", "×", "÷", "→", "←",
            "≤", "≥", "≠", "≈", "€", "£", "¥", "§", "¶", "†", "½", "²", "³", "µ")
_LATEX = (r"\frac{a}{b}", r"\sum_{i=1}^{n} x_i", r"\int_0^1 f(x)\,dx", r"\sqrt{x^2 + y^2}", r"\alpha + \beta",
          r"\mathbf{A}\mathbf{x} = \mathbf{b}", r"\left( \frac{1}{2} \right)", r"x \leq y", r"a \cdot b",
          r"\lim_{n \to \infty} a_n", r"e^{i\pi} + 1 = 0", r"\hat{\theta}", r"\sigma^2", r"\mathrm{d}t",
          r"\partial_t u = \Delta u", r"P(A \mid B)", r"\mathbb{R}^n", r"\times 10^{-3}", r"\pm 0.5")


def structural_samples(seed: int = _SEED) -> tuple[str, ...]:
    """Markdown headings and lists, HTML and pipe tables, LaTeX, numbers, punctuation, grounding output and
    the official prompts, built from the corpus words (the same tuple on every call)."""
    rng = random.Random(seed)
    words = _running_words()
    titles = tuple(s.title for s in corpus.sections())
    makers = (_heading, _bullet_list, _html_table, _pipe_table, _formula, _numbers, _punctuated, _grounded,
              _aligned)
    samples = [maker(rng, words, titles) for _ in range(150) for maker in makers]
    return (*samples, *PRESETS.values())


def _running_words() -> tuple[str, ...]:
    """The prose's words in order, repeats kept: drawing from them follows the prose's word frequencies,
    where drawing from the distinct `corpus.words()` would make every rare word as common as "the"."""
    stripped = (word.strip(".,;:()\"'") for paragraph in corpus.paragraphs() for word in paragraph.split())
    return tuple(word for word in stripped if word.isalpha())


def _phrase(rng: random.Random, words: tuple[str, ...], low: int = 1, high: int = 4) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))


def _number(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randint(0, 999))
    if kind == 1:
        return f"{rng.uniform(0, 100):.{rng.randint(1, 3)}f}"
    if kind == 2:
        return f"{rng.randint(1000, 9_999_999):,}"
    if kind == 3:
        return f"{rng.uniform(-50, 50):.1f}%"
    if kind == 4:
        return f"{rng.choice('$€£')}{rng.uniform(0, 5000):,.2f}"
    return f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _heading(rng: random.Random, words: tuple[str, ...], titles: tuple[str, ...]) -> str:
    title = rng.choice(titles)
    numbered = f"{rng.randint(1, 12)}.{rng.randint(1, 9)} " if rng.random() < 0.5 else ""
    return f"{'#' * rng.randint(1, 4)} {numbered}{title}\n\n{_phrase(rng, words, 4, 12).capitalize()}."


def _bullet_list(rng: random.Random, words: tuple[str, ...], titles: tuple[str, ...]) -> str:
    style = rng.choice(("- ", "* ", "• ", "1. ", "a) "))
    markers = {"1. ": [f"{i}. " for i in range(1, 7)], "a) ": [f"{c}) " for c in "abcdef"]}.get(style, [style] * 6)
    return "\n".join(f"{marker}{_phrase(rng, words, 1, 6)}" for marker in markers[:rng.randint(2, 6)])


def _html_table(rng: random.Random, words: tuple[str, ...], titles: tuple[str, ...]) -> str:
    cols = rng.randint(2, 5)
    rows = [[_phrase(rng, words, 1, 2) for _ in range(cols)]]
    rows += [[_phrase(rng, words, 1, 2)] + [_number(rng) for _ in range(cols - 1)] for _ in range(rng.randint(1, 5))]
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{body}</table>"


def _pipe_table(rng: random.Random, words: tuple[str, ...], titles: tuple[str, ...]) -> str:
    cols = rng.randint(2, 4)
    header = [_phrase(rng, words, 1, 2) for _ in range(cols)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _ in range(rng.randint(1, 4)):
        lines.append("| " + " | ".join([rng.choice(words)] + [_number(rng) for _ in range(cols - 1)]) + " |")
    return "\n".join(lines)


def _formula(rng: random.Random, words: tuple[str, ...], titles: tuple[str, ...]) -> str:
    expression = " ".join(rng.sample(_LATEX, rng.randint(1, 3)))
    if rng.random() < 0.5:
        return f"\\[\n{expression}\n\\]"
    opening, closing = rng.choice((("\\(", "\\)"), ("$", "$"), ("$$", "$$")))
    return f"{_phrase(rng, words, 2, 6).capitalize()} {opening}{expression}{closing} {_phrase(rng, words, 1, 4)}."


def _numbers(rng: random.Random, words: tuple[str, ...], titles: tuple[str, ...]) -> str:
    unit = rng.choice(("kg", "mm", "ms", "MB", "km/h", "°C", "px", "pp."))
    return (f"{rng.choice(titles)}: {_number(rng)} {unit}, {_number(rng)} and {_number(rng)} "
            f"({rng.randint(1, 400)}–{rng.randint(401, 900)}), v{rng.randint(0, 9)}.{rng.randint(0, 20)}, "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}, {rng.uniform(0, 9):.2f}e-{rng.randint(1, 9)}")


def _punctuated(rng: random.Random, words: tuple[str, ...], titles: tuple[str, ...]) -> str:
    a, b, c = (_phrase(rng, words, 1, 5) for _ in range(3))
    symbol = rng.choice(_SYMBOLS)
    forms = (f"“{a},” {b}; {c}!", f"{a} — {b} ({c})…", f"‘{a}’ {symbol} {b}: [{c}]?", f"{a} {symbol} {b}/{c}",
             f"**{a}** and *{b}* with `{c}`", f"[{a}](https://example.org/{rng.choice(words).lower()}) {b}.",
             f"{a}{symbol} {b}{rng.choice(('.', '?', '!', ':', ';'))}", f"\"{a}\" -- '{b}' & {c} #{rng.randint(1, 99)}")
    return rng.choice(forms)


def _grounded(rng: random.Random, words: tuple[str, ...], titles: tuple[str, ...]) -> str:
    # The grounding prompt's output: label and box tags (special tokens, cut out for training), then content.
    x1, y1 = rng.randint(0, 800), rng.randint(0, 900)
    box = f"[[{x1}, {y1}, {rng.randint(x1 + 1, 999)}, {rng.randint(y1 + 1, 999)}]]"
    return f"<|ref|>{rng.choice(_LABELS)}<|/ref|><|det|>{box}<|/det|>\n{_phrase(rng, words, 3, 10).capitalize()}.\n\n"


def _aligned(rng: random.Random, words: tuple[str, ...], titles: tuple[str, ...]) -> str:
    # Runs of spaces and indentation, as in forms, tables of contents and code blocks.
    return (f"{rng.choice(words)}:{' ' * rng.randint(2, 8)}{_number(rng)}\n"
            f"{' ' * rng.choice((2, 4, 8))}{_phrase(rng, words, 1, 3)}{' ' * rng.randint(2, 12)}{rng.randint(1, 300)}\n"
            f"\t{rng.choice(words)} . . . . {rng.randint(1, 300)}")
