"""The fast engine against our reference loop (and, with --official, the official Hugging Face code), on the
full-size DeepSeek-OCR 2 architecture with random weights built on the GPU itself.

Pages are synthetic images sized for 6 crops (1121 image tokens), 2 crops (545) and 0 crops (257); generation
is forced to a fixed length by ignoring EOS (random weights never stop). For each crop count it prints one
table: rows for the engine at 1, 8, 32 and 128 pages in flight, our reference loop one page at a time, and the
official code one page at a time; columns pages/s, generated tokens/s, time to first token (median; a page alone at 1 in flight), decode
ms/token and peak GPU memory (for the
engine: weights, workspace and the part of its preallocated cache pool in use at the peak). Reference rows generate fewer tokens (they are slow) and extrapolate pages/s to
the full length from their measured TTFT and ms/token; the table says so.

    python benchmarks/engine.py --device cuda [--inflight 1,8,32,128] [--crops 6,2,0] [--json out.json]
        [--official-python "PYTHONPATH=/tmp/site:.official/ref:.official/stub python3"]
        # column (c): benchmarks/official_hf.py in its own environment (.official/README.md)

Preprocessing (decode, resize) is done once per page image before timing: the pipeline benchmark measures
it; here the GPU's work is measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from dsocr.api import OCR
from dsocr.engine.engine import EngineConfig
from dsocr.generation.params import SamplingParams
from dsocr.model.config import DeepseekOCR2Config
from dsocr.model.weights import save_checkpoint
from dsocr.processing.tokenizer import Tokenizer
from dsocr.testing.fixtures import random_model
from dsocr.testing.tokenizer import build_test_tokenizer

PAGE_SIZES = {6: (1000, 1300), 2: (1600, 900), 0: (640, 480)}  # width, height -> crops in gundam mode
NEW_TOKENS = {6: 1000, 2: 300, 0: 1000}  # a typical page, a slide, a small image


def sampling(tokens: int) -> SamplingParams:
    # The production guard stays on; loops are not stopped, so every page makes exactly `tokens` tokens.
    return SamplingParams(max_new_tokens=tokens, ignore_eos=True, stop_on_loop=False)


def page(ocr: OCR, crops: int):
    image = Image.effect_noise(PAGE_SIZES[crops], 64).convert("RGB")
    prepared = ocr.prepare(image, "markdown")
    assert prepared.inputs.num_crops == crops, (prepared.inputs.num_crops, crops)
    return prepared


def engine_row(ocr: OCR, prepared, inflight: int, pages: int, tokens: int) -> dict:
    engine = ocr.engine
    engine.config = dataclasses.replace(engine.config, max_batch=inflight)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    engine.allocator.peak_used = 0
    requests = [ocr.engine_request(prepared, sampling(tokens)) for _ in range(pages)]
    start = time.perf_counter()
    engine.generate(requests)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    assert all(len(r.token_ids) == tokens for r in requests)
    decode = statistics.median(r.decode_seconds / max(1, len(r.token_ids) - 1) for r in requests)
    # One in flight: the first page's TTFT is the page alone (the second waited for it); else the median.
    ttft = min(r.ttft for r in requests) if inflight == 1 else statistics.median(r.ttft for r in requests)
    # The cache pool is allocated whole up front; count the part in use at the peak, not the pool.
    cache = engine.runner.cache
    pool = cache.num_blocks * cache.bytes_per_block(ocr.model.config.language, cache.block_size, ocr.model.dtype)
    used = engine.allocator.peak_used * pool / cache.num_blocks
    peak = (torch.cuda.max_memory_allocated() - pool + used) / 2**30
    return {"path": f"engine, {inflight} in flight", "pages": pages, "tokens": tokens, "pages_per_s": pages / wall,
            "tokens_per_s": pages * tokens / wall, "ttft_s": ttft,
            "ms_per_token": 1000 * decode, "peak_gb": peak}


def reference_row(ocr: OCR, prepared, tokens: int, full_tokens: int) -> dict:
    ocr.run([prepared], sampling=sampling(8))  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    (result,) = ocr.run([prepared], sampling=sampling(tokens))
    ttft = result.timings["vision"] + result.timings["prefill"]
    per_token = result.timings["decode"] / len(result.token_ids)
    return {"path": f"our reference loop (1 page, {tokens} tok, extrapolated)", "pages": 1, "tokens": tokens,
            "pages_per_s": 1 / (ttft + full_tokens * per_token), "tokens_per_s": 1 / per_token, "ttft_s": ttft,
            "ms_per_token": 1000 * per_token, "peak_gb": torch.cuda.max_memory_allocated() / 2**30}


def official_rows(command: str, checkpoint: Path, crop_counts: list[int], tokens: int) -> dict[int, dict]:
    """One run of benchmarks/official_hf.py (its own environment: .official/README.md) for all crop counts."""
    args = [command, "benchmarks/official_hf.py", "--checkpoint", str(checkpoint), "--crops",
            *map(str, crop_counts), "--new-tokens", str(tokens), "--device", "cuda", "--dtype", "bfloat16",
            "--repeats", "1"]
    run = subprocess.run(" ".join(args), shell=True, capture_output=True, text=True, timeout=1200, check=False)
    if run.returncode != 0:
        return {c: {"path": "official HF code: failed", "error": run.stderr[-800:]} for c in crop_counts}
    rows = {}
    for line in run.stdout.strip().splitlines():
        r = json.loads(line)
        per_token = r["ms_per_token"] / 1000
        rows[r["crops"]] = {
            "path": f"official HF code (1 page, {tokens} tok, extrapolated)", "pages": 1, "tokens": tokens,
            "pages_per_s": 1 / (r["ttft_s"] + NEW_TOKENS[r["crops"]] * per_token), "tokens_per_s": 1 / per_token,
            "ttft_s": r["ttft_s"], "ms_per_token": r["ms_per_token"], "peak_gb": r["peak_mem_gb"]}
    return rows


def print_table(crops: int, tokens: int, rows: list[dict]) -> None:
    print(f"\n{crops} crops, {tokens} generated tokens per page")
    print(f"| {'path':<48} | pages/s | tokens/s | TTFT ms | ms/token | peak GiB | vs reference |")
    print(f"|{'-' * 50}|--------:|---------:|--------:|---------:|---------:|-------------:|")
    base = next((r["pages_per_s"] for r in rows if r["path"].startswith("our reference")), None)
    for r in rows:
        if "error" in r:
            print(f"| {r['path']:<48} | {r['error'][-60:]!r} |")
            continue
        ratio = f"{r['pages_per_s'] / base:.1f}x" if base else "-"
        print(f"| {r['path']:<48} | {r['pages_per_s']:7.2f} | {r['tokens_per_s']:8.0f} | {1000 * r['ttft_s']:7.0f} "
              f"| {r['ms_per_token']:8.2f} | {r['peak_gb']:8.1f} | {ratio:>12} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--inflight", default="1,8,32,128")
    parser.add_argument("--crops", default="6,2,0")
    parser.add_argument("--pages-per-slot", type=float, default=2.0, help="pages run = this x in-flight (min 2)")
    parser.add_argument("--reference-tokens", type=int, default=100)
    parser.add_argument("--official-python", default="", help="command that runs python with the official env")
    parser.add_argument("--memory-fraction", type=float, default=0.85)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.device != "cuda" or not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA device (the engine's CPU path is the reference loop)")
    inflight = [int(x) for x in args.inflight.split(",")]
    crop_counts = [int(x) for x in args.crops.split(",")]

    start = time.perf_counter()
    config = DeepseekOCR2Config()
    model = random_model(config, seed=0, dtype=torch.bfloat16, device="cuda")
    workdir = Path(tempfile.mkdtemp(prefix="dsocr-bench-"))
    build_test_tokenizer(workdir / "tokenizer.json", vocab_size=400)
    tokenizer = Tokenizer.from_file(workdir / "tokenizer.json")
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, bf16, built in "
          f"{time.perf_counter() - start:.0f}s on {torch.cuda.get_device_name()}", flush=True)
    checkpoint = None
    if args.official_python:
        checkpoint = workdir / "checkpoint"
        save_checkpoint(model, checkpoint, dtype=torch.bfloat16)

    reference = OCR(model, tokenizer, name="random", engine="reference")
    results: dict[int, list[dict]] = {c: [] for c in crop_counts}
    pages = {c: page(reference, c) for c in crop_counts}
    for c in crop_counts:
        results[c].append(reference_row(reference, pages[c], args.reference_tokens, NEW_TOKENS[c]))
    print("our reference rows done", flush=True)
    if checkpoint is not None:
        torch.cuda.empty_cache()
        for c, row in official_rows(args.official_python, checkpoint, crop_counts, args.reference_tokens).items():
            results[c].append(row)
        print("official rows done", flush=True)

    fast = OCR(model, tokenizer, name="random", engine="fast",
               engine_config=EngineConfig(max_batch=max(inflight), memory_fraction=args.memory_fraction))
    t = time.perf_counter()
    fast.engine.warmup()
    cache_gb = sum(k.numel() * k.element_size() * 2 for k in fast.engine.runner.cache.keys) / 2**30
    print(f"engine: KV cache {cache_gb:.1f} GiB ({fast.engine.allocator.capacity * 64} tokens), graphs captured "
          f"in {time.perf_counter() - t:.1f}s", flush=True)
    for c in crop_counts:
        engine_row(fast, pages[c], 2, 2, 16)  # warm-up: prefill shapes, Triton compile
        for n in inflight:
            row = engine_row(fast, pages[c], n, max(2, round(args.pages_per_slot * n)), NEW_TOKENS[c])
            results[c].append(row)
            print(f"  {c} crops, {n} in flight: {row['pages_per_s']:.2f} pages/s", flush=True)
        print_table(c, NEW_TOKENS[c], results[c])
    if args.json:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "results": results,
                                         "kv_cache_gb": cache_gb}, indent=1))


if __name__ == "__main__":
    main()
