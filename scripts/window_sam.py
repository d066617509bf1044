"""Turn a checkpoint's global-attention SAM blocks into windowed ones: the start of a fine-tuning run.

    python scripts/window_sam.py MODEL_DIR OUT_DIR [--layers 2 5]

The global layers' attention over all 1600 tokens of a 640 px view (and its materialised 1600 x 1600
relative-position bias) is 45% of the embedded model's vision time on a 2-core CPU without bfloat16. A windowed
block has the same parameters except the relative-position tables: a global table holds one row per offset
-(grid-1)..grid-1, a windowed one -(window-1)..window-1, so the windowed table is the global table's middle rows
and every pair of tokens inside a window gets exactly the bias it had. Only the tokens outside the window are
lost; a short warm restart (docs/training.md, run 10) teaches the model to do without them. Writes the official
layout (bf16 shards under 16 MB, config.json with the layers gone from `global_attn_indexes`, tokenizer.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

import torch

from dsocr.model.ocr import DeepseekOCR2ForCausalLM
from dsocr.model.weights import build_model, load_model, save_checkpoint
from dsocr.training.train import SHARD_BYTES


def window_layers(model: DeepseekOCR2ForCausalLM, layers: list[int]) -> DeepseekOCR2ForCausalLM:
    """A copy of `model` whose SAM blocks `layers` (global ones) attend within windows."""
    sam = model.config.sam
    if not set(layers) <= set(sam.global_attn_indexes):
        raise SystemExit(f"layers {layers}: not all global (global: {list(sam.global_attn_indexes)})")
    keep = tuple(i for i in sam.global_attn_indexes if i not in layers)
    config = dataclasses.replace(model.config, sam=dataclasses.replace(sam, global_attn_indexes=keep))
    state = dict(model.state_dict())
    middle, half = sam.grid_size - 1, sam.window_size - 1  # offset 0's row in the global table; the window's reach
    for i in layers:
        for axis in ("h", "w"):
            name = f"model.sam_model.blocks.{i}.attn.rel_pos_{axis}"
            state[name] = state[name][middle - half: middle + half + 1].clone()
    windowed = build_model(config, device="cpu")
    windowed.load_state_dict(state, strict=True, assign=True)
    return windowed.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--layers", type=int, nargs="*", help="global layers to window (default: all)")
    args = parser.parse_args()
    model = load_model(args.model_dir)
    layers = list(model.config.sam.global_attn_indexes) if args.layers is None else args.layers
    windowed = window_layers(model, layers)
    save_checkpoint(windowed, args.out_dir, dtype=torch.bfloat16, max_shard_bytes=SHARD_BYTES)
    shutil.copy(args.model_dir / "tokenizer.json", args.out_dir / "tokenizer.json")
    print(f"{args.out_dir}: SAM layers {layers} windowed ({windowed.config.sam.window_size} tokens a side)")


if __name__ == "__main__":
    main()
