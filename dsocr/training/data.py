"""Training examples: (image, prompt, target text) from synthetic pages or from the user's own data, turned into
padded batches for the model.

Must not touch the model or the optimizer. Examples are made in DataLoader worker processes (rendering and
resizing are the CPU's work), deterministic by (seed, index), so a resumed run sees the same data.

User data is a folder (each image with a same-named .md or .txt target) or a JSONL file with lines
`{"image": "path/relative/to/the/file.png", "text": "target", "prompt": "free"}` (prompt optional).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from dsocr.errors import ConfigError, InputError
from dsocr.processing.image import ImageInputs, ProcessingConfig, load_image, preprocess_image
from dsocr.processing.prompts import resolve_prompt
from dsocr.processing.tokenizer import Tokenizer
from dsocr.training.alignment import Guide, RowGuides, row_guides, token_guides
from dsocr.training.glyphs import BLANK, CELL, SLOTS, Box, GlyphTargets, glyph_targets

if TYPE_CHECKING:  # the generator needs matplotlib (the `train` extra)
    from dsocr.training.synthetic import Glyph, SyntheticPage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
IGNORE = -100  # label of positions that carry no loss (prompt, image, padding)


@dataclass(frozen=True, slots=True)
class Example:
    image: Image.Image
    prompt: str  # a preset name or custom text (dsocr.processing.prompts)
    target: str
    # Synthetic pages only: the characters drawn and where (see glyphs.py), and the regions whose glyphs are
    # not recorded (formulas). None: unknown, no glyph loss for this image.
    glyphs: tuple[Glyph, ...] | None = None
    unknown: tuple[Box, ...] = ()


@dataclass(frozen=True, slots=True)
class Encoded:
    """One example ready for a batch: its views and its token ids."""

    global_pixels: torch.Tensor  # (3, B, B) uint8
    crop_pixels: torch.Tensor  # (K, 3, T, T) uint8
    input_ids: list[int]  # prompt (image tokens expanded) + target + EOS
    prompt_length: int  # the loss starts here
    glyphs: GlyphTargets | None = None  # when the trainer asked for them and the example has glyphs
    guides: list[Guide] = field(default_factory=list)  # where each target token is shown (alignment.py)


def encode(example: Example, tokenizer: Tokenizer, processing: ProcessingConfig, max_target_tokens: int,
           inputs: ImageInputs | None = None, glyphs: GlyphTargets | None = None, guides: bool = False) -> Encoded:
    """`inputs` (and `glyphs`): the image's views (and glyph targets) when already made (one page rendered
    for several prompts). With `guides` and glyph targets, the target tokens' guides too (the alignment loss's;
    matching a page's text to its glyphs costs more than the rest of encoding, so only when asked)."""
    inputs = inputs or preprocess_image(example.image, processing)
    prompt_ids = tokenizer.encode_prompt(resolve_prompt(example.prompt), [inputs.num_image_tokens])
    target_ids, offsets = tokenizer.encode_with_offsets(example.target)
    target_ids, offsets = target_ids[:max_target_tokens], offsets[:max_target_tokens]
    token_places = []
    if guides and glyphs is not None and example.glyphs:
        token_places = token_guides(example.target, offsets, "".join(g[0] for g in example.glyphs), glyphs.visual_tokens,
                              image_start=prompt_ids.index(tokenizer.image_id), first_query=len(prompt_ids) - 1)
    return Encoded(inputs.global_pixels, inputs.crop_pixels, prompt_ids + target_ids + [tokenizer.eos_id],
                   len(prompt_ids), glyphs, token_places)


def encode_glyphs(example: Example, processing: ProcessingConfig) -> GlyphTargets | None:
    if example.glyphs is None:
        return None
    return glyph_targets(example.glyphs, example.unknown, example.image.size, processing)


@dataclass
class Batch:
    global_views: torch.Tensor  # (I, 3, B, B) uint8: each distinct image once
    crops: torch.Tensor  # (sum K, 3, T, T) uint8
    num_crops: list[int]  # per distinct image
    image_of_row: list[int]  # row n shows distinct image image_of_row[n] (a page given with several prompts)
    input_ids: torch.Tensor  # (N, L) right-padded
    labels: torch.Tensor  # (N, L): the next token at each position, IGNORE where there is no loss
    num_target_tokens: int
    # Glyph targets of the distinct images' views, when asked for: [global views, crops], each (V, cells, SLOTS)
    # classes (glyphs.BLANK: none) with (V, cells) bool saying which cells count (none of an image without glyphs).
    glyph_classes: list[torch.Tensor] = field(default_factory=list)
    glyph_known: list[torch.Tensor] = field(default_factory=list)
    guides: list[RowGuides] = field(default_factory=list)  # the target tokens' guides, per row that has some

    def to(self, device: torch.device) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:  # DataLoader(pin_memory=True) calls this: faster, asynchronous copies to a GPU
        return self._map(torch.Tensor.pin_memory)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        return Batch(fn(self.global_views), fn(self.crops), self.num_crops, self.image_of_row, fn(self.input_ids),
                     fn(self.labels), self.num_target_tokens, [fn(t) for t in self.glyph_classes],
                     [fn(t) for t in self.glyph_known], [g.map(fn) for g in self.guides])


def collate(items: Sequence[Encoded], pad_id: int) -> Batch:
    length = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
    for i, e in enumerate(items):
        row = torch.tensor(e.input_ids)
        ids[i, : len(row)] = row
        # Position p predicts token p+1: the loss covers the target tokens (and EOS) only.
        labels[i, e.prompt_length - 1: len(row) - 1] = row[e.prompt_length:]
    # Rows made from the same views (one page, several prompts) share them: the vision tower sees them once.
    index: dict[int, int] = {}  # id of the views -> their place among the distinct images
    firsts, image_of_row = [], []
    for e in items:
        if id(e.global_pixels) not in index:
            index[id(e.global_pixels)] = len(firsts)
            firsts.append(e)
        image_of_row.append(index[id(e.global_pixels)])
    crops = [e.crop_pixels for e in firsts]
    batch = Batch(torch.stack([e.global_pixels for e in firsts]), torch.cat(crops), [c.shape[0] for c in crops],
                  image_of_row, ids, labels, int((labels != IGNORE).sum()))
    if any(e.glyphs is not None for e in firsts):
        batch.glyph_classes, batch.glyph_known = _collate_glyphs(firsts, batch)
    batch.guides = row_guides([e.guides for e in items])
    return batch


def _collate_glyphs(firsts: Sequence[Encoded], batch: Batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """[global, crops] classes and known cells; an image without glyphs gets zeros and no known cell."""
    n_global = (batch.global_views.shape[-1] // CELL) ** 2
    n_crop = (batch.crops.shape[-1] // CELL) ** 2
    g_cls, g_ok, c_cls, c_ok = [], [], [], []
    for e, k in zip(firsts, batch.num_crops):
        g = e.glyphs or GlyphTargets(torch.full((n_global, SLOTS), BLANK, dtype=torch.int16),
                                     torch.zeros(n_global, dtype=torch.bool),
                                     torch.full((k, n_crop, SLOTS), BLANK, dtype=torch.int16),
                                     torch.zeros(k, n_crop, dtype=torch.bool))
        g_cls.append(g.global_classes)
        g_ok.append(g.global_known)
        c_cls.append(g.crop_classes)
        c_ok.append(g.crop_known)
    return [torch.stack(g_cls), torch.cat(c_cls)], [torch.stack(g_ok), torch.cat(c_ok)]


def synthetic_example(seed: int, prompt: str) -> Example:
    """Synthetic page `seed` with the target its prompt asks for: grounding format or plain text."""
    from dsocr.training.synthetic import generate_page

    return page_example(generate_page(seed), prompt)


def page_example(page: SyntheticPage, prompt: str) -> Example:
    """A synthetic page with the target its prompt asks for, its glyphs, and its formulas as unknown regions."""
    target = page.grounding_target() if "<|grounding|>" in resolve_prompt(prompt) else page.plain_target()
    return Example(page.image, prompt, target, page.glyphs, tuple(b.box for b in page.blocks if b.label == "equation"))


def strip_example(seed: int, size: int) -> Example:
    """Line view `seed` (training/strips.py) of `size` pixels with its `free` target and glyphs."""
    from dsocr.training.strips import generate_strips

    view = generate_strips(seed, size)
    return Example(view.image, "free", view.target, view.glyphs, view.formulas)


def _indices(start: int) -> Iterator[int]:
    """This DataLoader worker's share of the example indices start, start+1, ...: every n-th one, so the
    stream does not depend on the number of workers."""
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info else (0, 1)
    index = start + worker
    while True:
        yield index
        index += workers


class SyntheticExamples(IterableDataset):
    """An endless stream of synthetic pages, each rendered once and given with every prompt in turn (rendering
    and view-making are the data's cost): examples i*P .. i*P+P-1 of the run are page `seed * 10^9 + i`, drawn
    as a full page or, for a `snippets` share of the pages, as a snippet (synthetic.SNIPPETS), or for a `strips`
    share, as a line view of `strip_size` pixels (training/strips.py, given P times with the `free` prompt)."""

    def __init__(self, seed: int, prompts: Sequence[str], start: int = 0, snippets: float = 0.0,
                 snippet_fonts: tuple[int, int] | None = None, strips: float = 0.0, strip_size: int = 640) -> None:
        self.seed, self.prompts, self.snippets, self.snippet_fonts = seed, tuple(prompts), snippets, snippet_fonts
        self.strips, self.strip_size = strips, strip_size
        self.start = start // len(self.prompts)  # in pages

    def __iter__(self) -> Iterator[Example]:
        from dsocr.training.synthetic import SyntheticConfig, generate_page, snippet_config

        snippets = snippet_config(self.snippet_fonts)
        for index in _indices(self.start):
            seed = self.seed * 10**9 + index
            draw = Random(seed).random() if self.snippets or self.strips else 1.0
            if draw < self.strips:
                example = strip_example(seed, self.strip_size)
                for _ in self.prompts:
                    yield example
                continue
            page = generate_page(seed, snippets if draw < self.strips + self.snippets else SyntheticConfig())
            for prompt in self.prompts:
                yield page_example(page, prompt)


class EncodedStream(IterableDataset):
    """Examples encoded in the worker that made them; with `glyphs`, with their glyph targets, and with
    `guides`, with the alignment loss's guides."""

    def __init__(self, examples: IterableDataset | Dataset, tokenizer: Tokenizer, processing: ProcessingConfig,
                 max_target_tokens: int, glyphs: bool = False, guides: bool = False) -> None:
        self.examples, self.tokenizer, self.processing = examples, tokenizer, processing
        self.max_target_tokens, self.glyphs, self.guides = max_target_tokens, glyphs or guides, guides

    def __iter__(self) -> Iterator[Encoded]:
        image, inputs, targets = None, None, None
        for example in self.examples:
            if example.image is not image:  # the same page under another prompt keeps its views
                image, inputs = example.image, preprocess_image(example.image, self.processing)
                targets = encode_glyphs(example, self.processing) if self.glyphs else None
            yield encode(example, self.tokenizer, self.processing, self.max_target_tokens, inputs, targets,
                         self.guides)


class UserExamples(IterableDataset):
    """The user's (image, text) pairs, cycled in a new seeded order every epoch (see `split_pairs` for the
    held-out part)."""

    def __init__(self, pairs: Sequence[tuple[Path, str, str]], seed: int, *, start: int = 0) -> None:
        if not pairs:
            raise ConfigError("no training examples")
        self.pairs, self.seed, self.start = list(pairs), seed, start

    def __iter__(self) -> Iterator[Example]:
        for index in _indices(self.start):
            epoch, i = divmod(index, len(self.pairs))
            order = torch.randperm(len(self.pairs), generator=torch.Generator().manual_seed(self.seed + epoch))
            path, prompt, text = self.pairs[int(order[i])]
            yield Example(load_image(path), prompt, text)


def read_pairs(source: str | Path, default_prompt: str = "markdown") -> list[tuple[Path, str, str]]:
    """(image path, prompt, target) from a folder or a JSONL file; a clear error for what is missing."""
    source = Path(source)
    if source.is_dir():
        pairs = []
        for image in sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            target = next((image.with_suffix(s) for s in (".md", ".txt") if image.with_suffix(s).exists()), None)
            if target is None:
                raise InputError(f"{image}: no {image.stem}.md or {image.stem}.txt target next to it")
            pairs.append((image, default_prompt, target.read_text(encoding="utf-8")))
        return pairs
    if source.suffix == ".jsonl" and source.is_file():
        pairs = []
        for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                image = source.parent / record["image"]
                pairs.append((image, record.get("prompt", default_prompt), str(record["text"])))
            except (ValueError, KeyError, TypeError) as e:
                raise InputError(f"{source}:{n}: expected {{\"image\": ..., \"text\": ...}} ({e})") from None
            if not image.exists():
                raise InputError(f"{source}:{n}: image {image} not found")
        return pairs
    raise InputError(f"{source}: training data must be a folder of images with .md/.txt targets or a .jsonl file")


def split_pairs(pairs: Sequence[tuple[Path, str, str]], eval_fraction: float) -> tuple[list, list]:
    """(train, held out), stable across runs and machines (CRC32 of the file name)."""
    train, held = [], []
    for pair in pairs:
        (held if zlib.crc32(pair[0].name.encode()) % 1000 < eval_fraction * 1000 else train).append(pair)
    if not train:
        raise ConfigError("every example fell into the held-out split; add data or lower eval_fraction")
    return train, held
