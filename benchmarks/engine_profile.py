"""Where the engine's GPU time goes, on the full-size architecture with random weights (CUDA only).

Prints: the vision tower's time per page (1 and 7 pages of 6 crops), the prefill time, the decode step time
(CUDA graph replay) at several batch sizes with ~1.6k tokens of context per row next to the step's memory
floor (KV cache + weights read once at --bandwidth TB/s), and the top kernels of an eager step from the
profiler.

    python benchmarks/engine_profile.py [--batches 1,8,32,128] [--context 1600] [--bandwidth 4.8]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from dsocr.engine.engine import EngineConfig, LLMEngine
from dsocr.engine.kv_cache import PrefillBatch, blocks_for
from dsocr.model.config import DeepseekOCR2Config
from dsocr.testing.fixtures import random_model


def cuda_ms(fn, repeats: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / repeats


def top_kernels(fn, title: str, rows: int = 18) -> None:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    print(f"\n{title}")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70))


@torch.inference_mode()
def vision_and_prefill(model, runner, profile: bool) -> None:
    for pages in (1, 7):
        g = torch.randn(pages, 3, 1024, 1024, device="cuda", dtype=torch.bfloat16)
        c = torch.randn(6 * pages, 3, 768, 768, device="cuda", dtype=torch.bfloat16)
        ms = cuda_ms(lambda g=g, c=c, n=pages: model.model.embed_images(g, c, [6] * n))
        print(f"vision, {pages} page(s) of 6 crops: {ms:.1f} ms ({ms / pages:.1f} ms/page)")
        if profile and pages == 1:
            top_kernels(lambda g=g, c=c: model.model.embed_images(g, c, [6]), "vision kernels, 1 page")
        sam = cuda_ms(lambda c=c: model.model.sam_model(c))
        encoder = cuda_ms(lambda c=c: model.model.qwen2_model(model.model.sam_model(c))) - sam
        print(f"  of which SAM on the {6 * pages} crops: {sam:.1f} ms, the flow encoder on them: {encoder:.1f} ms")
    for pages in (1, 7):
        t = 1121 * pages
        embeds = torch.randn(1, t, 1280, device="cuda", dtype=torch.bfloat16)
        blocks = torch.arange(t, device="cuda") // 64 + 1
        batch = PrefillBatch(runner.cache, blocks, torch.arange(t, device="cuda") % 64,
                             [(i * 1121, (i + 1) * 1121) for i in range(pages)])
        pos = torch.cat([torch.arange(1121)] * pages).cuda()[None]
        ms = cuda_ms(lambda e=embeds, p=pos, x=batch: model.model.decode(e, p, None, x))
        print(f"prefill, {pages} x 1121 tokens: {ms:.1f} ms ({ms / pages:.1f} ms/page)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--context", type=int, default=1600)
    parser.add_argument("--bandwidth", type=float, default=4.8, help="TB/s (H200 4.8, H100 3.35)")
    parser.add_argument("--profile", action="store_true", help="print profiler tables too")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--skip-vision", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="eager decode layers (no torch.compile)")
    args = parser.parse_args()
    config = DeepseekOCR2Config()
    model = random_model(config, seed=0, dtype=torch.bfloat16, device="cuda")
    engine = LLMEngine(model, encode_images=list, eos_token_id=1, image_token_id=3, token_id=lambda t: 5,
                       config=EngineConfig(max_batch=max(int(b) for b in args.batches.split(",")),
                                           compile=not args.no_compile))
    runner = engine.runner

    for cudnn_benchmark in () if args.skip_vision else (False, True):
        torch.backends.cudnn.benchmark = cudnn_benchmark
        print(f"cudnn.benchmark = {cudnn_benchmark}")
        vision_and_prefill(model, runner, args.profile and cudnn_benchmark)

    if args.skip_decode:
        return
    lang = config.language
    kv_per_token = 2 * lang.num_hidden_layers * lang.num_key_value_heads * lang.head_dim * 2
    expert_bytes = 3 * lang.hidden_size * lang.moe_intermediate_size * 2
    moe_layers = sum(lang.is_moe_layer(i) for i in range(lang.num_hidden_layers))
    t = time.perf_counter()
    engine.warmup()
    print(f"\ngraphs captured in {time.perf_counter() - t:.1f}s (compiled layers: {runner.compiled})")
    print(f"decode step (graph replay), {args.context} tokens of context per row:")
    print("| batch | ms/step | tokens/s | floor ms | of which KV | x floor |")
    print("|---:|---:|---:|---:|---:|---:|")
    for b in (int(x) for x in args.batches.split(",")):
        need = blocks_for(args.context + 200)
        tables = [engine.allocator.allocate(need) for _ in range(b)]
        runner.start_rows(range(b), torch.full((b,), 7, device="cuda"), [args.context] * b, tables, [0] * b,
                          [False] * b)
        ms = cuda_ms(lambda b=b: runner.decode(b, greedy=True), repeats=50)
        experts_hit = min(lang.n_routed_experts, b * lang.num_experts_per_tok)
        weights = moe_layers * experts_hit * expert_bytes + 1.0e9  # routed experts + ~1 GB of the rest
        kv = b * args.context * kv_per_token
        floor = 1000 * (weights + kv) / (args.bandwidth * 1e12)
        print(f"| {b} | {ms:.2f} | {1000 * b / ms:.0f} | {floor:.2f} | {1000 * kv / (args.bandwidth * 1e12):.2f} "
              f"| {ms / floor:.1f} |")
        if args.profile and b in (1, max(int(x) for x in args.batches.split(","))):
            runner.use_graphs = False
            top_kernels(lambda b=b: [runner.decode(b, greedy=True) for _ in range(5)], f"decode kernels, batch {b} x5")
            runner.use_graphs = True
        for i, t in enumerate(tables):
            runner.clear_row(i)
            engine.allocator.free(t)


if __name__ == "__main__":
    main()
