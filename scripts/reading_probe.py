"""The CPU gate before a GPU training run: does a small model of our architecture learn to read from scratch?

    python scripts/reading_probe.py OUT [--task snippets|lines|strips] [--steps 2500] [--vision-lr-scale 0.1]
                                        [--glyph-weight 0.1] [--glyph-slots] [--align-weight 0]
                                        [--query-positions 0] [--snippet-fonts LO HI] [--vocab-size 2048]
                                        [--words 300] [--threads 1]

Trains a 1.8M-parameter model (SAM 64 x 4 blocks at 384 px, flow encoder and decoder 128 wide, 2 layers each)
with `dsocr train`'s own loop, on synthetic snippets (small pages of a few large lines, plain-text target, the
glyph loss at `--glyph-weight`) or on 4000 images of one line of 2-3 words drawn from the corpus's first
`--words` words (30 px, fixed place), or on line views (`--task strips`: rows of print, one line per row of
visual tokens, training/strips.py). Then prints its vision spread, its CER on 20 held-out images and what it
reads on a few; the log has the teacher-forced check at every 500 steps (`python scripts/show_reading.py
OUT/run` gives it for the end). A change meant to make the embedded model read is tried here first (docs/training.md); it
takes ~15-25 minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from dsocr.generation.params import SamplingParams
from dsocr.model.config import DeepseekOCR2Config, EncoderConfig, LanguageConfig, ProjectorConfig, SamConfig
from dsocr.training import corpus
from dsocr.training import train as training
from dsocr.training.data import Example, page_example, strip_example
from dsocr.training.evaluate import evaluate
from dsocr.training.synthetic import generate_page, load_font, snippet_config


def probe_config(vocab_size: int) -> DeepseekOCR2Config:
    return DeepseekOCR2Config(
        language=LanguageConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=384,
                                moe_intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=4, n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2,
                                first_k_dense_replace=1, max_position_embeddings=2048),
        sam=SamConfig(image_size=384, patch_size=16, width=64, depth=4, num_heads=2, mlp_dim=192, window_size=8,
                      global_attn_indexes=(1, 3), neck_channels=64, downsample_channels=(96, 128)),
        encoder=EncoderConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=256),
        projector=ProjectorConfig(input_dim=128, n_embed=128), base_size=384, crop_size=256, torch_dtype="float32")


def make_lines(folder: Path, count: int, words: list[str], seed: int) -> list[tuple[str, str]]:
    font = load_font("DejaVuSans.ttf", 30)
    rng, pairs = random.Random(seed), []
    for i in range(count):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 3)))
        image = Image.new("RGB", (384, 384), "white")
        ImageDraw.Draw(image).text((10, 20), text, fill="black", font=font)
        name = f"{seed}-{i}.png"
        image.save(folder / name)
        pairs.append((name, text))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--task", choices=("snippets", "lines", "strips"), default="snippets")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--vision-lr-scale", type=float, default=0.1)
    parser.add_argument("--glyph-weight", type=float, default=0.1, help="snippets only (lines have no glyphs)")
    parser.add_argument("--glyph-slots", action="store_true", help="snippets only: glyph loss per 16x16 slot")
    parser.add_argument("--align-weight", type=float, default=0.0, help="snippets only")
    parser.add_argument("--query-positions", type=float, default=0.0,
                        help="RMS of the query tables' initial position codes (0: random)")
    parser.add_argument("--snippet-fonts", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                        help="snippets' body text size in px (default: synthetic.SNIPPETS')")
    parser.add_argument("--vocab-size", type=int, default=2048, help="the BPE tokenizer's vocabulary (upper bound)")
    parser.add_argument("--words", type=int, default=300, help="lines: the vocabulary")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    training.PRESETS["probe"] = probe_config
    common = dict(  # noqa: C408 (TrainConfig's keyword arguments)
        output_dir=args.out / "run", preset="probe", steps=args.steps, batch_size=8, lr=1e-3, warmup_steps=50,
        vision_lr_scale=args.vision_lr_scale, vocab_size=args.vocab_size, tokenizer_pages=50, eval_every=10**9, eval_pages=2,
        eval_max_tokens=64, save_every=500, log_every=25, workers=0, mode="base", device="cpu",
        query_positions=args.query_positions, snippet_fonts=tuple(args.snippet_fonts) if args.snippet_fonts else None)
    if args.task == "lines":
        words = [w for w in corpus.words() if len(w) <= 8][: args.words]
        data = args.out / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = make_lines(data, 4000, words, seed=0)
        (data / "data.jsonl").write_text("\n".join(
            json.dumps({"image": name, "text": text, "prompt": "free"}) for name, text in lines))
        config = training.TrainConfig(**common, data=str(data / "data.jsonl"), eval_fraction=0.02, glyph_weight=0,
                                      align_weight=0)
        held_out = [Example(Image.open(data / name).convert("RGB"), "free", text)
                    for name, text in make_lines(data, 20, words, seed=1)]
    elif args.task == "strips":
        config = training.TrainConfig(**common, prompts=("free",), strips=1.0, glyph_weight=args.glyph_weight,
                                      glyph_slots=args.glyph_slots, align_weight=args.align_weight)
        held_out = [strip_example(training.held_out_seed(0, i), 384) for i in range(20)]
    else:
        config = training.TrainConfig(**common, prompts=("free",), snippets=1.0, glyph_weight=args.glyph_weight,
                                      glyph_slots=args.glyph_slots, align_weight=args.align_weight)
        snippets = snippet_config(config.snippet_fonts)
        held_out = [page_example(generate_page(training.held_out_seed(0, i), snippets), "free") for i in range(20)]
    trainer = training.Trainer(config, on_log=lambda record: print(json.dumps(record), flush=True))
    trainer.train()

    from dsocr.api import OCR

    ocr = OCR(trainer.model.eval(), trainer.tokenizer, engine="reference")
    result = evaluate(ocr, held_out, max_new_tokens=12 if args.task == "lines" else 160)
    read = [ocr.ocr(e.image, "free", mode="base", sampling=SamplingParams(max_new_tokens=160)).text.strip()
            for e in held_out[:3]]
    exact = sum(r == e.target for r, e in zip(read, held_out))
    print(f"vision spread {trainer.vision_spread():.3g}; held-out CER {result.cer:.3f}; "
          f"exact {exact} of the first 3")
    for r, e in zip(read, held_out):
        print(f"  {e.target[:120]!r}\n    -> {r[:120]!r}")


if __name__ == "__main__":
    main()
