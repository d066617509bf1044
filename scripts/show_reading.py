"""What a checkpoint reads, next to the truth, on a few held-out synthetic snippets and pages: the quick look
between training chunks (benchmarks/accuracy.py gives the numbers). First, teacher-forced on 16 held-out
snippets: the loss with each snippet's own image and with another's, and the share of tokens predicted exactly
(train.teacher_forced), which move before greedy reading does.

    python scripts/show_reading.py MODEL [--snippets 3] [--pages 1] [--device auto] [--chars 200]
"""

from __future__ import annotations

import argparse

from dsocr.api import OCR
from dsocr.generation.params import SamplingParams
from dsocr.processing.image import processing_config_for_mode
from dsocr.training.data import page_example
from dsocr.training.evaluate import cer
from dsocr.training.synthetic import SNIPPETS, SyntheticConfig, generate_page
from dsocr.training.train import held_out_seed, teacher_forced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--snippets", type=int, default=3)
    parser.add_argument("--pages", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--chars", type=int, default=200, help="how much of each text to print")
    args = parser.parse_args()
    ocr = OCR.from_pretrained(args.model, device=args.device, engine="reference")
    config = ocr.model.config
    processing = processing_config_for_mode("base", base_size=config.base_size, crop_size=config.crop_size)
    checks = [page_example(generate_page(held_out_seed(0, i), SNIPPETS), "free") for i in range(16)]
    print("teacher-forced on 16 snippets:", teacher_forced(ocr.model, checks, ocr.tokenizer, processing, 256))
    kinds = [("snippet", SNIPPETS, i, 256) for i in range(args.snippets)]
    kinds += [("page", SyntheticConfig(), i, 1024) for i in range(args.pages)]
    for kind, config, i, tokens in kinds:
        page = generate_page(held_out_seed(0, i), config)
        truth = page.plain_target()
        read = ocr.ocr(page.image, "free", sampling=SamplingParams(max_new_tokens=tokens)).text.strip()
        print(f"{kind} {i}: CER {cer(read, truth):.3f}\n  truth: {truth[:args.chars]!r}\n  read:  {read[:args.chars]!r}")


if __name__ == "__main__":
    main()
