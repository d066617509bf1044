"""CPU cost of one page with the full-size DeepSeek-OCR 2 architecture and random weights (reference path).

Measures vision encoding (SAM + causal-flow encoder + projector), prefill and decode separately for a
typical page (1024 global view + 6 crops of 768 = 1121 image tokens), in float32 and bfloat16, and prints
them side by side with the bf16/fp32 ratio. Seconds per page assume `--page-tokens` generated tokens.

    python benchmarks/cpu_reference.py [--decode-tokens 16] [--page-tokens 1000] [--dtypes float32,bfloat16]

Needs about 14 GB of free memory for float32 (the two dtypes run one after the other).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import torch

from dsocr.generation.params import SamplingParams
from dsocr.generation.reference import GenerationRequest, generate
from dsocr.model.config import DeepseekOCR2Config
from dsocr.model.weights import build_model
from dsocr.testing.fixtures import randomize_

IMAGE_TOKEN_ID = 128815  # the official id; the benchmark needs no tokenizer
EOS_ID = 1
PROMPT_TAIL = [201, 128820, 32315, 254, 3410, 276, 42379, 16]  # stand-in for "\n<|grounding|>Convert ..."


def measure(dtype: torch.dtype, decode_tokens: int, crops: int) -> dict[str, float]:
    config = DeepseekOCR2Config()
    start = time.perf_counter()
    model = build_model(config).to_empty(device="cpu")
    randomize_(model, seed=0)
    model = model.to(dtype).eval().requires_grad_(False)
    build_seconds = time.perf_counter() - start

    global_view = torch.randn(1, 3, config.base_size, config.base_size)
    crop_views = torch.randn(crops, 3, config.crop_size, config.crop_size)
    with torch.inference_mode():
        model.model.encode_views(crop_views[:1].to(dtype))  # warm-up
        start = time.perf_counter()
        (embeds,) = model.model.embed_images(global_view.to(dtype), crop_views.to(dtype), [crops])
        vision = time.perf_counter() - start

    prompt = [0] + [IMAGE_TOKEN_ID] * embeds.shape[0] + PROMPT_TAIL
    params = SamplingParams(max_new_tokens=decode_tokens, ignore_eos=True)
    (result,) = generate(model, [GenerationRequest(prompt_ids=prompt, image_embeds=[embeds])], params,
                         image_token_id=IMAGE_TOKEN_ID, eos_token_id=EOS_ID)
    del model
    gc.collect()
    # The first decode step is included in decode_seconds; tokens after the first are what a page pays.
    return {
        "build_s": build_seconds,
        "image_tokens": float(embeds.shape[0]),
        "vision_s": vision,
        "prefill_s": result.prefill_seconds,
        "decode_s_per_token": result.decode_seconds / max(1, len(result.token_ids)),
        "decode_tokens_per_s": len(result.token_ids) / result.decode_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--page-tokens", type=int, default=1000)
    parser.add_argument("--crops", type=int, default=6)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    rows = {}
    for dtype in dtypes:
        m = measure(dtype, args.decode_tokens, args.crops)
        m["page_s"] = m["vision_s"] + m["prefill_s"] + args.page_tokens * m["decode_s_per_token"]
        rows[str(dtype).removeprefix("torch.")] = m
        print(f"measured {dtype}: " + ", ".join(f"{k}={v:.3f}" for k, v in m.items()), file=sys.stderr, flush=True)
    names = list(rows)
    print(f"full-size DeepSeek-OCR 2, random weights, CPU threads={args.threads}, {args.crops} crops, "
          f"{args.decode_tokens} decoded tokens, page = vision + prefill + {args.page_tokens} tokens")
    header = f"{'metric':<22}" + "".join(f"{n:>14}" for n in names)
    if len(names) == 2:
        header += f"{names[1] + '/' + names[0]:>20}"
    print(header)
    for key in ("build_s", "image_tokens", "vision_s", "prefill_s", "decode_s_per_token", "decode_tokens_per_s",
                "page_s"):
        values = [rows[n][key] for n in names]
        line = f"{key:<22}" + "".join(f"{v:>14.3f}" for v in values)
        if len(values) == 2 and values[0]:
            line += f"{values[1] / values[0]:>20.2f}"
        print(line)


if __name__ == "__main__":
    main()
