"""Line views for training a model that reads lines (`dsocr.processing.lines`): rows of print, one line segment
per 64-pixel row, drawn exactly as the pipeline packs a page's lines.

Each row is a line rendered at its own size (11-48 px type, the sizes of print on pages rendered at 100-300 dpi)
in one of the synthetic pages' fonts, cut at its ink box, lightly degraded at that size (blur, noise, JPEG, a
paper tone), then scaled to the common x-height by `lines.normalize_line`, as the pipeline scales the lines it
finds. The text is real prose from the corpus (a run of a paragraph, in order or shuffled with its punctuation as
the synthetic pages shuffle paragraphs), real words in a random order (the corpus's and ~44k English ones: they
can only be read, not recited), table-like numbers, or list items, headings and captions. The target is the
rows' texts, one per line: the answer to the `free` prompt. A third of the rows mix in made-up words and codes,
which only spelling can read; some rows are typeset (curly quotes, dashes, bullets, accented words, signs); a few
are display formulas, read as `\\[ latex \\]`. Deterministic by seed, like `synthetic`.
"""

from __future__ import annotations

import gzip
import json
import string
from dataclasses import dataclass
from functools import lru_cache
from random import Random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from dsocr.errors import ConfigError
from dsocr.processing import lines
from dsocr.training import corpus, fonts
from dsocr.training.synthetic import (
    FONT_FAMILIES,
    MATH_FONTSETS,
    Glyph,
    _advance,
    _blur,
    _cell,
    _fragment,
    _jpeg,
    _noise,
    _openings,
    _random_latex,
    _render_math,
    _words,
    load_font,
)

P_FORMULA = 0.06  # rows that are a display formula
P_EXTRA_FONT = 0.5  # rows drawn in an extra font family, when there are any (`fonts.extra_families`)
P_CELLS = 0.15  # views whose rows are all short table cells, as the pipeline packs a table: one cell a row
MAX_FORMULA_HEIGHT = 3.5  # ems: formulas up to this tall are rows (over ~1.9 ems scaled down to fit), taller drawn anew
FONT_SIZES = (11, 48)  # px: the size a row is first rendered at, before it is scaled to the x-height
PAD = 6  # blank pixels around a row's text while it is drawn
# regular, bold, italic, like FONT_FAMILIES; their files map ASCII to TeX's OT1 encoding, right only for _CM_SAFE
COMPUTER_MODERN = (("cmr10.ttf", "cmb10.ttf", "cmti10.ttf"), ("cmss10.ttf",) * 3, ("cmtt10.ttf",) * 3)
_CM_SAFE = frozenset(string.ascii_letters + string.digits + " .,;:?!()[]+=/*&$#%@-")


@dataclass(frozen=True, slots=True)
class StripView:
    image: Image.Image  # size x size RGB
    rows: tuple[str, ...]  # each row's text, top to bottom (unused rows are not listed)
    glyphs: tuple[Glyph, ...]  # every drawn character's centre in view pixels (the glyph loss)
    seed: int
    formulas: tuple[tuple[int, int, int, int], ...] = ()  # rows of formulas: drawn, but no glyph positions

    @property
    def target(self) -> str:
        return "\n".join(self.rows)


def generate_strips(seed: int, size: int) -> StripView:
    """A `size` x `size` view of 1..size // 64 rows (all of them half the time). Pure function of (seed, size)."""
    rng = Random(seed)
    capacity = lines.rows_per_view(size)
    count = capacity if rng.random() < 0.5 else rng.randint(1, capacity)
    # A run of one-word rows is where run 7 lost its place (it answered junk lines after the ninth):
    # table cells packed one a row, which rows of random width almost never make.
    cells = rng.random() < P_CELLS
    paper = 255 if rng.random() < 0.4 else 255 - rng.randint(1, 30)  # one paper for the view, as on a page
    view = Image.new("RGB", (size, size), (paper,) * 3)
    texts: list[str] = []
    glyphs: list[Glyph] = []
    formulas = []
    for row in range(count):
        formula = _formula_row(rng, lines.segment_width(size), paper) if rng.random() < P_FORMULA else None
        text, segment, centres = formula or _row(rng, lines.segment_width(size), paper, cells)
        x, y = lines.row_origin(row, segment.height)
        view.paste(segment, (x, y))
        texts.append(text)
        glyphs.extend((ch, x + cx, y + lines.BASELINE - lines.X_HEIGHT / 2) for ch, cx in centres)
        if formula:
            formulas.append((x, y, x + segment.width, y + segment.height))
    return StripView(view, tuple(texts), tuple(glyphs), seed, tuple(formulas))


def _row(rng: Random, max_width: int, paper: int,
         cell: bool = False) -> tuple[str, Image.Image, list[tuple[str, float]]]:
    """One row (a table's cell when `cell`): its text, its normalized image, and each character's centre x in
    it. A third of the rows are two lines of one paragraph joined end to end (`lines.join_lines`), each scaled
    by its own ink box, as the pipeline joins a paragraph's lines."""
    words = _cell_words(rng) if cell else _words_for_row(rng)
    font = _font(rng, " ".join(words))
    stretch = rng.uniform(0.8, 1.2) if rng.random() < 0.3 else 1.0  # narrower and wider faces than ours
    weight = rng.random()  # < 0.1: bolder strokes, > 0.95: thinner (print that is not our fonts' weight)
    fill = 1.0 if rng.random() < 0.6 else rng.uniform(0.1, 1.0)
    joined = rng.random() < 0.33
    while True:
        words = _fit(words, font, fill * max_width / stretch) if len(words) > 1 else words
        cut = rng.randint(1, len(words) - 1) if joined and len(words) > 1 else len(words)
        pieces = [_piece(rng, " ".join(part), font, paper, stretch, weight)
                  for part in (words[:cut], words[cut:]) if part]
        segment = lines.join_lines([image for image, _ in pieces], (paper,) * 3)
        if segment.width <= max_width or len(words) == 1:
            break
        words = words[:-1]
    if segment.width > max_width:  # one word too wide even alone: keep what fits of it
        segment = segment.crop((0, 0, max_width, segment.height))
    centres, x0 = [], 0
    for image, piece_centres in pieces:
        centres += [(ch, x0 + x) for ch, x in piece_centres]
        x0 += image.width + lines.WORD_GAP
    return " ".join(words), segment, [(ch, min(max(x, 0.0), segment.width - 1.0)) for ch, x in centres]


def _formula_row(rng: Random, max_width: int,
                 paper: int) -> tuple[str, Image.Image, list[tuple[str, float]]] | None:
    """A display formula (the synthetic pages' grammar, rendered by mathtext) as a row, read as `\\[ latex \\]`
    like the pages' equation blocks; None when six tries are all too wide or too tall for a row. Up to
    MAX_FORMULA_HEIGHT ems tall (95% of the grammar's formulas: a fraction, a sum's limits), scaled down to fit its
    row as the pipeline scales a page's formula; taller ones (fractions in fractions) would be too small to read."""
    for _ in range(6):
        latex, size = _random_latex(rng), rng.randint(*FONT_SIZES)
        mask = _render_math(latex, size, rng.choice(MATH_FONTSETS))
        if mask.height > MAX_FORMULA_HEIGHT * size:
            continue
        image = Image.new("L", (mask.width + 2 * PAD, mask.height + 2 * PAD), paper)
        image.paste(rng.randint(0, 70), (PAD, PAD, PAD + mask.width, PAD + mask.height), mask)
        crop = lines.ink_box(image)
        if crop is None:
            continue
        ink = _degrade(rng, image).crop(crop)
        segment = lines.normalize_line(ink, (paper,) * 3)
        if segment.width <= max_width:
            return rf"\[ {latex} \]", segment, []
    return None


def _piece(rng: Random, text: str, font: ImageFont.FreeTypeFont, paper: int, stretch: float,
           weight: float) -> tuple[Image.Image, list[tuple[str, float]]]:
    """A line of `text` drawn, degraded, scaled to the x-height; and its characters' centres x ("':' ends
    past its ink": clamped by the caller)."""
    image, crop, left = _draw(rng, text, font, paper)
    ink = image.crop(crop)
    if stretch != 1.0:
        ink = ink.resize((max(1, round(ink.width * stretch)), ink.height), Image.Resampling.BICUBIC)
    if weight < 0.1 and font.size >= 20:
        ink = ink.filter(ImageFilter.MinFilter(3))
    elif weight > 0.95 and font.size >= 40:
        ink = ink.filter(ImageFilter.MaxFilter(3))
    scaling = lines.line_scaling(ink)
    segment = lines.normalize_line(ink, (paper,) * 3, scaling)
    scale, origin = scaling.scale, PAD - left - crop[0]
    centres, x = [], origin  # advances without kerning: close enough for 16-pixel slots
    for ch in text:
        advance = _advance(font, ch)
        if not ch.isspace():
            centres.append((ch, (x + advance / 2) * stretch * scale))
        x += advance
    return segment, centres


def _font(rng: Random, text: str) -> ImageFont.FreeTypeFont:
    """A face for the row: the synthetic pages' families, TeX's Computer Modern (roman, sans, typewriter,
    shipped with matplotlib too) for text its old encoding draws right (it has no <, >, {, |, _ ...), or, for
    P_EXTRA_FONT of the rows when there are any, one of the extra families (`fonts.extra_families`) that has
    every character of the text."""
    extra = fonts.extra_families()
    if extra and rng.random() < P_EXTRA_FONT:
        family, style = extra[rng.randrange(len(extra))], _style(rng)
        if set(text) - {" "} <= fonts.covers(family[style]):
            return fonts.load_font(family[style], rng.randint(*FONT_SIZES))
        return load_font(FONT_FAMILIES["sans"][style], rng.randint(*FONT_SIZES))
    families = (*FONT_FAMILIES.values(), *COMPUTER_MODERN)
    family = families[rng.randrange(len(families))]
    if family in COMPUTER_MODERN and not set(text) <= _CM_SAFE:
        family = FONT_FAMILIES["sans"]
    return load_font(family[_style(rng)], rng.randint(*FONT_SIZES))


def _style(rng: Random) -> int:
    """Regular for three rows in four, else bold or italic (the index in a family's files)."""
    return 0 if rng.random() < 0.75 else rng.choice((1, 2))


def _words_for_row(rng: Random) -> list[str]:
    """More words than a row holds (`_fit` keeps what fits): prose, shuffled words, made-up words, codes,
    numbers, or a labelled line. The corpus has ~2400 distinct words: a model that saw only those would read
    any other word as the nearest of them, so rows also draw on ~44k English words (`_english`) and made-up
    words, which it must spell."""
    kind = rng.random()
    if kind < 0.35:  # a run of real prose, punctuation and all: the manual's or a standard-library docstring's
        words = rng.choice(_openings() if rng.random() < 0.4 else corpus.docstrings()).split()
        start = rng.randrange(max(1, len(words) - 4))
        words = words[start:start + 40]
        if kind >= 0.2:  # shuffled, as the synthetic pages shuffle half their paragraphs: "thereof. non-virtual"
            rng.shuffle(words)  # is read as printed, not as a sentence would go ("thereof, non-virtual")
    elif kind < 0.57:  # words in a random order: readable, not guessable
        words = [_any_word(rng) for _ in range(30)]
    elif kind < 0.72:  # made-up words among real ones
        words = [_made_up(rng) if rng.random() < 0.6 else _any_word(rng) for _ in range(30)]
    elif kind < 0.8:  # codes, identifiers, amounts
        words = [_code(rng) for _ in range(20)]
    elif kind < 0.9:  # a table's cells
        words = [_cell(rng, rng.choice(("int", "decimal", "percent", "word"))) for _ in range(12)]
    else:  # headings, list items, captions
        head = rng.choice((f"{rng.randint(1, 12)}.", "-", f"Figure {rng.randint(1, 9)}:",
                           f"Table {rng.randint(1, 9)}:", f"{rng.randint(1, 9)}.{rng.randint(1, 9)}"))
        words = [head, *_fragment(rng, 2, 12).split()]
    if rng.random() < 0.05:
        words = [w.upper() for w in words]
    if rng.random() < 0.15:
        words = _typeset(rng, words)
    return words or ["-"]


def _cell_words(rng: Random) -> list[str]:
    """A table cell's one to three words: a number, an amount, a code, a word or two (real or made up)."""
    kind = rng.random()
    if kind < 0.4:
        return [_cell(rng, rng.choice(("int", "decimal", "percent")))]
    if kind < 0.5:
        return [_code(rng)]
    return [_made_up(rng) if rng.random() < 0.3 else _any_word(rng) for _ in range(rng.choice((1, 1, 1, 2, 3)))]


_ACCENTED = ("café", "naïve", "résumé", "façade", "Zürich", "São", "über", "déjà", "Ångström", "señor",
             "jalapeño", "Québec", "Málaga", "Göteborg", "Øresund", "crème", "brûlée", "Æsop", "piñata", "Dvořák")
_SIGNS = ("©", "®", "°", "€", "£", "±", "×", "µ", "§", "→", "·")


def _typeset(rng: Random, words: list[str]) -> list[str]:
    """What printed text has and the manual's ASCII lacks: curly quotes and apostrophes, en and em dashes,
    bullets, accented words, signs."""
    out = []
    for word in words:
        if word.startswith('"'):
            word = "“" + word[1:]
        if word.endswith(('"', '",', '".')):
            word = word.replace('"', "”")
        word = word.replace("'", "’")
        if word == "-":
            word = rng.choice(("–", "—", "•"))
        elif rng.random() < 0.08:
            word = rng.choice(_ACCENTED)
        elif rng.random() < 0.03:
            word = rng.choice(_SIGNS) + word if rng.random() < 0.5 else word + rng.choice(_SIGNS)
        out.append(word)
    return out


@lru_cache(maxsize=1)
def _doc_words() -> tuple[str, ...]:
    """The distinct words of the standard library's docstrings (corpus.docstrings), in first-seen order."""
    seen: dict[str, None] = {}
    for paragraph in corpus.docstrings():
        for word in paragraph.split():
            word = word.strip(".,;:()\"'`*")
            if word.isalpha() and 2 <= len(word) <= 16:
                seen.setdefault(word, None)
    return tuple(seen)


@lru_cache(maxsize=1)
def _english() -> tuple[str, ...]:
    """English words, most frequent first: pyspellchecker's word list (MIT; counts from film subtitles), those
    of 2-16 ASCII letters seen at least 100 times (~44k, against the docstrings' ~10k and the manual's 2400)."""
    try:
        from importlib.resources import files

        data = (files("spellchecker") / "resources" / "en.json.gz").read_bytes()
    except ModuleNotFoundError as error:
        raise ConfigError("training rows need an English word list: pip install 'dsocr[train]'") from error
    counts = json.loads(gzip.decompress(data))
    return tuple(word for word, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
                 if count >= 100 and 2 <= len(word) <= 16 and word.isascii() and word.isalpha())


def _any_word(rng: Random) -> str:
    """A real word: an English one half the time (frequent ones more often; the list is lower case, so some are
    capitalised), else one of the manual's or the docstrings'."""
    draw = rng.random()
    if draw < 0.5:
        english = _english()
        word = english[int(len(english) * rng.random() ** 2)]
        return word.capitalize() if rng.random() < 0.15 else word
    return rng.choice(_words() if draw < 0.75 else _doc_words())


def _made_up(rng: Random) -> str:
    """A word that looks like one: the start of a real word and the end of another ("Quar" + "terly"),
    sometimes with a letter changed, capitalised now and then, with trailing punctuation now and then."""
    a, b = (rng.choice(_words() if rng.random() < 0.5 else _english()) for _ in range(2))
    word = a[: rng.randint(1, max(1, len(a) - 1))] + b[rng.randint(0, len(b) - 1):]
    if rng.random() < 0.3:
        i = rng.randrange(len(word))
        word = word[:i] + rng.choice(string.ascii_lowercase) + word[i + 1:]
    if rng.random() < 0.2:
        word = word[:1].upper() + word[1:]
    return word + (rng.choice(".,;:)") if rng.random() < 0.1 else "")


def _code(rng: Random) -> str:
    """Letters, digits and punctuation in no word's order: reference numbers, identifiers, amounts, dates."""
    kind = rng.random()
    if kind < 0.25:
        return f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2030)}"
    if kind < 0.45:
        return f"${rng.randint(1, 99999):,}.{rng.randint(0, 99):02d}"
    alphabet = string.ascii_letters + string.digits + "-_/.#()"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 10)))


@lru_cache(maxsize=1024)
def _x_height(font: ImageFont.FreeTypeFont) -> int:
    top, bottom = font.getbbox("x")[1::2]
    return max(bottom - top, 1)


def _fit(words: list[str], font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """The longest prefix (one word at least) whose text, scaled to the x-height, is at most `width` wide, by
    the words' advances (cheaper than laying out each prefix; `_row` checks the drawn result)."""
    limit = width * _x_height(font) / lines.X_HEIGHT  # in the font's pixels
    space, total = _advance(font, " "), 0.0
    for count, word in enumerate(words):
        total += font.getlength(word) + (space if count else 0.0)
        if total > limit:
            return words[:max(count, 1)]
    return words


def _draw(rng: Random, text: str, font: ImageFont.FreeTypeFont,
          paper: int) -> tuple[Image.Image, tuple[int, int, int, int], int]:
    """The text drawn at its size on a little of the view's paper, degraded, the box of its ink, and the text's
    left bearing. Grey ("L"): print, paper and their degradations are grey, and a third of the cost of RGB."""
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right - left + 2 * PAD, bottom - top + 2 * PAD), paper)
    ImageDraw.Draw(image).text((PAD - left, PAD - top), text, font=font, fill=rng.randint(0, 70))
    crop = lines.ink_box(image) or (0, 0, image.width, image.height)
    return _degrade(rng, image), crop, left


def _degrade(rng: Random, image: Image.Image) -> Image.Image:
    """Print at its own size, as scanned: blurred, noisy, JPEG-compressed, each now and then."""
    if rng.random() < 0.3:
        image = _blur(image, rng.uniform(4.0, 12.0))
    if rng.random() < 0.2:
        image = _noise(image, np.random.default_rng(rng.randrange(2**32)), rng.uniform(2.0, 8.0))
    if rng.random() < 0.2:
        image = _jpeg(image, rng.randint(40, 90))
    return image
