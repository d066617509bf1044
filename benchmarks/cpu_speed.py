"""Seconds per page of a model that reads lines (the embedded model) on this CPU: the reference modules against
the CPU decoding forms (`dsocr.engine.cpu`), a page alone and four pages in one batch (as `dsocr convert`
batches them), in one run, with the page's time split into layout + packing, vision and decoding. A third
configuration, the CPU decoding forms with finished sequences kept in the batch to its end (as the reference loop
did before `generation.reference.KEEP_SHARE`), measures what dropping them gains; a fourth, every SAM window
computed (no `dsocr.engine.sam_windows.BlankWindows`), what skipping the flat windows of SAM's windowed blocks
gains.

    python benchmarks/cpu_speed.py [--model dsocr/embedded] [--baseline MODEL] [--pages 8] [--batch 4] [--threads 2]

`--baseline MODEL` adds a second model (e.g. the weights before a change of the vision tower) read with the CPU
decoding forms, so two checkpoints compare on the same pages in the same process. The pages are synthetic ones
from the accuracy benchmark's speed set (seeds 7000 + i). Each configuration is warmed up on one page first, and
the configurations take turns, twice, so a machine that slows down mid-run does not favour one of them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dsocr.api import OCR
from dsocr.generation import reference
from dsocr.generation.params import SamplingParams
from dsocr.training.synthetic import generate_page

STAGES = (("layout", "preprocess"), ("vision", "vision"), ("decode", "decode"))


def per_page(ocr: OCR, images: list, batch: int, max_tokens: int = 2048, *, keep_finished: bool = False,
             every_window: bool = False) -> dict[str, float]:
    """Seconds per page, in all and by stage, reading `images` `batch` at a time with the markdown prompt
    (`keep_finished`: finished sequences stay in the decoding batch to its end; `every_window`: SAM's blocks
    as the reference runs them)."""
    sampling = SamplingParams(max_new_tokens=max_tokens)
    sam = ocr.model.model.sam_model
    share, reference.KEEP_SHARE = reference.KEEP_SHARE, (0.0 if keep_finished else reference.KEEP_SHARE)
    runner, sam.blocks_runner = sam.blocks_runner, (None if every_window else sam.blocks_runner)
    try:
        return _per_page(ocr, images, batch, sampling)
    finally:
        reference.KEEP_SHARE, sam.blocks_runner = share, runner


def _per_page(ocr: OCR, images: list, batch: int, sampling: SamplingParams) -> dict[str, float]:
    totals = dict.fromkeys(("total", *(k for k, _ in STAGES)), 0.0)
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        began = time.perf_counter()
        results = ocr.run([ocr.prepare(image, "markdown") for image in chunk], sampling=sampling)
        totals["total"] += time.perf_counter() - began
        for key, timing in STAGES:
            # vision and preparation are per page; the pages of a batch decode side by side, so decoding's
            # seconds are the batch's (every page reports them) and count once
            values = [r.timings.get(timing, 0.0) for r in results]
            totals[key] += max(values) if key == "decode" else sum(values)
    return {k: v / len(images) for k, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(Path(__file__).parents[1] / "dsocr" / "embedded"))
    parser.add_argument("--baseline", help="a second model, read with the CPU decoding forms too")
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = [generate_page(7_000 + i).image for i in range(args.pages)]
    cpu = OCR.from_pretrained(args.model, device="cpu")
    models = {"reference modules": OCR.from_pretrained(args.model, device="cpu", engine="reference"),
              "cpu decoding": cpu, "finished rows kept": cpu}
    if cpu.model.model.sam_model.blocks_runner is not None:
        models["every window"] = cpu
    if args.baseline:
        models["baseline model"] = OCR.from_pretrained(args.baseline, device="cpu")
    runs = [(name, batch) for name in models for batch in (1, args.batch)]

    def read(name: str, pages: list, batch: int) -> dict[str, float]:
        return per_page(models[name], pages, batch, keep_finished=name == "finished rows kept",
                        every_window=name == "every window")

    for name, _ in runs:
        read(name, images[:1], 1)  # warm-up
    figures: dict[tuple[str, int], list[dict[str, float]]] = {run: [] for run in runs}
    for _ in range(2):
        for name, batch in runs:
            figures[name, batch].append(read(name, images, batch))
    print(f"{args.pages} synthetic pages, {torch.get_num_threads()} threads, seconds per page (best of 2):")
    best = {run: min(rows, key=lambda r: r["total"]) for run, rows in figures.items()}
    for (name, batch), row in best.items():
        stages = ", ".join(f"{k} {row[k]:.2f}" for k, _ in STAGES)
        print(f"  {name:<18} batch {batch}: {row['total']:.2f} s  ({stages})")
    for batch in (1, args.batch):
        base, new = best["reference modules", batch]["total"], best["cpu decoding", batch]["total"]
        print(f"  batch {batch}: cpu decoding {base / new:.2f}x the reference modules' speed, "
              f"{best['finished rows kept', batch]['total'] / new:.2f}x with finished rows kept")
        if "every window" in models:
            every, skipped = best["every window", batch], best["cpu decoding", batch]
            print(f"  batch {batch}: flat windows skipped {every['total'] / new:.2f}x every window computed "
                  f"(vision {every['vision'] / skipped['vision']:.2f}x)")
    if args.baseline:
        for batch in (1, args.batch):
            base, new = best["baseline model", batch]["total"], best["cpu decoding", batch]["total"]
            print(f"  batch {batch}: --model {base / new:.2f}x --baseline's speed")


if __name__ == "__main__":
    main()
