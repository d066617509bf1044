"""One full-size MoE layer of the DeepSeek-OCR 2 decoder: the reference per-expert loop vs grouped experts.

64 routed experts (top-6, hidden 1280, expert width 896) + 2 shared, random weights, bf16 on CUDA (float32 on
CPU). For N tokens through the layer it prints, side by side: the loop's time, the grouped time, the ratio,
the largest difference of the outputs, and the floor set by memory bandwidth (the expert weights the tokens
touch, read once, at `--bandwidth` TB/s). N = 1 is one decode step of one page, 128 a decode step of 128
pages, 1121 the prefill of one 6-crop page.

    python benchmarks/moe.py [--tokens 1,8,128,1121,8192] [--device cuda] [--bandwidth 3.0]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from dsocr.engine.moe import GroupedExperts
from dsocr.model.config import DeepseekOCR2Config
from dsocr.model.decoder import DeepseekMoE
from dsocr.testing.fixtures import randomize_


def timed(fn, x: torch.Tensor, repeats: int) -> float:
    """Milliseconds per call (mean after warm-up)."""
    for _ in range(3):
        fn(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1,8,128,1121,8192")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bandwidth", type=float, default=3.0, help="TB/s, for the memory floor")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    config = DeepseekOCR2Config().language
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    reference = DeepseekMoE(config)
    randomize_(reference, seed=0)
    reference = reference.to(args.device, dtype).eval()
    grouped = copy.deepcopy(reference)
    grouped.grouped = GroupedExperts(grouped)
    expert_bytes = 3 * config.hidden_size * config.moe_intermediate_size * (2 if dtype == torch.bfloat16 else 4)
    print(f"# one MoE layer: {config.n_routed_experts} experts top-{config.num_experts_per_tok}, hidden "
          f"{config.hidden_size}, expert width {config.moe_intermediate_size}, {dtype}, {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""))
    if hasattr(torch, "_grouped_mm"):
        probe = torch.zeros(16, config.hidden_size, device=args.device, dtype=dtype)
        ends = torch.full((config.n_routed_experts,), 16, dtype=torch.int32, device=args.device)
        try:
            torch._grouped_mm(probe, grouped.grouped.w13, offs=ends)
            print("# torch._grouped_mm takes the packed weights")
        except RuntimeError as e:
            print(f"# torch._grouped_mm refused the packed weights, the loop over groups runs instead: {e}")
    print(f"{'tokens':>7s} {'loop ms':>9s} {'grouped ms':>11s} {'speed-up':>9s} {'max |diff|':>11s} "
          f"{'experts hit':>12s} {'floor ms':>9s}")
    gen = torch.Generator(device="cpu").manual_seed(1)
    with torch.inference_mode():
        for n in (int(t) for t in args.tokens.split(",")):
            x = (torch.randn(1, n, config.hidden_size, generator=gen) * 0.5).to(args.device, dtype)
            loop_ms = timed(reference, x, args.repeats)
            grouped_ms = timed(grouped, x, args.repeats)
            diff = (reference(x).float() - grouped(x).float()).abs().max().item()
            _, ids = reference.gate(x.reshape(-1, config.hidden_size))
            hit = int(torch.unique(ids).numel())
            floor = (hit + config.n_shared_experts) * expert_bytes / (args.bandwidth * 1e12) * 1000
            print(f"{n:7d} {loop_ms:9.3f} {grouped_ms:11.3f} {loop_ms / grouped_ms:8.1f}x {diff:11.2e} "
                  f"{hit:12d} {floor:9.3f}")


if __name__ == "__main__":
    main()
