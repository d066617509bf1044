"""Real prose for synthetic documents and tokenizer training: the Python reference manual's topic texts that
ship with every CPython (`pydoc_data.topics`, PSF licence), cut into headings and paragraphs; and, for a wider
vocabulary, the docstrings of the standard library's own modules (`docstrings`).

Must stay deterministic and offline: the same text on every machine with the same Python minor version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_UNDERLINE = re.compile(r"^([*=\-~^\"])\1{3,}$")


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    paragraphs: tuple[str, ...]  # prose only: one paragraph's lines joined by spaces


@lru_cache(maxsize=1)
def sections() -> tuple[Section, ...]:
    """Every topic of the manual as (title, prose paragraphs), in a fixed order. Code samples, grammar rules
    and tables (indented blocks) are left out: they are not prose."""
    from pydoc_data.topics import topics

    result = []
    for key in sorted(topics):
        lines = topics[key].splitlines()
        title, body = key, lines
        if len(lines) > 1 and _UNDERLINE.match(lines[1].strip()):
            title, body = lines[0].strip(), lines[2:]
        paragraphs = [p for p in _paragraphs(body) if len(p) >= 40]
        if paragraphs:
            result.append(Section(title, tuple(paragraphs)))
    return tuple(result)


def _paragraphs(lines: list[str]) -> list[str]:
    out, current = [], []
    for line in lines + [""]:
        if not line.strip() or line.startswith(" ") or _UNDERLINE.match(line.strip()):
            if current:
                out.append(" ".join(current))
                current = []
            continue
        current.append(line.strip())
    return [re.sub(r"\s+", " ", p).replace("*", "").replace("``", '"') for p in out]


def paragraphs() -> tuple[str, ...]:
    """All prose paragraphs, flattened."""
    return tuple(p for s in sections() for p in s.paragraphs)


def words() -> tuple[str, ...]:
    """The vocabulary of the prose, in first-seen order (for table cells, labels, short captions)."""
    seen: dict[str, None] = {}
    for p in paragraphs():
        for w in p.split():
            w = w.strip(".,;:()\"'")
            if w.isalpha() and 2 <= len(w) <= 14:
                seen.setdefault(w, None)
    return tuple(seen)


_DOCSTRING = re.compile(r'"""(.*?)"""', re.DOTALL)


@lru_cache(maxsize=1)
def docstrings() -> tuple[str, ...]:
    """Prose from the docstrings of the standard library's modules (tests and site-packages left out), one
    entry per docstring paragraph of 40+ characters, whitespace collapsed, in a fixed order. The manual alone
    has ~2400 distinct words: a reader trained on it reads any other word as the nearest of those; these add
    ~15k more. Read once per process (~1 s)."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if {"site-packages", "test", "tests", "idlelib"} & set(path.parts):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for doc in _DOCSTRING.findall(text):
            for paragraph in re.split(r"\n\s*\n", doc):
                prose = " ".join(paragraph.split())
                if len(prose) >= 40 and prose.isascii() and ">>>" not in prose:
                    out.append(prose)
    return tuple(out)
