"""Engine benchmark, column (c): the OFFICIAL Hugging Face code of DeepSeek-OCR 2, one page at a time.

Runs the reference remote code (modeling_deepseekocr2.py, deepencoderv2.py, modeling_deepseekv2.py, ...) under
transformers 4.46.3, which `.official/` holds outside git; .official/README.md says how to set it up:

    PYTHONPATH=/tmp/site:.official/ref:.official/stub python benchmarks/official_hf.py \
        --checkpoint DIR --crops 6 --new-tokens 512 --device cuda --dtype bfloat16 --repeats 3

DIR is a checkpoint in the official layout (config.json + safetensors under official names), such as
`dsocr.testing.fixtures.write_random_checkpoint` writes. The page is synthetic, built the way the reference's
`infer(crop_mode=True, base_size=1024, image_size=768)` builds one: a 1024x1024 global view (256 tokens + the
view separator) and, for 2-6 crops, 768x768 tiles (144 tokens each) in the grid `dynamic_preprocess` picks for a
portrait page. Pixels are random (a speed benchmark); the tokenizer is not needed.

Each repeat is one `generate()` of the reference, greedy, with `min_new_tokens = max_new_tokens = N` (EOS never
ends it) and `no_repeat_ngram_size=20` (infer()'s value outside eval_mode; 35 in eval_mode), under
`torch.autocast("cuda", bfloat16)` on CUDA as infer() runs it, without infer()'s text streamer:
- ttft_s: generate() start to the first new token (vision + prefill + first pick), read when generate() hands that
  token to a streamer (after its .cpu() copy, so the device has finished it);
- decode_s: from there to the end of generate(): tokens 2..N;
- ms_per_token, tokens_per_s: decode_s over N tokens, as dsocr.api and benchmarks/cpu_reference.py count them;
- pages_per_s: 1 / (ttft_s + decode_s); peak_mem_gb: torch.cuda.max_memory_allocated in GiB (null on CPU).
Figures are medians over --repeats, after one untimed warm-up. One JSON line per --crops value on stdout;
everything else (the reference prints, transformers warnings) goes to stderr; errors exit non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

REF_PACKAGE = "deepseek_ocr2_hf"  # .official/ref/deepseek_ocr2_hf: the reference files, as a package
BOS_ID = 0
IMAGE_TOKEN_ID = 128815  # infer()'s image_token_id
# 8 ids standing in for "\n<|grounding|>Convert the document to markdown." (as in benchmarks/cpu_reference.py).
PROMPT_TAIL = [201, 128820, 32315, 254, 3410, 276, 42379, 16]
BASE_SIZE, CROP_SIZE, TOKENS_PER_SIDE_BASE, TOKENS_PER_SIDE_CROP = 1024, 768, 16, 12
# crops -> (width tiles, height tiles), the grid dynamic_preprocess (min 2, max 6 tiles) picks for a portrait page.
GRIDS = {2: (1, 2), 3: (1, 3), 4: (2, 2), 5: (1, 5), 6: (2, 3)}
WARMUP_TOKENS = 8
NO_REPEAT_NGRAM_SIZE = 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="official-layout model directory")
    parser.add_argument("--crops", type=int, nargs="+", default=[6], choices=[0, *GRIDS],
                        help="768px tiles besides the global view (0 = small page); several = one line each")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per page (>= 2)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.new_tokens < 2 or args.repeats < 1:
        parser.error("--new-tokens must be >= 2 and --repeats >= 1")
    return args


def load_reference(checkpoint: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The reference model from config.json, weights loaded by name (none missing, none unexpected)."""
    from transformers.modeling_utils import no_init_weights

    modeling = importlib.import_module(f"{REF_PACKAGE}.modeling_deepseekocr2")
    raw = json.loads((checkpoint / "config.json").read_text())
    # AutoConfig reads the top-level fields (the reference ignores `language_config`); official files and ours
    # repeat the language model there, so both readings must agree.
    diffs = {k: (raw.get(k), v) for k, v in raw.get("language_config", {}).items()
             if k not in ("architectures", "auto_map") and raw.get(k) != v}
    if diffs:
        raise ValueError(f"config.json: top level and language_config disagree: {diffs}")
    config = modeling.DeepseekOCR2Config.from_dict(raw)
    config._attn_implementation = "eager"  # its MHA path maps eager -> LlamaAttention (no sdpa class exists)
    with no_init_weights():  # as from_pretrained: skip random init of 3B parameters that load_state_dict replaces
        model = modeling.DeepseekOCR2ForCausalLM(config)

    state: dict[str, torch.Tensor] = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights do not match the reference: missing {missing}, unexpected {unexpected}")
    del state
    # The mirror's ablation hook must stay off (None = inert; the official code has no such attribute).
    assert getattr(model.model, "_causal_flow_ablation", None) is None
    # The official README's order: .eval().cuda().to(torch.bfloat16) (so buffers such as RoPE's inv_freq are cast).
    return model.eval().requires_grad_(False).to(device).to(dtype)


def page_inputs(crops: int, vocab_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """generate() keyword arguments for one page, shaped as infer() makes them."""
    gen = torch.Generator().manual_seed(crops)
    # Random values in [-1, 1], like normalised pixels; never all zero (the reference tests sum() != 0).
    global_view = torch.rand(1, 3, BASE_SIZE, BASE_SIZE, generator=gen) * 2 - 1
    n_image = TOKENS_PER_SIDE_BASE**2 + 1  # global view + view separator
    if crops:
        width, height = GRIDS[crops]
        tiles = torch.rand(crops, 3, CROP_SIZE, CROP_SIZE, generator=gen) * 2 - 1
        n_image += (TOKENS_PER_SIDE_CROP * width) * (TOKENS_PER_SIDE_CROP * height)
    else:  # infer()'s placeholder when there are no tiles: zeros, which the forward takes as "no crops"
        width, height = 1, 1
        tiles = torch.zeros(1, 3, BASE_SIZE, BASE_SIZE)

    def fit(token: int) -> int:  # real ids when the vocabulary has them (small test checkpoints do not)
        return token if token < vocab_size else token % vocab_size

    ids = [BOS_ID] + [fit(IMAGE_TOKEN_ID)] * n_image + [fit(t) for t in PROMPT_TAIL]
    image_mask = [False] + [True] * n_image + [False] * len(PROMPT_TAIL)
    return {
        "input_ids": torch.tensor([ids], device=device),
        "images": [(tiles.to(device, dtype), global_view.to(device, dtype))],
        "images_seq_mask": torch.tensor([image_mask], device=device),
        "images_spatial_crop": torch.tensor([[width, height]]),  # stays on the CPU, as in infer()
    }


def first_token_clock() -> Any:
    """A generate() streamer that notes when the first new token arrives (put #1 is the prompt)."""
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.puts, self.first_token_at = 0, 0.0

        def put(self, value: torch.Tensor) -> None:
            self.puts += 1
            if self.puts == 2:
                self.first_token_at = time.perf_counter()

        def end(self) -> None:
            pass

    return Clock()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generate_page(model: torch.nn.Module, inputs: dict[str, Any], new_tokens: int,
                  device: torch.device) -> tuple[float, float]:
    """One page through the reference's generate(): (ttft seconds, decode seconds)."""
    clock = first_token_clock()
    sync(device)
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = model.generate(**inputs, do_sample=False, min_new_tokens=new_tokens, max_new_tokens=new_tokens,
                             no_repeat_ngram_size=NO_REPEAT_NGRAM_SIZE, eos_token_id=model.config.eos_token_id,
                             pad_token_id=model.config.eos_token_id, use_cache=True, streamer=clock)
    sync(device)
    end = time.perf_counter()
    generated = out.shape[1] - inputs["input_ids"].shape[1]
    if generated != new_tokens:
        raise RuntimeError(f"generate() returned {generated} new tokens, expected {new_tokens}")
    return clock.first_token_at - start, end - clock.first_token_at


def measure(model: torch.nn.Module, crops: int, args: argparse.Namespace, device: torch.device,
            dtype: torch.dtype) -> dict[str, Any]:
    inputs = page_inputs(crops, model.config.vocab_size, device, dtype)
    generate_page(model, inputs, min(WARMUP_TOKENS, args.new_tokens), device)  # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = [generate_page(model, inputs, args.new_tokens, device) for _ in range(args.repeats)]
    ttft, decode = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "engine": "official-hf", "crops": crops, "new_tokens": args.new_tokens,
        "image_tokens": int(inputs["images_seq_mask"].sum()), "prompt_tokens": inputs["input_ids"].shape[1],
        "ttft_s": round(ttft, 4), "decode_s": round(decode, 4),
        "ms_per_token": round(1000 * decode / args.new_tokens, 3),
        "tokens_per_s": round(args.new_tokens / decode, 2), "pages_per_s": round(1 / (ttft + decode), 4),
        "peak_mem_gb": None if peak is None else round(peak, 3),
        "repeats": args.repeats, "device": str(device), "dtype": args.dtype,
        "no_repeat_ngram_size": NO_REPEAT_NGRAM_SIZE,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    try:
        # The reference prints shapes on every prefill: keep stdout for the JSON lines alone.
        with contextlib.redirect_stdout(sys.stderr):
            model = load_reference(args.checkpoint, device, dtype)
            rows = [measure(model, crops, args, device, dtype) for crops in args.crops]
    except Exception as e:  # noqa: BLE001 - any failure: traceback to stderr, non-zero exit
        traceback.print_exc()
        summary = (str(e).splitlines() or [""])[0]
        print(f"official_hf: error: {type(e).__name__}: {summary}", file=sys.stderr)
        return 1
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
