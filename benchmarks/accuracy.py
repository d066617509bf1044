"""How well a model reads: CER and block boxes on held-out synthetic pages, CER on the sample document
(examples/sample.pdf) and the real digital documents with ground truth in ../shared/data, and seconds per page
on this machine (gundam views against base views, the baseline, in the same run; for a model that reads lines,
where a page's time goes).

    python benchmarks/accuracy.py --model DIR [--pages 32] [--shared ../shared/data] [--device cpu] [--json F]

The synthetic pages are the ones `dsocr train` holds out for its own evaluation (seeds 500,000,000 + i of the
run's seed), so they were never trained on. Real documents are rendered at 144 DPI, read with the markdown
prompt, and compared with their ground-truth Markdown after removing the markup both sides may differ in.
"""

from __future__ import annotations

import argparse
import json
import re
import runpy
import time
from pathlib import Path

import torch
from cpu_speed import per_page  # benchmarks/, this script's folder

from dsocr.api import OCR
from dsocr.generation.params import SamplingParams
from dsocr.pipeline.sources import RenderSettings, open_source
from dsocr.training.data import Example, synthetic_example
from dsocr.training.evaluate import cer, evaluate
from dsocr.training.synthetic import generate_page
from dsocr.training.train import held_out_seed


def held_out(n: int, seed: int, prompt: str) -> list[Example]:
    return [synthetic_example(held_out_seed(seed, i), prompt) for i in range(n)]


def plain(markdown: str) -> str:
    """Text without Markdown/HTML markup, whitespace collapsed: what both sides must agree on."""
    text = re.sub(r"<[^>]+>", " ", markdown)
    text = re.sub(r"[#*_`|>\-]+", " ", text)
    return " ".join(text.split())


def real_documents(ocr: OCR, shared: Path, max_tokens: int) -> list[dict]:
    rows = []
    for line in (shared / "index.jsonl").read_text().splitlines():
        entry = json.loads(line)
        gt = [g for g in entry.get("gt", []) if g["file"].endswith(".md")]
        if entry["kind"] not in ("text", "multicolumn") or not gt:
            continue
        folder = shared / entry["dir"]
        reference = plain((folder / gt[0]["file"]).read_text(encoding="utf-8"))
        rows.append(read_document(ocr, entry["id"], folder / entry["inputs"][0]["file"], reference, max_tokens,
                                  entry["gt_quality"]))
    return rows


def sample_document(ocr: OCR, max_tokens: int) -> dict:
    """examples/sample.pdf against the text examples/make_sample_pdf.py writes into it (exact ground truth)."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    made = runpy.run_path(str(examples / "make_sample_pdf.py"))
    return read_document(ocr, "examples/sample.pdf", examples / "sample.pdf", plain(made["text"]()), max_tokens,
                         "exact")


def read_document(ocr: OCR, name: str, source: Path, reference: str, max_tokens: int, quality: str) -> dict:
    """One document read page by page at 144 DPI with the markdown prompt, its CER against `reference`."""
    predicted, seconds = [], 0.0
    document = open_source(source, render=RenderSettings(dpi=144))
    try:
        for index in range(document.num_pages):
            image = document.render(index).image
            start = time.perf_counter()
            result = ocr.ocr(image, "markdown", sampling=SamplingParams(max_new_tokens=max_tokens))
            seconds += time.perf_counter() - start
            predicted.append(result.markdown)
    finally:
        document.close()
    return {"document": name, "pages": len(predicted), "cer": cer(plain("\n".join(predicted)), reference),
            "seconds_per_page": seconds / max(1, len(predicted)), "gt": quality}


def speed(ocr: OCR, mode: str, pages: int, max_tokens: int) -> float:
    """Seconds per typical synthetic page, OCR'd alone as a user would."""
    start = time.perf_counter()
    for i in range(pages):
        ocr.ocr(generate_page(7_000 + i).image, "markdown", mode=mode,
                sampling=SamplingParams(max_new_tokens=max_tokens))
    return (time.perf_counter() - start) / pages


def line_speed(ocr: OCR, pages: int, max_tokens: int) -> dict[str, float]:
    """A lines model's seconds per typical synthetic page, each alone: in all, and in layout + packing, vision,
    decoding (the pages are drawn before the clock starts)."""
    return per_page(ocr, [generate_page(7_000 + i).image for i in range(pages)], 1, max_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--pages", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="the training run's seed (its held-out pages)")
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto (float32 on CPU), float32, bfloat16, float16")
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--speed-pages", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ocr = OCR.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    vision = ocr.model.model.view_seperator.dtype  # `dtype="auto"` may run a lines model's vision in bfloat16
    report: dict = {"model": args.model, "device": str(ocr.model.device), "dtype": str(ocr.model.dtype),
                    "vision_dtype": str(vision)}
    for prompt in ("markdown", "free"):
        result = evaluate(ocr, held_out(args.pages, args.seed, prompt), max_new_tokens=args.max_tokens)
        report[f"synthetic_{prompt}"] = result.to_dict()
        print(f"held-out synthetic pages, {prompt}: {result.pages} pages, CER {100 * result.cer:.2f}%"
              + (f", blocks found (IoU >= 0.7) {100 * result.boxes_found:.1f}%" if prompt == "markdown" else ""),
              flush=True)
    report["real"] = [sample_document(ocr, args.max_tokens)]
    if args.shared.exists():
        report["real"] += real_documents(ocr, args.shared, args.max_tokens)
    for row in report["real"]:
        print(f"real: {row['document']:<40} {row['pages']:>2} pages  CER {100 * row['cer']:6.2f}%  "
              f"{row['seconds_per_page']:.2f} s/page  ({row['gt'].split(' ')[0]} ground truth)", flush=True)
    if ocr.reads_lines:  # one way of reading (line views): where a page's time goes instead of a ratio of modes
        line_speed(ocr, 1, args.max_tokens)  # warm-up
        report["seconds_per_page"] = stages = line_speed(ocr, args.speed_pages, args.max_tokens)
        print(f"speed on {report['device']} ({report['dtype']}, vision {vision}, {torch.get_num_threads()} threads), "
              "line reader: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()) + " per page")
        if vision != ocr.model.dtype:  # the baseline: the same pages with the vision in the decoder's dtype
            del ocr
            same = OCR.from_pretrained(args.model, device=args.device, dtype=report["dtype"].removeprefix("torch."))
            line_speed(same, 1, args.max_tokens)
            base = report["seconds_per_page_vision_as_decoder"] = line_speed(same, args.speed_pages, args.max_tokens)
            print(f"  baseline, vision in {same.model.dtype} too: " + ", ".join(
                f"{k} {v:.2f} s" for k, v in base.items()) + f" per page; ratio {base['total'] / stages['total']:.2f}x")
    else:
        base, gundam = (speed(ocr, mode, args.speed_pages, args.max_tokens) for mode in ("base", "gundam"))
        report["seconds_per_page"] = {"base": base, "gundam": gundam}
        print(f"speed on {report['device']} ({torch.get_num_threads()} threads): gundam {gundam:.2f} s/page, "
              f"base {base:.2f} s/page (baseline), ratio {gundam / base:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
