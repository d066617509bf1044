"""Teach a changed vision tower to see as the old one did: distillation on line views, on the CPU.

    python scripts/distill_vision.py TEACHER STUDENT OUT [--minutes 60] [--batch 8] [--lr 1e-4] [--seed 1]
        [--token-weight 0] [--strips-per-page 4]

TEACHER and STUDENT are checkpoints of the same model whose vision towers differ (e.g. the student's SAM has its
global layers windowed by scripts/window_sam.py). The student's vision tower (SAM, flow encoder, projector) learns
to give the teacher's visual embeddings, the decoder's input, on the views a lines model reads: in turn
`--strips-per-page` of training's strips (`dsocr.training.strips`) and all the line views
`dsocr.pipeline.line_reader.line_views` packs from a synthetic page (training seeds, none of the held-out pages;
a page gives ~6). The loss is the squared error over the teacher's
variance; the decoder is not touched, so a student that matches reads as the teacher reads. With `--token-weight
W` the strips' own targets add W x the student's reading loss (cross-entropy of the target tokens through the
frozen decoder, as training computes it): the embedding error weighs every direction alike, the reading loss
the ones the decoder reads (the teacher's loss on the same strips is logged beside it). AdamW, warmup then
cosine, for `--minutes`; OUT is saved every `--save-every` steps and at the end (official layout, bf16 shards,
tokenizer.json). A view costs ~1 s of two CPU cores (drawing, teacher, student forward and backward): run 10
(docs/training.md) took 52 minutes for 330 steps of 8.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dsocr.model.weights import load_model, save_checkpoint
from dsocr.processing.image import normalize, processing_config_for_mode, to_tensor
from dsocr.processing.tokenizer import Tokenizer
from dsocr.training.data import Batch, Encoded, collate, encode
from dsocr.training.train import SHARD_BYTES, target_logits

PAGE_SEEDS = 700_000_000  # synthetic pages from here: far from run seed 0's training stream and held-out pages


class Views(IterableDataset):
    """Line views, alternately `strips` strips and a synthetic page's (all of them), as (pixels, the strip
    encoded with its target, or None for a page's view)."""

    def __init__(self, seed: int, size: int, tokenizer: Path, strips: int = 4) -> None:
        self.seed, self.size, self.tokenizer, self.strips = seed, size, tokenizer, strips

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Encoded | None]]:
        from dsocr.pipeline.line_reader import line_views
        from dsocr.training.data import strip_example
        from dsocr.training.synthetic import generate_page

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        tokenizer = Tokenizer.from_file(self.tokenizer)
        processing = processing_config_for_mode("base", base_size=self.size)
        i = worker
        while True:
            for j in range(self.strips):
                strip = strip_example(PAGE_SEEDS + self.seed * 1_000_000 + self.strips * i + j, self.size)
                encoded = encode(strip, tokenizer, processing, max_target_tokens=1536)
                yield normalize(encoded.global_pixels), encoded
            page = generate_page(PAGE_SEEDS + self.seed * 1_000_000 + i)
            for view in line_views(page.image, self.size).views:
                yield to_tensor(view), None
            i += workers


def collate_views(items: list[tuple[torch.Tensor, Encoded | None]], pad_id: int
                  ) -> tuple[torch.Tensor, list[int], Batch | None]:
    """(pixels of all views, which of them are strips, the strips' batch)."""
    rows = [i for i, (_, encoded) in enumerate(items) if encoded is not None]
    strips = collate([items[i][1] for i in rows], pad_id) if rows else None
    return torch.stack([pixels for pixels, _ in items]), rows, strips


def reading_loss(model: torch.nn.Module, embeds: torch.Tensor, rows: list[int], strips: Batch,
                 image_id: int) -> torch.Tensor:
    """Cross-entropy of the strips' target tokens given these visual embeddings (a base view: its embeddings,
    then the separator)."""
    separator = model.model.view_seperator[None]
    logits, labels = target_logits(model, strips, image_id, [torch.cat([embeds[i], separator]) for i in rows])
    return F.cross_entropy(logits, labels)


def vision_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    parts = (model.model.sam_model, model.model.qwen2_model, model.model.projector)
    return [p for part in parts for p in part.parameters()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teacher", type=Path)
    parser.add_argument("student", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=400, help="length of the cosine schedule")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--token-weight", type=float, default=0.0, help="the strips' reading loss, this much")
    parser.add_argument("--strips-per-page", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    teacher, student = load_model(args.teacher), load_model(args.student)
    params = vision_parameters(student)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / args.warmup) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    tokenizer = Tokenizer.from_file(args.student / "tokenizer.json")
    loader = DataLoader(Views(args.seed, student.config.base_size, args.student / "tokenizer.json",
                              args.strips_per_page),
                        batch_size=args.batch, collate_fn=partial(collate_views, pad_id=tokenizer.pad_id),
                        num_workers=args.workers, prefetch_factor=2 if args.workers else None)
    log = (args.out / "distill_log.jsonl")
    args.out.mkdir(parents=True, exist_ok=True)
    start, step = time.monotonic(), 0

    def save() -> None:
        save_checkpoint(student, args.out, dtype=torch.bfloat16, max_shard_bytes=SHARD_BYTES)
        shutil.copy(args.student / "tokenizer.json", args.out / "tokenizer.json")

    for pixels, rows, strips in loader:
        with torch.no_grad():
            target = teacher.model.encode_views(pixels)
        embeds = student.model.encode_views(pixels)
        loss = (embeds - target).pow(2).mean() / target.var()
        record = {"step": step + 1, "loss": round(loss.item(), 5)}
        if args.token_weight and strips is not None:
            reading = reading_loss(student, embeds, rows, strips, tokenizer.image_id)
            with torch.no_grad():
                record["teacher_reading"] = round(
                    reading_loss(teacher, target, rows, strips, tokenizer.image_id).item(), 4)
            record["reading"] = round(reading.item(), 4)
            loss = loss + args.token_weight * reading
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        step += 1
        minutes = (time.monotonic() - start) / 60
        with log.open("a") as f:
            f.write(json.dumps({**record, "minutes": round(minutes, 2)}) + "\n")
        if step % args.save_every == 0:
            save()
        if minutes >= args.minutes or step >= args.steps:
            break
    save()
    print(f"{args.out}: {step} steps in {(time.monotonic() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
